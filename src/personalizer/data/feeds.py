"""Reading feed files in bounded batches: CSV, Parquet and JSON Lines (optionally gzipped).

A file that is not a table of its declared format is refused before anything is read into the
warehouse. Within a readable file, a line that cannot be parsed (a CSV row with the wrong number of
fields, a JSON line that is not an object) becomes a row with `_error` set, so it is quarantined
rather than lost. Every row carries `_row`, its 1-based position among the file's data rows.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from personalizer.data.validate import FeedError

Format = Literal["csv", "parquet", "jsonl"]
EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
PARQUET_MAGIC = b"PAR1"


def detect_format(path: Path) -> Format:
    """The format named by the file's extension (a trailing `.gz` is looked through)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in EXTENSIONS:
        return EXTENSIONS[suffixes[-1]]
    raise FeedError(
        f"{path}: unknown feed format {''.join(path.suffixes) or '(no extension)'}; "
        "use .csv, .parquet or .jsonl (optionally .gz), or pass --format"
    )


def _open_text(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace")
    return path.open("r", encoding="utf-8-sig", errors="replace", newline="")


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _head_bytes(path: Path, size: int = 8192) -> bytes:
    try:
        with _open_binary(path) as handle:
            return bytes(handle.read(size))
    except (OSError, EOFError) as exc:
        raise FeedError(f"{path}: cannot be read: {exc}") from exc


def _check_text(path: Path, fmt: Format) -> None:
    head = _head_bytes(path)
    if head.startswith(PARQUET_MAGIC) or b"\x00" in head:
        raise FeedError(f"{path}: not a {fmt.upper()} file (binary content); nothing was imported")


def _sniff_delimiter(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_header(path: Path, fmt: Format) -> list[str]:
    """Column names of a feed, read without loading it. Refuses files that are not tables."""
    if not path.is_file():
        raise FeedError(f"{path}: no such file")
    if fmt == "parquet":
        if not _head_bytes(path, 4).startswith(PARQUET_MAGIC):
            raise FeedError(f"{path}: not a Parquet file; nothing was imported")
        try:
            return list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowException, OSError) as exc:
            raise FeedError(f"{path}: unreadable Parquet file: {exc}") from exc
    _check_text(path, fmt)
    with _open_text(path) as handle:
        if fmt == "csv":
            sample = handle.read(65536)
            if not sample.strip():
                raise FeedError(f"{path}: empty file; nothing was imported")
            delimiter = _sniff_delimiter(sample)
            return next(csv.reader(io.StringIO(sample), delimiter=delimiter))
        names: list[str] = []
        for line in handle:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise FeedError(
                    f"{path}: not JSON Lines (first line: {exc}); nothing was imported"
                ) from exc
            if not isinstance(record, dict):
                raise FeedError(f"{path}: not JSON Lines of objects; nothing was imported")
            names = list(record)
            break
        if not names:
            raise FeedError(f"{path}: empty file; nothing was imported")
        return names


def iter_batches(path: Path, fmt: Format, batch_rows: int = 500_000) -> Iterator[pd.DataFrame]:
    """The file's rows in DataFrames of at most `batch_rows`, each with `_row` (and `_error`)."""
    if fmt == "parquet":
        yield from _parquet_batches(path, batch_rows)
    elif fmt == "csv":
        yield from _csv_batches(path, batch_rows)
    else:
        yield from _jsonl_batches(path, batch_rows)


def _parquet_batches(path: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    start = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        frame = batch.to_pandas()
        frame["_row"] = np.arange(start + 1, start + len(frame) + 1)
        start += len(frame)
        yield frame


def _csv_batches(path: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    with _open_text(path) as handle:
        sample = handle.read(65536)
    delimiter = _sniff_delimiter(sample)
    header = next(csv.reader(io.StringIO(sample), delimiter=delimiter))
    invalid: list[pd.DataFrame] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(
            pd.DataFrame(
                {
                    "_row": [row.number - 1 if row.number else None],
                    "_error": [
                        f"expected {row.expected_columns} fields, found {row.actual_columns}"
                    ],
                    "_raw": [row.text],
                }
            )
        )
        return "skip"

    with _open_binary(path) as source:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=True,
                null_values=[""],
            ),
        )
        start = 0
        pending: list[pd.DataFrame] = []
        pending_rows = 0
        for record_batch in reader:
            frame = record_batch.to_pandas()
            frame["_row"] = np.arange(start + 1, start + len(frame) + 1)
            start += len(frame)
            pending.append(frame)
            pending_rows += len(frame)
            if pending_rows >= batch_rows:
                yield pd.concat(pending, ignore_index=True)
                pending, pending_rows = [], 0
        if pending:
            yield pd.concat(pending, ignore_index=True)
    if invalid:
        # Row numbers of skipped lines come from the parser; good rows keep consecutive numbers.
        yield pd.concat(invalid, ignore_index=True)


def _jsonl_batches(path: Path, batch_rows: int) -> Iterator[pd.DataFrame]:
    records: list[dict[str, object]] = []
    row = 0
    with _open_text(path) as handle:
        for line in handle:
            if not line.strip():
                continue
            row += 1
            try:
                record = json.loads(line)
            except ValueError as exc:
                record = {"_error": f"not JSON: {exc}", "_raw": line.rstrip("\n")[:2000]}
            if not isinstance(record, dict):
                record = {"_error": "not a JSON object", "_raw": line.rstrip("\n")[:2000]}
            record["_row"] = row
            records.append(record)
            if len(records) >= batch_rows:
                yield pd.DataFrame.from_records(records)
                records = []
    if records:
        yield pd.DataFrame.from_records(records)
