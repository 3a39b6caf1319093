"""Memberships kept current as events arrive: re-evaluate only the customers an event touches.

`SegmentUpdater` holds each customer's orders, events and customer row, and the segments each
customer is in. `apply(events, now)` adds new events (and order lines) and re-runs
`evaluate_segments` on the rows of the customers they touch: every condition is a function of one
customer's own rows, so the result equals a full batch evaluation at the same moment. Segments that
compare a customer with the others (`top`) cannot be evaluated customer by customer and are
skipped, with the reason in `skipped`.

Time alone moves customers too: an add_to_cart becomes a cart abandoner once the delay has passed.
Each row that will change a condition later (a sequence event reaching its delay or leaving its
lookback, a row leaving a metric window, a row timestamped after `now`) schedules a deadline for its
customer; `tick(now)` re-evaluates the customers whose deadlines have passed. Features compared
with a number of days schedule the moment they cross it (`recency_days` for lapsed,
`days_since_signup` for new subscribers, `tenure_days`, `days_since_engaged`,
`days_since_site_visit`), and features over a fixed window (`orders_90d`, `clicks_90d`, ...) the
moment a row leaves it. Ratios that drift with the clock (`overdue_ratio`, `recency_vs_max_gap`)
change on the customer's next event, on `refresh(now)` or in the nightly batch.

`follow(store, updater, since_seq)` is the consumer loop body: read what the event store accepted
after `since_seq`, apply it, return the changes and the sequence number to resume from.
"""

from __future__ import annotations

import heapq
import logging
import re
from collections.abc import Iterable
from datetime import timedelta

import numpy as np
import pandas as pd

from personalizer.data.event_store import EventStore
from personalizer.segments.batch import CHANGE_COLUMNS, evaluable, evaluate_segments
from personalizer.segments.definitions import (
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    EventSequence,
    NotOf,
    PredictionComparison,
    Score,
    SegmentDefinition,
)

log = logging.getLogger(__name__)

EVENT_FIELDS = ("event_id", "customer_id", "type", "occurred_at", "product_id", "properties")
ORDER_FIELDS = ("customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at")
_ONE_NS = 1
_ORDER_METRICS = frozenset({"spend", "orders"})


class SegmentUpdater:
    """Segment memberships updated customer by customer as events and orders arrive.

    Args:
        definitions: the segments to keep current.
        orders: order lines so far (`ORDER_FIELDS`).
        events: events so far (`EVENT_FIELDS`), or None.
        customers: the customers table (`customer_id`, `signed_up_at`, `email_consent`), or None.
        as_of: the moment of the initial (batch) evaluation, naive UTC.
        predictions: model outputs by `customer_id`, as for `evaluate_segments`.

    Attributes:
        segments: names of the segments kept current.
        skipped: segments not kept current, with the reason.
        now: the latest moment evaluated.
    """

    def __init__(
        self,
        definitions: Iterable[SegmentDefinition],
        orders: pd.DataFrame,
        events: pd.DataFrame | None,
        customers: pd.DataFrame | None,
        as_of: str | pd.Timestamp,
        predictions: pd.DataFrame | None = None,
    ) -> None:
        ready, self.skipped = evaluable(definitions, predictions)
        self.definitions: list[SegmentDefinition] = []
        for definition in ready:
            reason = _population_dependence(definition.condition)
            if reason:
                self.skipped[definition.name] = reason
            else:
                self.definitions.append(definition)
        for name, reason in self.skipped.items():
            log.info("segment %s not updated incrementally: %s", name, reason)
        self.segments = [d.name for d in self.definitions]
        self.predictions = predictions
        self.now = pd.Timestamp(as_of)
        self._windows = _windows(self.definitions)
        self._orders_empty = _select(orders, ORDER_FIELDS).iloc[:0]
        self._events_empty = _event_frame(events if events is not None else _no_events()).iloc[:0]
        self._orders = _by_customer(_select(orders, ORDER_FIELDS))
        self._events = _by_customer(_event_frame(events)) if events is not None else {}
        self._customers = (
            customers.drop_duplicates("customer_id").assign(
                customer_id=lambda f: f["customer_id"].astype(str)
            )
            if customers is not None
            else None
        )
        self._deadlines: list[tuple[int, str]] = []
        self._schedule(orders, "orders", self.now)
        if events is not None:
            self._schedule(events, "events", self.now)
        if customers is not None:
            self._schedule(customers, "signup", self.now)
        # An empty frame, not None: `evaluate_segments` cannot run a same-product sequence on None.
        known = events if events is not None else self._events_empty
        self._members = self._evaluate(orders, known, customers, self.now)

    # ----------------------------------------------------------------------------- public
    def apply(
        self,
        events: pd.DataFrame,
        now: str | pd.Timestamp,
        orders: pd.DataFrame | None = None,
        customers: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Add new events (and order lines, customer rows) and re-evaluate the customers touched.

        Args:
            events: new events (`EVENT_FIELDS`; extra columns such as `seq` are ignored).
            now: the moment to evaluate at; not before the previous one.
            orders: new order lines (a webhook's), or None. Lines are not deduplicated: give each
                line once.
            customers: new or changed customer rows (a signup, a consent change), or None.

        Returns:
            `CHANGE_COLUMNS`: the enter/exit records, `at` = `now`, sorted by segment and customer.
        """
        at = self._advance(now)
        touched: set[str] = set()
        if len(events):
            new = _event_frame(events)
            self._add(self._events, new, "event_id")
            self._schedule(new, "events", at)
            touched.update(new["customer_id"].unique().tolist())
        if orders is not None and len(orders):
            lines = _select(orders, ORDER_FIELDS)
            self._add(self._orders, lines, None)
            self._schedule(lines, "orders", at)
            touched.update(lines["customer_id"].unique().tolist())
        if customers is not None and len(customers):
            rows = customers.assign(customer_id=customers["customer_id"].astype(str))
            table = rows if self._customers is None else pd.concat([self._customers, rows])
            self._customers = table.drop_duplicates("customer_id", keep="last")
            self._schedule(rows, "signup", at)
            touched.update(rows["customer_id"].tolist())
        return self._reevaluate(touched, at)

    def tick(self, now: str | pd.Timestamp) -> pd.DataFrame:
        """Re-evaluate the customers with a deadline at or before `now`; return the changes."""
        at = self._advance(now)
        due: set[str] = set()
        while self._deadlines and self._deadlines[0][0] <= at.value:
            due.add(heapq.heappop(self._deadlines)[1])
        return self._reevaluate(due, at)

    def refresh(self, now: str | pd.Timestamp) -> pd.DataFrame:
        """Re-evaluate every known customer (the clock-driven features included)."""
        at = self._advance(now)
        everyone = set(self._orders) | set(self._events) | set(self._members)
        if self._customers is not None:
            everyone.update(self._customers["customer_id"].tolist())
        return self._reevaluate(everyone, at)

    def memberships(self) -> pd.DataFrame:
        """The current members: `customer_id`, `segment`, sorted like `evaluate_segments`."""
        rows = [(c, s) for c, segments in self._members.items() for s in segments]
        frame = pd.DataFrame(rows, columns=["customer_id", "segment"], dtype=object)
        return frame.sort_values(["segment", "customer_id"], ignore_index=True)

    def segments_of(self, customer_id: str) -> frozenset[str]:
        """The segments one customer is in now."""
        return self._members.get(customer_id, frozenset())

    @property
    def pending(self) -> int:
        """Deadlines scheduled and not yet passed."""
        return len(self._deadlines)

    # ---------------------------------------------------------------------------- internals
    def _advance(self, now: str | pd.Timestamp) -> pd.Timestamp:
        at = pd.Timestamp(now)
        if at.tzinfo is not None:
            at = at.tz_convert("UTC").tz_localize(None)
        if at < self.now:
            raise ValueError(f"now {at} is before the last evaluation ({self.now})")
        self.now = at
        return at

    def _add(self, table: dict[str, pd.DataFrame], rows: pd.DataFrame, key: str | None) -> None:
        for customer, part in rows.groupby("customer_id", sort=False):
            old = table.get(str(customer))
            merged = part if old is None else pd.concat([old, part], ignore_index=True)
            if key is not None:
                merged = merged.drop_duplicates(key, ignore_index=True)
            table[str(customer)] = merged.reset_index(drop=True)

    def _schedule(self, rows: pd.DataFrame, kind: str, now: pd.Timestamp) -> None:
        """Push the future moments at which these rows change a condition of their customer."""
        column = {"orders": "ordered_at", "events": "occurred_at", "signup": "signed_up_at"}[kind]
        if rows.empty or column not in rows.columns:
            return
        stamps = pd.to_datetime(rows[column])
        known = stamps.notna().to_numpy()
        t = stamps.to_numpy("datetime64[ns]").astype(np.int64)[known]
        customers = rows["customer_id"].astype(str).to_numpy(dtype=object)[known]
        types = (
            rows["type"].astype(str).to_numpy(dtype=object)[known]
            if kind == "events"
            else np.full(len(t), kind, dtype=object)
        )
        moments = [t + _ONE_NS]  # rows at or after `now` count from the next nanosecond
        for applies_to, offset in self._windows:
            chosen = np.isin(types, list(applies_to))
            if ANY_EVENT in applies_to:
                chosen |= types != "signup"
            moments.append(np.where(chosen, t + offset, np.iinfo(np.int64).min))
        stamps = np.concatenate(moments)
        who = np.tile(customers, len(moments))
        future = stamps > now.value
        for stamp, customer in zip(stamps[future].tolist(), who[future].tolist(), strict=True):
            heapq.heappush(self._deadlines, (stamp, customer))

    def _evaluate(
        self,
        orders: pd.DataFrame,
        events: pd.DataFrame,
        customers: pd.DataFrame | None,
        at: pd.Timestamp,
    ) -> dict[str, frozenset[str]]:
        """Segments per customer (members only) by `evaluate_segments` over these rows."""
        members = evaluate_segments(
            self.definitions, orders, events, customers, at, self.predictions
        )
        out = {
            str(c): frozenset(g) for c, g in members.groupby("customer_id", sort=False)["segment"]
        }
        return out

    def _reevaluate(self, customers: set[str], at: pd.Timestamp) -> pd.DataFrame:
        if not customers:
            return _no_changes()
        ids = sorted(customers)
        orders = _gather(self._orders, ids, self._orders_empty)
        events = _gather(self._events, ids, self._events_empty)
        table = None
        if self._customers is not None:
            table = self._customers[self._customers["customer_id"].isin(ids)]
        now_in = self._evaluate(orders, events, table, at)
        rows = []
        for customer in ids:
            before = self._members.get(customer, frozenset())
            after = now_in.get(customer, frozenset())
            rows += [(customer, s, "enter", at) for s in after - before]
            rows += [(customer, s, "exit", at) for s in before - after]
            if after:
                self._members[customer] = after
            else:
                self._members.pop(customer, None)
        if not rows:
            return _no_changes()
        changes = pd.DataFrame(rows, columns=CHANGE_COLUMNS)
        return changes.sort_values(["segment", "customer_id"], ignore_index=True)


def follow(
    store: EventStore,
    updater: SegmentUpdater,
    since_seq: int = 0,
    *,
    now: str | pd.Timestamp | None = None,
    batch: int = 10_000,
) -> tuple[pd.DataFrame, int]:
    """Apply every event the store accepted after `since_seq`.

    Args:
        store: the event store to read.
        updater: the memberships to update.
        since_seq: the last sequence number already applied (0: from the start).
        now: the moment to evaluate at; None is the current time (naive UTC).
        batch: events read and applied at a time.

    Returns:
        The changes (`CHANGE_COLUMNS`) and the last sequence number applied, to resume from.
    """
    parts = []
    last = since_seq
    while True:
        events = store.read(since_seq=last, limit=batch)
        if events.empty:
            break
        at = pd.Timestamp.now("UTC").tz_localize(None) if now is None else now
        parts.append(updater.apply(events, at))
        last = int(events["seq"].iloc[-1])
        if len(events) < batch:
            break
    parts = [p for p in parts if len(p)]
    changes = pd.concat(parts, ignore_index=True) if parts else _no_changes()
    return changes, last


# ------------------------------------------------------------------------------- helpers
def _population_dependence(condition: Condition) -> str | None:
    """Why a condition depends on other customers than the one evaluated, or None."""
    if isinstance(condition, AllOf | AnyOf):
        children = condition.all if isinstance(condition, AllOf) else condition.any
        reasons = [r for r in (_population_dependence(c) for c in children) if r]
        return reasons[0] if reasons else None
    if isinstance(condition, NotOf):
        return _population_dependence(condition.not_)
    if isinstance(condition, Comparison | Score | PredictionComparison) and condition.op == "top":
        return "op 'top' ranks a customer among all customers"
    return None


def _windows(definitions: list[SegmentDefinition]) -> list[tuple[frozenset[str], int]]:
    """(row kinds, offset in ns): a row of these kinds at t changes a condition at t + offset.

    Kinds are event types, "orders" (order lines), "signup" (a customer's signup) or `ANY_EVENT`.
    """
    out: set[tuple[frozenset[str], int]] = set()

    def ns(delta: timedelta) -> int:
        return int(pd.Timedelta(delta).value)

    def metric_kinds(metric: str) -> frozenset[str]:
        if metric in _ORDER_METRICS:
            return frozenset({"orders"})
        if metric in ("human_open", "machine_open"):
            return frozenset({"email_open"})
        return frozenset({metric})

    def walk(condition: Condition) -> None:
        if isinstance(condition, AllOf | AnyOf):
            for child in condition.all if isinstance(condition, AllOf) else condition.any:
                walk(child)
        elif isinstance(condition, NotOf):
            walk(condition.not_)
        elif isinstance(condition, Comparison) and condition.window is not None:
            # a row leaves [now - window, now) once now > t + window
            out.add((metric_kinds(condition.feature), ns(condition.window) + _ONE_NS))
        elif isinstance(condition, Comparison):
            out.update(_feature_deadlines(condition.feature, condition.value))
        elif isinstance(condition, Score):
            for metric in condition.sum:
                out.add((metric_kinds(metric), ns(condition.window) + _ONE_NS))
        elif isinstance(condition, EventSequence):
            spec = condition.sequence
            out.add((frozenset({spec.event}), ns(spec.delay)))  # counts once now >= t + delay
            out.add((frozenset({spec.event}), ns(spec.lookback) + _ONE_NS))

    for definition in definitions:
        walk(definition.condition)
    return sorted(out, key=lambda w: (w[1], sorted(w[0])))


ANY_EVENT = "*"
_DAY_NS = 86_400 * 10**9
# Features counting days since a row of these kinds: they cross a threshold of v days at t + v.
_DAYS_SINCE = {
    "recency_days": frozenset({"orders"}),
    "tenure_days": frozenset({"orders"}),
    "days_since_signup": frozenset({"signup"}),
    "days_since_engaged": frozenset({ANY_EVENT}),
    "days_since_site_visit": frozenset({ANY_EVENT}),
}
_FEATURE_WINDOW = re.compile(r"_(\d+)d(?:_|$)")


def _feature_deadlines(feature: str, value: float) -> set[tuple[frozenset[str], int]]:
    """When rows make a (window-less) customer feature cross `value` later, as `_windows` gives."""
    if feature in _DAYS_SINCE:
        if value < 0 or not np.isfinite(value):
            return set()
        return {(_DAYS_SINCE[feature], int(value * _DAY_NS) + _ONE_NS)}
    days = [int(d) for d in _FEATURE_WINDOW.findall(feature)]
    if "prev_90d" in feature:
        days.append(180)  # the 90 days before the last 90
    kinds = frozenset({"orders"}) if feature.startswith(("orders_", "spend_")) else None
    return {(kinds or frozenset({ANY_EVENT}), d * _DAY_NS + _ONE_NS) for d in days}


def _select(frame: pd.DataFrame, fields: tuple[str, ...]) -> pd.DataFrame:
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    out = frame.loc[:, list(fields)].copy()
    out["customer_id"] = out["customer_id"].astype(str)
    return out


def _event_frame(events: pd.DataFrame) -> pd.DataFrame:
    """Events with `EVENT_FIELDS` only (optional ones filled with missing values)."""
    frame = events.copy()
    for field in ("event_id", "product_id", "properties"):
        if field not in frame.columns:
            frame[field] = None
    out = _select(frame, EVENT_FIELDS)
    out["occurred_at"] = pd.to_datetime(out["occurred_at"])
    for field in ("event_id", "type", "product_id", "properties"):
        out[field] = out[field].astype(object)
    return out


def _no_events() -> pd.DataFrame:
    return pd.DataFrame({f: pd.Series(dtype=object) for f in EVENT_FIELDS}).astype(
        {"occurred_at": "datetime64[us]"}
    )


def _by_customer(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {
        str(c): part.reset_index(drop=True) for c, part in frame.groupby("customer_id", sort=False)
    }


def _gather(table: dict[str, pd.DataFrame], ids: list[str], empty: pd.DataFrame) -> pd.DataFrame:
    parts = [table[c] for c in ids if c in table]
    if not parts:
        return empty
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _no_changes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "segment": pd.Series(dtype=object),
            "change": pd.Series(dtype=object),
            "at": pd.Series(dtype="datetime64[ns]"),
        }
    )
