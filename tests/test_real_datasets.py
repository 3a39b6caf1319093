"""Imports of the real public datasets reproduce the figures in ../shared/datasets/README.md."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from conftest import dataset
from personalizer.config import Settings
from personalizer.data.importer import ImportReport, import_path
from personalizer.data.warehouse import Warehouse

pytestmark = pytest.mark.slow


def by_table(reports: list[ImportReport]) -> dict[str, ImportReport]:
    return {r.table: r for r in reports}


@pytest.fixture(scope="module")
def online_retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict]:
    settings = Settings(home=tmp_path_factory.mktemp("online_retail"), show_progress=False)
    reports = by_table(import_path(settings, dataset("online_retail", "online_retail.parquet")))
    return settings, reports


def test_online_retail_every_line_is_accounted_for(online_retail: tuple[Settings, dict]) -> None:
    _, reports = online_retail
    orders, returns = reports["orders"], reports["events"]
    assert orders.rows_read + returns.rows_read == 541_909
    assert orders.added + orders.quarantined_total + returns.added == 541_909


def test_online_retail_cleaning_matches_the_published_counts(
    online_retail: tuple[Settings, dict],
) -> None:
    settings, reports = online_retail
    removed = reports["orders"].quarantined
    assert removed["customer_id: missing (line without CustomerID)"] == 135_080
    assert removed["product_id: fee or service code, not a product"] > 1_000
    assert set(removed) == {
        "customer_id: missing (line without CustomerID)",
        "product_id: fee or service code, not a product",
        "unit_price: zero or negative price (free or adjustment line)",
    }
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        counts = wh.query(
            "SELECT count(*) AS lines, count(DISTINCT customer_id) AS customers, "
            "count(DISTINCT product_id) AS products FROM orders"
        ).iloc[0]
        fees = wh.query("SELECT count(*) AS n FROM orders WHERE product_id IN ('POST', 'M', 'D')")
        returns = wh.query("SELECT count(*) AS n FROM events WHERE type = 'return'")
        gb = wh.query("SELECT timezone FROM customers WHERE country = 'GB' LIMIT 1")
    # README: "After removing those: ~396k lines, 4,334 customers, 3,659 products."
    assert 395_000 < counts["lines"] < 397_000
    assert counts["customers"] == 4_334
    assert counts["products"] == 3_659
    assert fees["n"].iat[0] == 0
    # cancellations are kept as the customers' returns
    assert returns["n"].iat[0] == reports["events"].added > 8_000
    assert gb["timezone"].iat[0] == "Europe/London"


def test_online_retail_reimport_adds_nothing(online_retail: tuple[Settings, dict]) -> None:
    settings, _ = online_retail
    again = import_path(settings, dataset("online_retail", "online_retail.parquet"))
    assert sum(r.added + r.updated for r in again) == 0


def test_cdnow_master_and_sample(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "master", show_progress=False)
    orders = by_table(import_path(settings, dataset("cdnow", "CDNOW_master.txt")))["orders"]
    assert orders.added == 69_659
    assert orders.inferred_customers == 23_570
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        span = wh.query("SELECT min(ordered_at) AS a, max(ordered_at) AS b FROM orders").iloc[0]
    assert str(span["a"])[:10] == "1997-01-01"
    assert str(span["b"])[:10] == "1998-06-30"
    sample = Settings(home=tmp_path / "sample", show_progress=False)
    orders = by_table(import_path(sample, dataset("cdnow", "CDNOW_sample.txt")))["orders"]
    assert orders.inferred_customers == 2_357


def test_hillstrom_customers_campaign_and_published_arm_means(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, show_progress=False)
    reports = by_table(import_path(settings, dataset("hillstrom", "hillstrom.csv")))
    assert reports["customers"].added == 64_000
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        arms = wh.query(
            """
            SELECT json_extract_string(c.attributes, '$.hillstrom_segment') AS arm,
                   count(*) AS customers,
                   avg((v.customer_id IS NOT NULL)::INT) AS visit,
                   avg((o.customer_id IS NOT NULL)::INT) AS conversion,
                   sum(coalesce(o.unit_price, 0)) / count(*) AS spend,
                   sum((s.customer_id IS NOT NULL)::INT) AS sent
            FROM customers c
            LEFT JOIN (SELECT DISTINCT customer_id FROM events WHERE type = 'page_view') v
                   USING (customer_id)
            LEFT JOIN orders o USING (customer_id)
            LEFT JOIN (SELECT DISTINCT customer_id FROM events WHERE type = 'email_sent') s
                   USING (customer_id)
            GROUP BY arm ORDER BY arm
            """
        ).set_index("arm")
    # README: visit 18.28% / 15.14% / 10.62%; conversion 1.25% / 0.88% / 0.57%;
    # spend $1.42 / $1.08 / $0.65 (Mens / Womens / No E-Mail)
    expected = {
        "Mens E-Mail": (0.1828, 0.0125, 1.42),
        "Womens E-Mail": (0.1514, 0.0088, 1.08),
        "No E-Mail": (0.1062, 0.0057, 0.65),
    }
    for arm, (visit, conversion, spend) in expected.items():
        row = arms.loc[arm]
        assert row["visit"] == pytest.approx(visit, abs=5e-5)
        assert row["conversion"] == pytest.approx(conversion, abs=5e-5)
        assert row["spend"] == pytest.approx(spend, abs=5e-3)
        assert row["sent"] == (0 if arm == "No E-Mail" else row["customers"])
    assert Counter(arms["customers"].to_dict()) == Counter(
        {"Womens E-Mail": 21_387, "Mens E-Mail": 21_307, "No E-Mail": 21_306}
    )
