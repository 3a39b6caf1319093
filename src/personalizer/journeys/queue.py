"""The durable send queue and journey state: one SQLite file in the data home.

`<home>/journeys/journeys.sqlite` holds

- `queue`: one row per email to send (`QUEUE_COLUMNS`, then `params` as JSON, the journey and step,
  and `queued_at`, the run's moment); unique per journey and step, so nothing is queued twice;
- `steps`: every step decided, with its outcome (`queued` or the reason it was not);
- `journeys`: every journey (customer, flow, entry, exit, next step, status, holdout);
- `latest`: per flow and customer, the latest entry and when that journey ends (re-entry rules);
- `runs`: one row per run, with its counts.

A run holds the file's write lock from reading the state to committing the new one (`BEGIN
IMMEDIATE`), so two schedulers started at once run one after the other, and the second sees what
the first did. WAL mode lets readers (`journeys queue`) read meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personalizer.config import Settings
from personalizer.journeys.engine import QUEUE_COLUMNS, QUEUED, Engine
from personalizer.journeys.state import Journeys, JourneyState, concat
from personalizer.journeys.timeline import BEFORE_ALL, NEVER, seconds, to_timestamps

STORE_FILE = "journeys.sqlite"
TIME = "%Y-%m-%d %H:%M:%S"
SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    customer_id TEXT NOT NULL, flow TEXT NOT NULL, step TEXT NOT NULL, template TEXT NOT NULL,
    send_at TEXT NOT NULL, decision_id TEXT NOT NULL, params TEXT NOT NULL,
    journey_id TEXT NOT NULL, step_index INTEGER NOT NULL, queued_at TEXT NOT NULL,
    UNIQUE (journey_id, step_index)
);
CREATE INDEX IF NOT EXISTS queue_customer ON queue (customer_id, send_at);
CREATE INDEX IF NOT EXISTS queue_queued ON queue (queued_at);
CREATE TABLE IF NOT EXISTS steps (
    journey_id TEXT NOT NULL, step_index INTEGER NOT NULL, customer_id TEXT NOT NULL,
    flow TEXT NOT NULL, step TEXT NOT NULL, template TEXT NOT NULL, due_at TEXT NOT NULL,
    outcome TEXT NOT NULL, send_at TEXT, decision_id TEXT, decided_at TEXT NOT NULL,
    PRIMARY KEY (journey_id, step_index)
);
CREATE TABLE IF NOT EXISTS journeys (
    journey_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, flow TEXT NOT NULL,
    trigger_key TEXT, product_id TEXT, entered_at TEXT NOT NULL, exit_at TEXT,
    exit_reason TEXT, next_step INTEGER NOT NULL, status TEXT NOT NULL, holdout INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS journeys_status ON journeys (status, flow);
CREATE TABLE IF NOT EXISTS latest (
    flow TEXT NOT NULL, customer_id TEXT NOT NULL, entered_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL, PRIMARY KEY (flow, customer_id)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_at TEXT NOT NULL, since TEXT NOT NULL,
    finished_at TEXT NOT NULL, entered INTEGER NOT NULL, queued INTEGER NOT NULL,
    outcomes TEXT NOT NULL
);
"""


def store_path(settings: Settings) -> Path:
    """The journey store of a data home."""
    return settings.home / "journeys" / STORE_FILE


class JourneyStore:
    """The SQLite file of the queue and the journey state (see the module docstring)."""

    def __init__(self, path: Path, *, busy_timeout: float = 300.0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        self.con.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = FULL")
        self.con.executescript(SCHEMA)

    def close(self) -> None:
        """Release the file."""
        self.con.close()

    def __enter__(self) -> JourneyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One run: the write lock from the first read to the commit; all or nothing."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # ----------------------------------------------------------------------------- reading
    def last_run(self) -> pd.Timestamp | None:
        """The moment of the latest run, None before the first."""
        row = self.con.execute("SELECT max(run_at) FROM runs").fetchone()
        return pd.Timestamp(row[0]) if row and row[0] else None

    def state_customers(self) -> list[str]:
        """Customers the state knows (they must have codes in the timeline)."""
        rows = self.con.execute("SELECT DISTINCT customer_id FROM latest").fetchall()
        return [r[0] for r in rows]

    def oldest_active(self) -> pd.Timestamp | None:
        """The entry of the oldest journey in progress (what the run must read back to)."""
        row = self.con.execute(
            "SELECT min(entered_at) FROM journeys WHERE status = 'active'"
        ).fetchone()
        return pd.Timestamp(row[0]) if row and row[0] else None

    def load(self, engine: Engine, now: int) -> JourneyState:
        """The state of `engine`'s flows: journeys in progress, latest entries, recent sends."""
        state = engine.new_state()
        customers = engine.timeline.customers
        index = {name: i for i, name in enumerate(engine.names)}
        latest = pd.read_sql_query("SELECT * FROM latest", self.con)
        latest = latest[latest["flow"].isin(list(index))]
        if len(latest):
            flows = latest["flow"].map(index).to_numpy(dtype=np.int64)
            codes = customers.codes(latest["customer_id"])
            state.last_entered[flows, codes] = latest["entered_at"].to_numpy(dtype=np.int64)
            state.last_end[flows, codes] = latest["ends_at"].to_numpy(dtype=np.int64)
        active = pd.read_sql_query("SELECT * FROM journeys WHERE status = 'active'", self.con)
        active = active[active["flow"].isin(list(index))]
        if len(active):
            state.active = _journeys(active, engine, index)
        since = _text(now - 8 * 86_400)
        sends = pd.read_sql_query(
            "SELECT customer_id, send_at FROM queue WHERE send_at > ? ORDER BY send_at",
            self.con,
            params=(since,),
        )
        if len(sends):
            codes = customers.codes(sends["customer_id"])
            moments = seconds(pd.to_datetime(sends["send_at"]))
            for code, moment in zip(codes.tolist(), moments.tolist(), strict=True):
                state.sends.setdefault(code, []).append(moment)
        return state

    def queue(self, since: pd.Timestamp | None = None) -> pd.DataFrame:
        """Queued emails (queued at or after `since`): `QUEUE_COLUMNS`, `params`, `queued_at`."""
        sql = f"SELECT {', '.join(QUEUE_COLUMNS)}, params, queued_at FROM queue"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE queued_at >= ?"
            params.append(since.strftime(TIME))
        frame = pd.read_sql_query(
            sql + " ORDER BY queued_at, send_at, customer_id", self.con, params=params
        )
        for column in ("send_at", "queued_at"):
            frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
        return frame

    # ----------------------------------------------------------------------------- writing
    def save(
        self,
        engine: Engine,
        state: JourneyState,
        decided: pd.DataFrame,
        now: int,
        since: int,
        entered: int,
    ) -> None:
        """Write what a run changed (inside `locked`)."""
        changed = concat([j.take(j.dirty) for j in (state.active, *state.closed)])
        frame = changed.to_frame(engine.timeline.customers, engine.names, engine.n_steps)
        rows = [
            (
                r.journey_id, r.customer_id, r.flow, _str(r.trigger_key), _str(r.product_id),
                r.entered_at.strftime(TIME), None if pd.isna(r.exit_at) else r.exit_at.strftime(TIME),
                _str(r.exit_reason), int(r.next_step), r.status, int(bool(r.holdout)),
            )
            for r in frame.itertuples(index=False)
        ]  # fmt: skip
        self.con.executemany(
            "INSERT OR REPLACE INTO journeys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
        )
        pairs = {(int(f), int(c)) for f, c in zip(changed.flow, changed.code, strict=True)}
        ids = engine.customer_ids
        self.con.executemany(
            "INSERT OR REPLACE INTO latest VALUES (?, ?, ?, ?)",
            [
                (engine.names[f], ids[c], int(state.last_entered[f, c]), int(state.last_end[f, c]))
                for f, c in sorted(pairs)
                if state.last_entered[f, c] > BEFORE_ALL
            ],
        )
        self._insert_steps(decided, now)
        counts = decided["outcome"].value_counts().to_dict() if len(decided) else {}
        self.con.execute(
            "INSERT INTO runs (run_at, since, finished_at, entered, queued, outcomes) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                _text(now),
                _text(since),
                pd.Timestamp.now("UTC").strftime(TIME),
                entered,
                int(counts.get(QUEUED, 0)),
                json.dumps({str(k): int(v) for k, v in counts.items()}, sort_keys=True),
            ),
        )

    def _insert_steps(self, decided: pd.DataFrame, now: int) -> None:
        if not len(decided):
            return
        at = _text(now)
        send_at = [None if pd.isna(t) else t.strftime(TIME) for t in decided["send_at"]]
        due = [t.strftime(TIME) for t in decided["due_at"]]
        self.con.executemany(
            "INSERT OR IGNORE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (j, int(k), c, f, s, t, d, o, sa, i, at)
                for j, k, c, f, s, t, d, o, sa, i in zip(
                    decided["journey_id"], decided["step_index"], decided["customer_id"],
                    decided["flow"], decided["step"], decided["template"], due,
                    decided["outcome"], send_at, decided["decision_id"], strict=True,
                )
            ],
        )  # fmt: skip
        queued = decided["outcome"].to_numpy() == QUEUED
        rows = decided[queued]
        self.con.executemany(
            "INSERT OR IGNORE INTO queue VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (c, f, s, t, sa, i, p, j, int(k), at)
                for c, f, s, t, sa, i, p, j, k in zip(
                    rows["customer_id"], rows["flow"], rows["step"], rows["template"],
                    [t.strftime(TIME) for t in rows["send_at"]], rows["decision_id"],
                    rows["params"], rows["journey_id"], rows["step_index"], strict=True,
                )
            ],
        )  # fmt: skip


def _journeys(frame: pd.DataFrame, engine: Engine, index: dict[str, int]) -> Journeys:
    """Journeys read back from the table (codes and flow positions of this engine)."""
    flow = frame["flow"].map(index).to_numpy(dtype=np.int64)
    entered = seconds(pd.to_datetime(frame["entered_at"]))
    step = frame["next_step"].to_numpy(dtype=np.int64)
    journeys = Journeys.create(
        engine.timeline.customers.codes(frame["customer_id"]),
        flow,
        entered,
        entered + engine.offsets[flow, np.minimum(step, engine.offsets.shape[1] - 1)],
        frame["holdout"].to_numpy(dtype=bool),
        frame["trigger_key"].to_numpy(dtype=object),
        frame["product_id"].to_numpy(dtype=object),
        frame["journey_id"].to_numpy(dtype=object),
    )
    journeys.next_step[:] = step
    journeys.dirty[:] = False
    exits = pd.to_datetime(frame["exit_at"])
    known = exits.notna().to_numpy()
    journeys.exit_at[:] = NEVER
    if known.any():
        journeys.exit_at[known] = seconds(exits[known])
    journeys.exit_reason[:] = frame["exit_reason"].to_numpy(dtype=object)
    return journeys


def _text(moment: int) -> str:
    return to_timestamps(np.asarray([moment]))[0].strftime(TIME)


def _str(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
