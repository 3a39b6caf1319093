"""Events of one chunk: signups, the browsing funnel before each order, browse sessions that do not
convert, and the email events of every send.

Events are built as parallel numpy arrays (customer, time, type code, product, campaign, property
index) and sorted by customer then time; strings are only made in `synthetic_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from personalizer.data.synthetic.catalog import Catalog
from personalizer.data.synthetic.config import DAY, HOUR, ShopConfig
from personalizer.data.synthetic.customers import MAIL_AGENTS, Population
from personalizer.data.synthetic.email import Email
from personalizer.data.synthetic.orders import Orders
from personalizer.schema import EventType

# Codes are positions here; on equal timestamps events sort in this order.
EVENT_TYPES: tuple[EventType, ...] = (
    EventType.SIGNUP,
    EventType.PAGE_VIEW,
    EventType.PRODUCT_VIEW,
    EventType.ADD_TO_CART,
    EventType.CHECKOUT_STARTED,
    EventType.PURCHASE,
    EventType.EMAIL_SENT,
    EventType.EMAIL_DELIVERED,
    EventType.EMAIL_BOUNCED,
    EventType.EMAIL_OPEN,
    EventType.EMAIL_CLICK,
    EventType.UNSUBSCRIBE,
)
CODE = {t: i for i, t in enumerate(EVENT_TYPES)}
# Property index: one per mail client agent, then the MPP proxy, then one per order (purchase).
MPP_PROPERTY = len(MAIL_AGENTS)
ORDER_PROPERTY = MPP_PROPERTY + 1

BROWSE_PER_DAY = 0.015  # sessions per active day everyone has ...
BROWSE_PER_ORDER = 0.8  # ... plus this many per expected order
EXTRA_VIEW = 0.3  # chance an ordered product was viewed twice
WISH_VIEW, REPEAT_VIEW = 0.2, 0.3  # a browse view shows the wish product / the session's first
ABANDON_CART, ABANDON_CHECKOUT = 0.3, 0.35


@dataclass(frozen=True, eq=False)
class Events:
    """Events sorted by customer then time."""

    customer: np.ndarray
    t: np.ndarray  # whole seconds since start
    code: np.ndarray  # index into EVENT_TYPES
    product: np.ndarray  # -1 for none
    campaign: np.ndarray  # -1 for none
    prop: np.ndarray  # property index, -1 for none
    machine: np.ndarray  # machine (MPP proxy) open

    @property
    def n(self) -> int:
        return len(self.customer)


@dataclass
class _Parts:
    columns: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {
            k: [] for k in ("customer", "t", "code", "product", "campaign", "prop", "machine")
        }
    )

    def add(
        self,
        customer: np.ndarray,
        t: np.ndarray,
        code: int,
        product: np.ndarray | None = None,
        campaign: np.ndarray | None = None,
        prop: np.ndarray | None = None,
        machine: bool = False,
    ) -> None:
        n = len(customer)
        none = np.full(n, -1, dtype=np.int64)
        values = {
            "customer": customer,
            "t": t,
            "code": np.full(n, code, dtype=np.int8),
            "product": none if product is None else product,
            "campaign": none if campaign is None else campaign,
            "prop": none if prop is None else prop,
            "machine": np.full(n, machine),
        }
        for name, value in values.items():
            self.columns[name].append(value)

    def sorted(self, horizon: int) -> Events:
        cols = {k: np.concatenate(v) for k, v in self.columns.items()}
        t = np.floor(cols["t"]).astype(np.int64)
        key = (cols["customer"].astype(np.int64) * horizon + t) * 16 + cols["code"]
        order = np.argsort(key, kind="stable")
        cols["t"] = t
        return Events(**{k: v[order] for k, v in cols.items()})


def build_events(
    config: ShopConfig,
    catalog: Catalog,
    pop: Population,
    orders: Orders,
    email: Email,
    rng: np.random.Generator,
) -> Events:
    """All events of one chunk."""
    parts = _Parts()
    joined = np.flatnonzero(pop.signed_up >= 0)
    parts.add(joined, pop.signed_up[joined], CODE[EventType.SIGNUP])
    _funnel(parts, orders, rng)
    _browse(parts, catalog, pop, rng)
    _email(parts, pop, email, rng)
    return parts.sorted(config.horizon)


def _funnel(parts: _Parts, orders: Orders, rng: np.random.Generator) -> None:
    """page_view, product_view(s) and add_to_cart per line, checkout_started, purchase."""
    t = orders.placed_at
    start = t - rng.uniform(5 * 60, 40 * 60, orders.n)
    span = t - 120 - start
    parts.add(orders.customer, start, CODE[EventType.PAGE_VIEW])

    line = orders.line_order
    customer = orders.customer[line]
    viewed = start[line] + rng.uniform(0, 0.5, len(line)) * span[line]
    parts.add(customer, viewed, CODE[EventType.PRODUCT_VIEW], orders.line_product)
    again = np.flatnonzero(rng.random(len(line)) < EXTRA_VIEW)
    again_t = start[line[again]] + rng.uniform(0, 0.9, len(again)) * span[line[again]]
    parts.add(customer[again], again_t, CODE[EventType.PRODUCT_VIEW], orders.line_product[again])
    carted = viewed + rng.uniform(0.01, 0.4, len(line)) * span[line]
    parts.add(customer, carted, CODE[EventType.ADD_TO_CART], orders.line_product)

    checkout = t - rng.uniform(30, 90, orders.n)
    parts.add(orders.customer, checkout, CODE[EventType.CHECKOUT_STARTED])
    prop = ORDER_PROPERTY + np.arange(orders.n)
    parts.add(orders.customer, t, CODE[EventType.PURCHASE], prop=prop)


def _browse(parts: _Parts, catalog: Catalog, pop: Population, rng: np.random.Generator) -> None:
    """Sessions that do not convert: pages, views from tastes, some abandoned carts and checkouts."""
    window = np.maximum(pop.active_end - pop.active_start - HOUR, 0.0)
    rate = BROWSE_PER_DAY + BROWSE_PER_ORDER * pop.base_rate
    counts = rng.poisson(rate * window / DAY)
    customer = np.repeat(np.arange(pop.n), counts)
    s = len(customer)
    start = pop.active_start[customer] + rng.random(s) * window[customer]
    pages = 1 + rng.poisson(0.5, s)
    views = 1 + rng.poisson(1.2, s)

    # Events of a session are a minute or so apart: slot k happens at start + k minutes + jitter.
    page_session = np.repeat(np.arange(s), pages)
    page_slot = np.arange(len(page_session)) - np.repeat(np.cumsum(pages) - pages, pages)
    page_t = start[page_session] + page_slot * 60 + rng.uniform(0, 50, len(page_session))
    parts.add(customer[page_session], page_t, CODE[EventType.PAGE_VIEW])

    view_session = np.repeat(np.arange(s), views)
    first_view = np.cumsum(views) - views
    view_slot = np.arange(len(view_session)) - np.repeat(first_view, views)
    view_customer = customer[view_session]
    product = catalog.sample_products(pop.draw_categories(view_customer, rng), rng)
    u = rng.random(len(view_session))
    product = np.where(u < WISH_VIEW, pop.wish[view_customer], product)
    repeat = (u >= WISH_VIEW) & (u < WISH_VIEW + REPEAT_VIEW) & (view_slot > 0)
    product = np.where(repeat, product[first_view[view_session]], product)
    view_t = start[view_session] + (pages[view_session] + view_slot) * 60
    parts.add(
        view_customer,
        view_t + rng.uniform(0, 50, len(view_t)),
        CODE[EventType.PRODUCT_VIEW],
        product,
    )

    end_slot = (pages + views) * 60 + start
    cart = np.flatnonzero(rng.random(s) < ABANDON_CART)
    parts.add(
        customer[cart],
        end_slot[cart] + rng.uniform(0, 50, len(cart)),
        CODE[EventType.ADD_TO_CART],
        product[first_view[cart]],
    )
    checkout = cart[rng.random(len(cart)) < ABANDON_CHECKOUT]
    parts.add(
        customer[checkout],
        end_slot[checkout] + 60 + rng.uniform(0, 50, len(checkout)),
        CODE[EventType.CHECKOUT_STARTED],
    )


def _email(parts: _Parts, pop: Population, email: Email, rng: np.random.Generator) -> None:
    """sent, delivered or bounced, opens (human and machine), clicks and their view, unsubscribes."""
    sent = np.flatnonzero(email.treated)
    customer, campaign = email.customer, email.campaign
    parts.add(
        customer[sent], email.planned_at[sent], CODE[EventType.EMAIL_SENT], campaign=campaign[sent]
    )
    bounced = np.flatnonzero(email.bounced)
    bounce_t = email.planned_at[bounced] + rng.integers(2, 30, len(bounced))
    parts.add(
        customer[bounced], bounce_t, CODE[EventType.EMAIL_BOUNCED], campaign=campaign[bounced]
    )

    none = np.full(len(customer), -1)
    mpp = np.full(len(customer), MPP_PROPERTY)
    view_at = email.click_at + rng.uniform(3, 30, len(customer))
    clicked = email.click_product
    for at, kind, product, prop in (
        (email.delivered_at, EventType.EMAIL_DELIVERED, none, none),
        (email.human_open_at, EventType.EMAIL_OPEN, none, pop.agent[customer]),
        (email.machine_open_at, EventType.EMAIL_OPEN, none, mpp),
        (email.click_at, EventType.EMAIL_CLICK, clicked, none),
        (view_at, EventType.PRODUCT_VIEW, clicked, none),
        (email.unsubscribe_at, EventType.UNSUBSCRIBE, none, none),
    ):
        rows = np.flatnonzero(~np.isnan(at))
        parts.add(
            customer[rows],
            at[rows],
            CODE[kind],
            product=product[rows],
            campaign=campaign[rows],
            prop=prop[rows],
            machine=prop is mpp,
        )
