"""`personalizer data import`: feeds and public datasets into the warehouse, row by validated row.

One import is one transaction: a file, a folder of feeds or a dataset is imported whole or, if any
part of it cannot be read as a table or the disk fills up, not at all (the quarantine files are
published only after the commit). Bad rows go to the quarantine with their reason; rows whose key
is already stored are counted as duplicates and change nothing, so importing the same file twice
adds nothing the second time.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import pandas as pd

from personalizer.config import Settings
from personalizer.data import adapters
from personalizer.data.feeds import Format, detect_format, iter_batches, read_header
from personalizer.data.quarantine import QuarantineWriter, purge_quarantine
from personalizer.data.validate import FeedError, check_header, normalise_columns, validate_frame
from personalizer.data.warehouse import Warehouse, is_disk_full
from personalizer.privacy.pseudonym import ErasedCustomers
from personalizer.schema import RECORDS, TABLES

log = logging.getLogger(__name__)

SOURCES = ("auto", "canonical", *adapters.ADAPTERS)
# How long an import waits for another process to release the warehouse before giving up.
LOCK_WAIT_SECONDS = 30.0


class DiskFull(FeedError):
    """The disk filled up during an import; it was rolled back, so nothing of it was written."""


@dataclass
class ImportReport:
    """What importing one table from one source did."""

    source: str
    table: str
    rows_read: int = 0
    accepted: int = 0
    added: int = 0
    updated: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    quarantine_file: Path | None = None
    inferred_customers: int = 0
    inferred_products: int = 0
    erased: int = 0  # rows of erased customers, dropped unread (never quarantined)

    @property
    def quarantined_total(self) -> int:
        """Rows set aside, all reasons together."""
        return sum(self.quarantined.values())


def _split_errors(batch: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows a reader or adapter already rejected (`_error` set) apart from the rest."""
    if "_error" not in batch.columns:
        return batch, batch.iloc[:0]
    failed = batch["_error"].notna().to_numpy()
    bad = batch[failed].copy()
    bad.insert(0, "value", bad.pop("_value") if "_value" in bad else bad.get("_raw"))
    bad.insert(0, "field", bad.pop("_field") if "_field" in bad else None)
    bad.insert(0, "reason", bad.pop("_error"))
    bad = bad.drop(columns=[c for c in ("_raw",) if c in bad.columns])
    good = batch[~failed].drop(
        columns=[c for c in ("_error", "_field", "_value", "_raw") if c in batch.columns]
    )
    return good, bad


def load_table(
    wh: Warehouse,
    settings: Settings,
    table: str,
    batches: Iterable[pd.DataFrame],
    source: str,
    provided: set[str],
) -> ImportReport:
    """Validate, stage and merge batches of one table in a single transaction.

    Args:
        wh: an open writable warehouse.
        settings: where the quarantine lives.
        table: the canonical table the batches belong to.
        batches: raw rows; `_row` numbers them, `_error` (with `_field`, `_value`) marks rows
            already rejected by the reader or an adapter.
        source: shown in reports, the ledger and the quarantine.
        provided: columns the source really has (master data updates only those).
    """
    with _Import(wh, settings) as job:
        report = job.load(table, batches, source, provided)
    return report


class _Import:
    """One transaction over any number of tables and files; quarantine files published after it."""

    def __init__(self, wh: Warehouse, settings: Settings) -> None:
        self.wh = wh
        self.settings = settings
        self.done: list[tuple[ImportReport, QuarantineWriter]] = []
        self._transaction = wh.transaction()

    def __enter__(self) -> _Import:
        self._transaction.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failure = exc
        try:
            self._transaction.__exit__(kind, exc, tb)  # COMMIT, or ROLLBACK
        except BaseException as raised:  # the COMMIT failed
            failure = raised
        if failure is None:
            for report, writer in self.done:
                report.quarantine_file = writer.publish()
            return
        for _, writer in self.done:
            writer.discard()
        if is_disk_full(failure):
            raise _disk_full(self.settings, failure) from failure
        if failure is not exc:
            raise failure
        # otherwise the block's own exception propagates

    def load(
        self, table: str, batches: Iterable[pd.DataFrame], source: str, provided: set[str]
    ) -> ImportReport:
        """Validate, stage and merge the batches of one table inside the transaction."""
        wh = self.wh
        report = ImportReport(source=source, table=table)
        writer = QuarantineWriter(self.settings.quarantine_dir, table, source)
        self.done.append((report, writer))
        staging = f"_stage_{table}"
        erased = ErasedCustomers(self.settings)
        for raw in batches:
            report.rows_read += len(raw)
            # an erased customer stays erased: a re-import brings nothing of them back
            raw, dropped = erased.drop(normalise_columns(raw))
            report.erased += dropped
            batch, rejected = _split_errors(raw)
            writer.add(rejected)
            checked = validate_frame(table, batch)
            writer.add(checked.bad)
            if len(checked.good):
                wh.stage(table, checked.good, staging)
                report.accepted += len(checked.good)
        if report.accepted:
            merged = wh.merge(table, staging, provided)
            report.added, report.updated = merged.added, merged.updated
            report.duplicates = merged.duplicates
        if table == "orders":
            report.inferred_customers, report.inferred_products = wh.infer_from_orders()
        report.quarantined = writer.reasons.copy()
        writer.close()  # flushed now, so a full disk fails the import, not the publication
        wh.record_import(
            {
                "imported_at": datetime.now(UTC).replace(tzinfo=None),
                "source": source,
                "table_name": table,
                "rows_read": report.rows_read,
                "accepted": report.accepted,
                "added": report.added,
                "updated": report.updated,
                "duplicates": report.duplicates,
                "quarantined": report.quarantined_total,
                "quarantine_file": str(writer.path) if writer.count else None,
            }
        )
        log.info(
            "%s → %s: %d read, %d added, %d quarantined, %d of erased customers dropped",
            source,
            table,
            report.rows_read,
            report.added,
            report.quarantined_total,
            report.erased,
        )
        return report


def _disk_full(settings: Settings, exc: BaseException) -> DiskFull:
    """The message for an import that ran out of space: which disk, how full, what was kept."""
    where = settings.home
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
        free = f"{usage.free / 2**20:,.1f} MB free of {usage.total / 2**20:,.0f} MB"
    except OSError:
        free = "free space unknown"
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DiskFull(
        f"no space left on the disk holding {settings.home} ({free}): the import was rolled "
        f"back and nothing of it was written; free some space and run it again ({detail})"
    )


def guess_table(path: Path, header: list[str]) -> str:
    """The table a canonical feed holds, from its file name or else its columns."""
    stem = path.name.split(".")[0].lower()
    for table in TABLES:
        if stem == table or stem.startswith(table) or stem == table.rstrip("s"):
            return table
    names = {h.strip().lower() for h in header}
    if {"event_id", "type"} <= names:
        return "events"
    if "order_id" in names:
        return "orders"
    if "product_id" in names and "customer_id" not in names:
        return "products"
    if "customer_id" in names:
        return "customers"
    raise FeedError(
        f"{path}: cannot tell which table this feed holds; name it customers/products/orders/"
        "events or pass --table"
    )


def import_feed(
    wh: Warehouse,
    settings: Settings,
    path: Path,
    table: str | None = None,
    fmt: Format | None = None,
) -> ImportReport:
    """Import one canonical feed file (CSV, Parquet or JSON Lines), in a transaction of its own."""
    with _Import(wh, settings) as job:
        report = _import_feed(job, path, table, fmt)
    return report


def _import_feed(
    job: _Import, path: Path, table: str | None = None, fmt: Format | None = None
) -> ImportReport:
    """Read one canonical feed file into the import `job`."""
    fmt = fmt or detect_format(path)
    header = read_header(path, fmt)
    table = table or guess_table(path, header)
    if table not in TABLES:
        raise FeedError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    check_header(table, header, str(path))
    provided = {h.strip().lower() for h in header}
    if table == "customers" and provided - set(RECORDS["customers"].model_fields):
        provided.add("attributes")
    batches = iter_batches(path, fmt, job.settings.batch_rows)
    return job.load(table, batches, str(path), provided)


def _table_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """Canonical feeds in a folder: `<table>.<ext>` files and `<table>/` folders of parts."""
    found = False
    for table in TABLES:
        candidates = sorted(
            p for p in directory.iterdir() if p.is_file() and p.name.split(".")[0].lower() == table
        )
        part_dir = directory / table
        if part_dir.is_dir():
            candidates += sorted(
                p for p in part_dir.iterdir() if p.is_file() and not p.name.startswith(".")
            )
        for path in candidates:
            found = True
            yield table, path
    if not found:
        raise FeedError(
            f"{directory}: no feeds found; expected files named customers, products, orders or "
            "events (.csv, .parquet, .jsonl) or folders of such parts"
        )


def import_path(
    settings: Settings,
    path: Path,
    *,
    table: str | None = None,
    fmt: Format | None = None,
    source: str = "auto",
) -> list[ImportReport]:
    """Import a feed file, a folder of feeds, or a public dataset into the warehouse.

    Args:
        settings: the data home.
        path: a file or a folder.
        table: the table of a single canonical file (default: from its name or columns).
        fmt: the file format (default: from the extension).
        source: `canonical`, an adapter name (`online_retail`, `cdnow`, `hillstrom`), or `auto`.
    """
    if not path.exists():
        raise FeedError(f"{path}: no such file or folder")
    if source not in SOURCES:
        raise FeedError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if source == "auto":
        source = "canonical" if path.is_dir() else adapters.detect(path) or "canonical"
    try:
        purged = purge_quarantine(settings.quarantine_dir)  # bad rows are kept for the retention
    except ValueError as exc:  # a retention that is not a number of days
        raise FeedError(str(exc)) from None
    if purged:
        log.info("%d quarantine files past the retention deleted", len(purged))
    with Warehouse(settings.warehouse_path, wait_seconds=LOCK_WAIT_SECONDS) as wh:
        with _Import(wh, settings) as job:
            if source != "canonical":
                label = f"{path} [{source}]"
                for tbl, batches, provided in adapters.ADAPTERS[source](path, settings.batch_rows):
                    job.load(tbl, batches, label, provided)
            elif path.is_dir():
                for tbl, p in _table_files(path):
                    _import_feed(job, p, tbl, fmt)
            else:
                _import_feed(job, path, table, fmt)
        return [report for report, _ in job.done]


def read_feed(
    settings: Settings, path: Path, table: str = "orders", fmt: Format | None = None
) -> tuple[pd.DataFrame, ImportReport]:
    """Read and validate a feed without touching the warehouse (for training on a file).

    Bad rows go to the quarantine as in an import; the good ones come back typed, with the
    schema's columns. Refuses files that are not tables, like `import_feed`.
    """
    fmt = fmt or detect_format(path)
    header = read_header(path, fmt)
    check_header(table, header, str(path))
    report = ImportReport(source=str(path), table=table)
    writer = QuarantineWriter(settings.quarantine_dir, table, str(path))
    good = []
    for raw in iter_batches(path, fmt, settings.batch_rows):
        report.rows_read += len(raw)
        batch, rejected = _split_errors(normalise_columns(raw))
        writer.add(rejected)
        checked = validate_frame(table, batch)
        writer.add(checked.bad)
        good.append(checked.good.drop(columns=["_row"]))
    report.accepted = sum(len(g) for g in good)
    report.quarantined = writer.reasons.copy()
    report.quarantine_file = writer.publish()
    frame = (
        pd.concat(good, ignore_index=True) if good else validate_frame(table, pd.DataFrame()).good
    )
    return frame, report
