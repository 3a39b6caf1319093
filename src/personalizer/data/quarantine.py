"""Bad rows are never lost: each import writes them, with their reason, beside the warehouse.

One JSON Lines file per import and table, under `<home>/quarantine/<table>/`. Each line holds the row's
position in its source, the field and value that failed, the reason, and the original row as read.
The file is written to a temporary name and published only after the warehouse commit succeeds.
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
