"""Replay: the flows run over a historical event log, to see what they would have sent, day by day.

The warehouse's history is loaded once and the engine ticks through it (`every`, default an hour)
with a fresh state in memory, never the live queue. At each tick only what happened before the
tick is visible (every query of the engine is bounded by its `now`), so nothing peeks into the
future. The replay starts `warmup` (the longest flow) before `start`, so that journeys in progress
at `start` are there, and reports from `start` on.

Consent, from the customers table as it is today, can be read three ways:

- `historical` (default): a customer who unsubscribed consented until then (today's flag is false
  because of the unsubscribe; unsubscribes themselves are honoured when they happen);
- `recorded`: today's flag as it is;
- `all`: everyone consents: a what-if for order-only data (Online Retail), whose inferred customers
  carry no consent at all.

The send-time champion was fitted on the whole history, so a replay uses the default hour unless
`send_time_model` is set. Segment triggers and conditions read memberships evaluated every
`segment_every` over the history (`segments.batch`), which is slow: the shipped flows use none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd

from personalizer.config import Settings
from personalizer.journeys.activity import Activity, load_activity, needs
from personalizer.journeys.caps import busiest_window, prune_sends
from personalizer.journeys.definitions import FlowSet, default_flows
from personalizer.journeys.engine import OUTCOMES, QUEUED, Decided, Engine
from personalizer.journeys.timeline import Timeline, seconds

log = logging.getLogger(__name__)

Consent = Literal["historical", "recorded", "all"]
WEEK = 7 * 86_400
FAR_FUTURE = pd.Timestamp("2500-01-01")


@dataclass(frozen=True)
class ReplayResult:
    """What the flows would have done.

    Attributes:
        start, end: the span reported.
        decided: every step decided from `start` on (`Engine.decisions_frame`, plus `day`).
        daily: per `day` and `flow`: `entered` and one column per outcome. The day is the send's
            (UTC) for queued emails, the decision's for the others.
        entered: journeys started per flow from `start` on.
        max_per_week: the most emails one customer got in any rolling 7 days.
        max_per_day: the most emails one customer got on one day of their time zone.
        ticks: engine runs.
        seconds: wall time.
    """

    start: pd.Timestamp
    end: pd.Timestamp
    decided: pd.DataFrame
    daily: pd.DataFrame
    entered: dict[str, int]
    max_per_week: int
    max_per_day: int
    ticks: int
    seconds: float

    def totals(self) -> pd.DataFrame:
        """Per flow: journeys entered and steps per outcome over the whole span."""
        table = self.daily.groupby("flow")[["entered", *OUTCOMES]].sum()
        return table.astype(int).reset_index()


def replay(
    settings: Settings,
    flows: FlowSet | None = None,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    every: timedelta = timedelta(hours=1),
    consent: Consent = "historical",
    warmup: timedelta | None = None,
    send_time_model: bool = False,
    segment_every: timedelta = timedelta(days=1),
    progress: bool = False,
) -> ReplayResult:
    """Replay the flows over the warehouse's history (see the module docstring).

    Args:
        settings: the data home whose warehouse is replayed (nothing is written to it).
        flows: the flows (default: the shipped ones).
        start, end: the span reported (default: the first and last day with activity).
        every: time between two ticks of the engine (the scheduler's period).
        consent: how consent is read (`historical`, `recorded`, `all`).
        warmup: how long before `start` the engine starts (default: the longest flow).
        send_time_model: use the send-time champion's hours.
        segment_every: how often segment memberships are evaluated, for flows naming segments.
        progress: show a progress bar over the ticks.
    """
    began = time.perf_counter()
    flows = flows or default_flows()
    if every <= timedelta(0):
        raise ValueError(f"every: must be positive, got {every}")
    activity = load_activity(
        settings, flows, None, end or FAR_FUTURE, send_time_model=send_time_model
    )
    first, last = _span(activity)
    if first is None or last is None:
        raise ValueError(f"nothing to replay: the warehouse of {settings.home} holds no activity")
    start = start if start is not None else first.floor("D")
    end = end if end is not None else last.floor("D") + pd.Timedelta(days=1)
    if end <= start:
        raise ValueError(f"end {end} is not after start {start}")
    _, segments, _, _ = needs(flows)
    if segments:
        changes = _segment_history(settings, segments, start, end, segment_every)
        activity = replace(activity, changes=changes)
    timeline = _with_consent(activity.timeline(), consent)
    engine = Engine(flows, timeline)
    state = engine.new_state()
    begin = max(start - (warmup if warmup is not None else flows.horizon), first.floor("D"))
    step = int(every.total_seconds())
    t_begin, t_start, t_end = (int(x) for x in seconds([begin, start, end]))
    ticks = [*range(t_begin + step, t_end, step), t_end]
    parts: list[Decided] = []
    entered: dict[tuple[pd.Timestamp, str], int] = {}
    since = t_begin
    for now in _shown(ticks, progress):
        decided, new = engine.advance(state, since, now, incremental=True)
        if now > t_start:
            day = pd.Timestamp(now - 1, unit="s").floor("D")
            for name, n in new.items():
                entered[(day, name)] = entered.get((day, name), 0) + n
        if len(decided):
            parts.append(decided)
        if now // 86_400 != since // 86_400:
            prune_sends(state.sends, now)
            state.closed.clear()  # nothing is saved: closed journeys are not needed
        since = now
    frame = engine.decisions_frame(Decided.concat(parts))
    frame = frame[frame["decided_at"] > start].reset_index(drop=True)
    result = _result(frame, timeline, entered, start, end, len(ticks), began)
    log.info("replay %s → %s: %d ticks in %.1f s", start, end, len(ticks), result.seconds)
    return result


def _shown(ticks: list[int], progress: bool) -> Iterator[int]:
    """The ticks, with a progress bar (advanced once a day of ticks) when asked."""
    if not progress:
        yield from ticks
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(f"replaying {len(ticks):,} runs", total=len(ticks))
        for k, now in enumerate(ticks, 1):
            yield now
            if k % 24 == 0 or k == len(ticks):
                bar.update(task, completed=k)


def _span(activity: Activity) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    moments = [activity.orders["ordered_at"], activity.events["occurred_at"]]
    known = pd.concat([m for m in moments if len(m)]) if any(len(m) for m in moments) else None
    if known is None or known.empty:
        return None, None
    return pd.Timestamp(known.min()), pd.Timestamp(known.max())


def _with_consent(timeline: Timeline, consent: Consent) -> Timeline:
    people = timeline.customers
    if consent == "recorded":
        return timeline
    if consent == "all":
        allowed = np.ones(len(people), dtype=bool)
    else:
        unsubscribed = timeline.stream("unsubscribe")
        allowed = people.consent.copy()
        allowed[np.unique(unsubscribed.code)] = True
    return replace(timeline, customers=replace(people, consent=allowed))


def _segment_history(
    settings: Settings, names: set[str], start: pd.Timestamp, end: pd.Timestamp, every: timedelta
) -> pd.DataFrame:
    """Enter/exit records of the named segments, evaluated every `every` from `start` to `end`."""
    from personalizer.data.warehouse import Warehouse
    from personalizer.segments.batch import evaluable, evaluate_warehouse, update_memberships
    from personalizer.segments.definitions import default_segments

    definitions, _ = evaluable([d for d in default_segments() if d.name in names], None)
    history, parts = None, []
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        for at in pd.date_range(start, end, freq=every):
            members = evaluate_warehouse(wh, definitions, at)
            history, changes = update_memberships(
                history, members, at, [d.name for d in definitions]
            )
            parts.append(changes)
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["customer_id", "segment", "change", "at"])
    )


def _result(
    frame: pd.DataFrame,
    timeline: Timeline,
    entered: dict[tuple[pd.Timestamp, str], int],
    start: pd.Timestamp,
    end: pd.Timestamp,
    ticks: int,
    began: float,
) -> ReplayResult:
    queued = frame["outcome"].to_numpy() == QUEUED
    moment = frame["send_at"].where(queued, frame["decided_at"])
    frame = frame.assign(day=moment.dt.floor("D"))
    daily = frame.groupby(["day", "flow", "outcome"]).size().unstack("outcome", fill_value=0)
    daily = daily.reindex(columns=list(OUTCOMES), fill_value=0)
    entries = pd.Series(entered, dtype=int)
    if len(entries):
        entries.index = entries.index.set_names(["day", "flow"])
        daily = daily.join(entries.rename("entered"), how="outer")
    else:
        daily["entered"] = 0
    daily = daily.fillna(0).astype(int).reset_index()
    daily = daily[["day", "flow", "entered", *OUTCOMES]].sort_values(["day", "flow"])
    totals = {f: int(n) for f, n in daily.groupby("flow")["entered"].sum().items()}
    sent = frame[queued]
    moments = seconds(sent["send_at"]) if len(sent) else np.zeros(0, np.int64)
    per_week = busiest_window(sent["customer_id"].to_numpy(), moments, WEEK)
    per_day = _busiest_local_day(sent, timeline)
    return ReplayResult(
        start,
        end,
        frame,
        daily.reset_index(drop=True),
        totals,
        per_week,
        per_day,
        ticks,
        time.perf_counter() - began,
    )


def _busiest_local_day(sent: pd.DataFrame, timeline: Timeline) -> int:
    if sent.empty:
        return 0
    codes = timeline.customers.codes(sent["customer_id"])
    zones = pd.Series(timeline.customers.zone[codes], index=sent.index)
    days = pd.Series(index=sent.index, dtype=object)
    for zone, rows in zones.groupby(zones).groups.items():
        local = sent.loc[rows, "send_at"].dt.tz_localize("UTC").dt.tz_convert(str(zone))
        days.loc[rows] = local.dt.date
    return int(sent.assign(local_day=days).groupby(["customer_id", "local_day"]).size().max())
