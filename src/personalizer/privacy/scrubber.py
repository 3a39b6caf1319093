"""Rewriting the files of a data home without one customer: Parquet, npz, JSON, JSON Lines, CSV.

Each function takes the customer's identifiers (`Needles`: the id and, when known, the email),
rewrites the file only when something changed (to a temporary name, then renamed, so a reader sees
the old or the new file, never half of one) and returns how many rows or values it removed.

Rows are matched by exact value, never by substring: erasing `c12` leaves `c123` alone.
Identifier arrays of fitted models (npz) cannot lose an element without breaking the model's row
numbers, so the customer's entry is replaced by a random tombstone (`erased-<hex>`): the model keeps
working for everyone else, and nothing links the row to the person any more.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ID_COLUMNS = ("customer_id",)
EMAIL_COLUMNS = ("email",)


@dataclass(frozen=True)
class Needles:
    """What identifies the customer in files: the id, and the email address when known."""

    customer_id: str
    email: str | None = None

    @property
    def values(self) -> tuple[str, ...]:
        """The identifiers, without the unknown ones."""
        return (self.customer_id,) if not self.email else (self.customer_id, self.email)


def tombstone() -> str:
    """A random stand-in for an erased id inside a fitted model."""
    return f"erased-{secrets.token_hex(6)}"


def _replace(path: Path, write: Any) -> None:
    """Write through `write(tmp_path)` then rename over `path`, keeping its permissions."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def scrub_parquet(path: Path, needles: Needles) -> int:
    """Drop the rows whose `customer_id` (or `email`) is the customer's; rows removed."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    checks = [(c, needles.customer_id) for c in ID_COLUMNS if c in schema.names]
    if needles.email:
        checks += [(c, needles.email) for c in EMAIL_COLUMNS if c in schema.names]
    if not checks:
        return 0
    table = pq.read_table(path)
    hit = pa.array(np.zeros(table.num_rows, dtype=bool))
    for column, value in checks:
        text = pc.cast(table[column], pa.string())
        hit = pc.or_kleene(hit, pc.fill_null(pc.equal(text, value), False))
    removed = int(pc.sum(hit).as_py() or 0)
    if removed:
        kept = table.filter(pc.invert(hit))
        metadata = pq.read_metadata(path)
        compression = (
            metadata.row_group(0).column(0).compression if metadata.num_row_groups else None
        )
        codec = compression.lower() if compression and compression != "UNCOMPRESSED" else "none"
        _replace(path, lambda tmp: pq.write_table(kept, tmp, compression=codec))
    return removed


def scrub_npz(path: Path, needles: Needles) -> int:
    """Replace the customer's entries in string arrays by tombstones; entries replaced."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    replaced = 0
    for name, values in arrays.items():
        if values.dtype.kind not in "US":
            continue
        hit = np.isin(values.astype(str), needles.values)
        if hit.any():
            out = values.astype(object)
            out[hit] = [tombstone() for _ in range(int(hit.sum()))]
            arrays[name] = np.asarray(out.astype(str), dtype=str)
            replaced += int(hit.sum())
    if replaced:
        compressed = _is_compressed(path)
        save = np.savez_compressed if compressed else np.savez

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:
                save(handle, **arrays)

        _replace(path, write)
    return replaced


def _is_compressed(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        return any(i.compress_type != zipfile.ZIP_STORED for i in archive.infolist())


def mentions(value: Any, needles: Needles) -> bool:
    """Whether a parsed JSON value holds one of the identifiers as a whole value."""
    if isinstance(value, dict):
        return any(mentions(v, needles) for v in value.values())
    if isinstance(value, list):
        return any(mentions(v, needles) for v in value)
    if isinstance(value, str):
        return value in needles.values
    if isinstance(value, int | float) and not isinstance(value, bool):
        # numeric ids (Online Retail's 12346.0) as the importer reads them
        text = f"{value:g}" if isinstance(value, float) else str(value)
        return text == needles.customer_id
    return False


def scrub_jsonl(path: Path, needles: Needles) -> int:
    """Drop the lines (JSON objects) that mention the customer anywhere; lines removed."""
    raw = path.read_bytes()
    if not any(n.encode() in raw for n in needles.values) and not _numeric_id(needles):
        return 0
    kept, removed = [], 0
    for line in raw.decode(errors="replace").splitlines(keepends=True):
        try:
            hit = mentions(json.loads(line), needles) if line.strip() else False
        except json.JSONDecodeError:
            hit = any(n in line for n in needles.values)
        if hit:
            removed += 1
        else:
            kept.append(line)
    if removed:
        _replace(path, lambda tmp: tmp.write_text("".join(kept)))
    return removed


def _numeric_id(needles: Needles) -> bool:
    return needles.customer_id.replace(".", "", 1).isdigit()


def scrub_json(path: Path, needles: Needles) -> int:
    """Replace the identifiers' string values in a JSON document by tombstones; values replaced."""
    text = path.read_text(errors="replace")
    if not any(n in text for n in needles.values):
        return 0
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return 0
    count = [0]

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and value in needles.values:
            count[0] += 1
            return tombstone()
        return value

    cleaned = walk(document)
    if count[0]:
        _replace(path, lambda tmp: tmp.write_text(json.dumps(cleaned)))
    return count[0]


def scrub_csv(path: Path, needles: Needles) -> int:
    """Drop the rows of a CSV file with a field equal to one of the identifiers; rows removed."""
    text = path.read_text(errors="replace")
    if not any(n in text for n in needles.values):
        return 0
    rows = list(csv.reader(io.StringIO(text)))
    kept = [r for r in rows if not set(r) & set(needles.values)]
    removed = len(rows) - len(kept)
    if removed:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(kept)
        _replace(path, lambda tmp: tmp.write_text(out.getvalue()))
    return removed
