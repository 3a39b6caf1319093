"""generate → import → stats, through the command line, as `make demo` runs it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from personalizer.cli import app
from personalizer.config import Settings
from personalizer.data.warehouse import Warehouse, table_stats

runner = CliRunner()


def test_generate_import_stats(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path)]
    result = runner.invoke(app, ["data", "generate", "--customers", "1000", "--seed", "3", *home])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "synthetic" / "manifest.json").read_text())

    result = runner.invoke(app, ["data", "import", str(tmp_path / "synthetic"), *home])
    assert result.exit_code == 0, result.output
    assert "quarantined by reason" not in result.output  # the synthetic shop is clean

    with Warehouse(Settings(home=tmp_path).warehouse_path, read_only=True) as wh:
        stats = table_stats(wh).set_index("table")
        dangling = wh.query(
            "SELECT count(*) AS n FROM orders o LEFT JOIN products p USING (product_id) "
            "WHERE p.product_id IS NULL"
        )["n"].iat[0]
        types = set(wh.query("SELECT DISTINCT type FROM events")["type"])
    for table in ("customers", "products", "orders", "events"):
        assert stats.loc[table, "rows"] == manifest["rows"][table], table
    assert stats.loc["customers", "rows"] == 1000
    assert dangling == 0
    assert {"product_view", "add_to_cart", "purchase", "email_sent", "email_open"} <= types

    again = runner.invoke(app, ["data", "import", str(tmp_path / "synthetic"), *home])
    assert again.exit_code == 0
    with Warehouse(Settings(home=tmp_path).warehouse_path, read_only=True) as wh:
        assert (
            table_stats(wh).set_index("table").loc["events", "rows"] == manifest["rows"]["events"]
        )

    result = runner.invoke(app, ["data", "stats", *home])
    assert result.exit_code == 0, result.output
    assert f"{manifest['rows']['events']:,}" in result.output
