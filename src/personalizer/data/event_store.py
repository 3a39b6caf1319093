"""Real-time events: validated, deduplicated by `event_id`, acknowledged only once durably stored.

`ingest_events` is the one entry point (the HTTP endpoint and `personalizer events ingest` call it):
each event is checked with the importers' rules (`personalizer.data.validate`), bad ones are returned
and quarantined with `field: reason` and the value, and the good ones go to an `EventStore` in one
transaction. What `append` returns has been committed; an event whose `event_id` is already stored
is counted as a duplicate and changes nothing, so re-sending a stream after a crash is safe.

The default store is one embedded SQLite file under the data home (no server): WAL mode, so readers
never block the writer; `synchronous=FULL`, so a commit is on disk before `append` returns; and a busy
timeout with `BEGIN IMMEDIATE`, so several processes (service workers, a batch job) can append at
once, one transaction after another. A PostgreSQL store can implement the same `EventStore`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from personalizer.config import Settings
from personalizer.data.feeds import Format, detect_format, iter_batches, read_header
from personalizer.data.quarantine import QuarantineWriter, _plain
from personalizer.data.validate import check_header, normalise_columns, validate_frame
from personalizer.privacy.pseudonym import ErasedCustomers
from personalizer.schema import columns

log = logging.getLogger(__name__)

EVENT_COLUMNS = tuple(c.name for c in columns("events"))
STORE_FILE = "events.sqlite"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    type TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    product_id TEXT,
    campaign_id TEXT,
    properties TEXT NOT NULL,
    received_at TEXT NOT NULL
)
"""
INSERT = (
    f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}, received_at) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)}, ?)"
)


class EventStoreBusy(RuntimeError):
    """Other writers held the store longer than the busy timeout; nothing of the batch was stored."""


@dataclass(frozen=True)
class Rejection:
    """One event refused by validation: its position in the input, why, and the offending value."""

    row: int | None
    reason: str  # "field: reason", as in the quarantine
    value: Any
    event_id: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """What one ingestion did. Accepted and duplicate events are both durably stored.

    Attributes:
        accepted: events newly stored by this call.
        duplicates: events whose `event_id` was already stored (or repeated in the input).
        rejected: events refused by validation, with reasons; none of them was stored.
        last_seq: the store's highest sequence number when this call committed (0 if empty).
        quarantine_file: where the rejected events were written, if anywhere.
        erased: events of erased customers, dropped unread (neither stored nor quarantined).
    """

    accepted: int = 0
    duplicates: int = 0
    rejected: tuple[Rejection, ...] = ()
    last_seq: int = 0
    quarantine_file: Path | None = None
    erased: int = 0

    @property
    def reasons(self) -> Counter[str]:
        """Rejected events per `field: reason`."""
        return Counter(r.reason for r in self.rejected)

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            accepted=self.accepted + other.accepted,
            duplicates=self.duplicates + other.duplicates,
            rejected=self.rejected + other.rejected,
            last_seq=max(self.last_seq, other.last_seq),
            quarantine_file=other.quarantine_file or self.quarantine_file,
            erased=self.erased + other.erased,
        )


class EventStore(ABC):
    """Durable, append-only, deduplicated event log read back in acceptance order."""

    @abstractmethod
    def append(self, events: pd.DataFrame) -> IngestResult:
        """Store validated events in one transaction; return only once it is durable.

        Args:
            events: the `good` frame of `validate_frame("events", ...)` (schema columns, typed).
        """

    @abstractmethod
    def read(self, since_seq: int = 0, limit: int = 10_000) -> pd.DataFrame:
        """Events with `seq > since_seq`, ascending, at most `limit`: `seq`, schema columns,
        `received_at`. A consumer resumes from the last `seq` it has seen.

        Sequence numbers follow commit order and are never reused, but may have gaps (a duplicate
        can consume one), as a PostgreSQL sequence would."""

    def pages(self, since_seq: int = 0, limit: int = 50_000) -> Iterator[pd.DataFrame]:
        """Every event after `since_seq`, `limit` at a time (`read`, resumed from each page's
        last `seq`): the whole store without holding it in memory at once."""
        while True:
            page = self.read(since_seq=since_seq, limit=limit)
            if page.empty:
                return
            since_seq = int(page["seq"].iloc[-1])
            yield page

    @abstractmethod
    def count(self) -> int:
        """Events stored."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteEventStore(EventStore):
    """The embedded store: one SQLite file in WAL mode, safe for several writing processes.

    Args:
        path: the database file (created with its folder on first use).
        durable: `synchronous=FULL` (each commit fsynced). False (`OFF`) only for benchmarks.
        busy_timeout: seconds to wait for other writers before `EventStoreBusy`.
    """

    def __init__(self, path: Path, *, durable: bool = True, busy_timeout: float = 30.0) -> None:
        self.path = path
        self.durable = durable
        self.busy_timeout = busy_timeout
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are opened explicitly with BEGIN IMMEDIATE.
        self.con = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        self.con.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._retry_locked(self._setup)

    def _setup(self) -> None:
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'OFF'}")
        self.con.execute(SCHEMA)

    def _retry_locked(self, action: Any) -> Any:
        # Switching to WAL and creating the table can report "locked" without waiting when another
        # process opens a new file at the same moment; the busy handler covers everything else.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def append(self, events: pd.DataFrame) -> IngestResult:
        """Insert new `event_id`s, ignore known ones, commit (fsync) and report."""
        if events.empty:
            return IngestResult(last_seq=self._last_seq())
        rows = _rows(events)
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise EventStoreBusy(f"event store {self.path} busy: {exc}") from exc
        try:
            cursor = self.con.executemany(INSERT, rows)
            added = cursor.rowcount
            last_seq = self._last_seq()
            self.con.execute("COMMIT")
        except BaseException:
            if self.con.in_transaction:
                self.con.execute("ROLLBACK")
            raise
        return IngestResult(accepted=added, duplicates=len(rows) - added, last_seq=last_seq)

    def read(self, since_seq: int = 0, limit: int = 10_000) -> pd.DataFrame:
        """Events after `since_seq` in sequence order, typed like validated events."""
        frame = pd.read_sql_query(
            f"SELECT seq, {', '.join(EVENT_COLUMNS)}, received_at FROM events "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            self.con,
            params=(since_seq, limit),
        )
        for name in ("occurred_at", "received_at"):
            frame[name] = pd.to_datetime(frame[name], format=TIME_FORMAT).astype("datetime64[us]")
        return frame

    def count(self) -> int:
        """Events stored."""
        row = self.con.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed by the last one to close)."""
        self.con.close()

    def _last_seq(self) -> int:
        row = self.con.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)


def _rows(events: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Validated events as SQL parameter tuples (NA as NULL, times as naive-UTC text)."""
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"not validated events: missing column(s) {', '.join(missing)}")
    # Plain lists rather than DataFrame conversions: this runs once per request in the service.
    stamps = events["occurred_at"].dt.strftime(TIME_FORMAT)
    values = [
        [_sql_value(v) for v in (stamps if name == "occurred_at" else events[name]).tolist()]
        for name in EVENT_COLUMNS
    ]
    received = datetime.now(UTC).replace(tzinfo=None).strftime(TIME_FORMAT)
    return [(*row, received) for row in zip(*values, strict=True)]


def _sql_value(value: Any) -> Any:
    """None for every pandas flavour of missing."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:
        return None
    return value


def store_path(settings: Settings) -> Path:
    """The embedded event store's file under the data home."""
    return settings.home / STORE_FILE


def open_event_store(settings: Settings) -> EventStore:
    """The event store of these settings (the embedded SQLite file)."""
    return SqliteEventStore(store_path(settings))


def _as_frame(records: Sequence[Any] | pd.DataFrame) -> pd.DataFrame:
    if isinstance(records, pd.DataFrame):
        return records
    rows = [
        r if isinstance(r, dict) else {"_error": "not a JSON object", "_raw": str(r)[:2000]}
        for r in records
    ]
    return pd.DataFrame.from_records(rows) if rows else pd.DataFrame()


def _reader_errors(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows a reader already refused (`_error` set: unparsable line) apart from the rest."""
    if "_error" not in frame.columns:
        return frame, frame.iloc[:0]
    failed = frame["_error"].notna().to_numpy()
    bad = frame[failed].copy()
    bad.insert(0, "value", bad.pop("_raw") if "_raw" in bad.columns else None)
    bad.insert(0, "field", None)
    bad.insert(0, "reason", bad.pop("_error"))
    good = frame[~failed].drop(columns=[c for c in ("_error", "_raw") if c in frame.columns])
    return good, bad


def _rejections(bad: pd.DataFrame) -> list[Rejection]:
    out = []
    event_ids = bad["event_id"].tolist() if "event_id" in bad.columns else [None] * len(bad)
    rows = bad["_row"].tolist() if "_row" in bad.columns else [None] * len(bad)
    for reason, fld, value, row, event_id in zip(
        bad["reason"].tolist(),
        bad["field"].tolist(),
        bad["value"].tolist(),
        rows,
        event_ids,
        strict=True,
    ):
        key = f"{fld}: {reason}" if isinstance(fld, str) and fld else str(reason)
        row_value = _plain(row)
        event_value = _plain(event_id)
        out.append(
            Rejection(
                row=int(row_value) if row_value is not None else None,
                reason=key,
                value=_plain(value),
                event_id=str(event_value) if event_value is not None else None,
            )
        )
    return out


def ingest_events(
    store: EventStore,
    records: Sequence[dict[str, Any]] | pd.DataFrame,
    *,
    quarantine_dir: Path | None = None,
    source: str = "events",
    erased: ErasedCustomers | None = None,
) -> IngestResult:
    """Validate events, store the good ones durably in one transaction, reject the rest.

    Args:
        store: where accepted events go.
        records: event dicts (e.g. a JSON request body) or a DataFrame (e.g. a feed batch). A `_row`
            column numbers them for the rejections (default: 0-based position); rows with `_error`
            set were already refused by a feed reader.
        quarantine_dir: when given, rejected events are written there as the importers do
            (`<dir>/events/<stamp>-<source>.jsonl`), after the store has committed.
        source: names the input in the quarantine.
        erased: the home's erased customers, whose events are dropped: an erased customer's
            shop may still send their events, and they must not come back.

    Returns:
        `IngestResult`; everything counted as accepted or duplicate is durably stored.
    """
    frame = normalise_columns(_as_frame(records))
    if "_row" not in frame.columns:
        frame["_row"] = range(len(frame))
    frame, dropped = erased.drop(frame) if erased is not None else (frame, 0)
    frame, unreadable = _reader_errors(frame)
    checked = validate_frame("events", frame) if len(frame) else None
    bad = [b for b in (unreadable, checked.bad if checked else None) if b is not None and len(b)]
    writer = QuarantineWriter(quarantine_dir, "events", source) if quarantine_dir else None
    try:
        result = store.append(checked.good if checked is not None else pd.DataFrame())
        if writer is not None:
            for part in bad:
                writer.add(part)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    rejected = tuple(
        sorted((r for part in bad for r in _rejections(part)), key=lambda r: r.row or 0)
    )
    path = writer.publish() if writer is not None else None
    return replace(result, rejected=rejected, quarantine_file=path, erased=dropped)


def ingest_file(
    store: EventStore,
    path: Path,
    *,
    fmt: Format | None = None,
    quarantine_dir: Path | None = None,
    batch_rows: int = 100_000,
    erased: ErasedCustomers | None = None,
) -> IngestResult:
    """Ingest an events feed (CSV, Parquet, JSON Lines), one transaction per batch of rows.

    Raises:
        FeedError: the file is not a readable table of events; nothing of it was stored.
    """
    fmt = fmt or detect_format(path)
    check_header("events", read_header(path, fmt), str(path))
    total = IngestResult()
    for batch in iter_batches(path, fmt, batch_rows):
        part = ingest_events(
            store, batch, quarantine_dir=quarantine_dir, source=str(path), erased=erased
        )
        total = total + part
    log.info(
        "%s → events: %d accepted, %d duplicates, %d rejected",
        path,
        total.accepted,
        total.duplicates,
        len(total.rejected),
    )
    return total
