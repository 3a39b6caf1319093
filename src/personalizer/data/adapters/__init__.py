"""Adapters from public datasets to the canonical tables.

Each adapter takes a path and yields, per canonical table, batches of rows and the set of columns it
provides. Rows the adapter cleans away (a fee code, a line without a customer) carry `_error` (with
`_field` and `_value`) so they reach the quarantine with their reason instead of vanishing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pandas as pd

from personalizer.data.adapters import cdnow, hillstrom, online_retail

TableBatches = tuple[str, Iterable[pd.DataFrame], set[str]]
Adapter = Callable[[Path, int], Iterator[TableBatches]]

ADAPTERS: dict[str, Adapter] = {
    "online_retail": online_retail.read,
    "cdnow": cdnow.read,
    "hillstrom": hillstrom.read,
}

_CDNOW_LINE = re.compile(r"^\s*\d+\s+(\d+\s+)?\d{8}\s+\d+\s+[\d.]+\s*$")


def detect(path: Path) -> str | None:
    """The adapter a file needs, from its columns or its first line; None for canonical feeds."""
    if path.is_dir() or not path.is_file():
        return None
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            names = {n.strip().lower() for n in pq.ParquetFile(path).schema_arrow.names}
        except Exception:
            return None
    else:
        try:
            with path.open("r", encoding="utf-8-sig", errors="replace") as handle:
                first = handle.readline()
                second = handle.readline()
        except OSError:
            return None
        if "cdnow" in path.name.lower() or _CDNOW_LINE.match(second or first):
            return "cdnow"
        names = {n.strip().strip('"').lower() for n in re.split(r"[,;\t]", first)}
    if online_retail.recognises(names):
        return "online_retail"
    if hillstrom.recognises(names):
        return "hillstrom"
    return None
