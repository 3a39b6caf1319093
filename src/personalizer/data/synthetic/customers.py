"""The latent and observed state of one chunk of synthetic customers.

Everything here is drawn per customer, vectorised over the chunk. Times are seconds since
`ShopConfig.start`; a customer is *active* (browses and buys) from `active_start` until
`active_end` = min(dropout, horizon).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personalizer.data.synthetic.catalog import CATEGORY_WEIGHT, CONSUMABLE, Catalog
from personalizer.data.synthetic.config import DAY, HOUR, ZONE_SHARE, ShopConfig, local_epoch

SIGNUP_SOURCES = ("organic", "paid_social", "referral", "newsletter")
SIGNUP_SHARE = (0.45, 0.25, 0.15, 0.15)
NEVER_BUY_SHARE = 0.2
ONE_TIME_SHARE = 0.35  # of buyers
MEAN_ORDER_GAP_DAYS = 45
RATE_SHAPE = 0.7  # gamma shape of the base order rate: lower is more heterogeneous
MEAN_LIFETIME_DAYS = 700
SLOWDOWN_SHARE = 0.35
MPP_SHARE = 0.3
# Local hour-of-day weights for preferred email hours (commute, lunch, evening).
PREFERRED_HOUR_WEIGHT = np.array(
    [1, 0.5, 0.3, 0.3, 0.3, 0.6, 2, 4, 5, 4, 3, 3, 4, 4, 3, 3, 3, 3, 4, 5, 6, 6, 4, 2],
    dtype=np.float64,
)
# Local hour-of-day weights of shopping.
ORDER_HOUR_WEIGHT = np.array(
    [0.6, 0.3, 0.2, 0.1, 0.1, 0.2, 0.5, 1, 2, 3, 3, 4, 5, 4, 4, 4, 4, 4, 5, 6, 7, 7, 5, 2],
    dtype=np.float64,
)
# Mail clients: (user agent, share among non-Apple-Mail customers). Apple Mail users are the MPP ones.
APPLE_MAIL_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
OTHER_AGENTS = (
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)", 0.5),
    ("Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17531; Pro)", 0.25),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/124.0 Mobile Safari/537.36", 0.15),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1", 0.1),
)  # fmt: skip
# Apple Mail Privacy Protection prefetches through a proxy that identifies as bare Mozilla.
MPP_PROXY_AGENT = "Mozilla/5.0"
MAIL_AGENTS = (APPLE_MAIL_AGENT, *(a for a, _ in OTHER_AGENTS))


@dataclass(frozen=True, eq=False)
class Population:
    """One chunk of customers: position, observed attributes and latent ground truth."""

    first: int  # global position of the first customer of the chunk
    zone: np.ndarray  # index into ZONE_NAMES
    signed_up: np.ndarray  # seconds since start, negative before the simulated window
    consent: np.ndarray  # email consent given at signup
    source: np.ndarray  # index into SIGNUP_SOURCES
    taste: np.ndarray  # (n, categories), rows sum to 1
    never_buys: np.ndarray
    one_time: np.ndarray  # buys once, then leaves
    base_rate: np.ndarray  # orders per day at the start of activity
    slowdown: np.ndarray  # rate(t) = base_rate / (1 + slowdown * years active)
    hazard: np.ndarray  # dropout hazard per day
    dropout: np.ndarray  # seconds since start when the customer leaves (may be past horizon)
    active_start: np.ndarray
    active_end: np.ndarray
    preferred_how: np.ndarray  # preferred local hour of week, 0..167
    mpp: np.ndarray  # Apple Mail Privacy Protection user: machine-opens every delivered email
    engagement: np.ndarray  # base probability of opening an email
    persuadability: np.ndarray  # how much an email raises purchase probability
    agent: np.ndarray  # index into MAIL_AGENTS
    staple: np.ndarray  # consumable product rebought on its replenishment cycle, -1 for none
    wish: np.ndarray  # product this customer keeps coming back to look at
    order_customer: np.ndarray  # base orders: chunk position of the customer ...
    order_t: np.ndarray  # ... and seconds since start, before dropout

    @property
    def n(self) -> int:
        return len(self.zone)

    def draw_categories(self, customers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One category per entry of `customers` (chunk positions), from each one's tastes."""
        return _draw_categories(self.taste[customers], rng)


def _draw_categories(taste: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cum = np.cumsum(taste, axis=1)
    u = rng.random(len(taste)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), taste.shape[1] - 1)


def draw_population(
    config: ShopConfig, catalog: Catalog, chunk_index: int, rng: np.random.Generator
) -> Population:
    """Draw the customers of one chunk."""
    first, stop = config.chunk_bounds(chunk_index)
    n = stop - first
    horizon = float(config.horizon)

    zone = rng.choice(len(ZONE_SHARE), n, p=ZONE_SHARE / ZONE_SHARE.sum()).astype(np.int64)
    before = rng.random(n) < 0.3
    signed_up = np.where(
        before,
        -rng.uniform(DAY, 730 * DAY, n),
        rng.uniform(0, horizon - DAY, n),
    ).round()
    consent = rng.random(n) < 0.88
    source = rng.choice(len(SIGNUP_SOURCES), n, p=SIGNUP_SHARE)

    gammas = rng.gamma(0.3 * len(CATEGORY_WEIGHT) * CATEGORY_WEIGHT, size=(n, len(CATEGORY_WEIGHT)))
    gammas[gammas.sum(axis=1) == 0, 0] = 1.0
    taste = gammas / gammas.sum(axis=1, keepdims=True)

    never_buys = rng.random(n) < NEVER_BUY_SHARE
    one_time = ~never_buys & (rng.random(n) < ONE_TIME_SHARE)
    base_rate = np.where(
        never_buys, 0.0, rng.gamma(RATE_SHAPE, 1.0 / (RATE_SHAPE * MEAN_ORDER_GAP_DAYS), n)
    )
    slowdown = np.where(rng.random(n) < SLOWDOWN_SHARE, rng.uniform(1.0, 4.0, n), 0.0)
    hazard = rng.gamma(2.0, 1.0 / (2.0 * MEAN_LIFETIME_DAYS), n)
    active_start = np.maximum(signed_up, 0.0)
    life = np.minimum(rng.exponential(1.0, n) / hazard, 36_500.0) * DAY
    dropout = (active_start + life).round()

    order_customer, order_t = _arrivals(
        base_rate, slowdown, active_start, np.minimum(dropout, horizon), rng
    )
    order_t = _shop_hours(
        config, zone, active_start, np.minimum(dropout, horizon), order_customer, order_t, rng
    )
    # One-time buyers leave within a day of their first order.
    first_order = first_per_customer(order_customer, order_t, n)
    leaving = np.flatnonzero(one_time & (first_order >= 0))
    leave_at = order_t[first_order[leaving]] + rng.uniform(HOUR, DAY, len(leaving))
    dropout[leaving] = np.minimum(dropout[leaving], np.floor(leave_at))
    active_end = np.minimum(dropout, horizon)
    still = order_t < active_end[order_customer]
    order_customer, order_t = order_customer[still], order_t[still]

    hod = rng.choice(24, n, p=PREFERRED_HOUR_WEIGHT / PREFERRED_HOUR_WEIGHT.sum())
    preferred_how = rng.integers(0, 7, n) * 24 + hod
    mpp = rng.random(n) < MPP_SHARE
    other_share = np.array([s for _, s in OTHER_AGENTS])
    agent = np.where(mpp, 0, 1 + rng.choice(len(OTHER_AGENTS), n, p=other_share))
    engagement = rng.beta(3.0, 3.0, n)
    persuadability = np.where(never_buys, 0.0, rng.beta(1.0, 4.0, n))

    consumable_taste = taste * CONSUMABLE
    has_staple = ~never_buys & (consumable_taste.sum(axis=1) > 0.15)
    staple_cat = np.argmax(consumable_taste + rng.random(taste.shape) * 1e-9, axis=1)
    staple = np.where(has_staple, catalog.sample_products(staple_cat, rng), -1)

    wish = catalog.sample_products(_draw_categories(taste, rng), rng)
    return Population(
        first=first,
        zone=zone,
        signed_up=signed_up,
        consent=consent,
        source=source,
        taste=taste,
        never_buys=never_buys,
        one_time=one_time,
        base_rate=base_rate,
        slowdown=slowdown,
        hazard=hazard,
        dropout=dropout,
        active_start=active_start,
        active_end=active_end,
        preferred_how=preferred_how,
        mpp=mpp,
        engagement=engagement,
        persuadability=persuadability,
        agent=agent,
        staple=staple,
        wish=wish,
        order_customer=order_customer,
        order_t=order_t,
    )


def first_per_customer(customer: np.ndarray, t: np.ndarray, n: int) -> np.ndarray:
    """Position of each customer's earliest entry, -1 for customers without any."""
    first = np.full(n, -1)
    order = np.lexsort((-t, customer))  # last write wins: the earliest is written last
    first[customer[order]] = order
    return first


def _arrivals(
    base_rate: np.ndarray,
    slowdown: np.ndarray,
    active_start: np.ndarray,
    active_end: np.ndarray,
    rng: np.random.Generator,
    cap: int = 200,
) -> tuple[np.ndarray, np.ndarray]:
    """Base order times: a Poisson process slowed by each customer's time warp, cut at dropout.

    With rate(t) = r / (1 + k t) (t in days, k = slowdown / 365) the cumulative intensity is
    L(t) = r/k * ln(1 + k t); arrivals are uniform in L and mapped back with t = (exp(k L / r) - 1)/k.
    Orders start one hour after the customer becomes active so their browsing fits before them.
    """
    window = np.maximum(active_end - active_start - HOUR, 0.0) / DAY
    k = slowdown / 365.0
    warped = k > 0
    total = base_rate * window
    total[warped] = base_rate[warped] / k[warped] * np.log1p(k[warped] * window[warped])
    counts = np.minimum(rng.poisson(total), cap)
    customer = np.repeat(np.arange(len(base_rate)), counts)
    u = rng.random(len(customer)) * total[customer]
    rate = base_rate[customer]
    days = u / np.maximum(rate, 1e-300)
    w = warped[customer]
    kw = k[customer][w]
    days[w] = np.expm1(np.minimum(kw * days[w], 700.0)) / kw
    t = active_start[customer] + HOUR + np.minimum(days, window[customer]) * DAY
    return customer, t


def _shop_hours(
    config: ShopConfig,
    zone: np.ndarray,
    active_start: np.ndarray,
    active_end: np.ndarray,
    customer: np.ndarray,
    t: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Move each order to a plausible local hour of the same day, if that stays in the window."""
    local = local_epoch(config, zone[customer], t)
    hour = rng.choice(24, len(t), p=ORDER_HOUR_WEIGHT / ORDER_HOUR_WEIGHT.sum())
    moved = t - (local % DAY) + hour * HOUR + rng.uniform(0, HOUR, len(t))
    ok = (moved >= active_start[customer] + HOUR) & (moved < active_end[customer])
    return np.where(ok, moved, t)
