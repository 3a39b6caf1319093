"""Who enters a flow: the triggers of a window of time, and the re-entry rules that filter them.

A trigger is a moment for a customer, with a key naming what caused it (an event id, an order id, a
segment entry, a date). The triggers of `[since, now)` are read from the timeline and admitted in
time order under the flow's `re_entry` rule:

- `never`: the first entry of a customer only;
- `always` / a duration D: when the customer's previous journey has ended (an exit, or its last
  step's moment) and, for D, at least D after the previous entry;
- `restart`: every trigger; it ends the journey in progress (`exit_reason` `restarted`).

A trigger no later than the customer's latest entry into the flow is ignored, which makes a
second run over the same window a no-op (idempotence) and ignores events arriving out of order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalizer.journeys.definitions import (
    ANNIVERSARY_FIELD,
    Flow,
    Trigger,
    fixed_moment,
)
from personalizer.journeys.timeline import (
    BEFORE_ALL,
    NEVER,
    SEGMENT_ENTRY,
    Stream,
    Timeline,
    seconds,
)


@dataclass(frozen=True)
class Triggers:
    """Candidate entries of one flow, sorted by customer code then time."""

    code: np.ndarray
    t: np.ndarray
    key: np.ndarray
    product: np.ndarray

    def __len__(self) -> int:
        return len(self.code)

    def take(self, rows: np.ndarray) -> Triggers:
        """The selected rows."""
        return Triggers(self.code[rows], self.t[rows], self.key[rows], self.product[rows])

    @classmethod
    def none(cls) -> Triggers:
        """No trigger."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), _nones(0), _nones(0))

    @classmethod
    def of(cls, code: np.ndarray, t: np.ndarray, key: np.ndarray, product: np.ndarray) -> Triggers:
        """Rows in a deterministic order, sorted by (code, t); of rows with the same customer and
        moment (the lines of one order, say) the first is kept."""
        order = np.lexsort((t, code))
        code, t, key, product = code[order], t[order], key[order], product[order]
        first = np.ones(len(code), dtype=bool)
        first[1:] = (code[1:] != code[:-1]) | (t[1:] != t[:-1])
        return cls(code[first], t[first], key[first], product[first])


def triggers(flow: Flow, timeline: Timeline, since: int, now: int) -> Triggers:
    """The triggers of `flow` at moments in `[since, now)`."""
    trigger = flow.trigger
    if trigger.kind == "event":
        assert trigger.event is not None
        return _events(timeline, timeline.stream(trigger.event), trigger, since, now)
    if trigger.kind == "segment_entry":
        stream = timeline.stream(SEGMENT_ENTRY + str(trigger.segment_entry))
        rows = stream.between(since, now)
        keys = np.asarray([f"{trigger.segment_entry}@{t}" for t in stream.t[rows]], dtype=object)
        return Triggers.of(stream.code[rows], stream.t[rows], keys, stream.product[rows])
    assert trigger.date is not None
    if trigger.date == ANNIVERSARY_FIELD:
        return _anniversaries(timeline, since, now)
    moment = int(seconds([fixed_moment(trigger.date)])[0])
    if not since <= moment < now:
        return Triggers.none()
    signed = timeline.customers.signed_up
    codes = np.flatnonzero(signed <= moment)  # customers already there (unknown: BEFORE_ALL)
    keys = np.full(len(codes), f"date:{trigger.date}", dtype=object)
    return Triggers.of(codes, np.full(len(codes), moment, np.int64), keys, _nones(len(codes)))


def _events(timeline: Timeline, stream: Stream, trigger: Trigger, since: int, now: int) -> Triggers:
    rows = stream.between(since, now)
    if not len(rows):
        return Triggers.none()
    product = stream.product[rows]
    keep = np.ones(len(rows), dtype=bool)
    if trigger.product_id is not None:
        keep &= product == trigger.product_id
    if trigger.category is not None:
        wanted = trigger.category
        keep &= np.asarray([timeline.categories.get(p) == wanted for p in product], dtype=bool)
    rows = rows[keep]
    # one trigger per order: the lines of an order share its moment, and `of` keeps the first
    return Triggers.of(stream.code[rows], stream.t[rows], stream.key[rows], stream.product[rows])


def _anniversaries(timeline: Timeline, since: int, now: int) -> Triggers:
    signed = timeline.customers.signed_up
    known = np.flatnonzero(signed > BEFORE_ALL)
    if not len(known):
        return Triggers.none()
    stamps = pd.to_datetime(signed[known], unit="s")
    first, last = pd.Timestamp(since, unit="s").year, pd.Timestamp(now, unit="s").year
    parts = []
    for year in range(first, last + 1):
        # Feb 29 falls on Feb 28 in other years
        day = np.where((stamps.month == 2) & (stamps.day == 29), 28, stamps.day)
        moment = pd.to_datetime(pd.DataFrame({"year": year, "month": stamps.month, "day": day})) + (
            stamps - stamps.normalize()
        )
        t = seconds(pd.Series(moment))
        hit = (year > stamps.year) & (t >= since) & (t < now)
        parts.append((known[hit], t[hit], year))
    code = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    keys = np.concatenate([np.full(len(p[0]), f"anniversary:{p[2]}", dtype=object) for p in parts])
    return Triggers.of(code, t, keys, _nones(len(code)))


def _nones(n: int) -> np.ndarray:
    return np.full(n, None, dtype=object)


@dataclass(frozen=True)
class FlowExits:
    """When journeys of one flow end: an exit stream's first event after the entry, else the
    last step's moment. Only what happened before `now` is looked at.

    Attributes:
        streams: (stream, reason) of each exit, `unsubscribe` included.
        last_offset: seconds from the entry to the last step.
        now: the run's moment.
    """

    streams: list[tuple[Stream, str]]
    last_offset: int
    now: int

    def find(self, codes: np.ndarray, entered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per journey, the first exit moment (NEVER for none) and its reason (None)."""
        bound = np.minimum(entered + self.last_offset + 1, self.now)
        exit_at = np.full(len(codes), NEVER, dtype=np.int64)
        reason = np.full(len(codes), None, dtype=object)
        for stream, why in self.streams:
            found = stream.first_in(codes, entered, bound)
            earlier = found < exit_at
            exit_at[earlier] = found[earlier]
            reason[earlier] = why
        return exit_at, reason


@dataclass(frozen=True)
class Admitted:
    """Triggers that start journeys, with each journey's exit moment and reason so far."""

    triggers: Triggers
    exit_at: np.ndarray
    reason: np.ndarray


def admit(
    flow: Flow,
    found: Triggers,
    last_entered: np.ndarray,
    last_end: np.ndarray,
    exits: FlowExits,
) -> Admitted:
    """The triggers that start a journey under the flow's `re_entry` rule.

    Args:
        flow: the flow.
        found: its triggers in the window.
        last_entered: per customer code, the latest entry into the flow (updated here).
        last_end: per customer code, when the latest journey ends (updated here).
        exits: when a journey admitted here ends.

    Returns:
        The admitted triggers, sorted by code and time, with their exits.
    """
    fresh = found.take(found.t > last_entered[found.code])
    if flow.re_entry == "restart":
        return _record(fresh, last_entered, last_end, exits)
    if flow.re_entry == "never":
        first = np.ones(len(fresh), dtype=bool)
        first[1:] = fresh.code[1:] != fresh.code[:-1]
        first &= last_entered[fresh.code] == BEFORE_ALL
        return _record(fresh.take(first), last_entered, last_end, exits)
    gap = flow.re_entry_after
    assert gap is not None
    wait = int(gap.total_seconds())
    parts: list[Admitted] = []
    pending = fresh
    while len(pending):
        codes = pending.code
        ok = (pending.t >= last_entered[codes] + wait) & (pending.t >= last_end[codes])
        if not ok.any():
            break
        rows = np.flatnonzero(ok)
        _, firsts = np.unique(codes[rows], return_index=True)
        chosen = rows[firsts]
        parts.append(_record(pending.take(chosen), last_entered, last_end, exits))
        # the rest is weighed against the journeys just started; a customer with no admissible
        # trigger this round has none at all (nothing changed for them)
        since = np.full(len(last_entered), NEVER, dtype=np.int64)
        since[codes[chosen]] = pending.t[chosen]
        pending = pending.take(pending.t > since[codes])
    if not parts:
        return _record(fresh.take(np.zeros(len(fresh), dtype=bool)), last_entered, last_end, exits)
    return _merge(parts)


def _merge(parts: list[Admitted]) -> Admitted:
    code = np.concatenate([p.triggers.code for p in parts])
    t = np.concatenate([p.triggers.t for p in parts])
    order = np.lexsort((t, code))

    def cat(values: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(values)[order]

    return Admitted(
        Triggers(
            code[order],
            t[order],
            cat([p.triggers.key for p in parts]),
            cat([p.triggers.product for p in parts]),
        ),
        cat([p.exit_at for p in parts]),
        cat([p.reason for p in parts]),
    )


def _record(
    admitted: Triggers, last_entered: np.ndarray, last_end: np.ndarray, exits: FlowExits
) -> Admitted:
    exit_at, reason = exits.find(admitted.code, admitted.t)
    ends = np.minimum(exit_at, admitted.t + exits.last_offset)
    # several entries of one customer (restart): each journey ends where the next begins
    nxt = np.full(len(admitted), NEVER, dtype=np.int64)
    same = admitted.code[1:] == admitted.code[:-1]
    nxt[:-1][same] = admitted.t[1:][same]
    restarted = nxt < ends
    exit_at = np.where(restarted, nxt, exit_at)
    reason = np.where(restarted, "restarted", reason).astype(object)
    ends = np.minimum(ends, nxt)
    last = np.ones(len(admitted), dtype=bool)
    last[:-1] = ~same
    last_entered[admitted.code[last]] = admitted.t[last]
    last_end[admitted.code[last]] = ends[last]
    return Admitted(admitted, exit_at, reason)
