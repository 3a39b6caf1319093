"""What happened, indexed for the questions journeys ask: who did X between two moments.

A `Stream` is one kind of activity (an event type, orders, entering or leaving a segment): rows
sorted by customer code and time, with a composite key `code << 34 | seconds` so that "the first X
of each of these customers after their entry and before now" is one `searchsorted` for all of them.
Times are whole seconds since the epoch (naive UTC); journeys work at one-second resolution.

Every query takes an explicit upper bound: the engine never asks past its `now`, which is what
lets a replay hold the whole history in memory without peeking into the future.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from personalizer.journeys.definitions import ORDER

NEVER = 2**62  # "no such moment" when looking forward: later than anything
BEFORE_ALL = -(2**62)  # "no such moment" when looking back: earlier than anything
_SHIFT = 34  # seconds since the epoch fit in 34 bits until the year 2514
_SPAN = np.int64(1) << _SHIFT
ORDER_MATCH_SECONDS = 300  # a purchase event this close to an order line is the same order
SEGMENT_ENTRY = "segment_entry:"
SEGMENT_EXIT = "segment_exit:"


def seconds(values: pd.Series | pd.Index | Iterable[object]) -> np.ndarray:
    """Whole seconds since the epoch of naive-UTC (or aware) timestamps; NaT raises."""
    stamps = pd.to_datetime(pd.Series(values) if not isinstance(values, pd.Series) else values)
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    if stamps.isna().any():
        raise ValueError("missing timestamps")
    return np.asarray(stamps.to_numpy("datetime64[s]").astype(np.int64))


def to_timestamps(values: np.ndarray) -> pd.Series:
    """Seconds since the epoch back to naive-UTC timestamps (microsecond precision)."""
    return pd.Series(np.asarray(values, dtype="datetime64[s]").astype("datetime64[us]"))


@dataclass(frozen=True, eq=False)
class Stream:
    """One kind of activity of many customers, sorted by (customer code, time)."""

    code: np.ndarray
    t: np.ndarray
    key: np.ndarray
    product: np.ndarray
    composite: np.ndarray = field(repr=False)
    by_time: np.ndarray = field(repr=False)
    sorted_t: np.ndarray = field(repr=False)

    @classmethod
    def build(
        cls,
        code: np.ndarray,
        t: np.ndarray,
        key: np.ndarray | None = None,
        product: np.ndarray | None = None,
    ) -> Stream:
        """Rows in any order; customer codes below 0 (unknown customers) are dropped."""
        code, t = np.asarray(code, dtype=np.int64), np.asarray(t, dtype=np.int64)
        n = len(code)
        key = np.full(n, None, dtype=object) if key is None else np.asarray(key, dtype=object)
        product = (
            np.full(n, None, dtype=object) if product is None else np.asarray(product, dtype=object)
        )
        keep = code >= 0
        code, t, key, product = code[keep], t[keep], key[keep], product[keep]
        order = np.lexsort((t, code))
        code, t, key, product = code[order], t[order], key[order], product[order]
        by_time = np.argsort(t, kind="stable")
        if len(t) and (t.min() < 0 or t.max() >= _SPAN):
            raise ValueError("journeys handle moments from 1970 to 2514 only")
        return cls(code, t, key, product, (code << _SHIFT) | t, by_time, t[by_time])

    @classmethod
    def empty(cls) -> Stream:
        """A stream with no rows."""
        return cls.build(np.zeros(0, np.int64), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.code)

    def first_in(
        self, codes: np.ndarray, after: np.ndarray | int, before: np.ndarray | int
    ) -> np.ndarray:
        """Per customer, the first moment strictly between `after` and `before`, else NEVER."""
        codes = np.asarray(codes, dtype=np.int64)
        found = np.full(len(codes), NEVER, dtype=np.int64)
        if not len(self):
            return found
        at = np.searchsorted(self.composite, _bound(codes, after), "right")
        hit = self.composite[np.minimum(at, len(self) - 1)]
        inside = (at < len(self)) & (hit < _bound(codes, before)) & ((hit >> _SHIFT) == codes)
        found[inside] = hit[inside] & (_SPAN - 1)
        return found

    def last_before(self, codes: np.ndarray, before: np.ndarray | int) -> np.ndarray:
        """Per customer, the last moment strictly before `before`, else BEFORE_ALL."""
        codes = np.asarray(codes, dtype=np.int64)
        found = np.full(len(codes), BEFORE_ALL, dtype=np.int64)
        if not len(self):
            return found
        at = np.searchsorted(self.composite, _bound(codes, before), "left") - 1
        hit = self.composite[np.maximum(at, 0)]
        inside = (at >= 0) & ((hit >> _SHIFT) == codes)
        found[inside] = hit[inside] & (_SPAN - 1)
        return found

    def between(self, start: int, end: int) -> np.ndarray:
        """Positions of the rows with `start <= t < end`, in time order."""
        lo, hi = np.searchsorted(self.sorted_t, [start, end], "left")
        return self.by_time[lo:hi]


@dataclass(frozen=True, eq=False)
class Customers:
    """What journeys need of every customer, by code (the position in the sorted `ids`)."""

    ids: pd.Index
    consent: np.ndarray
    zone: np.ndarray
    signed_up: np.ndarray  # seconds, BEFORE_ALL when unknown
    send_hour: np.ndarray  # the send-time model's hour of the week, -1 when unknown
    shop_hour: int | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def codes(self, ids: pd.Series | np.ndarray | list[str]) -> np.ndarray:
        """Codes of customer ids (-1 for unknown ones)."""
        return np.asarray(self.ids.get_indexer(pd.Index(ids).astype(str)), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class Timeline:
    """The customers and their activity streams; `categories` maps products to categories."""

    customers: Customers
    streams: dict[str, Stream]
    categories: dict[str, str] = field(default_factory=dict)

    def stream(self, name: str) -> Stream:
        """The stream `name` (an event type, `order`, `segment_entry:<s>`, ...), maybe empty."""
        return self.streams.get(name) or _EMPTY


_EMPTY = Stream.empty()


def build_timeline(
    customers: pd.DataFrame,
    orders: pd.DataFrame,
    events: pd.DataFrame,
    *,
    changes: pd.DataFrame | None = None,
    products: pd.DataFrame | None = None,
    send_hours: pd.DataFrame | None = None,
    shop_hour: int | None = None,
    extra_ids: Iterable[str] = (),
) -> Timeline:
    """Index the tables journeys read.

    Args:
        customers: `customer_id`, `timezone`, `email_consent`, `signed_up_at`.
        orders: order lines `customer_id`, `order_id`, `product_id`, `ordered_at`.
        events: `event_id`, `customer_id`, `type`, `occurred_at`, `product_id`.
        changes: segment enter/exit records `customer_id`, `segment`, `change`, `at`.
        products: `product_id`, `category`, for trigger filters.
        send_hours: `customer_id`, `hour_of_week` from the send-time model.
        shop_hour: the model's hour for customers it does not know.
        extra_ids: customers known from elsewhere (journey state).
    """
    ids = pd.Index(
        np.sort(
            pd.concat(
                [
                    customers["customer_id"].astype(str),
                    orders["customer_id"].astype(str),
                    events["customer_id"].dropna().astype(str),
                    pd.Series(list(extra_ids), dtype=str),
                ]
            )
            .unique()
            .astype(object)
        )
    )
    people = _customers(ids, customers, send_hours, shop_hour)
    streams: dict[str, Stream] = {}
    if len(events):
        codes = people.codes(events["customer_id"].astype(str))
        times = seconds(events["occurred_at"])
        kinds = events["type"].astype(str).to_numpy(dtype=object)
        keys = events["event_id"].astype(str).to_numpy(dtype=object)
        product = _objects(events["product_id"])
        for kind in np.unique(kinds):
            rows = kinds == kind
            streams[str(kind)] = Stream.build(codes[rows], times[rows], keys[rows], product[rows])
    streams[ORDER] = _orders(people, orders, streams.get("purchase"))
    if changes is not None and len(changes):
        codes = people.codes(changes["customer_id"].astype(str))
        times = seconds(changes["at"])
        segment = changes["segment"].astype(str).to_numpy(dtype=object)
        change = changes["change"].astype(str).to_numpy(dtype=object)
        for name in np.unique(segment):
            for kind, prefix in (("enter", SEGMENT_ENTRY), ("exit", SEGMENT_EXIT)):
                rows = (segment == name) & (change == kind)
                streams[prefix + str(name)] = Stream.build(codes[rows], times[rows])
    categories: dict[str, str] = {}
    if products is not None and len(products):
        known = products.dropna(subset=["category"])
        categories = dict(
            zip(known["product_id"].astype(str), known["category"].astype(str), strict=True)
        )
    return Timeline(people, streams, categories)


def _customers(
    ids: pd.Index,
    table: pd.DataFrame,
    send_hours: pd.DataFrame | None,
    shop_hour: int | None,
) -> Customers:
    table = table.assign(customer_id=table["customer_id"].astype(str))
    table = table.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    table = table.reindex(ids)
    consent = table["email_consent"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    zones = table["timezone"].where(table["timezone"].notna(), "UTC").astype(str)
    signed = pd.to_datetime(table["signed_up_at"])
    signed_up = np.full(len(ids), BEFORE_ALL, dtype=np.int64)
    known = signed.notna().to_numpy()
    if known.any():
        signed_up[known] = seconds(signed[known])
    hours = np.full(len(ids), -1, dtype=np.int64)
    if send_hours is not None and len(send_hours):
        codes = np.asarray(ids.get_indexer(send_hours["customer_id"].astype(str)), dtype=np.int64)
        mine = codes >= 0
        hours[codes[mine]] = send_hours["hour_of_week"].to_numpy(dtype=np.int64)[mine]
    zone = zones.to_numpy(dtype=object)
    return Customers(ids, consent, zone, signed_up, hours, shop_hour)


def _orders(people: Customers, lines: pd.DataFrame, purchases: Stream | None) -> Stream:
    """Order lines, and purchase events that match no order line (real-time orders)."""
    codes = people.codes(lines["customer_id"].astype(str))
    times = seconds(lines["ordered_at"]) if len(lines) else np.zeros(0, np.int64)
    keys = lines["order_id"].astype(str).to_numpy(dtype=object)
    stream = Stream.build(codes, times, keys, _objects(lines["product_id"]))
    if purchases is None or not len(purchases):
        return stream
    near = stream.first_in(
        purchases.code,
        purchases.t - ORDER_MATCH_SECONDS - 1,
        purchases.t + ORDER_MATCH_SECONDS + 1,
    )
    alone = near == NEVER
    if not alone.any():
        return stream
    return Stream.build(
        np.concatenate([stream.code, purchases.code[alone]]),
        np.concatenate([stream.t, purchases.t[alone]]),
        np.concatenate([stream.key, purchases.key[alone]]),
        np.concatenate([stream.product, np.full(int(alone.sum()), None, dtype=object)]),
    )


def _objects(values: pd.Series) -> np.ndarray:
    """The values as objects, None where missing."""
    out = values.to_numpy(dtype=object, copy=True)
    out[pd.isna(out)] = None
    return out


def _bound(codes: np.ndarray, t: np.ndarray | int) -> np.ndarray:
    """Composite keys of (code, t), t clipped to the representable range."""
    return (codes << _SHIFT) + np.maximum(np.minimum(t, _SPAN - 1), -1)
