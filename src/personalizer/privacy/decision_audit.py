"""The audit log of decisions: what was decided for whom, with which models, on which inputs.

One row per decision in `<home>/privacy/decisions.sqlite` (table `decisions`): `decision_id`, the
customer's pseudonym (never the id), the decision time (Unix seconds, UTC), template, campaign,
model versions (JSON), the send flag and a fingerprint of the inputs (`fingerprint`). Rows older than the retention
(`PERSONALIZER_AUDIT_RETENTION_DAYS`, default 90) are removed by `purge`.

The service makes thousands of decisions a second, so `record` only appends to a buffer; the buffer
is written in one transaction every `batch_size` records or when `flush_seconds` have passed since
the last write (checked on each `record`), and on `flush`/`close`. What is still buffered when the
process dies is lost: at most `batch_size` records or `flush_seconds` of decisions.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from personalizer.config import Settings, days_from_env
from personalizer.privacy.pseudonym import load_key, privacy_dir, pseudonymize

RETENTION_ENV = "PERSONALIZER_AUDIT_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 90.0
AUDIT_FILE = "decisions.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT NOT NULL, customer TEXT NOT NULL, decided_at REAL NOT NULL,
    template TEXT, campaign TEXT, model_versions TEXT NOT NULL, send INTEGER NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (decided_at);
"""
INSERT = "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_FINGERPRINT_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def audit_path(settings: Settings) -> Path:
    """The decision audit file of a data home."""
    return privacy_dir(settings) / AUDIT_FILE


def retention_from_env(default: float = DEFAULT_RETENTION_DAYS) -> float:
    """`PERSONALIZER_AUDIT_RETENTION_DAYS`, else `default` (ValueError when not positive days)."""
    return days_from_env(RETENTION_ENV, default)


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a decision's inputs (keys sorted, lists in their order).

    Args:
        inputs: what the decision was made from, e.g. segments, scores, product ids, send time.
            Values that JSON cannot hold (timestamps) are written as their text.
    """
    raw = orjson.dumps(dict(inputs), option=_FINGERPRINT_OPTIONS, default=str)
    return hashlib.sha256(raw).hexdigest()


def decision_inputs(decision: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs of a decision as the service returns it: segments, scores, products, send time."""
    send_time = decision.get("send_time") or {}
    return {
        "segments": decision.get("segments"),
        "scores": decision.get("scores"),
        "products": [p.get("product_id") for p in decision.get("products") or []],
        "send_at": send_time.get("send_at") if isinstance(send_time, Mapping) else None,
    }


class DecisionAudit:
    """Buffered, append-only writer of the decision audit (thread-safe).

    Args:
        settings: the data home (its pseudonym key and `privacy/decisions.sqlite`).
        retention_days: how long records are kept (`purge`); default from the environment.
        batch_size: write once this many records are buffered.
        flush_seconds: write when this long has passed since the last write.
    """

    def __init__(
        self,
        settings: Settings,
        retention_days: float | None = None,
        *,
        batch_size: int = 1_000,
        flush_seconds: float = 1.0,
    ) -> None:
        self.path = audit_path(settings)
        self.retention_days = retention_days if retention_days is not None else retention_from_env()
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self._key = load_key(settings)
        self._pseudonyms: dict[str, str] = {}
        self._versions: tuple[Any, str] = (None, "{}")  # the last versions mapping, as JSON
        self._buffer: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(
            self.path, timeout=60.0, isolation_level=None, check_same_thread=False
        )
        self._con.execute("PRAGMA journal_mode = WAL")
        self._con.execute("PRAGMA synchronous = NORMAL")
        self._con.executescript(SCHEMA)

    def _pseudonym(self, customer_id: str) -> str:
        known = self._pseudonyms.get(customer_id)
        if known is None:
            known = pseudonymize(customer_id, self._key)
            if len(self._pseudonyms) < 1_000_000:
                self._pseudonyms[customer_id] = known
        return known

    def record(
        self,
        decision: Mapping[str, Any],
        inputs_fingerprint: str,
        at: datetime | None = None,
    ) -> None:
        """Buffer one decision (`decision_id`, `customer_id`, `template`, `campaign`,
        `model_versions`, `send` as the decider returns them) with its inputs' fingerprint."""
        # a float, not text: formatting a time costs µs, and this runs for every decision
        moment = at.replace(tzinfo=UTC).timestamp() if at is not None else time.time()
        versions = decision.get("model_versions") or {}
        if versions is not self._versions[0]:  # one mapping a snapshot: encoded once
            text = orjson.dumps(versions, option=orjson.OPT_SORT_KEYS).decode()
            self._versions = (versions, text)
        row = (
            str(decision["decision_id"]),
            self._pseudonym(str(decision["customer_id"])),
            moment,
            decision.get("template"),
            decision.get("campaign"),
            self._versions[1],
            int(bool(decision.get("send"))),
            inputs_fingerprint,
        )
        with self._lock:
            self._buffer.append(row)
            due = (
                len(self._buffer) >= self.batch_size
                or time.monotonic() - self._last_flush >= self.flush_seconds
            )
            if due:
                self._write()

    def flush(self) -> int:
        """Write what is buffered; the number of records written."""
        with self._lock:
            return self._write()

    def _write(self) -> int:
        rows, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        if not rows:
            return 0
        self._con.execute("BEGIN IMMEDIATE")
        try:
            self._con.executemany(INSERT, rows)
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        return len(rows)

    def purge(self, now: pd.Timestamp | None = None) -> int:
        """Remove records decided before `now` minus the retention; the number removed."""
        moment = now if now is not None else pd.Timestamp.now("UTC").tz_localize(None)
        if moment.tzinfo is not None:
            moment = moment.tz_convert("UTC").tz_localize(None)
        cutoff = (moment - pd.Timedelta(days=self.retention_days)).timestamp()
        self.flush()
        with self._lock:
            cursor = self._con.execute("DELETE FROM decisions WHERE decided_at < ?", (cutoff,))
        return max(cursor.rowcount, 0)

    def read(self) -> pd.DataFrame:
        """Every record written (after a flush), oldest first."""
        self.flush()
        frame = pd.read_sql_query("SELECT * FROM decisions ORDER BY decided_at", self._con)
        frame["decided_at"] = pd.to_datetime(frame["decided_at"], unit="s")
        frame["model_versions"] = [orjson.loads(v) for v in frame["model_versions"]]
        return frame

    def close(self) -> None:
        """Write what is buffered and release the file."""
        self.flush()
        self._con.close()

    def __enter__(self) -> DecisionAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
