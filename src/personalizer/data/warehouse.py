"""The warehouse: one embedded DuckDB file under the data home, no server.

Tables follow `personalizer.schema` exactly. Writes go through `Warehouse.stage` and `Warehouse.merge`
inside one transaction per imported file, so a file is either fully imported or not at all. Orders and
events are insert-only (a key already stored is a duplicate); customers and products are master data,
updated in place for the columns a feed provides.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from personalizer.schema import RECORDS, TABLES, columns

log = logging.getLogger(__name__)

SQL_TYPES = {
    "id": "VARCHAR",
    "str": "VARCHAR",
    "email": "VARCHAR",
    "timezone": "VARCHAR",
    "enum": "VARCHAR",
    "json": "VARCHAR",
    "float": "DOUBLE",
    "int": "BIGINT",
    "bool": "BOOLEAN",
    "datetime": "TIMESTAMP",
}

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS imports (
    imported_at TIMESTAMP, source VARCHAR, table_name VARCHAR, rows_read BIGINT,
    accepted BIGINT, added BIGINT, updated BIGINT, duplicates BIGINT, quarantined BIGINT,
    quarantine_file VARCHAR
)
"""


class WarehouseLocked(RuntimeError):
    """Another process holds the warehouse for writing."""

    def __init__(self, message: str, path: Path, holder_pid: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.holder_pid = holder_pid


_HOLDER = re.compile(r"held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def lock_holder(message: str) -> tuple[int | None, str]:
    """The process DuckDB names in a lock error: its PID and command line, as far as known."""
    found = _HOLDER.search(message)
    if found is None:
        return None, "another process"
    pid = int(found["pid"])
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = ""
    command = command or found["program"]
    if len(command) > 120:
        command = command[:117] + "..."
    return pid, f"process {pid} ({command})"


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means the disk (or a quota) ran out of space, from Python or DuckDB."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, duckdb.Error) and "no space left on device" in str(exc).lower()


@dataclass(frozen=True)
class MergeResult:
    """What one merge did to a table."""

    added: int
    updated: int
    duplicates: int


def table_ddl(table: str) -> str:
    """CREATE TABLE statement of a canonical table."""
    cols = ", ".join(f"{c.name} {SQL_TYPES[c.kind]}" for c in columns(table))
    return f"CREATE TABLE IF NOT EXISTS {table} ({cols})"


def _key_match(table: str, left: str, right: str) -> str:
    return " AND ".join(f"{left}.{k} = {right}.{k}" for k in RECORDS[table].key)


class Warehouse:
    """A connection to the warehouse file, creating the schema on first write."""

    def __init__(self, path: Path, *, read_only: bool = False, wait_seconds: float = 30.0) -> None:
        self.path = path
        self.read_only = read_only
        self.con = self._connect(wait_seconds)
        if not read_only:
            self.ensure_schema()

    def _connect(self, wait_seconds: float) -> duckdb.DuckDBPyConnection:
        if self.read_only and not self.path.exists():
            raise FileNotFoundError(
                f"no warehouse at {self.path}: import data first (personalizer data import)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_seconds
        logged = False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    pid, holder = lock_holder(str(exc))
                    mode = "read" if self.read_only else "write to"
                    raise WarehouseLocked(
                        f"the warehouse {self.path} is locked by another process, {holder}; "
                        f"waited {wait_seconds:g} s to {mode} it. Try again once that process "
                        "has finished (DuckDB allows one writing process at a time)",
                        self.path,
                        pid,
                    ) from exc
                if not logged:
                    log.warning(
                        "warehouse %s is locked; waiting up to %g s", self.path, wait_seconds
                    )
                    logged = True
                time.sleep(0.25)

    def ensure_schema(self) -> None:
        """Create the canonical tables and the import ledger if missing."""
        for table in TABLES:
            self.con.execute(table_ddl(table))
        self.con.execute(LEDGER_DDL)

    def close(self) -> None:
        """Release the file."""
        self.con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: a failure in the block (or at COMMIT) rolls everything back."""
        self.con.execute("BEGIN TRANSACTION")
        try:
            yield
            self.con.execute("COMMIT")
        except BaseException as exc:
            try:
                self.con.execute("ROLLBACK")
            except duckdb.Error as again:
                # A failed COMMIT has already rolled back; a database invalidated by a write
                # error (a full disk) refuses everything. Either way nothing was committed:
                # report the first error, not this one.
                log.debug("rollback after %r: %s", exc, again)
            raise

    def stage(self, table: str, batch: pd.DataFrame, staging: str) -> None:
        """Append a validated batch (schema columns plus `_row`) to a temporary staging table."""
        names = [c.name for c in columns(table)] + ["_row"]
        self.con.register("_batch", batch[names])
        try:
            exists = self.con.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND temporary",
                [staging],
            ).fetchone()
            if exists and exists[0]:
                self.con.execute(f"INSERT INTO {staging} SELECT * FROM _batch")
            else:
                self.con.execute(f"CREATE TEMP TABLE {staging} AS SELECT * FROM _batch")
        finally:
            self.con.unregister("_batch")

    def merge(self, table: str, staging: str, provided: set[str]) -> MergeResult:
        """Move staged rows into `table`: new keys are added, known ones skipped or updated.

        Args:
            table: target canonical table.
            staging: temporary table filled by `stage`.
            provided: columns the feed actually had; master data updates only those.
        """
        keys = RECORDS[table].key
        names = [c.name for c in columns(table)]
        if table == "orders" and "line_no" not in provided:
            # Identical lines of one order are kept apart by their position in the feed.
            self.con.execute(
                f"UPDATE {staging} SET line_no = r.n FROM (SELECT _row, row_number() OVER "
                f"(PARTITION BY order_id, product_id ORDER BY _row) - 1 AS n FROM {staging}) r "
                f"WHERE {staging}._row = r._row"
            )
        key_list = ", ".join(keys)
        staged = self._scalar(f"SELECT count(*) FROM {staging}")
        master = table in ("customers", "products")
        # Master data: the last row of a key wins; facts: the first one does.
        order = "DESC" if master else "ASC"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE _dedup AS SELECT * FROM {staging} "
            f"QUALIFY row_number() OVER (PARTITION BY {key_list} ORDER BY _row {order}) = 1"
        )
        updated = 0
        if master:
            changing = [n for n in names if n in provided and n not in keys]
            if changing:
                differs = " OR ".join(f"t.{n} IS DISTINCT FROM d.{n}" for n in changing)
                sets = ", ".join(f"{n} = d.{n}" for n in changing)
                updated = self._scalar(
                    f"SELECT count(*) FROM {table} t JOIN _dedup d ON {_key_match(table, 't', 'd')}"
                    f" WHERE {differs}"
                )
                if updated:
                    self.con.execute(
                        f"UPDATE {table} t SET {sets} FROM _dedup d "
                        f"WHERE {_key_match(table, 't', 'd')} AND ({differs})"
                    )
        before = self._scalar(f"SELECT count(*) FROM {table}")
        self.con.execute(
            f"INSERT INTO {table} SELECT {', '.join('d.' + n for n in names)} FROM _dedup d "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {_key_match(table, 't', 'd')})"
        )
        added = self._scalar(f"SELECT count(*) FROM {table}") - before
        self.con.execute(f"DROP TABLE IF EXISTS {staging}")
        self.con.execute("DROP TABLE IF EXISTS _dedup")
        return MergeResult(added=added, updated=updated, duplicates=staged - added - updated)

    def infer_from_orders(self) -> tuple[int, int]:
        """Customers and products that orders name but no feed described, added with what orders tell.

        Inferred customers have no email and no consent (privacy by default) and carry
        `{"inferred": true}` in their attributes; inferred products take their median unit price.
        """
        before_c = self._scalar("SELECT count(*) FROM customers")
        self.con.execute(
            "INSERT INTO customers (customer_id, signed_up_at, email_consent, attributes) "
            "SELECT o.customer_id, min(o.ordered_at), false, '{\"inferred\":true}' FROM orders o "
            "WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.customer_id = o.customer_id) "
            "GROUP BY o.customer_id"
        )
        before_p = self._scalar("SELECT count(*) FROM products")
        self.con.execute(
            "INSERT INTO products (product_id, price, in_stock) "
            "SELECT o.product_id, median(o.unit_price), true FROM orders o "
            "WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.product_id = o.product_id) "
            "GROUP BY o.product_id"
        )
        return (
            self._scalar("SELECT count(*) FROM customers") - before_c,
            self._scalar("SELECT count(*) FROM products") - before_p,
        )

    def record_import(self, row: dict[str, Any]) -> None:
        """Append one line to the import ledger."""
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.con.execute(f"INSERT INTO imports ({cols}) VALUES ({marks})", list(row.values()))

    def query(self, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
        """Run SQL and return a DataFrame."""
        return self.con.execute(sql, params or []).df()

    def query_coded(
        self, sql: str, params: list[Any] | None = None, batch_rows: int = 1_000_000
    ) -> pd.DataFrame:
        """Run SQL and return a DataFrame whose text columns are categoricals.

        The result is streamed in Arrow batches and each text column is coded as it arrives,
        into one dictionary per column: a result of a hundred million rows never exists as text,
        and an event's customer id and type cost four bytes each instead of a string each.
        """
        import pyarrow as pa

        relation = self.con.sql(sql, params=params or None)
        if relation is None:
            raise ValueError(f"query_coded: not a query that returns rows: {sql!r}")
        reader = relation.to_arrow_reader(batch_rows)
        columns = [
            _CodedColumn()
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            else _CopiedColumn(f.type)
            for f in reader.schema
        ]
        for batch in reader:
            for column, values in zip(columns, batch.columns, strict=True):
                column.add(values)
        return pd.DataFrame(
            {f.name: c.finish() for f, c in zip(reader.schema, columns, strict=True)}
        )

    def _scalar(self, sql: str) -> int:
        row = self.con.execute(sql).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


class _CodedColumn:
    """A text column, batch by batch, as integer codes into one dictionary (first seen first)."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.parts: list[np.ndarray] = []

    def add(self, values: Any) -> None:
        """Code one Arrow array of text (nulls get -1)."""
        import pyarrow.compute as pc

        encoded = pc.dictionary_encode(values)
        words = encoded.dictionary.to_pylist()
        known = self.codes
        lookup = np.fromiter(
            (known.setdefault(w, len(known)) for w in words), dtype=np.int32, count=len(words)
        )
        index = pc.fill_null(encoded.indices, -1).to_numpy()
        self.parts.append(np.append(lookup, np.int32(-1))[index])  # index -1 takes the -1

    def finish(self) -> pd.Categorical:
        codes = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.int32)
        self.parts = []
        return pd.Categorical.from_codes(codes, categories=pd.Index(list(self.codes)))


class _CopiedColumn:
    """A column other than text, batch by batch, copied out of the imported batches (a view into
    one keeps all of its columns alive)."""

    def __init__(self, arrow_type: Any) -> None:
        self.arrow_type = arrow_type
        self.parts: list[pd.Series] = []

    def add(self, values: Any) -> None:
        self.parts.append(values.to_pandas().copy())

    def finish(self) -> pd.Series:
        import pyarrow as pa

        if not self.parts:
            return pa.chunked_array([], type=self.arrow_type).to_pandas()
        return pd.concat(self.parts, ignore_index=True)


STATS_COLUMNS = {
    # table: (time column, has customer_id, has product_id)
    "customers": ("signed_up_at", True, False),
    "products": (None, False, True),
    "orders": ("ordered_at", True, True),
    "events": ("occurred_at", True, True),
}


def table_stats(wh: Warehouse) -> pd.DataFrame:
    """Rows, date range, distinct customers and products of each table (None where n/a)."""
    rows = []
    for table in TABLES:
        when, has_customer, has_product = STATS_COLUMNS[table]
        parts = [
            "count(*)",
            f"min({when})" if when else "NULL",
            f"max({when})" if when else "NULL",
            "count(DISTINCT customer_id)" if has_customer else "NULL",
            "count(DISTINCT product_id)" if has_product else "NULL",
        ]
        result = wh.con.execute(f"SELECT {', '.join(parts)} FROM {table}").fetchone()
        assert result is not None
        names = ("rows", "from", "to", "customers", "products")
        rows.append({"table": table, **dict(zip(names, result, strict=True))})
    return pd.DataFrame(rows, dtype=object)
