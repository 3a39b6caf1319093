"""Email campaigns of one chunk: audience, holdout, sends, bounces, opens, clicks, unsubscribes, and
the extra orders that emails cause.

One row per (campaign, audience member): the audience of a campaign is a random `AUDIENCE_SHARE`
of consenting customers signed up before it starts and not yet unsubscribed; `HOLDOUT_SHARE` of it
is the control group, which is never sent anything. Every random draw is made for every row before
filtering, so results depend on nothing but the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personalizer.data.synthetic.catalog import Catalog
from personalizer.data.synthetic.config import (
    DAY,
    HOUR,
    ShopConfig,
    circular_hours,
    hour_of_week,
    local_epoch,
)
from personalizer.data.synthetic.customers import Population

AUDIENCE_SHARE = 0.6
HOLDOUT_SHARE = 0.1
BOUNCE_RATE = 0.015
MATCH_SIGMA_HOURS = 3.0
MATCH_FLOOR = 0.35  # open propensity far from the preferred hour, relative to at it
OPEN_CAP = 0.95
OPEN_BASE, OPEN_PER_INTEREST = 0.6, 1.4  # interest in the featured category raises opens
AFTER_DROPOUT = 0.3  # customers who left still open some emails, less often
CLICK_BASE, CLICK_PER_INTEREST = 0.08, 0.5
UNSUB_BASE, UNSUB_UNINTERESTED = 0.002, 0.01
BUY_WITHOUT_CLICK = 0.35  # share of persuadability that works without a click


@dataclass(frozen=True, eq=False)
class Email:
    """One row per campaign assignment that happened (nan / -1 / False where not applicable)."""

    customer: np.ndarray  # chunk position
    campaign: np.ndarray  # campaign position in the catalog's calendar
    treated: np.ndarray  # False: holdout (control), not sent
    planned_at: np.ndarray  # send time (for the control group: when it would have been sent)
    bounced: np.ndarray
    delivered_at: np.ndarray  # nan unless delivered
    human_open_at: np.ndarray
    machine_open_at: np.ndarray
    click_at: np.ndarray
    click_product: np.ndarray
    unsubscribe_at: np.ndarray
    buy_at: np.ndarray  # persuaded extra order, nan for none
    buy_product: np.ndarray
    unsubscribed_at: np.ndarray  # per customer of the chunk, nan if never


def simulate_email(
    config: ShopConfig, catalog: Catalog, pop: Population, rng: np.random.Generator
) -> Email:
    """Send every campaign of the calendar to this chunk's customers."""
    n = pop.n
    start = catalog.campaign_start
    in_audience = rng.random((n, len(start))) < AUDIENCE_SHARE
    eligible = pop.consent[:, None] & (pop.signed_up[:, None] <= start[None, :]) & in_audience
    customer, campaign = np.nonzero(eligible)
    m = len(customer)
    nan = np.full(m, np.nan)

    treated = rng.random(m) >= HOLDOUT_SHARE
    planned = start[campaign] + rng.integers(0, 168, m) * HOUR + rng.integers(0, 60, m)
    bounced = treated & (rng.random(m) < BOUNCE_RATE)
    delivered = treated & ~bounced
    delivered_at = np.where(delivered, planned + rng.integers(2, 30, m), nan)

    local = local_epoch(config, pop.zone[customer], planned)
    preferred = pop.preferred_how[customer]
    distance = circular_hours(hour_of_week(local), preferred)
    match = MATCH_FLOOR + (1 - MATCH_FLOOR) * np.exp(-0.5 * (distance / MATCH_SIGMA_HOURS) ** 2)
    featured = catalog.campaign_category[campaign]
    interest = pop.taste[customer, featured]
    left = np.where(planned >= pop.dropout[customer], AFTER_DROPOUT, 1.0)
    p_open = np.minimum(
        OPEN_CAP,
        pop.engagement[customer] * match * (OPEN_BASE + OPEN_PER_INTEREST * interest) * left,
    )
    human = delivered & (rng.random(m) < p_open)
    # Near the preferred hour people open at once; otherwise at their next preferred hour of day.
    wait_hours = (preferred % 24 - (local % DAY) // HOUR) % 24
    soon = rng.exponential(0.4 * HOUR, m)
    later = wait_hours * HOUR + rng.uniform(60, HOUR, m)
    human_open_at = np.where(human, delivered_at + np.where(distance <= 3, soon, later), nan)
    machine = delivered & pop.mpp[customer]
    machine_open_at = np.where(machine, delivered_at + rng.uniform(60, 900, m), nan)

    clicked = human & (rng.random(m) < CLICK_BASE + CLICK_PER_INTEREST * interest)
    click_at = np.where(clicked, human_open_at + rng.uniform(10, 300, m), nan)
    featured_product = catalog.sample_products(featured, rng)
    click_product = np.where(clicked, featured_product, -1)

    p_unsub = UNSUB_BASE + UNSUB_UNINTERESTED * (interest < 0.05)
    unsub = delivered & (rng.random(m) < p_unsub)
    after_open = human_open_at + rng.uniform(30, 600, m)
    after_delivery = delivered_at + rng.uniform(300, 12 * HOUR, m)
    unsubscribe_at = np.where(unsub, np.where(human, after_open, after_delivery), nan)

    p_buy = pop.persuadability[customer] * np.where(clicked, 1.0, BUY_WITHOUT_CLICK)
    buy_after_click = click_at + rng.uniform(600, 2 * DAY, m)
    buy_after_delivery = delivered_at + rng.uniform(HOUR, 4 * DAY, m)
    buy_at = np.where(clicked, buy_after_click, buy_after_delivery)
    buy = delivered & (rng.random(m) < p_buy) & (buy_at < pop.active_end[customer])
    buy_at = np.where(buy, buy_at, nan)
    buy_product = np.where(clicked, click_product, featured_product)

    # Nothing is sent after an unsubscribe: keep only rows planned before the first one.
    unsubscribed_at = np.full(n, np.inf)
    np.minimum.at(unsubscribed_at, customer[unsub], unsubscribe_at[unsub])
    keep = planned < unsubscribed_at[customer]
    unsubscribed_at[np.isinf(unsubscribed_at)] = np.nan

    rows = {
        "customer": customer,
        "campaign": campaign,
        "treated": treated,
        "planned_at": planned.astype(np.float64),
        "bounced": bounced,
        "delivered_at": delivered_at,
        "human_open_at": human_open_at,
        "machine_open_at": machine_open_at,
        "click_at": click_at,
        "click_product": click_product,
        "unsubscribe_at": unsubscribe_at,
        "buy_at": buy_at,
        "buy_product": np.where(buy, buy_product, -1),
    }
    kept = {name: values[keep] for name, values in rows.items()}
    return Email(**kept, unsubscribed_at=unsubscribed_at)
