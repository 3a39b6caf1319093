"""Orders of one chunk, from four known causes, expanded into lines with bundles.

Order kinds: `base` (each customer's slowing, dropout-cut Poisson process, products from their
tastes), `replenishment` (the customer's staple consumable rebought around its replenishment
interval), `campaign` (extra orders persuaded by an email) and `follow_up` (bought A, buys B within
30 days). Every order of a customer falls in [active_start, active_end), so nothing is bought after
dropout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personalizer.data.synthetic.catalog import (
    BUNDLE_ATTACH,
    CONSUMABLE,
    NEXT_PURCHASE_DAYS,
    REPLENISH_DAYS,
    Catalog,
)
from personalizer.data.synthetic.config import DAY
from personalizer.data.synthetic.customers import Population, first_per_customer
from personalizer.data.synthetic.email import Email

ORDER_KINDS = ("base", "replenishment", "follow_up", "campaign")
BASE, REPLENISHMENT, FOLLOW_UP, CAMPAIGN = range(4)
KEEP_REPLENISHING = 0.85  # chance a staple is rebought once more
SECOND_ITEM = 0.25  # chance a base order has a second product from the customer's tastes


@dataclass(frozen=True, eq=False)
class Orders:
    """Orders sorted by customer then time, and their lines sorted by order."""

    customer: np.ndarray  # chunk position, per order
    placed_at: np.ndarray  # whole seconds since start, per order
    kind: np.ndarray  # index into ORDER_KINDS
    assignment: np.ndarray  # Email row that caused a campaign order, else -1
    value: np.ndarray  # sum of quantity * unit_price
    line_order: np.ndarray  # order position, per line
    line_product: np.ndarray
    quantity: np.ndarray
    unit_price: np.ndarray

    @property
    def n(self) -> int:
        return len(self.customer)


def build_orders(
    catalog: Catalog, pop: Population, email: Email, rng: np.random.Generator
) -> Orders:
    """All orders of one chunk."""
    customer, t = pop.order_customer, pop.order_t
    second = np.flatnonzero(rng.random(len(customer)) < SECOND_ITEM)
    chosen = _avoid_owned(
        catalog,
        np.concatenate([customer, customer[second]]),
        catalog.sample_products(pop.draw_categories(np.r_[customer, customer[second]], rng), rng),
        rng,
    )
    product, second_product = chosen[: len(customer)], chosen[len(customer) :]
    kind = np.full(len(customer), BASE)
    assignment = np.full(len(customer), -1)

    first_order = first_per_customer(customer, t, pop.n)
    staple_first = np.flatnonzero((first_order >= 0) & (pop.staple >= 0))
    interval = REPLENISH_DAYS[catalog.category[pop.staple[staple_first]]] * DAY
    r_customer, r_t = _replenishments(
        pop, staple_first, t[first_order[staple_first]], interval, rng
    )

    persuaded = np.flatnonzero(~np.isnan(email.buy_at))
    heads_customer = np.concatenate([customer, r_customer, email.customer[persuaded]])
    heads_t = np.concatenate([t, r_t, email.buy_at[persuaded]])
    heads_product = np.concatenate([product, pop.staple[r_customer], email.buy_product[persuaded]])
    heads_kind = np.concatenate(
        [kind, np.full(len(r_customer), REPLENISHMENT), np.full(len(persuaded), CAMPAIGN)]
    )
    heads_assignment = np.concatenate([assignment, np.full(len(r_customer), -1), persuaded])

    # Lines: the head product, sometimes a second taste product, the staple in the first order.
    line_order = np.concatenate([np.arange(len(heads_t)), second, first_order[staple_first]])
    line_product = np.concatenate([heads_product, second_product, pop.staple[staple_first]])
    line_order, line_product = _with_bundles(catalog, line_order, line_product, rng)

    # Follow-ups: bought A, buys B within 30 days, while still active.
    nxt = catalog.next_of[line_product]
    follow = (nxt >= 0) & (rng.random(len(line_product)) < catalog.next_prob[line_product])
    gap = rng.uniform(1.0, NEXT_PURCHASE_DAYS - 1.0, len(line_product)) * DAY
    f_t = heads_t[line_order] + gap
    follow &= f_t < pop.active_end[heads_customer[line_order]]
    f_index = np.flatnonzero(follow)
    f_order = len(heads_t) + np.arange(len(f_index))
    heads_customer = np.concatenate([heads_customer, heads_customer[line_order[f_index]]])
    heads_t = np.concatenate([heads_t, f_t[f_index]])
    heads_kind = np.concatenate([heads_kind, np.full(len(f_index), FOLLOW_UP)])
    heads_assignment = np.concatenate([heads_assignment, np.full(len(f_index), -1)])
    f_order, f_product = _with_bundles(catalog, f_order, nxt[f_index], rng)
    line_order = np.concatenate([line_order, f_order])
    line_product = np.concatenate([line_product, f_product])

    heads = (heads_customer, np.floor(heads_t), heads_kind, heads_assignment)
    return _finish(catalog, *heads, line_order, line_product, rng)


def _avoid_owned(
    catalog: Catalog,
    customer: np.ndarray,
    product: np.ndarray,
    rng: np.random.Generator,
    rounds: int = 4,
) -> np.ndarray:
    """People rarely buy a durable twice: redraw repeats within the category a few times."""
    product = product.copy()
    durable = ~CONSUMABLE[catalog.category]
    for _ in range(rounds):
        _, first = np.unique(customer * catalog.n_products + product, return_index=True)
        repeat = durable[product]
        repeat[first] = False
        if not repeat.any():
            break
        product[repeat] = catalog.sample_products(catalog.category[product[repeat]], rng)
    return product


def _replenishments(
    pop: Population,
    customers: np.ndarray,
    first_t: np.ndarray,
    interval: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Staple rebuys: a geometric number of them, each about one replenishment interval apart."""
    counts = np.minimum(rng.geometric(1 - KEEP_REPLENISHING, len(customers)) - 1, 60)
    customer = np.repeat(customers, counts)
    gaps = np.repeat(interval, counts) * rng.lognormal(0.0, 0.2, len(customer))
    cum = np.concatenate([[0.0], np.cumsum(gaps)])
    group_start = np.cumsum(counts) - counts
    t = np.repeat(first_t - cum[group_start], counts) + cum[1:]
    keep = t < pop.active_end[customer]
    return customer[keep], t[keep]


def _with_bundles(
    catalog: Catalog, order: np.ndarray, product: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Add each bundle partner of each line with probability BUNDLE_ATTACH."""
    orders, products = [order], [product]
    for slot in range(catalog.partners.shape[1]):
        partner = catalog.partners[product, slot]
        add = (partner >= 0) & (rng.random(len(product)) < BUNDLE_ATTACH)
        orders.append(order[add])
        products.append(partner[add])
    return np.concatenate(orders), np.concatenate(products)


def _finish(
    catalog: Catalog,
    customer: np.ndarray,
    t: np.ndarray,
    kind: np.ndarray,
    assignment: np.ndarray,
    line_order: np.ndarray,
    line_product: np.ndarray,
    rng: np.random.Generator,
) -> Orders:
    """Sort orders by customer and time, drop repeated products within an order, price lines."""
    rank = np.empty(len(t), dtype=np.int64)
    by_time = np.lexsort((t, customer))
    rank[by_time] = np.arange(len(t))
    key = np.unique(rank[line_order] * catalog.n_products + line_product)
    line_order, line_product = np.divmod(key, catalog.n_products)

    n_lines = len(key)
    line_kind = kind[by_time][line_order]
    u = rng.random(n_lines)
    quantity = np.where(u < 0.03, 3.0, np.where(u < 0.13, 2.0, 1.0))
    quantity[(line_kind == REPLENISHMENT) & (rng.random(n_lines) < 0.3)] = 2.0
    p_discount = np.where(line_kind == CAMPAIGN, 0.4, 0.1)
    discount = np.where(rng.random(n_lines) < p_discount, rng.uniform(0.1, 0.25, n_lines), 0.0)
    unit_price = np.round(catalog.price[line_product] * (1 - discount), 2)
    value = np.round(np.bincount(line_order, quantity * unit_price, minlength=len(t)), 2)
    return Orders(
        customer=customer[by_time],
        placed_at=t[by_time],
        kind=kind[by_time],
        assignment=assignment[by_time],
        value=value,
        line_order=line_order,
        line_product=line_product,
        quantity=quantity,
        unit_price=unit_price,
    )
