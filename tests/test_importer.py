"""Canonical feed imports: formats, quarantine, idempotence, refusal of non-tables, atomicity."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import invoke
from personalizer.config import Settings
from personalizer.data.importer import import_path
from personalizer.data.validate import FeedError
from personalizer.data.warehouse import Warehouse, WarehouseLocked

ORDERS = pd.DataFrame(
    {
        "customer_id": ["c1", "c1", "c2", "c2", "c3"],
        "order_id": ["o1", "o1", "o2", "o2", "o3"],
        "product_id": ["p1", "p2", "p1", "p1", "p3"],
        "quantity": [1, 2, 1, 1, 3],
        "unit_price": [10.0, 5.5, 10.0, 10.0, 2.0],
        "ordered_at": pd.to_datetime(
            [
                "2024-01-01 10:00",
                "2024-01-01 10:00",
                "2024-02-01 00:00",
                "2024-02-01 00:00",
                "2024-03-01 00:00",
            ]
        ),
        "channel": ["web", "web", "app", "app", "web"],  # extra columns are ignored
    }
)


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, date_format="iso")
    return path


def count(settings: Settings, table: str) -> int:
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        return int(wh.query(f"SELECT count(*) AS n FROM {table}")["n"].iat[0])


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_orders_alone_make_a_usable_shop(settings: Settings, tmp_path: Path, suffix: str) -> None:
    path = write(ORDERS, tmp_path / f"orders{suffix}")
    [report] = import_path(settings, path)
    assert (report.table, report.rows_read, report.added) == ("orders", 5, 5)
    # identical lines of one order stay two lines, told apart by line_no
    assert (report.inferred_customers, report.inferred_products) == (3, 3)
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        lines = wh.query("SELECT line_no FROM orders WHERE order_id = 'o2' ORDER BY line_no")
        assert lines["line_no"].tolist() == [0, 1]
        customers = wh.query("SELECT * FROM customers ORDER BY customer_id")
        assert customers["customer_id"].tolist() == ["c1", "c2", "c3"]
        assert not customers["email_consent"].any()  # privacy by default
        assert customers["signed_up_at"].iat[0] == pd.Timestamp("2024-01-01 10:00")
        price = wh.query("SELECT price FROM products WHERE product_id = 'p1'")["price"].iat[0]
        assert price == 10.0


def test_importing_the_same_file_twice_adds_nothing(settings: Settings, tmp_path: Path) -> None:
    path = write(ORDERS, tmp_path / "orders.csv")
    first = import_path(settings, path)[0]
    second = import_path(settings, path)[0]
    assert first.added == 5
    assert (second.added, second.duplicates, second.inferred_customers) == (0, 5, 0)
    assert count(settings, "orders") == 5
    assert count(settings, "customers") == 3


def test_bad_rows_go_to_quarantine_with_reason_and_original_row(
    settings: Settings, tmp_path: Path
) -> None:
    rows = ORDERS.astype(str).copy()
    rows.loc[1, "unit_price"] = "-3"
    rows.loc[3, "ordered_at"] = "not-a-date"
    path = write(rows, tmp_path / "orders.csv")
    [report] = import_path(settings, path)
    assert report.added == 3
    assert dict(report.quarantined) == {
        "unit_price: must be >= 0": 1,
        "ordered_at: unparsable date": 1,
    }
    assert report.quarantine_file is not None
    assert report.quarantine_file.parent == settings.quarantine_dir / "orders"
    lines = [json.loads(x) for x in report.quarantine_file.read_text().splitlines()]
    by_row = {line["row"]: line for line in lines}
    assert by_row[2]["reason"] == "unit_price: must be >= 0"
    assert by_row[2]["value"] == "-3"
    assert by_row[2]["record"]["channel"] == "web"  # the whole original row
    assert by_row[4]["record"]["ordered_at"] == "not-a-date"


def test_csv_row_with_wrong_field_count_is_quarantined(settings: Settings, tmp_path: Path) -> None:
    text = (
        "customer_id,order_id,product_id,quantity,unit_price,ordered_at\n"
        "c1,o1,p1,1,2.0,2024-01-01\n"
        "c1,o2,p1,1,2.0,2024-01-02,surplus\n"
        "c2,o3,p2,1,2.0,2024-01-03\n"
    )
    path = tmp_path / "orders.csv"
    path.write_text(text)
    [report] = import_path(settings, path)
    assert report.added == 2
    assert report.quarantined_total == 1
    [reason] = report.quarantined
    assert "expected 6 fields, found 7" in reason


def test_jsonl_bad_line_is_quarantined_but_a_non_json_file_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    good = json.dumps({**{k: str(v) for k, v in ORDERS.iloc[0].items()}})
    path = tmp_path / "orders.jsonl"
    path.write_text(good + "\n{broken\n[1, 2]\n")
    [report] = import_path(settings, path)
    assert report.added == 1
    assert sorted(report.quarantined) == [
        "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        "not a JSON object",
    ]
    csv_in_disguise = tmp_path / "more_orders.jsonl"
    csv_in_disguise.write_text("customer_id,order_id\nc1,o1\n")
    with pytest.raises(FeedError, match="not JSON Lines"):
        import_path(settings, csv_in_disguise, table="orders")


def test_gzipped_csv_is_read(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv.gz"
    with gzip.open(path, "wt") as handle:
        ORDERS.to_csv(handle, index=False)
    assert import_path(settings, path)[0].added == 5


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("orders.csv", "customer_id,order_id,product_id\nc1,o1,p1\n", "missing required column"),
        ("orders.parquet", "customer_id,order_id\n", "not a Parquet file"),
        ("orders.csv", b"\x89PNG\r\n\x1a\n\x00\x00binary", "binary content"),
        ("orders.csv", "", "empty file"),
        ("orders.xlsx", "whatever", "unknown feed format"),
    ],
)
def test_a_file_that_is_not_a_table_is_refused_whole(
    settings: Settings, tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(FeedError, match=message):
        import_path(settings, path)
    assert not settings.quarantine_dir.exists()
    if settings.warehouse_path.exists():
        assert count(settings, "orders") == 0
        assert count(settings, "imports") == 0


def test_a_failure_mid_import_writes_nothing(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = ORDERS.astype(str).copy()
    rows.loc[0, "quantity"] = "-1"  # one bad row, so a quarantine file would be written
    path = write(rows, tmp_path / "orders.csv")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(Warehouse, "infer_from_orders", boom)
    with pytest.raises(OSError, match="No space left"):
        import_path(settings, path)
    assert count(settings, "orders") == 0
    assert count(settings, "imports") == 0
    assert not list(settings.quarantine_dir.rglob("*.jsonl"))
    assert not list(settings.quarantine_dir.rglob("*.partial"))


def test_master_data_is_updated_for_the_columns_a_feed_provides(
    settings: Settings, tmp_path: Path
) -> None:
    import_path(settings, write(ORDERS, tmp_path / "orders.csv"))
    customers = pd.DataFrame(
        {
            "customer_id": ["c1", "c9"],
            "email": ["c1@example.com", "c9@example.com"],
            "email_consent": ["yes", "no"],
            "tier": ["gold", "silver"],
        }
    )
    path = write(customers, tmp_path / "customers.csv")
    first = import_path(settings, path)[0]
    assert (first.added, first.updated) == (1, 1)
    again = import_path(settings, path)[0]
    assert (again.added, again.updated, again.duplicates) == (0, 0, 2)
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        c1 = wh.query("SELECT * FROM customers WHERE customer_id = 'c1'").iloc[0]
    assert c1["email"] == "c1@example.com"
    assert bool(c1["email_consent"]) is True
    assert json.loads(c1["attributes"]) == {"tier": "gold"}
    # signed_up_at was inferred from orders and this feed does not carry it: kept
    assert c1["signed_up_at"] == pd.Timestamp("2024-01-01 10:00")


def test_events_are_deduplicated_by_event_id(settings: Settings, tmp_path: Path) -> None:
    events = pd.DataFrame(
        {
            "event_id": ["e1", "e2", "e1"],
            "customer_id": ["c1", "c1", "c1"],
            "type": ["product_view", "add_to_cart", "product_view"],
            "occurred_at": ["2024-01-01T10:00:00Z"] * 3,
            "product_id": ["p1", "p1", "p1"],
        }
    )
    path = write(events, tmp_path / "events.jsonl")
    report = import_path(settings, path)[0]
    assert (report.added, report.duplicates) == (2, 1)
    assert import_path(settings, path)[0].added == 0


def test_a_folder_of_feeds_and_parts_is_imported_in_table_order(
    settings: Settings, tmp_path: Path
) -> None:
    shop = tmp_path / "shop"
    write(
        pd.DataFrame(
            {"product_id": ["p1", "p2", "p3"], "title": ["A", "B", "C"], "price": [1.0, 2.0, 3.0]}
        ),
        shop / "products.csv",
    )
    write(ORDERS.iloc[:2], shop / "orders" / "part-00000.parquet")
    write(ORDERS.iloc[2:], shop / "orders" / "part-00001.parquet")
    reports = import_path(settings, shop)
    assert [r.table for r in reports] == ["products", "orders", "orders"]
    assert count(settings, "orders") == 5
    assert sum(r.inferred_products for r in reports) == 0  # the feed described them all


def test_query_coded_gives_the_same_rows_with_text_as_categoricals(
    settings: Settings, tmp_path: Path
) -> None:
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(7)],
            "customer_id": ["c1", "c2", "c1", "c3", "c2", "c1", "c3"],
            "type": ["product_view", "add_to_cart"] * 3 + ["email_open"],
            "occurred_at": [f"2024-01-0{i + 1}T10:00:00Z" for i in range(7)],
        }
    )
    import_path(settings, write(events, tmp_path / "events.jsonl"))
    sql = "SELECT customer_id, type, occurred_at, campaign_id FROM events ORDER BY event_id"
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        plain = wh.query(sql)
        coded = wh.query_coded(sql, batch_rows=2)  # four batches, each with its own dictionary
        empty = wh.query_coded(sql + " LIMIT 0")
    assert all(isinstance(coded[c].dtype, pd.CategoricalDtype) for c in ("customer_id", "type"))
    assert coded["occurred_at"].dtype == plain["occurred_at"].dtype
    pd.testing.assert_frame_equal(coded.astype("string"), plain.astype("string"))
    assert list(empty.columns) == list(plain.columns)
    assert empty.empty


def test_table_is_guessed_from_columns_when_the_name_says_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    [report] = import_path(settings, write(ORDERS, tmp_path / "export-2024.csv"))
    assert report.table == "orders"


def test_a_locked_warehouse_gives_a_clear_error(settings: Settings) -> None:
    Warehouse(settings.warehouse_path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(settings.warehouse_path)!r}); "
            "print('ready', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        started = time.monotonic()
        with pytest.raises(WarehouseLocked, match="locked by another process"):
            Warehouse(settings.warehouse_path, wait_seconds=0.5)
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait()


def test_quarantine_files_are_deleted_after_the_retention(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = settings.quarantine_dir / "customers" / "20200101T000000000000Z-customers.jsonl"
    old.parent.mkdir(parents=True)
    old.write_text('{"record": {"email": "old@example.com"}}\n')
    feed = tmp_path / "customers.csv"
    feed.write_text("customer_id,email,timezone\nc1,a@example.com,Mars/Olympus\n")
    import_path(settings, feed)
    kept = sorted((settings.quarantine_dir / "customers").glob("*.jsonl"))
    assert old not in kept  # older than the 90 days by default
    assert len(kept) == 1
    assert "Mars/Olympus" in kept[0].read_text()  # this import's bad row
    monkeypatch.setenv("PERSONALIZER_QUARANTINE_RETENTION_DAYS", "soon")
    with pytest.raises(FeedError, match=r"PERSONALIZER_QUARANTINE_RETENTION_DAYS.*'soon'"):
        import_path(settings, feed)
    monkeypatch.delenv("PERSONALIZER_QUARANTINE_RETENTION_DAYS")
    output = invoke(settings.home, "data", "purge-quarantine", "--older-than", "0")
    assert "1 quarantine files deleted" in output
    assert not list(settings.quarantine_dir.glob("*/*.jsonl"))
