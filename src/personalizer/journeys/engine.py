"""The journey engine: one call advances every journey of every flow to a moment.

`Engine.advance(state, since, now)` does, in this order:

1. **exits**: a journey in progress whose customer did an exit event (or unsubscribed) after the
   entry and before `now` ends there (`exit_reason` the event type, `segment_exit:<name>`,
   `unsubscribe`);
2. **entries**: the triggers of `[since, now)` start journeys under each flow's `re_entry` rule
   (`entries.py`); held-out customers enter too, marked `holdout`;
3. **steps**: every step whose moment (entry + waits) has come (`<= now`) and that no exit
   preceded is decided, first check first: `unsubscribed` (an unsubscribe not followed by a new
   signup), `no_consent` (customers.email_consent false), `condition` (the step's condition failed
   at its moment), `late` (decided more than the step's `max_lateness` after its moment: a
   scheduler that missed runs catches up, but a cart reminder a week late is not sent),
   `holdout` (would have been sent), `capped` (frequency caps, `caps.py`), else `queued` with its
   send moment (`send_time.py`) and `decision_id`.

Only what happened before `now` is read, and a step's condition only what happened before its
moment, so catching up after missed runs decides as the runs would have (except for lateness).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from personalizer.decisions.decider import make_decision_id
from personalizer.experiments import in_holdout
from personalizer.journeys.caps import FrequencyCaps
from personalizer.journeys.definitions import ORDER, Condition, Flow, FlowSet
from personalizer.journeys.entries import FlowExits, admit, triggers
from personalizer.journeys.send_time import send_moments
from personalizer.journeys.state import Journeys, JourneyState, concat, journey_id
from personalizer.journeys.timeline import (
    NEVER,
    SEGMENT_ENTRY,
    SEGMENT_EXIT,
    Timeline,
    to_timestamps,
)

QUEUED = "queued"
SUPPRESSIONS = ("unsubscribed", "no_consent", "condition", "late", "holdout", "capped")
OUTCOMES = (QUEUED, *SUPPRESSIONS)
UNSUBSCRIBE, SIGNUP = "unsubscribe", "signup"
QUEUE_COLUMNS = ["customer_id", "flow", "step", "template", "send_at", "decision_id"]
_EPOCH = datetime(1970, 1, 1)
_NO_JOURNEYS = Journeys.empty()


@dataclass
class Decided:
    """Steps decided, as parallel arrays (one row per journey step)."""

    jid: np.ndarray
    code: np.ndarray
    flow: np.ndarray
    step: np.ndarray
    due: np.ndarray
    outcome: np.ndarray
    send_at: np.ndarray  # NEVER unless queued
    decision_id: np.ndarray
    key: np.ndarray
    product: np.ndarray
    run_at: np.ndarray

    def __len__(self) -> int:
        return len(self.code)

    @classmethod
    def concat(cls, parts: list[Decided]) -> Decided:
        """Several tables as one (an empty one for none)."""
        if not parts:
            ints, objs = np.zeros(0, np.int64), np.zeros(0, object)
            return cls(objs, ints, ints, ints, ints, objs, ints, objs, objs, objs, ints)
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )


class Engine:
    """Advances the journeys of `flows` over `timeline` (see the module docstring)."""

    def __init__(self, flows: FlowSet, timeline: Timeline) -> None:
        self.flow_set = flows
        self.flows: list[Flow] = flows.enabled
        self.timeline = timeline
        self.names = [f.name for f in self.flows]
        self.n_steps = np.asarray([len(f.steps) for f in self.flows], dtype=np.int64)
        width = int(self.n_steps.max(initial=0)) + 1
        self.offsets = np.full((len(self.flows), width), NEVER, dtype=np.int64)
        for i, flow in enumerate(self.flows):
            self.offsets[i, : len(flow.steps)] = [int(o.total_seconds()) for o in flow.offsets]
        self.last_offset = self.offsets[np.arange(len(self.flows)), self.n_steps - 1]
        self.customer_ids = np.asarray(timeline.customers.ids, dtype=object)
        self._holdout: dict[tuple[int, int], bool] = {}

    def new_state(self) -> JourneyState:
        """An empty state for this engine's flows and timeline."""
        return JourneyState.fresh(len(self.flows), len(self.timeline.customers))

    def advance(
        self, state: JourneyState, since: int, now: int, *, incremental: bool = False
    ) -> tuple[Decided, dict[str, int]]:
        """Advance every journey to `now` (seconds); triggers of `[since, now)` enter.

        Args:
            state: the journeys so far; updated in place.
            since: triggers from this moment on are read.
            now: the moment of the run.
            incremental: nothing before `since` is new (a replay ticking through history):
                only exit events from `since` on are looked for.

        Returns:
            The steps decided, and the entries per flow.
        """
        self._exits(state, since if incremental else None, now)
        new = [self._enter(state, i, since, now) for i in range(len(self.flows))]
        state.active = concat([state.active, *new])
        decided = self._steps(state, now)
        state.compact(force=not incremental)
        state.last_run = now
        return decided, {name: len(j) for name, j in zip(self.names, new, strict=True)}

    # ------------------------------------------------------------------------------ exits
    def _flow_exits(self, i: int, now: int) -> FlowExits:
        streams = [
            (self.timeline.stream(e.event or SEGMENT_EXIT + str(e.segment_exit)), e.reason)
            for e in self.flows[i].exit
        ]
        streams.append((self.timeline.stream(UNSUBSCRIBE), UNSUBSCRIBE))
        return FlowExits(streams, int(self.last_offset[i]), now)

    def _exits(self, state: JourneyState, since: int | None, now: int) -> None:
        """Exits of the journeys in progress; with `since`, only exit events from `since` on
        are new (a replay, where nothing arrives late)."""
        a = state.active
        going = (a.exit_at == NEVER) & (a.next_due < NEVER)
        for i in range(len(self.flows)):
            exits = self._flow_exits(i, now)
            candidates = going & (a.flow == i)
            if since is not None:
                recent = np.zeros(len(self.customer_ids), dtype=bool)
                for stream, _ in exits.streams:
                    recent[stream.code[stream.between(since, now)]] = True
                candidates &= recent[a.code]
            rows = np.flatnonzero(candidates)
            if not len(rows):
                continue
            exit_at, reason = exits.find(a.code[rows], a.entered[rows])
            hit = exit_at < NEVER
            rows, exit_at = rows[hit], exit_at[hit]
            a.exit_at[rows], a.exit_reason[rows], a.dirty[rows] = exit_at, reason[hit], True
            state.last_end[i, a.code[rows]] = exit_at

    # ---------------------------------------------------------------------------- entries
    def _enter(self, state: JourneyState, i: int, since: int, now: int) -> Journeys:
        """The journeys of flow `i` that the triggers of `[since, now)` start."""
        flow = self.flows[i]
        found = triggers(flow, self.timeline, since, now)
        if not len(found):
            return _NO_JOURNEYS
        new = admit(flow, found, state.last_entered[i], state.last_end[i], self._flow_exits(i, now))
        t = new.triggers
        if not len(t):
            return _NO_JOURNEYS
        if flow.re_entry == "restart":
            self._restart(state, i, t.code, t.t)
        ids = self.customer_ids[t.code]
        jids = [
            journey_id(flow.name, c, k, e) for c, k, e in zip(ids, t.key, t.t.tolist(), strict=True)
        ]
        held = np.asarray(
            [self._held_out(i, int(c), str(cid)) for c, cid in zip(t.code, ids, strict=True)]
        )
        journeys = Journeys.create(
            t.code,
            np.full(len(t), i),
            t.t,
            t.t + self.offsets[i, 0],
            held,
            t.key,
            t.product,
            np.asarray(jids, dtype=object),
        )
        journeys.exit_at[:], journeys.exit_reason[:] = new.exit_at, new.reason
        return journeys

    def _restart(self, state: JourneyState, i: int, codes: np.ndarray, t: np.ndarray) -> None:
        """The journeys in progress of customers entering again end at the new entry."""
        a = state.active
        first = np.full(len(self.customer_ids), NEVER, dtype=np.int64)
        np.minimum.at(first, codes, t)  # each customer's first new entry
        at = first[a.code]
        rows = np.flatnonzero(
            (a.flow == i) & (a.next_due < NEVER) & (a.entered < at) & (a.exit_at > at)
        )
        a.exit_at[rows], a.exit_reason[rows], a.dirty[rows] = at[rows], "restarted", True

    def _held_out(self, i: int, code: int, customer_id: str) -> bool:
        key = (i, code)
        if key not in self._holdout:
            share, own = self.flow_set.holdout, self.flows[i].holdout
            self._holdout[key] = bool(
                (share > 0 and in_holdout(customer_id, share, "global"))
                or (own > 0 and in_holdout(customer_id, own, self.flows[i].name))
            )
        return self._holdout[key]

    # ------------------------------------------------------------------------------ steps
    def _steps(self, state: JourneyState, now: int) -> Decided:
        caps = FrequencyCaps(self.flow_set.caps, state.sends, self.timeline.customers.zone)
        parts = []
        a = state.active
        while True:
            # a step is due when its moment has come, unless an exit came first
            ready = np.flatnonzero((a.next_due <= now) & (a.exit_at > a.next_due))
            if not len(ready):
                break
            parts.append(self._decide(a, ready, a.next_due[ready], now, caps))
            step = a.next_step[ready] + 1
            a.next_step[ready] = step
            a.next_due[ready] = a.entered[ready] + self.offsets[a.flow[ready], step]
            a.dirty[ready] = True
        return Decided.concat(parts)

    def _decide(
        self, a: Journeys, rows: np.ndarray, due: np.ndarray, now: int, caps: FrequencyCaps
    ) -> Decided:
        """Decide the due steps of journeys `rows`: why not sent, or queued when."""
        codes, flow, step = a.code[rows], a.flow[rows], a.next_step[rows]
        outcome = self._suppressions(a, rows, due, now)
        send_at, ids = self._queue(codes, flow, step, outcome, now, caps)
        return Decided(
            a.jid[rows],
            codes,
            flow,
            step,
            due,
            outcome,
            send_at,
            ids,
            a.key[rows],
            a.product[rows],
            np.full(len(rows), now, dtype=np.int64),
        )

    def _suppressions(self, a: Journeys, rows: np.ndarray, due: np.ndarray, now: int) -> np.ndarray:
        """The first reason (in `SUPPRESSIONS` order, caps aside) not to send, None for none."""
        tl, codes, flow, step = self.timeline, a.code[rows], a.flow[rows], a.next_step[rows]
        outcome = np.full(len(rows), None, dtype=object)

        def mark(mask: np.ndarray, why: str) -> None:
            outcome[mask & pd.isna(outcome)] = why

        resubscribed = tl.stream(SIGNUP).last_before(codes, now)
        mark(tl.stream(UNSUBSCRIBE).last_before(codes, now) > resubscribed, "unsubscribed")
        mark(~tl.customers.consent[codes], "no_consent")
        failed = np.zeros(len(rows), dtype=bool)
        late = np.zeros(len(rows), dtype=bool)
        for i, k in sorted({(int(f), int(s)) for f, s in zip(flow, step, strict=True)}):
            group = np.flatnonzero((flow == i) & (step == k))
            conditions = self.flows[i].steps[k].condition
            if conditions:
                ok = self._conditions(conditions, codes[group], a.entered[rows[group]], due[group])
                failed[group[~ok]] = True
            allowed = int(self.flows[i].lateness(k).total_seconds())
            late[group] = now - due[group] > allowed
        mark(failed, "condition")
        mark(late, "late")
        mark(a.holdout[rows], "holdout")
        return outcome

    def _queue(
        self,
        codes: np.ndarray,
        flow: np.ndarray,
        step: np.ndarray,
        outcome: np.ndarray,
        now: int,
        caps: FrequencyCaps,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Send moments and caps for the steps not suppressed; `outcome` gets queued or capped.

        Returns:
            The send moments (NEVER unless queued) and decision ids (None unless queued).
        """
        send_at = np.full(len(codes), NEVER, dtype=np.int64)
        ids = np.full(len(codes), None, dtype=object)
        free = np.flatnonzero(pd.isna(outcome))
        for i, k in sorted({(int(flow[j]), int(step[j])) for j in free}):
            group = free[(flow[free] == i) & (step[free] == k)]
            spec = self.flows[i].steps[k]
            send_at[group] = send_moments(
                self.timeline.customers,
                codes[group],
                np.full(len(group), now, dtype=np.int64),
                model=spec.send_time == "model",
                within=spec.send_within,
            )
        priority = np.asarray([self.flows[i].priority for i in flow[free]], dtype=np.int64)
        order = flow[free] * 1000 + step[free]
        admitted = caps.admit(codes[free], send_at[free], priority, order)
        outcome[free[~admitted]] = "capped"
        outcome[free[admitted]] = QUEUED
        for j in free[admitted]:
            i, k = int(flow[j]), int(step[j])
            campaign = f"{self.names[i]}.{self.flows[i].step_names[k]}"
            moment = _EPOCH + timedelta(seconds=int(send_at[j]))
            template = self.flows[i].steps[k].template
            ids[j] = make_decision_id(str(self.customer_ids[codes[j]]), campaign, template, moment)
        send_at[outcome != QUEUED] = NEVER
        return send_at, ids

    def _conditions(
        self, conditions: list[Condition], codes: np.ndarray, entered: np.ndarray, due: np.ndarray
    ) -> np.ndarray:
        tl = self.timeline
        ok = np.ones(len(codes), dtype=bool)
        for c in conditions:
            if c.did is not None or c.did_not is not None:
                stream = tl.stream(str(c.did or c.did_not))
                happened = stream.first_in(codes, entered, due) < NEVER
                ok &= happened if c.did is not None else ~happened
            else:
                name = str(c.in_segment or c.not_in_segment)
                entry = tl.stream(SEGMENT_ENTRY + name).last_before(codes, due + 1)
                leave = tl.stream(SEGMENT_EXIT + name).last_before(codes, due + 1)
                member = entry > leave
                ok &= member if c.in_segment is not None else ~member
        return ok

    # ----------------------------------------------------------------------------- output
    def exits(self, journeys: Journeys) -> dict[tuple[str, str], int]:
        """Journeys that ended early, per flow and exit reason."""
        out: dict[tuple[str, str], int] = {}
        ended = journeys.exit_at < NEVER
        for f, reason in zip(journeys.flow[ended], journeys.exit_reason[ended], strict=True):
            key = (self.names[int(f)], str(reason))
            out[key] = out.get(key, 0) + 1
        return out

    def decisions_frame(self, decided: Decided) -> pd.DataFrame:
        """The decided steps as a table: the queue contract's columns, then outcome and more."""
        steps = [f.step_names for f in self.flows]
        templates = [[s.template for s in f.steps] for f in self.flows]
        flow, step = decided.flow.tolist(), decided.step.tolist()
        sent = decided.send_at < NEVER
        send_at = to_timestamps(np.where(sent, decided.send_at, 0))
        send_at[~sent] = pd.NaT
        params = [
            self._params(i, k, key, product)
            for i, k, key, product in zip(flow, step, decided.key, decided.product, strict=True)
        ]
        return pd.DataFrame(
            {
                "customer_id": self.customer_ids[decided.code],
                "flow": [self.names[i] for i in flow],
                "step": [steps[i][k] for i, k in zip(flow, step, strict=True)],
                "template": [templates[i][k] for i, k in zip(flow, step, strict=True)],
                "send_at": send_at,
                "decision_id": decided.decision_id,
                "params": params,
                "outcome": decided.outcome,
                "due_at": to_timestamps(decided.due),
                "journey_id": decided.jid,
                "step_index": decided.step,
                "priority": [self.flows[i].priority for i in flow],
                "decided_at": to_timestamps(decided.run_at),
            }
        )

    def _params(self, i: int, k: int, key: object, product: object) -> str:
        params: dict[str, object] = dict(self.flows[i].steps[k].params)
        if product is not None:
            params["product_id"] = product
        if self.flows[i].trigger.event == ORDER and key is not None:
            params["order_id"] = key
        return json.dumps(params, sort_keys=True)
