"""Shared fixtures: a private data home per test, and the real datasets beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from personalizer.cli import app as cli
from personalizer.config import THREADS_ENV, Settings

# Test workers run side by side on a small machine: one thread each, or OpenMP's spinning threads
# slow every worker down manyfold. Inherited by the CLI subprocesses the tests start.
os.environ.setdefault(THREADS_ENV, "1")
os.environ.setdefault("PERSONALIZER_RELOAD_SECONDS", "0")  # no champion watcher threads in tests

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data home is an empty temporary folder."""
    return Settings(home=tmp_path / "home", show_progress=False)


def invoke(home: Path, *args: str) -> str:
    """`personalizer ARGS --home HOME` in this process; its output, once it succeeded."""
    result = CliRunner().invoke(cli, [*args, "--home", str(home)])
    assert result.exit_code == 0, result.output
    return result.output


def dataset(*parts: str) -> Path:
    """A file of ../shared/datasets; the test fails (not skips) when it is missing."""
    path = DATASETS.joinpath(*parts)
    assert path.exists(), f"real dataset missing: {path} (see ../shared/datasets/README.md)"
    return path


ONLINE_RETAIL_COLUMNS = {
    "CustomerID": "customer_id",
    "InvoiceNo": "order_id",
    "StockCode": "product_id",
    "Quantity": "quantity",
    "UnitPrice": "unit_price",
    "InvoiceDate": "ordered_at",
}


def online_retail_transactions(folder: Path) -> tuple[Path, pd.DataFrame]:
    """The raw Online Retail lines under the contract's column names, written to `folder`.

    Returns the file (what an external scorer passes as `--transactions`) and its lines.
    """
    raw = pd.read_parquet(dataset("online_retail", "online_retail.parquet"))
    lines = raw.rename(columns=ONLINE_RETAIL_COLUMNS)
    path = folder / "online_retail_lines.parquet"
    lines.to_parquet(path, index=False)
    return path, lines
