"""Batch evaluation of segment definitions for every customer, and the history of memberships.

`evaluate_segments` walks each definition's condition tree once; every leaf is a vectorised
computation over all customers (numpy `bincount` on integer customer codes, pandas group-bys for the
per-product sequences), never a loop over customers. The customers are those of the `customers`
table and everyone with an order or event before `as_of`; only what happened strictly before
`as_of` counts.

`update_memberships` turns two evaluations into history: a membership row per stay of a customer
in a segment (`entered_at`, `exited_at` empty while open) and the enter/exit records that journeys
trigger on.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable
from datetime import timedelta
from functools import partial

import numpy as np
import pandas as pd

from personalizer.data.warehouse import Warehouse
from personalizer.features.customer_history import CustomerHistory
from personalizer.features.customers import FEATURE_NAMES, features_at
from personalizer.features.engagement_times import machine_opens, naive_utc, require_columns
from personalizer.models.lifetime import LifetimeModels
from personalizer.segments.definitions import (
    CATEGORY_PREDICTION,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    EventSequence,
    NotOf,
    PredictionComparison,
    Score,
    SegmentDefinition,
    SequenceSpec,
    map_leaves,
)

log = logging.getLogger(__name__)

MEMBERSHIP_COLUMNS = ["customer_id", "segment", "entered_at", "exited_at"]
CHANGE_COLUMNS = ["customer_id", "segment", "change", "at"]
# Buyer features that are counts or sums: 0, not missing, for customers who never ordered.
_ZERO_WHEN_NO_ORDER = re.compile(r"^(orders|spend)_(total|\d+d|prev_90d)$|^purchase_days_total$")
_NS_PER_DAY = 86_400 * 10**9
# Customers per chunk of a batch evaluation: bounds the intermediates' memory on large shops.
CHUNK_CUSTOMERS = 100_000
# Segments read the BG/NBD outputs as predictions (fitted over the whole shop, not per chunk), so
# the customer features are computed without fitting it.
_NO_LIFETIME = LifetimeModels("D", None, None, math.nan, math.nan)


def evaluate_segments(
    definitions: Iterable[SegmentDefinition],
    orders: pd.DataFrame,
    events: pd.DataFrame | None,
    customers: pd.DataFrame | None,
    as_of: str | pd.Timestamp,
    predictions: pd.DataFrame | None = None,
    chunk_customers: int | None = CHUNK_CUSTOMERS,
) -> pd.DataFrame:
    """The members of every segment as of one moment.

    Args:
        definitions: validated segments (`load_segments`, `default_segments`).
        orders: order lines (`customer_id`, `order_id`, `product_id`, `quantity`, `unit_price`,
            `ordered_at`).
        events: events (`customer_id`, `type`, `occurred_at`, `product_id`, `properties`), or None.
        customers: the customers table (`customer_id`, `signed_up_at`, `email_consent`), or None.
        as_of: the moment described (naive UTC).
        predictions: model outputs with `customer_id` (column or index) and prediction columns;
            segments reading a prediction that is not given are skipped with a logged reason.
        chunk_customers: customers evaluated at a time, each chunk with its customers' rows only,
            which bounds the memory of the intermediate arrays; None: all at once. The result
            does not depend on it: a `top` condition ranks over the whole population (its
            threshold is found on the values of every chunk first).

    Returns:
        Columns `customer_id`, `segment`: one row per membership, sorted.
    """
    at = pd.Timestamp(as_of)
    chunks = _chunks(orders, events, customers, at, chunk_customers)
    return _evaluate_chunks(definitions, chunks, at, predictions)


def _evaluate_chunks(
    definitions: Iterable[SegmentDefinition],
    chunks: list[Callable[[], _Tables]],
    at: pd.Timestamp,
    predictions: pd.DataFrame | None,
) -> pd.DataFrame:
    ready, skipped = evaluable(definitions, predictions)
    for name, reason in skipped.items():
        log.info("segment %s skipped: %s", name, reason)
    if len(chunks) > 1:
        ready = _fix_top(ready, chunks, at, predictions)
    parts = []
    for i, chunk in enumerate(chunks):
        inputs = _Inputs(*chunk(), at, predictions)
        log.debug("segments: chunk %d of %d, %d customers", i + 1, len(chunks), inputs.n)
        for definition in ready:
            members = inputs.population[_evaluate(definition.condition, inputs)]
            parts.append(pd.DataFrame({"customer_id": members, "segment": definition.name}))
        del inputs  # free this chunk's intermediates before the next is taken
    if not parts:
        return pd.DataFrame({"customer_id": pd.Series(dtype=str), "segment": pd.Series(dtype=str)})
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["segment", "customer_id"], ignore_index=True)


def evaluable(
    definitions: Iterable[SegmentDefinition], predictions: pd.DataFrame | None
) -> tuple[list[SegmentDefinition], dict[str, str]]:
    """The definitions that can be evaluated with these predictions, and why the others cannot.

    A `for_each: category` definition becomes one definition per `propensity_<category>` column.
    """
    given = set() if predictions is None else {str(c) for c in predictions.columns}
    categories = [m.group(1) for c in given if (m := CATEGORY_PREDICTION.match(c))]
    ready, skipped = [], {}
    for template in definitions:
        if template.for_each == "category" and not categories:
            skipped[template.name] = "needs predictions propensity_<category>, none given"
            continue
        for definition in template.for_categories(categories):
            missing = [c for c in definition.needs_predictions if c not in given]
            if missing and predictions is None:
                skipped[definition.name] = f"needs predictions {missing}, none given"
            elif missing:
                skipped[definition.name] = f"predictions lack column(s) {missing}"
            else:
                ready.append(definition)
    return ready, skipped


def evaluate_warehouse(
    warehouse: Warehouse,
    definitions: Iterable[SegmentDefinition],
    as_of: str | pd.Timestamp,
    predictions: pd.DataFrame | None = None,
    chunk_customers: int | None = CHUNK_CUSTOMERS,
) -> pd.DataFrame:
    """`evaluate_segments` over the warehouse's tables (rows before `as_of` only).

    The customers are read `chunk_customers` at a time, each chunk's rows queried on its own, so
    memory follows the chunk, not the shop. Only the columns segments read are loaded (an event's
    properties only for email opens, where they tell machine opens apart).
    """
    at = pd.Timestamp(as_of)
    moment = [at.to_pydatetime()]
    population = warehouse.query(
        "SELECT customer_id FROM customers UNION "
        "SELECT customer_id FROM orders WHERE ordered_at < ? UNION "
        "SELECT customer_id FROM events WHERE occurred_at < ? AND customer_id IS NOT NULL",
        moment * 2,
    )["customer_id"]
    ids = np.sort(population.dropna().astype(str).to_numpy(dtype=object))
    size = len(ids) if chunk_customers is None else chunk_customers
    starts = range(0, max(len(ids), 1), max(size, 1))
    ranges = [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in starts] if len(ids) else []

    def load(low: str, high: str) -> _Tables:
        between = [*moment, low, high]
        orders = warehouse.query(
            "SELECT customer_id, order_id, product_id, quantity, unit_price, ordered_at "
            "FROM orders WHERE ordered_at < ? AND customer_id BETWEEN ? AND ?",
            between,
        )
        events = warehouse.query(
            "SELECT customer_id, type, occurred_at, product_id, "
            "CASE WHEN type = 'email_open' THEN properties END AS properties "
            "FROM events WHERE occurred_at < ? AND customer_id BETWEEN ? AND ?",
            between,
        )
        customers = warehouse.query(
            "SELECT customer_id, signed_up_at, email_consent FROM customers "
            "WHERE customer_id BETWEEN ? AND ?",
            [low, high],
        )
        events["type"] = events["type"].astype("category")
        return orders, events, customers

    if not ranges:
        ranges = [("", "")]
    return _evaluate_chunks(
        definitions, [partial(load, lo, hi) for lo, hi in ranges], at, predictions
    )


# ----------------------------------------------------------------------------------- memberships
def update_memberships(
    previous: pd.DataFrame | None,
    current: pd.DataFrame,
    as_of: str | pd.Timestamp,
    segments: Iterable[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The membership history after one more evaluation, and the changes it brought.

    Args:
        previous: the history so far (`MEMBERSHIP_COLUMNS`), None at the first evaluation.
        current: `evaluate_segments` output as of `as_of`.
        as_of: the moment of `current`; not before any moment of `previous`.
        segments: the segments `current` evaluated (`evaluable`); open memberships of the others
            (a predicted segment skipped this time) stay open. None: every segment.

    Returns:
        memberships: `MEMBERSHIP_COLUMNS`, one row per stay; `exited_at` is NaT while open.
        changes: `CHANGE_COLUMNS`, `change` "enter" or "exit", `at` = `as_of`.
    """
    at = pd.Timestamp(as_of)
    key = ["customer_id", "segment"]
    history = _empty_memberships() if previous is None else previous[MEMBERSHIP_COLUMNS].copy()
    latest = pd.concat([history["entered_at"], history["exited_at"]]).max()
    if pd.notna(latest) and at < latest:
        raise ValueError(f"as_of {at} is before the latest change of the history ({latest})")
    is_open = history["exited_at"].isna().to_numpy()
    open_keys = pd.MultiIndex.from_frame(history.loc[is_open, key])
    now = pd.MultiIndex.from_frame(current[key].drop_duplicates())
    entered = now.difference(open_keys)
    left = open_keys.difference(now)
    if segments is not None:
        left = left[left.get_level_values("segment").isin(list(segments))]
    closing = is_open & pd.MultiIndex.from_frame(history[key]).isin(left)
    history.loc[closing, "exited_at"] = at
    new = entered.to_frame(index=False).assign(entered_at=at, exited_at=pd.NaT)
    memberships = pd.concat([history, new], ignore_index=True) if len(new) else history
    memberships = memberships.astype(
        {"entered_at": "datetime64[us]", "exited_at": "datetime64[us]"}
    )
    changes = pd.concat(
        [
            entered.to_frame(index=False).assign(change="enter"),
            left.to_frame(index=False).assign(change="exit"),
        ],
        ignore_index=True,
    ).assign(at=at)
    return (
        memberships.sort_values([*key, "entered_at"], ignore_index=True),
        changes[CHANGE_COLUMNS].sort_values(["segment", "customer_id"], ignore_index=True),
    )


def _empty_memberships() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=str),
            "segment": pd.Series(dtype=str),
            "entered_at": pd.Series(dtype="datetime64[us]"),
            "exited_at": pd.Series(dtype="datetime64[us]"),
        }
    )


# ------------------------------------------------------------------------------------ chunking
_Tables = tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None]


def _chunks(
    orders: pd.DataFrame,
    events: pd.DataFrame | None,
    customers: pd.DataFrame | None,
    as_of: pd.Timestamp,
    size: int | None,
) -> list[Callable[[], _Tables]]:
    """The tables split by customer: each chunk holds `size` customers and only their rows.

    Customers are cut in the order of their sorted ids, as `_Inputs` sorts its population, and
    rows keep their order, so every chunk evaluates its customers exactly as the whole would.
    A chunk's rows are copied only when it is asked for, one chunk at a time.
    """
    require_columns(orders, "orders", ("customer_id", "ordered_at"))
    now = _ns(pd.Series([as_of]), "as_of")[0]
    before = [_ns(orders["ordered_at"], "orders.ordered_at") < now]
    ids = [orders["customer_id"][before[0]]]
    if events is not None:
        require_columns(events, "events", ("customer_id", "occurred_at"))
        before.append(_ns(events["occurred_at"], "events.occurred_at") < now)
        ids.append(events["customer_id"][before[-1]])
    if customers is not None:
        ids.append(customers["customer_id"])
    known = pd.concat(ids, ignore_index=True).dropna().astype(str).unique()
    del ids
    if size is None or len(known) <= size:
        return [lambda: (orders, events, customers)]
    population = pd.Index(np.sort(np.asarray(known, dtype=object)))
    n_chunks = math.ceil(len(population) / size)
    frames = (orders, events, customers)
    masks = [before[0], before[1] if events is not None else None, None]
    positions: list[list[np.ndarray] | None] = []
    for frame, mask in zip(frames, masks, strict=True):
        if frame is None:
            positions.append(None)
            continue
        codes = population.get_indexer(frame["customer_id"].astype(str))
        keep = codes >= 0 if mask is None else (codes >= 0) & mask
        chunk = np.where(keep, codes // size, n_chunks)  # unknown ids, later rows: dropped
        order = np.argsort(chunk, kind="stable")
        bounds = np.searchsorted(chunk[order], np.arange(n_chunks + 1))
        positions.append([order[bounds[k] : bounds[k + 1]] for k in range(n_chunks)])

    def take(k: int) -> _Tables:
        o, e, c = (
            None if f is None or rows is None else f.iloc[rows[k]]
            for f, rows in zip(frames, positions, strict=True)
        )
        assert o is not None
        return o, e, c

    return [partial(take, k) for k in range(n_chunks)]


def _fix_top(
    definitions: list[SegmentDefinition],
    chunks: list[Callable[[], _Tables]],
    as_of: pd.Timestamp,
    predictions: pd.DataFrame | None,
) -> list[SegmentDefinition]:
    """The definitions with each `top` comparison replaced by `>=` its whole-population threshold."""
    leaves = [leaf for d in definitions for leaf in _top_leaves(d.condition)]
    if not leaves:
        return definitions
    values: list[list[np.ndarray]] = [[] for _ in leaves]
    for chunk in chunks:
        inputs = _Inputs(*chunk(), as_of, predictions)
        for parts, leaf in zip(values, leaves, strict=True):
            parts.append(_values(leaf, inputs))
    thresholds = {
        id(leaf): _top_threshold(np.concatenate(parts), leaf.value)
        for leaf, parts in zip(leaves, values, strict=True)
    }
    return [
        d.model_copy(update={"condition": _with_thresholds(d.condition, thresholds)})
        for d in definitions
    ]


_Compared = Comparison | Score | PredictionComparison


def _top_leaves(condition: Condition) -> list[_Compared]:
    if isinstance(condition, AllOf | AnyOf):
        children = condition.all if isinstance(condition, AllOf) else condition.any
        return [leaf for c in children for leaf in _top_leaves(c)]
    if isinstance(condition, NotOf):
        return _top_leaves(condition.not_)
    if isinstance(condition, _Compared) and condition.op == "top":
        return [condition]
    return []


def _with_thresholds(condition: Condition, thresholds: dict[int, float]) -> Condition:
    def leaf(node: Condition) -> Condition:
        if id(node) in thresholds:
            return node.model_copy(update={"op": ">=", "value": thresholds[id(node)]})
        return node

    return map_leaves(condition, leaf)


# ------------------------------------------------------------------------------------ evaluation
def _evaluate(condition: Condition, inputs: _Inputs) -> np.ndarray:
    """Boolean mask over `inputs.population`."""
    if isinstance(condition, AllOf):
        return np.logical_and.reduce([_evaluate(c, inputs) for c in condition.all])
    if isinstance(condition, AnyOf):
        return np.logical_or.reduce([_evaluate(c, inputs) for c in condition.any])
    if isinstance(condition, NotOf):
        return ~_evaluate(condition.not_, inputs)
    if isinstance(condition, Comparison | Score | PredictionComparison):
        return _compare(_values(condition, inputs), condition.op, condition.value)
    if isinstance(condition, EventSequence):
        return inputs.sequence(condition.sequence)
    raise TypeError(f"unknown condition {type(condition).__name__}")


def _values(condition: Comparison | Score | PredictionComparison, inputs: _Inputs) -> np.ndarray:
    """Per customer of `inputs.population`, the value a comparison compares."""
    if isinstance(condition, Comparison):
        if condition.window is None:
            return inputs.feature(condition.feature)
        return inputs.metric(condition.feature, condition.window)
    if isinstance(condition, Score):
        total = sum(w * inputs.metric(m, condition.window) for m, w in condition.sum.items())
        return np.asarray(total, dtype=float)
    return inputs.prediction(condition.prediction)


def _top_threshold(values: np.ndarray, share: float) -> float:
    """The lowest value among the top `share` of the known values (inf when none is known)."""
    ranked = np.sort(values[~np.isnan(values)])[::-1]
    if not len(ranked):
        return math.inf
    return float(ranked[max(math.ceil(share * len(ranked)), 1) - 1])


def _compare(values: np.ndarray, op: str, value: float) -> np.ndarray:
    """Where `values op value`; missing values never match."""
    known = ~np.isnan(values)
    filled = np.where(known, values, 0.0)
    if op == "top":
        return known & (filled >= _top_threshold(values, value))
    result = {
        ">": filled > value,
        ">=": filled >= value,
        "<": filled < value,
        "<=": filled <= value,
        "==": filled == value,
        "!=": filled != value,
    }[op]
    return known & result


class _Inputs:
    """The data of one evaluation, indexed once by customer code; features computed on demand."""

    def __init__(
        self,
        orders: pd.DataFrame,
        events: pd.DataFrame | None,
        customers: pd.DataFrame | None,
        as_of: pd.Timestamp,
        predictions: pd.DataFrame | None,
    ) -> None:
        require_columns(orders, "orders", ("customer_id", "quantity", "unit_price", "ordered_at"))
        self.as_of, self.now = as_of, _ns(pd.Series([as_of]), "as_of")[0]
        self._orders = orders[_ns(orders["ordered_at"], "orders.ordered_at") < self.now]
        if events is not None:
            require_columns(events, "events", ("customer_id", "type", "occurred_at"))
            events = events[_ns(events["occurred_at"], "events.occurred_at") < self.now]
        self._events = events
        self._customers = customers
        self._predictions = predictions
        ids = [self._orders["customer_id"]]
        if events is not None:
            ids.append(events["customer_id"])
        if customers is not None:
            ids.append(customers["customer_id"])
        population = pd.concat(ids, ignore_index=True).dropna().astype(str).unique()
        self.population = pd.Index(
            np.sort(np.asarray(population, dtype=object)), name="customer_id"
        )
        self.n = len(self.population)
        self.order_c = self._codes(self._orders["customer_id"])
        self.order_t = _ns(self._orders["ordered_at"], "orders.ordered_at")
        self.order_value = (self._orders["quantity"] * self._orders["unit_price"]).to_numpy(float)
        if events is None:
            self.event_c = np.zeros(0, dtype=np.int64)
            self.event_t = np.zeros(0, dtype=np.int64)
            self.event_type = np.zeros(0, dtype=object)
            self.machine = np.zeros(0, dtype=bool)
        else:
            self.event_c = self._codes(events["customer_id"])
            self.event_t = _ns(events["occurred_at"], "events.occurred_at")
            self.event_type = events["type"].astype(str).to_numpy(dtype=object)
            self.machine = machine_opens(events)
        self._features: pd.DataFrame | None = None

    def _codes(self, ids: pd.Series) -> np.ndarray:
        return np.asarray(self.population.get_indexer(ids.astype(str)), dtype=np.int64)

    def _count(self, codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        known = codes >= 0
        if weights is not None:
            weights = weights[known]
        return np.bincount(codes[known], weights=weights, minlength=self.n).astype(float)

    def metric(self, name: str, window: timedelta) -> np.ndarray:
        """Per customer, `name` over [as_of - window, as_of)."""
        start = self.now - int(window.total_seconds() * 10**9)
        if name in ("spend", "orders"):
            recent = self.order_t >= start
            if name == "spend":
                return self._count(self.order_c[recent], self.order_value[recent])
            keys = pd.DataFrame(
                {"c": self.order_c[recent], "o": self._orders["order_id"].to_numpy()[recent]}
            )
            return self._count(keys.drop_duplicates()["c"].to_numpy())
        recent = self.event_t >= start
        if name == "human_open":
            chosen = (self.event_type == "email_open") & ~self.machine
        elif name == "machine_open":
            chosen = self.machine
        else:
            chosen = self.event_type == name
        return self._count(self.event_c[recent & chosen])

    def feature(self, name: str) -> np.ndarray:
        """Per customer, a feature of `features.customers` or of `SEGMENT_FEATURES`."""
        if name == "days_since_signup":
            signed = self._customer_column("signed_up_at")
            days = (self.now - _ns(signed, "customers.signed_up_at", missing=True)) / _NS_PER_DAY
            return np.where(days >= 0, days, np.nan)
        if name == "email_consent":
            consent = self._customer_column("email_consent")
            return pd.to_numeric(consent, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return self._buyer_features()[name].to_numpy(dtype=float)

    def _customer_column(self, column: str) -> pd.Series:
        if self._customers is None or column not in self._customers.columns:
            return pd.Series(np.nan, index=self.population, dtype=object)
        table = self._customers.drop_duplicates("customer_id").set_index("customer_id")[column]
        return table.reindex(self.population)

    def _buyer_features(self) -> pd.DataFrame:
        if self._features is None:
            if len(self._orders):
                history = CustomerHistory.build(self._orders, self._events, until=self.as_of)
                features = features_at(history, self.as_of, lifetime=_NO_LIFETIME)
            else:
                features = pd.DataFrame(columns=list(FEATURE_NAMES), dtype=float)
            features = features.reindex(self.population)
            zero = [c for c in features.columns if _ZERO_WHEN_NO_ORDER.match(c)]
            features[zero] = features[zero].fillna(0.0)
            self._features = features
        return self._features

    def prediction(self, name: str) -> np.ndarray:
        """Per customer, a prediction column (NaN for customers without a prediction)."""
        assert self._predictions is not None  # `evaluable` skipped the segment otherwise
        table = self._predictions
        if "customer_id" in table.columns:
            table = table.drop_duplicates("customer_id").set_index("customer_id")
        column = table[name]
        column.index = column.index.astype(str)
        return pd.to_numeric(column.reindex(self.population), errors="coerce").to_numpy(float)

    def sequence(self, spec: SequenceSpec) -> np.ndarray:
        """Customers with at least `min_count` events A, `delay` old, followed by no B."""
        delay = int(spec.delay.total_seconds() * 10**9)
        lookback = int(spec.lookback.total_seconds() * 10**9)
        t = self.event_t
        first = (self.event_type == spec.event) & (t >= self.now - lookback)
        first &= (t <= self.now - delay) & (self.event_c >= 0)
        after = (self.event_type == spec.without) & (self.event_c >= 0)
        a = pd.DataFrame({"c": self.event_c[first], "t": t[first]})
        b = pd.DataFrame({"c": self.event_c[after], "t": t[after]})
        if spec.same_product:
            a["p"] = self._event_products(first)
            b["p"] = self._event_products(after)
        if spec.without == "purchase":  # an order line is a purchase, whatever the event feed
            lines = pd.DataFrame({"c": self.order_c, "t": self.order_t})
            if spec.same_product:
                lines["p"] = self._orders["product_id"].astype(str).to_numpy(dtype=object)
            b = pd.concat([b, lines[lines["c"] >= 0]], ignore_index=True)
        by = ["c", "p"] if spec.same_product else ["c"]
        a, b = a.dropna(subset=by), b.dropna(subset=by)
        last_b = b.groupby(by, sort=False)["t"].max().rename("last_b")
        a = a.join(last_b, on=by)
        unanswered = a[a["last_b"].isna() | (a["t"] > a["last_b"])]
        counts = unanswered.groupby(by, sort=False).size()
        codes = counts[counts >= spec.min_count].index.get_level_values("c").unique()
        mask = np.zeros(self.n, dtype=bool)
        mask[np.asarray(codes, dtype=np.int64)] = True
        return mask

    def _event_products(self, rows: np.ndarray) -> np.ndarray:
        if self._events is None:  # no events, so no event rows to look up
            return np.full(len(rows), None, dtype=object)
        products = self._events["product_id"].to_numpy(dtype=object)[rows]
        return np.asarray(pd.Series(products, dtype=object).where(pd.notna(products)))


def _ns(values: pd.Series, field: str, *, missing: bool = False) -> np.ndarray:
    """Nanoseconds since the epoch of naive UTC timestamps (NaN where missing if allowed)."""
    stamps = naive_utc(values.reset_index(drop=True), field)
    if missing:
        out = stamps.to_numpy("datetime64[ns]").astype(np.int64).astype(float)
        out[stamps.isna().to_numpy()] = np.nan
        return out
    if stamps.isna().any():
        raise ValueError(f"{field}: missing timestamps")
    return np.asarray(stamps.to_numpy("datetime64[ns]").astype(np.int64))
