"""Order lines and events indexed once, so features can be computed as of any moment.

`CustomerHistory.build` validates the order lines (and optionally events and the catalog), maps
customers to dense integer codes (sorted by id) and keeps numpy arrays per order, per purchase day
(customer and calendar day), per (customer, product) and per (customer, category) pair, with time
as float days since the epoch. Everything downstream (`features.customers`, the churn labels, the
RFM summary of the lifetime models) is then masks and `np.bincount` over these arrays, so stacking
several training moments does not re-read the data. Ids are factorised before they are turned
into text, which keeps a hundred million events to seconds.

Order lines with a negative quantity are returns, not purchases. Of the events, only returns,
email events (sent, delivered, opens, clicks, unsubscribes) and site activity (page and product
views, carts, checkouts) are kept; an email open is a machine open when its properties carry the
bare "Mozilla/5.0" user agent of Apple Mail Privacy Protection's proxy or an explicit flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import numpy as np
import pandas as pd

from personalizer.evaluation.split import to_utc_timestamp
from personalizer.features.engagement_times import machine_open_properties
from personalizer.models.lifetime import LifetimeModels, fit_lifetime_models, time_unit, unit_days
from personalizer.schema import EventType

TimeLike: TypeAlias = str | datetime | pd.Timestamp

ORDER_COLUMNS = ("customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at")
EVENT_COLUMNS = ("customer_id", "type", "occurred_at")
SITE_TYPES = (
    EventType.PAGE_VIEW,
    EventType.PRODUCT_VIEW,
    EventType.ADD_TO_CART,
    EventType.CHECKOUT_STARTED,
)
CART_TYPES = (EventType.ADD_TO_CART, EventType.CHECKOUT_STARTED)
# Email event kinds, as codes of `EventArrays.email_kind`.
RECEIVED, OPEN, MACHINE_OPEN, CLICK, UNSUBSCRIBE = range(5)
NS_PER_DAY = 86_400 * 10**9


@dataclass(frozen=True, eq=False)
class OrderArrays:
    """One row per order (sorted by customer, time) or per purchase day (same sort)."""

    c: np.ndarray
    t: np.ndarray  # days since the epoch (of the first line of the order / day)
    value: np.ndarray
    items: np.ndarray
    lines: np.ndarray


@dataclass(frozen=True, eq=False)
class EventArrays:
    """Returns, email and site events as customer codes and times (None: no events given)."""

    returns_c: np.ndarray
    returns_t: np.ndarray
    email_c: np.ndarray | None
    email_t: np.ndarray | None
    email_kind: np.ndarray | None
    site_c: np.ndarray | None
    site_t: np.ndarray | None
    site_cart: np.ndarray | None


@dataclass(frozen=True, eq=False)
class CustomerHistory:
    """Order lines and events indexed once, to compute features as of any moment.

    Attributes:
        customer_ids: code → customer_id, sorted (customers with at least one purchase line).
        orders: one row per order; days: one row per purchase day (customer and calendar day).
        first_order: time of the shop's first order, in days since the epoch.
    """

    customer_ids: pd.Index
    orders: OrderArrays
    days: OrderArrays
    pair_c: np.ndarray  # (customer, product) pairs: first and second order times
    pair_first: np.ndarray
    pair_second: np.ndarray
    category_c: np.ndarray | None  # (customer, category) pairs: first time
    category_first: np.ndarray | None
    events: EventArrays
    has_events: bool
    first_order: float

    @classmethod
    def build(
        cls,
        orders: pd.DataFrame,
        events: pd.DataFrame | None = None,
        products: pd.DataFrame | None = None,
        *,
        until: TimeLike | None = None,
    ) -> CustomerHistory:
        """Validate and index `orders` (and `events`, `products`); see `customer_features`.

        Args:
            orders, events, products: as for `customer_features`.
            until: when given, order lines and events at or after it are dropped (after
                validation), so nothing later can reach a model, not even through which
                customers or event types exist.
        """
        lines = _check_orders(orders)
        end = np.inf if until is None else days_of(until, "as_of")
        if until is not None:
            lines = lines[lines["t"].to_numpy() < end].reset_index(drop=True)
            if lines.empty:
                raise ValueError(f"as_of: no order line before {pd.Timestamp(until)}")
        buy = lines["quantity"].to_numpy() > 0
        if not buy.any():
            raise ValueError("quantity: no order line with a positive quantity")
        customer_code, names = text_codes(lines["customer_id"])
        used = np.unique(customer_code[buy])
        order = np.argsort(names[used], kind="stable")
        customer_ids = pd.Index(names[used][order], name="customer_id", dtype=object)
        position = np.full(len(names), -1, dtype=np.int64)
        position[used[order]] = np.arange(len(used))
        c_all = position[customer_code]
        c, t = c_all[buy], lines["t"].to_numpy()[buy]
        q, price = lines["quantity"].to_numpy()[buy], lines["unit_price"].to_numpy()[buy]
        order_code, _ = pd.factorize(lines["order_id"][buy])
        order_key, _ = pd.factorize(c.astype(np.int64) * (order_code.max() + 1) + order_code)
        by_order = pd.DataFrame(
            {"k": order_key, "c": c, "t": t, "value": q * price, "items": q}
        ).groupby("k", sort=False)
        table = by_order.agg(
            c=("c", "first"),
            t=("t", "min"),
            value=("value", "sum"),
            items=("items", "sum"),
            lines=("c", "size"),
        )
        order_table = _sorted(table)
        day = np.floor(order_table.t)
        by_day = pd.DataFrame(
            {
                "c": order_table.c,
                "day": day,
                "t": order_table.t,
                "value": order_table.value,
                "items": order_table.items,
                "lines": order_table.lines,
            }
        ).groupby(["c", "day"], sort=False)
        day_table = _sorted(
            by_day.agg(
                c=("c", "first"),
                t=("t", "min"),
                value=("value", "sum"),
                items=("items", "sum"),
                lines=("lines", "sum"),
            )
        )
        product_code, product_ids = text_codes(lines["product_id"][buy])
        pairs = _pair_times(c, product_code, order_key, t)
        categories = _category_times(pairs, product_ids, lines, products, buy)
        returns_c, returns_t = (
            c_all[~buy & (c_all >= 0)],
            lines["t"].to_numpy()[~buy & (c_all >= 0)],
        )
        return cls(
            customer_ids=customer_ids,
            orders=order_table,
            days=day_table,
            pair_c=pairs["c"].to_numpy(),
            pair_first=pairs["first"].to_numpy(),
            pair_second=pairs["second"].to_numpy(),
            category_c=None if categories is None else categories["c"].to_numpy(),
            category_first=None if categories is None else categories["t"].to_numpy(),
            events=_index_events(events, customer_ids, returns_c, returns_t, end),
            has_events=events is not None,
            first_order=float(t.min()),
        )

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    def check_as_of(self, as_of: TimeLike, name: str = "as_of") -> float:
        """`as_of` in days since the epoch; ValueError when no order precedes it."""
        now = days_of(as_of, name)
        if now <= self.first_order:
            first = stamp_of(self.first_order)
            raise ValueError(
                f"{name}: {pd.Timestamp(as_of)} is not after the first order ({first}); "
                "no customer has any history before it"
            )
        return now

    def present(self, as_of: TimeLike) -> np.ndarray:
        """Codes of the customers with an order before `as_of`, ascending."""
        now = days_of(as_of, "as_of")
        return np.unique(self.orders.c[self.orders.t < now])

    def churned(self, as_of: TimeLike, horizon_days: float) -> pd.Series:
        """1 for each customer who ordered before `as_of` and not in [as_of, as_of + horizon)."""
        now = days_of(as_of, "as_of")
        codes = self.present(as_of)
        t, c = self.orders.t, self.orders.c
        later = np.bincount(c[(t >= now) & (t < now + horizon_days)], minlength=self.n_customers)
        return pd.Series(
            (later[codes] == 0).astype(np.int8), index=self.customer_ids[codes], name="churned"
        )

    def rfm_summary(self, as_of: TimeLike, unit: str) -> pd.DataFrame:
        """RFM summary in purchase days (as `features.rfm.rfm_summary(freq="D")`) in `unit`.

        Also holds `first_value`: the value of the first purchase day."""
        now = days_of(as_of, "as_of")
        d = self.days
        m = d.t < now
        c, day, value = d.c[m], np.floor(d.t[m]), d.value[m]
        first, last = run_ends(c)
        n = np.bincount(c, minlength=self.n_customers)
        codes = c[first]
        x = n[codes] - 1.0
        spend = np.bincount(c, weights=value, minlength=self.n_customers)[codes]
        size = unit_days(unit)
        with np.errstate(divide="ignore", invalid="ignore"):
            monetary = np.where(x > 0, (spend - value[first]) / x, 0.0)
        return pd.DataFrame(
            {
                "frequency": x,
                "recency": (day[last] - day[first]) / size,
                "T": (np.floor(now) - day[first]) / size,
                "monetary_value": monetary,
                "first_value": value[first],
            },
            index=self.customer_ids[codes],
        )

    def lifetime_models(self, as_of: TimeLike, *, spend: bool, seed: int = 0) -> LifetimeModels:
        """BG/NBD (and Gamma-Gamma when `spend`) fitted on the history before `as_of`."""
        now = self.check_as_of(as_of)
        unit = time_unit(now - self.first_order)
        summary = self.rfm_summary(as_of, unit)
        day_values = self.days.value[self.days.t < now]
        return fit_lifetime_models(
            summary, unit, population_value=float(day_values.mean()), spend=spend, seed=seed
        )


# ---------------------------------------------------------------------------------- indexing
def _check_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """The columns used, typed, with `t` in days since the epoch; ValueError naming the field."""
    if not isinstance(orders, pd.DataFrame):
        raise ValueError(f"orders: expected a DataFrame, got {type(orders).__name__}")
    missing = [c for c in ORDER_COLUMNS if c not in orders.columns]
    if missing:
        raise ValueError(f"orders: missing column(s) {missing}; found {list(orders.columns)}")
    if orders.empty:
        raise ValueError("orders: no order lines")
    out = pd.DataFrame(
        {name: orders[name].to_numpy() for name in ("customer_id", "order_id", "product_id")}
    )
    if orders["customer_id"].isna().any():
        raise ValueError(
            f"customer_id: missing at row {_first_bad(orders, orders['customer_id'].isna())!r}"
        )
    for name in ("quantity", "unit_price"):
        values = pd.to_numeric(orders[name], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            raise ValueError(
                f"{name}: missing or non-numeric value at row {_first_bad(orders, bad)!r}"
            )
        out[name] = values.to_numpy(dtype=float)
    out["t"] = _to_days(orders["ordered_at"], "ordered_at")
    if "category" in orders.columns:
        out["category"] = orders["category"].to_numpy()
    return out


def _to_days(stamps: pd.Series, name: str) -> np.ndarray:
    try:
        parsed = pd.to_datetime(stamps)
    except (TypeError, ValueError):
        try:  # text timestamps written in more than one ISO shape ("2024-01-01", "... 12:00")
            parsed = pd.to_datetime(stamps, format="mixed")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: unreadable timestamps ({err})") from err
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    if parsed.isna().any():
        raise ValueError(f"{name}: missing timestamp at row {_first_bad(stamps, parsed.isna())!r}")
    ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ns / NS_PER_DAY


def days_of(moment: TimeLike, name: str) -> float:
    """`moment` (tz-aware converted to UTC) in days since the epoch; ValueError naming `name`."""
    return float(to_utc_timestamp(moment, name).as_unit("ns").value / NS_PER_DAY)


def _first_bad(frame: pd.DataFrame | pd.Series, bad: pd.Series) -> object:
    return frame.index[np.asarray(bad, dtype=bool)][0]


def _sorted(table: pd.DataFrame) -> OrderArrays:
    c, t = table["c"].to_numpy(np.int64), table["t"].to_numpy(float)
    order = np.lexsort((t, c))
    return OrderArrays(
        c=c[order],
        t=t[order],
        value=table["value"].to_numpy(float)[order],
        items=table["items"].to_numpy(float)[order],
        lines=table["lines"].to_numpy(float)[order],
    )


def _pair_times(
    c: np.ndarray, product: np.ndarray, order_key: np.ndarray, t: np.ndarray
) -> pd.DataFrame:
    """Per (customer, product): first and second time it was ordered (inf when never again)."""
    lines = pd.DataFrame({"c": c, "p": product, "o": order_key, "t": t})
    per_order = lines.groupby(["o", "p"], sort=False).agg(c=("c", "first"), t=("t", "min"))
    per_order = per_order.reset_index().sort_values(["c", "p", "t"], kind="stable")
    rank = per_order.groupby(["c", "p"], sort=False).cumcount().to_numpy()
    first = per_order[rank == 0]
    second = per_order[rank == 1].set_index(["c", "p"])["t"]
    times = second.reindex(pd.MultiIndex.from_frame(first[["c", "p"]])).to_numpy()
    return pd.DataFrame(
        {
            "c": first["c"].to_numpy(),
            "p": first["p"].to_numpy(),
            "first": first["t"].to_numpy(),
            "second": np.where(np.isnan(times), np.inf, times),
        }
    )


def _category_times(
    pairs: pd.DataFrame,
    product_ids: np.ndarray,
    lines: pd.DataFrame,
    products: pd.DataFrame | None,
    buy: np.ndarray,
) -> pd.DataFrame | None:
    """Per (customer, category): first time; None when no category is known."""
    if products is not None and {"product_id", "category"} <= set(products.columns):
        catalog = products.dropna(subset=["category"])
        mapping = pd.Series(
            catalog["category"].astype(str).to_numpy(), index=catalog["product_id"].astype(str)
        )
        mapping = mapping[~mapping.index.duplicated()]
    elif "category" in lines.columns:
        known = lines[buy].dropna(subset=["category"])
        known = known.drop_duplicates("product_id")
        mapping = pd.Series(
            known["category"].astype(str).to_numpy(), index=known["product_id"].astype(str)
        )
    else:
        return None
    codes, _ = pd.factorize(mapping.reindex(pd.Index(product_ids)).to_numpy())
    category = codes[pairs["p"].to_numpy()]
    known_rows = category >= 0
    if not known_rows.any():
        return None
    frame = pd.DataFrame(
        {
            "c": pairs["c"].to_numpy()[known_rows],
            "k": category[known_rows],
            "t": pairs["first"].to_numpy()[known_rows],
        }
    )
    return frame.groupby(["c", "k"], sort=False)["t"].min().reset_index()


def _index_events(
    events: pd.DataFrame | None,
    customer_ids: pd.Index,
    returns_c: np.ndarray,
    returns_t: np.ndarray,
    end: float = np.inf,
) -> EventArrays:
    if events is None:
        return EventArrays(returns_c, returns_t, None, None, None, None, None, None)
    if not isinstance(events, pd.DataFrame):
        raise ValueError(f"events: expected a DataFrame, got {type(events).__name__}")
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"events: missing column(s) {missing}; found {list(events.columns)}")
    wanted_types = [
        EventType.RETURN,
        EventType.EMAIL_SENT,
        EventType.EMAIL_DELIVERED,
        EventType.EMAIL_OPEN,
        EventType.EMAIL_CLICK,
        EventType.UNSUBSCRIBE,
        *SITE_TYPES,
    ]
    # Work on integer codes and positions: taking rows of string columns is what costs.
    type_code, type_names = text_codes(events["type"])

    def lookup(kinds: Sequence[str]) -> np.ndarray:
        """Per type code (and -1 last): whether it is one of `kinds`."""
        return np.append(np.isin(type_names, [str(k) for k in kinds]), False)

    customer_code, names = text_codes(events["customer_id"])
    known = np.append(customer_ids.get_indexer(names), -1)  # code -1 (missing id) maps to -1
    c = known[customer_code]
    rows = np.flatnonzero(lookup(wanted_types)[type_code] & (c >= 0))
    t = _to_days(events["occurred_at"].iloc[rows], "occurred_at")
    rows, t = rows[t < end], t[t < end]
    c, type_code = c[rows], type_code[rows]

    def of_type(*kinds: str) -> np.ndarray:
        return lookup(kinds)[type_code]

    is_return = of_type(EventType.RETURN)
    delivered = of_type(EventType.EMAIL_DELIVERED)
    received = delivered if delivered.any() else of_type(EventType.EMAIL_SENT)
    opened = of_type(EventType.EMAIL_OPEN)
    machine = np.zeros(len(rows), dtype=bool)
    if "properties" in events.columns and opened.any():
        machine[opened] = machine_open_properties(events["properties"].iloc[rows[opened]])
    email_kind = np.select(
        [
            received,
            opened & ~machine,
            machine,
            of_type(EventType.EMAIL_CLICK),
            of_type(EventType.UNSUBSCRIBE),
        ],
        [RECEIVED, OPEN, MACHINE_OPEN, CLICK, UNSUBSCRIBE],
        default=-1,
    )
    email = email_kind >= 0
    site = of_type(*SITE_TYPES)
    return EventArrays(
        returns_c=np.concatenate([returns_c, c[is_return]]),
        returns_t=np.concatenate([returns_t, t[is_return]]),
        email_c=c[email],
        email_t=t[email],
        email_kind=email_kind[email],
        site_c=c[site],
        site_t=t[site],
        site_cart=of_type(*CART_TYPES)[site],
    )


# ---------------------------------------------------------------------------------- helpers
def text_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of `values` (-1 for missing) and the distinct values as text.

    Factorising first and turning only the distinct values into text is far faster than
    converting millions of ids; values that print alike (1 and "1") share a code.
    """
    codes, uniques = pd.factorize(values)
    text = np.asarray(pd.Index(uniques).astype(str), dtype=object)
    merged, names = pd.factorize(text)
    names = np.asarray(names, dtype=object)
    return np.where(codes >= 0, merged[np.maximum(codes, 0)], -1), names


def run_ends(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the first and last row of each run of equal codes in sorted `c`."""
    if len(c) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    change = c[1:] != c[:-1]
    return np.flatnonzero(np.r_[True, change]), np.flatnonzero(np.r_[change, True])


def stamp_of(days: float) -> pd.Timestamp:
    """The naive UTC timestamp of a time in days since the epoch."""
    return pd.Timestamp(round(days * NS_PER_DAY), unit="ns")
