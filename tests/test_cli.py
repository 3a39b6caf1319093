"""The command line: verbs exist, errors are readable with exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from personalizer.cli import app

runner = CliRunner()


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "personalizer", "--help"], capture_output=True, text=True, check=True
    )
    assert "data" in out.stdout


def test_import_then_stats(tmp_path: Path) -> None:
    feed = tmp_path / "orders.csv"
    pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "order_id": ["o1", "o2"],
            "product_id": ["p1", "p1"],
            "quantity": [1, -2],
            "unit_price": [3.0, 3.0],
            "ordered_at": ["2024-01-01"] * 2,
        }
    ).to_csv(feed, index=False)
    home = ["--home", str(tmp_path / "home")]
    result = runner.invoke(app, ["data", "import", str(feed), *home])
    assert result.exit_code == 0, result.output
    assert "quantity: must be > 0" in result.output
    assert "inferred from orders: 1 customers, 1 products" in result.output
    result = runner.invoke(app, ["data", "stats", *home])
    assert result.exit_code == 0, result.output
    assert "orders" in result.output
    assert "2024-01-01" in result.output


def test_refused_file_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    feed = tmp_path / "orders.csv"
    feed.write_text("customer_id,order_id\nc1,o1\n")
    result = runner.invoke(app, ["data", "import", str(feed), "--home", str(tmp_path / "h")])
    assert result.exit_code == 2
    assert "missing required column(s) product_id, quantity, unit_price, ordered_at" in (
        " ".join(result.output.split())
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_stats_without_a_warehouse_says_what_to_do(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "stats", "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "import data first" in result.output.replace("\n", " ")


def test_unknown_source_and_format_are_rejected(tmp_path: Path) -> None:
    feed = tmp_path / "orders.csv"
    feed.write_text("x\n")
    for extra in (["--source", "nope"], ["--format", "xml"]):
        result = runner.invoke(app, ["data", "import", str(feed), "--home", str(tmp_path), *extra])
        assert result.exit_code == 2, extra
