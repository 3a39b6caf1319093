"""The BentoML shell loads and answers from the warehouse (the full service is tested later)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from personalizer.data.importer import import_path


def test_stats_endpoint_reports_the_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSONALIZER_HOME", str(tmp_path))
    from personalizer.config import Settings
    from personalizer.service import Personalizer

    service = Personalizer.inner()
    assert "error" in service.stats()  # no warehouse yet: said plainly, not a crash
    orders = pd.DataFrame(
        {
            "customer_id": ["c1"],
            "order_id": ["o1"],
            "product_id": ["p1"],
            "quantity": [1],
            "unit_price": [2.0],
            "ordered_at": ["2024-01-01"],
        }
    )
    orders.to_csv(tmp_path / "orders.csv", index=False)
    import_path(Settings.from_env(), tmp_path / "orders.csv")
    tables = {t["table"]: t for t in service.stats()["tables"]}
    assert tables["orders"]["rows"] == 1
    assert tables["customers"]["rows"] == 1
    assert tables["orders"]["from"] == "2024-01-01 00:00:00"
