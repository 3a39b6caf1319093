"""One scheduled run: read what happened, advance every journey, append the due sends to the queue.

`run_journeys(settings, now)` is what `personalizer journeys run --now T` calls every few minutes:

- the triggers read are those from the previous run's moment minus `late_arrival` (events that
  reach the warehouse or the event store late still start journeys) up to `now`; the first run
  looks back over the longest flow (its lateness included);
- a run at the same `now` again queues nothing (every step is decided once: unique per journey
  and step; a trigger no later than the latest entry is ignored); a run at a later `now` catches
  up every step due in between, dropping those later than their `max_lateness` (`late`);
- a `now` before the latest run's is refused: the state has moved past it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

import pandas as pd

from personalizer.config import Settings
from personalizer.journeys.activity import load_activity
from personalizer.journeys.definitions import FlowSet, default_flows
from personalizer.journeys.engine import OUTCOMES, QUEUE_COLUMNS, QUEUED, Engine
from personalizer.journeys.queue import JourneyStore, store_path
from personalizer.journeys.timeline import seconds

log = logging.getLogger(__name__)

LATE_ARRIVAL = timedelta(days=1)


@dataclass(frozen=True)
class RunSummary:
    """What one run did.

    Attributes:
        now: the run's moment.
        since: triggers from this moment on were read.
        decided: the steps decided (`Engine.decisions_frame`): queued ones and suppressed ones.
        entered: journeys started, per flow.
        exited: journeys that ended early in this run, per flow and reason.
        seconds: wall time.
    """

    now: pd.Timestamp
    since: pd.Timestamp
    decided: pd.DataFrame
    entered: dict[str, int] = field(default_factory=dict)
    exited: dict[tuple[str, str], int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def queued(self) -> pd.DataFrame:
        """The rows queued by this run: `QUEUE_COLUMNS` then `params`."""
        rows = self.decided[self.decided["outcome"] == QUEUED]
        return rows[[*QUEUE_COLUMNS, "params"]].reset_index(drop=True)

    def table(self) -> pd.DataFrame:
        """Per flow and step: emails queued and each suppression reason."""
        return outcome_table(self.decided)


def outcome_table(decided: pd.DataFrame) -> pd.DataFrame:
    """Steps decided per flow and step, one column per outcome (`OUTCOMES`)."""
    counts = (
        decided.groupby(["flow", "step", "outcome"]).size().unstack("outcome", fill_value=0)
        if len(decided)
        else pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["flow", "step"]))
    )
    counts = counts.reindex(columns=list(OUTCOMES), fill_value=0).astype(int)
    return counts.reset_index()


def run_journeys(
    settings: Settings,
    now: pd.Timestamp,
    flows: FlowSet | None = None,
    *,
    late_arrival: timedelta = LATE_ARRIVAL,
    send_time_model: bool = True,
) -> RunSummary:
    """Advance every journey to `now` and append the due sends to the queue (see the module).

    Args:
        settings: the data home (warehouse, event store, segments, models, journey store).
        now: the run's moment (naive UTC).
        flows: the flows (default: the shipped ones).
        late_arrival: how far before the previous run triggers are read again.
        send_time_model: use the send-time champion for `send_time: model` steps.

    Raises:
        ValueError: `now` is before the latest run.
    """
    started = time.perf_counter()
    flows = flows or default_flows()
    with JourneyStore(store_path(settings)) as store, store.locked():
        last = store.last_run()
        if last is not None and now < last:
            raise ValueError(
                f"--now {now} is before the latest run ({last}): journeys only move forward"
            )
        since = now - flows.horizon if last is None else last - late_arrival
        oldest = store.oldest_active()
        start = since if oldest is None else min(since, oldest)
        activity = load_activity(settings, flows, start, now, send_time_model=send_time_model)
        engine = Engine(flows, activity.timeline(store.state_customers()))
        t_now, t_since = int(seconds([now])[0]), int(seconds([since])[0])
        state = store.load(engine, t_now)
        decided, entered = engine.advance(state, t_since, t_now)
        frame = engine.decisions_frame(decided)
        store.save(engine, state, frame, t_now, t_since, sum(entered.values()))
    closed = engine.exits(state.all_closed())
    summary = RunSummary(now, since, frame, entered, closed, time.perf_counter() - started)
    log.info(
        "journeys at %s: %d entered, %d queued, %d suppressed in %.1f s",
        now,
        sum(entered.values()),
        int((frame["outcome"] == QUEUED).sum()) if len(frame) else 0,
        int((frame["outcome"] != QUEUED).sum()) if len(frame) else 0,
        summary.seconds,
    )
    return summary


def read_queue(settings: Settings, since: pd.Timestamp | None = None) -> pd.DataFrame:
    """The queue of a data home (rows queued at or after `since`)."""
    path = store_path(settings)
    if not path.exists():
        raise FileNotFoundError(
            f"no journey queue at {path}: run `personalizer journeys run` first"
        )
    with JourneyStore(path) as store:
        return store.queue(since)
