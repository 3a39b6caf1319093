"""Where a customer still appears in a data home: every file searched for given strings.

`find_traces(home, needles)` reads each file by what it is, so compressed formats are searched by
value rather than by bytes:

- DuckDB (`*.duckdb`): every text column of every table (opened read-only);
- SQLite (`*.sqlite`, `*.db`): every column of every table, and the raw file bytes too (a deleted
  row survives in free pages until the file is vacuumed);
- Parquet: every column, as text;
- npz: every array of strings or objects (loaded without pickles);
- anything else (JSON, JSON Lines, CSV, HTML, text, YAML, logs): the raw bytes.

It is how the erasure test proves that nothing of a customer remains, and what an operator runs to
check a home by hand (`personalizer customers find ID`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SQLITE_SUFFIXES = (".sqlite", ".db")
SKIPPED_SUFFIXES = ("-shm",)  # SQLite shared-memory index: no row data


@dataclass(frozen=True)
class Trace:
    """One place a needle was found: the file, the table or column (or `bytes`), the needle."""

    path: Path
    where: str
    needle: str


def find_traces(home: Path, needles: Iterable[str]) -> list[Trace]:
    """Every place under `home` holding one of `needles` (exact substrings, case-sensitive).

    Args:
        home: the data home (or any folder).
        needles: strings to look for, such as a customer id and an email address.
    """
    wanted = [n for n in dict.fromkeys(needles) if n]
    found: list[Trace] = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if path.name.endswith(SKIPPED_SUFFIXES):
            continue
        found.extend(_file_traces(path, wanted))
    return found


def _file_traces(path: Path, needles: list[str]) -> Iterator[Trace]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".duckdb":
            yield from _duckdb(path, needles)
        elif suffix in SQLITE_SUFFIXES:
            yield from _sqlite(path, needles)
            yield from _bytes(path, needles)
        elif suffix == ".parquet":
            yield from _parquet(path, needles)
        elif suffix == ".npz":
            yield from _npz(path, needles)
        else:
            yield from _bytes(path, needles)
    except Exception as exc:  # an unreadable file is reported, never silently passed over
        log.warning("%s: read as bytes (%s)", path, exc)
        yield from _bytes(path, needles)


def _bytes(path: Path, needles: list[str]) -> Iterator[Trace]:
    data = path.read_bytes()
    for needle in needles:
        if needle.encode() in data:
            yield Trace(path, "bytes", needle)


def _duckdb(path: Path, needles: list[str]) -> Iterator[Trace]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR' ORDER BY table_name, ordinal_position"
        ).fetchall()
        for table, column in tables:
            for needle in needles:
                row = con.execute(
                    f'SELECT count(*) FROM "{table}" WHERE contains("{column}", ?)', [needle]
                ).fetchone()
                if row and row[0]:
                    yield Trace(path, f"{table}.{column}", needle)
    finally:
        con.close()


def _sqlite(path: Path, needles: list[str]) -> Iterator[Trace]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        ]
        for table in tables:
            names = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")').fetchall()]
            for column in names:
                for needle in needles:
                    row = con.execute(
                        f'SELECT count(*) FROM "{table}" WHERE instr(CAST("{column}" AS TEXT), ?)',
                        (needle,),
                    ).fetchone()
                    if row and row[0]:
                        yield Trace(path, f"{table}.{column}", needle)
    finally:
        con.close()


def _parquet(path: Path, needles: list[str]) -> Iterator[Trace]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for name in table.column_names:
        column = table[name]
        try:
            text = pc.cast(column, "string")
        except Exception:  # nested or binary columns: their Python text form
            text = None
        if text is None:
            values = [str(v) for v in column.to_pylist()]
            hits = {n for n in needles for v in values if n in v}
        else:
            hits = {n for n in needles if pc.any(pc.match_substring(text, n)).as_py()}
        for needle in sorted(hits):
            yield Trace(path, name, needle)


def _npz(path: Path, needles: list[str]) -> Iterator[Trace]:
    with np.load(path, allow_pickle=False) as arrays:
        for name in arrays.files:
            values = arrays[name]
            if values.dtype.kind not in "US":
                continue
            flat = values.astype(str).ravel()
            for needle in needles:
                if np.char.find(flat, needle).max(initial=-1) >= 0:
                    yield Trace(path, name, needle)
