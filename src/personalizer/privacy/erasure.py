"""Erasing one customer from every store of a data home, with an audit record free of their data.

`erase_customer(settings, customer_id)` removes, in this order:

| store | what goes |
| --- | --- |
| warehouse `customers`, `orders`, `events` | the customer's rows (then a CHECKPOINT) |
| `events.sqlite` (event store) | the customer's events (secure delete, WAL truncated) |
| `journeys/journeys.sqlite` | the customer's `queue`, `steps`, `journeys` and `latest` rows |
| every Parquet file of the home | rows whose `customer_id` (or `email`) is theirs: segment history, synthetic feeds and truth, churn models' stored order lines and events (in `models/` and `mlartifacts/`), score files kept in the home |
| npz files (fitted models) | their id in the models' id arrays, replaced by a random tombstone |
| JSON files in `models/`, `mlartifacts/` | their id as a value (MLflow input examples), replaced by a tombstone |
| JSON Lines files (quarantine) | lines mentioning their id or email |
| CSV files | rows with a field equal to their id or email |
| `privacy/decisions.sqlite` | their decision audit records (by pseudonym) |
| `report.html` | rebuilt without them, when it exists |

and then adds their pseudonym to `privacy/erased.txt` (training drops erased customers, so a model
fitted after the erasure never sees them, even if an old feed is imported again) and appends one
line to `privacy/audit.jsonl`: the time, the pseudonym and the counts per store, never the id or the
email. Erasing twice is harmless: the second run finds nothing and says so.

Models trained before the erasure keep weights that the customer's data helped to fit, but no
longer anything that names them; the next training (which reads the warehouse and the erased list)
leaves them out entirely. A running decision service keeps its in-memory snapshot until it
reloads: the endpoint asks it to (`POST /v1/customers/{id}/erase`).

Score files written outside the data home (`personalizer score ... --out` elsewhere) cannot be
found here: keep them in the home, or erase them by hand.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from personalizer.config import Settings
from personalizer.privacy.pseudonym import add_erased, load_key, privacy_dir, pseudonymize
from personalizer.privacy.scrubber import (
    Needles,
    scrub_csv,
    scrub_json,
    scrub_jsonl,
    scrub_npz,
    scrub_parquet,
)
from personalizer.tracking.store import folder_checksums

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
WAREHOUSE_TABLES = ("orders", "events", "customers")
JOURNEY_TABLES = ("queue", "steps", "journeys", "latest")
JSON_FOLDERS = ("models", "mlartifacts")
CHECKSUMS_KEY = "personalizer_checksums"  # tracking.store.CHECKSUMS_KEY


class ErasureBlocked(RuntimeError):
    """A store could not be opened for writing (the warehouse held by another process)."""


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure removed.

    Attributes:
        pseudonym: the customer's keyed pseudonym (what the audit log keeps).
        at: when the erasure finished (UTC, naive).
        removed: rows or values removed per store (`warehouse.orders`, `quarantine`, ...); only
            stores where something was found.
        newly_erased: False when the customer was already on the erased list.
        notes: what else was done (report rebuilt, files that could not be read).
    """

    pseudonym: str
    at: pd.Timestamp
    removed: dict[str, int] = field(default_factory=dict)
    newly_erased: bool = True
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Rows and values removed in all."""
        return sum(self.removed.values())

    def to_dict(self) -> dict[str, Any]:
        """The audit record: no id, no email."""
        return {
            "at": self.at.isoformat(),
            "pseudonym": self.pseudonym,
            "removed": dict(sorted(self.removed.items())),
            "total": self.total,
            "newly_erased": self.newly_erased,
            "notes": list(self.notes),
        }


def erase_customer(
    settings: Settings,
    customer_id: str,
    *,
    wait_seconds: float = 30.0,
    rebuild_report: bool = True,
) -> ErasureReport:
    """Remove `customer_id` from every store of the data home and record it in the audit log.

    Args:
        settings: the data home.
        customer_id: the customer to erase.
        wait_seconds: how long to wait for another process to release the warehouse.
        rebuild_report: rebuild `report.html` when it exists (it counts the customer).

    Raises:
        ErasureBlocked: the warehouse stayed locked by another process; nothing was erased.
        ValueError: an empty id.
    """
    customer_id = str(customer_id).strip()
    if not customer_id:
        raise ValueError("customer_id: must not be empty")
    key = load_key(settings)
    pseudonym = pseudonymize(customer_id, key)
    removed: Counter[str] = Counter()
    notes: list[str] = []
    email = _erase_warehouse(settings, customer_id, wait_seconds, removed)
    needles = Needles(customer_id, email)
    _erase_sqlite(settings.home / "events.sqlite", ("events",), customer_id, "event_store", removed)
    _erase_sqlite(
        settings.home / "journeys" / "journeys.sqlite", JOURNEY_TABLES, customer_id, "journeys",
        removed,
    )  # fmt: skip
    changed = _erase_files(settings.home, needles, removed, notes)
    _reseal_models(changed, notes)
    _erase_decision_audit(settings, pseudonym, removed)
    if rebuild_report and (settings.home / "report.html").exists() and removed:
        notes.append(_rebuild_report(settings))
    newly = add_erased(settings, pseudonym)
    report = ErasureReport(
        pseudonym=pseudonym,
        at=pd.Timestamp.now("UTC").tz_localize(None),
        removed={k: v for k, v in sorted(removed.items()) if v},
        newly_erased=newly,
        notes=tuple(notes),
    )
    _append_audit(settings, report)
    log.info("erased %s: %d rows or values in %d stores", pseudonym[:12], report.total,
             len(report.removed))  # fmt: skip
    return report


def _erase_warehouse(
    settings: Settings, customer_id: str, wait_seconds: float, removed: Counter[str]
) -> str | None:
    """Delete the customer's warehouse rows; return their email (None if unknown)."""
    path = settings.warehouse_path
    if not path.exists():
        return None
    from personalizer.data.warehouse import Warehouse, WarehouseLocked

    try:
        wh = Warehouse(path, wait_seconds=wait_seconds)
    except WarehouseLocked as exc:
        raise ErasureBlocked(
            f"{exc}. Nothing was erased: stop the process holding the warehouse (an import, a "
            "training run, a service loading its snapshot) or retry, then erase again."
        ) from exc
    with wh:
        row = wh.con.execute(
            "SELECT email FROM customers WHERE customer_id = ? AND email IS NOT NULL",
            [customer_id],
        ).fetchone()
        email = str(row[0]) if row else None
        with wh.transaction():
            for table in WAREHOUSE_TABLES:
                count = wh.con.execute(
                    f"SELECT count(*) FROM {table} WHERE customer_id = ?", [customer_id]
                ).fetchone()
                if count and count[0]:
                    wh.con.execute(f"DELETE FROM {table} WHERE customer_id = ?", [customer_id])
                    removed[f"warehouse.{table}"] += int(count[0])
        wh.con.execute("CHECKPOINT")
        if any(removed[f"warehouse.{t}"] for t in WAREHOUSE_TABLES):
            _compact(wh.con, path)
    return email


def _compact(con: Any, path: Path) -> None:
    """Rewrite the warehouse file: DuckDB leaves deleted rows in freed blocks of the old file, so
    only a copy holds nothing of the customer. Costs a full copy (rare: erasures only)."""
    fresh = path.with_name(f".{path.stem}.erasure.duckdb")
    fresh.unlink(missing_ok=True)
    name = con.execute("SELECT current_database()").fetchone()[0]
    con.execute(f"ATTACH '{fresh}' AS _fresh")
    try:
        con.execute(f'COPY FROM DATABASE "{name}" TO _fresh')
        con.execute("DETACH _fresh")
        os.replace(fresh, path)  # the open handle keeps reading the old file until closed
    finally:
        fresh.unlink(missing_ok=True)
        path.with_name(fresh.name + ".wal").unlink(missing_ok=True)


def _erase_sqlite(
    path: Path, tables: tuple[str, ...], customer_id: str, store: str, removed: Counter[str]
) -> None:
    """Delete the customer's rows from SQLite tables, overwriting them and truncating the WAL."""
    if not path.exists():
        return
    con = sqlite3.connect(path, timeout=300.0, isolation_level=None)
    try:
        con.execute("PRAGMA busy_timeout = 300000")
        con.execute("PRAGMA secure_delete = ON")  # zero the freed space, not just unlink it
        existing = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        con.execute("BEGIN IMMEDIATE")
        try:
            for table in tables:
                if table not in existing:
                    continue
                cursor = con.execute(f"DELETE FROM {table} WHERE customer_id = ?", (customer_id,))
                removed[f"{store}.{table}"] += max(cursor.rowcount, 0)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        # The WAL still holds the old pages; a truncating checkpoint empties it.
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def _store_of(home: Path, path: Path) -> str:
    parts = path.relative_to(home).parts
    return parts[0] if len(parts) > 1 else "home"


def _erase_files(
    home: Path, needles: Needles, removed: Counter[str], notes: list[str]
) -> list[Path]:
    """Scrub every Parquet, npz, JSON Lines, CSV (and model JSON) file under the home; return
    the files changed."""
    scrubbers = {
        ".parquet": (scrub_parquet, "parquet_rows"),
        ".npz": (scrub_npz, "model_ids"),
        ".jsonl": (scrub_jsonl, "jsonl_lines"),
        ".csv": (scrub_csv, "csv_rows"),
        ".json": (scrub_json, "json_values"),
    }
    changed: list[Path] = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        suffix = path.suffix.lower()
        store = _store_of(home, path)
        if suffix not in scrubbers or (suffix == ".json" and store not in JSON_FOLDERS):
            continue
        scrub, kind = scrubbers[suffix]
        try:
            count = scrub(path, needles)
            if count:
                removed[f"{store}.{kind}"] += count
                changed.append(path)
        except Exception as exc:  # one unreadable file must not stop the rest; it is reported
            log.warning("erasure: could not scrub %s: %s", path, exc)
            notes.append(f"could not scrub {path.relative_to(home)}: {type(exc).__name__}")
    return changed


def _reseal_models(changed: list[Path], notes: list[str]) -> None:
    """Update the file checksums logged in the MLmodel of every MLflow model folder whose files
    the erasure rewrote, so the champion still loads (it is verified against them)."""
    import yaml

    roots = {p for c in changed for p in c.parents if (p / "MLmodel").is_file()}
    for root in sorted(roots):
        path = root / "MLmodel"
        meta = yaml.safe_load(path.read_text())
        sums = (meta.get("metadata") or {}).get(CHECKSUMS_KEY)
        artifacts = meta.get("flavors", {}).get("python_function", {}).get("artifacts", {})
        if not isinstance(sums, dict):
            continue
        for name in list(sums):
            relative = (artifacts.get(name) or {}).get("path")
            if relative and (root / relative).is_dir():
                sums[name] = folder_checksums(root / relative)
        tmp = path.with_name("MLmodel.tmp")
        tmp.write_text(yaml.safe_dump(meta, default_flow_style=False, sort_keys=False))
        tmp.replace(path)
        notes.append(f"checksums of {root.name} updated")


def _erase_decision_audit(settings: Settings, pseudonym: str, removed: Counter[str]) -> None:
    from personalizer.privacy.decision_audit import audit_path

    path = audit_path(settings)
    if path.exists():
        _erase_sqlite_by(path, "decisions", "customer", pseudonym, removed)


def _erase_sqlite_by(
    path: Path, table: str, column: str, value: str, removed: Counter[str]
) -> None:
    con = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    try:
        con.execute("PRAGMA secure_delete = ON")
        cursor = con.execute(f"DELETE FROM {table} WHERE {column} = ?", (value,))
        removed["privacy.decision_audit"] += max(cursor.rowcount, 0)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def _rebuild_report(settings: Settings) -> str:
    from personalizer.report.build import write_report

    try:
        write_report(settings)
    except Exception as exc:  # the erasure stands; say the report is stale
        log.warning("erasure: report not rebuilt: %s", exc)
        return f"report.html not rebuilt ({type(exc).__name__}): run `personalizer report`"
    return "report.html rebuilt"


def _append_audit(settings: Settings, report: ErasureReport) -> None:
    path = privacy_dir(settings) / AUDIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(report.to_dict(), sort_keys=True) + "\n")


def read_audit(settings: Settings) -> list[dict[str, Any]]:
    """Every erasure recorded in this home, oldest first."""
    path = privacy_dir(settings) / AUDIT_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def erase_route_handler(settings: Settings, customer_id: str) -> dict[str, Any]:
    """The body of `POST /v1/customers/{id}/erase` (the route checks the bearer token first).

    Returns the audit record (pseudonym and counts per store, never the id). Raises
    `ErasureBlocked` (the route answers 409) when the warehouse stays locked.
    """
    report = erase_customer(settings, customer_id)
    return {"erased": True, **report.to_dict()}
