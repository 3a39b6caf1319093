"""Bad rows are never lost: each import writes them, with their reason, beside the warehouse.

One JSON Lines file per import and table, under `<home>/quarantine/<table>/`. Each line holds the row's
position in its source, the field and value that failed, the reason, and the original row as read.
The file is written to a temporary name and published only after the warehouse commit succeeds.

The original rows may hold personal data (an email with a typo), so quarantine files are kept for
a retention (`PERSONALIZER_QUARANTINE_RETENTION_DAYS`, default 90) and then deleted by
`purge_quarantine`, which every import and `personalizer data purge-quarantine` run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personalizer.config import days_from_env


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


class QuarantineWriter:
    """Collects bad rows of one import and publishes them as one JSON Lines file."""

    def __init__(self, directory: Path, table: str, source: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).name).strip("_") or "feed"
        self.path = directory / table / f"{stamp}-{stem}.jsonl"
        self._tmp = self.path.with_suffix(".jsonl.partial")
        self.source = source
        self.reasons: Counter[str] = Counter()
        self._handle: Any = None

    def add(self, bad: pd.DataFrame) -> None:
        """Append rows with columns `reason`, `field`, `value`, `_row` and the original values."""
        if bad.empty:
            return
        if self._handle is None:
            self._tmp.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self._tmp.open("w", encoding="utf-8")
        original = [c for c in bad.columns if c not in ("reason", "field", "value", "_row")]
        fields = bad["field"].tolist()
        keys = [
            f"{field}: {reason}" if isinstance(field, str) and field else str(reason)
            for field, reason in zip(fields, bad["reason"].tolist(), strict=True)
        ]
        self.reasons.update(keys)
        rows = bad["_row"].tolist() if "_row" in bad.columns else [None] * len(bad)
        values = bad["value"].tolist()
        records = bad[original].to_dict(orient="records")
        lines = []
        for key, row, value, record in zip(keys, rows, values, records, strict=True):
            line = {
                "source": self.source,
                "row": _plain(row),
                "reason": key,
                "value": _plain(value),
                "record": {k: _plain(v) for k, v in record.items()},
            }
            lines.append(json.dumps(line, default=str))
        self._handle.write("\n".join(lines) + "\n")

    @property
    def count(self) -> int:
        """Rows quarantined so far."""
        return sum(self.reasons.values())

    def close(self) -> None:
        """Write everything to disk now (before the warehouse commit), so a full disk fails there."""
        if self._handle is not None and not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def publish(self) -> Path | None:
        """Make the file visible (after the warehouse commit). None when nothing was bad."""
        if self._handle is None:
            return None
        self.close()
        self._handle = None
        self._tmp.replace(self.path)
        return self.path

    def discard(self) -> None:
        """Drop the file (the import failed and wrote nothing), even if it cannot be flushed."""
        if self._handle is not None:
            # a full disk cannot flush the buffered lines: they go with the file anyway
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
        self._tmp.unlink(missing_ok=True)


RETENTION_ENV = "PERSONALIZER_QUARANTINE_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 90.0
_STAMP = re.compile(r"^(\d{8}T\d{6})\d*Z-")


def retention_days(default: float = DEFAULT_RETENTION_DAYS) -> float:
    """`PERSONALIZER_QUARANTINE_RETENTION_DAYS`, else `default` (ValueError when not positive)."""
    return days_from_env(RETENTION_ENV, default)


def purge_quarantine(
    directory: Path, older_than_days: float | None = None, now: datetime | None = None
) -> list[Path]:
    """Delete the quarantine files written more than `older_than_days` ago; the paths deleted.

    A file's age is the time in its name (when its import ran), else its modification time.
    Unfinished files (`.partial`, an import still running) are left alone.
    """
    days = retention_days() if older_than_days is None else older_than_days
    moment = now if now is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    cutoff = moment.timestamp() - days * 86_400
    removed = []
    for path in sorted(directory.glob("*/*.jsonl")) if directory.exists() else []:
        match = _STAMP.match(path.name)
        if match:
            written = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            age = written.timestamp()
        else:
            age = path.stat().st_mtime
        if age < cutoff:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
