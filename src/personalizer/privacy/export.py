"""Everything a data home holds about one customer, as one JSON-ready dict (a subject access).

`export_customer(settings, customer_id)` gathers:

- `customer`: the warehouse row (email, country, time zone, consent, attributes), or None;
- `orders`, `events`: their warehouse rows; `live_events`: their rows of the event store;
- `segments`: `memberships` (each stay in a segment) and `changes` (enter/exit records);
- `journeys`: their `journeys`, `steps` and `queue` rows;
- `quarantine`: quarantined lines that mention them (bad rows keep the original record);
- `decisions`: their decision audit records (looked up by pseudonym);
- `files`: rows about them in every other Parquet file of the home (score files kept in the home,
  the synthetic feeds, models' stored order lines), by path;
- `erased`: whether their pseudonym is on the erased list.

Read-only: nothing is written, and the warehouse is opened read-only.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd

from personalizer.config import Settings
from personalizer.privacy.pseudonym import erased_pseudonyms, load_key, pseudonymize
from personalizer.privacy.scrubber import Needles, mentions

KNOWN_PARQUET = ("segments",)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (times as ISO 8601 text)."""
    if frame is None or frame.empty:
        return []
    out: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    return out


def export_customer(settings: Settings, customer_id: str) -> dict[str, Any]:
    """Everything held about `customer_id` in the data home of `settings` (see the module doc)."""
    customer_id = str(customer_id)
    home = settings.home
    result: dict[str, Any] = {"customer_id": customer_id, "exported_at": _now()}
    customer, orders, events = _warehouse(settings, customer_id)
    result["customer"] = customer
    result["orders"], result["events"] = orders, events
    email = customer.get("email") if customer else None
    needles = Needles(customer_id, email)
    result["live_events"] = _sqlite_rows(home / "events.sqlite", ("events",), customer_id)["events"]
    result["segments"] = {
        name: _parquet_rows(home / "segments" / f"{name}.parquet", needles)
        for name in ("memberships", "changes")
    }
    result["journeys"] = _sqlite_rows(
        home / "journeys" / "journeys.sqlite", ("journeys", "steps", "queue"), customer_id
    )
    result["quarantine"] = _quarantine(settings.quarantine_dir, needles)
    key = load_key(settings)
    pseudonym = pseudonymize(customer_id, key)
    result["decisions"] = _decisions(settings, pseudonym)
    result["files"] = _other_parquet(home, needles)
    result["erased"] = pseudonym in erased_pseudonyms(settings)
    return result


def _now() -> str:
    return pd.Timestamp.now("UTC").isoformat()


def _warehouse(
    settings: Settings, customer_id: str
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    if not settings.warehouse_path.exists():
        return None, [], []
    from personalizer.data.warehouse import Warehouse

    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        params = [customer_id]
        customer = records(wh.query("SELECT * FROM customers WHERE customer_id = ?", params))
        orders = wh.query(
            "SELECT * FROM orders WHERE customer_id = ? ORDER BY ordered_at, order_id, line_no",
            params,
        )
        events = wh.query(
            "SELECT * FROM events WHERE customer_id = ? ORDER BY occurred_at, event_id", params
        )
    if customer and isinstance(customer[0].get("attributes"), str):
        with contextlib.suppress(json.JSONDecodeError):
            customer[0]["attributes"] = json.loads(customer[0]["attributes"])
    return (customer[0] if customer else None), records(orders), records(events)


def _sqlite_rows(
    path: Path, tables: tuple[str, ...], customer_id: str
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {t: [] for t in tables}
    if not path.exists():
        return out
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        existing = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in tables:
            if table in existing:
                frame = pd.read_sql_query(
                    f"SELECT * FROM {table} WHERE customer_id = ?", con, params=(customer_id,)
                )
                out[table] = records(frame)
    finally:
        con.close()
    return out


def _parquet_rows(path: Path, needles: Needles) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    frame = pd.read_parquet(path)
    if "customer_id" not in frame.columns:
        return []
    mask = frame["customer_id"].astype(str) == needles.customer_id
    if needles.email and "email" in frame.columns:
        mask |= frame["email"].astype(str) == needles.email
    return records(frame[mask])


def _quarantine(folder: Path, needles: Needles) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if not folder.exists():
        return found
    for path in sorted(folder.rglob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if mentions(record, needles):
                found.append({"file": str(path.relative_to(folder)), **record})
    return found


def _decisions(settings: Settings, pseudonym: str) -> list[dict[str, Any]]:
    from personalizer.privacy.decision_audit import audit_path

    path = audit_path(settings)
    if not path.exists():
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        frame = pd.read_sql_query(
            "SELECT * FROM decisions WHERE customer = ? ORDER BY decided_at",
            con,
            params=(pseudonym,),
        )
    finally:
        con.close()
    rows = records(frame)
    for row in rows:
        row["model_versions"] = json.loads(row["model_versions"])
    return rows


def _other_parquet(home: Path, needles: Needles) -> dict[str, list[dict[str, Any]]]:
    files: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(home.rglob("*.parquet")):
        relative = path.relative_to(home)
        if relative.parts[0] in KNOWN_PARQUET:
            continue
        rows = _parquet_rows(path, needles)
        if rows:
            files[str(relative)] = rows
    return files
