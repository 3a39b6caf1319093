"""`personalizer segments evaluate` on a generated and imported shop: sizes, Parquet, history."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from personalizer.cli import app
from personalizer.config import Settings
from personalizer.data.warehouse import Warehouse
from personalizer.segments.batch import evaluate_warehouse, update_memberships
from personalizer.segments.definitions import default_segments

runner = CliRunner()
FIRST, SECOND = "2026-09-01", "2026-10-01"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1,000-customer synthetic shop imported through the command line."""
    root = tmp_path_factory.mktemp("segments_cli")
    args = ["--home", str(root)]
    result = runner.invoke(app, ["data", "generate", "--customers", "1000", "--seed", "3", *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "import", str(root / "synthetic"), *args])
    assert result.exit_code == 0, result.output
    return root


def _evaluate(home: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["segments", "evaluate", "--home", str(home), *extra])
    return result.exit_code, result.output


def test_two_runs_print_sizes_write_members_and_record_enters_and_exits(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "members.parquet"
    code, output = _evaluate(home, "--as-of", FIRST, "--out", str(out))
    assert code == 0, output
    print(output)
    with Warehouse(Settings(home=home).warehouse_path, read_only=True) as wh:
        expected = {at: evaluate_warehouse(wh, default_segments(), at) for at in (FIRST, SECOND)}

    written = pd.read_parquet(out)
    assert list(written.columns) == ["customer_id", "segment"]
    pd.testing.assert_frame_equal(
        written.astype(str), expected[FIRST].astype(str), check_dtype=False
    )
    for segment, size in expected[FIRST]["segment"].value_counts().items():
        assert re.search(rf"{segment}\s*│\s*{size:,}\s*│", output), segment
    assert "skipped churn_risk_high: needs predictions" in output
    assert "skipped high_predicted_value" in output

    history = home / "segments"
    first = pd.read_parquet(history / "changes.parquet")
    assert (first["change"] == "enter").all()
    assert len(first) == len(expected[FIRST])

    code, output = _evaluate(home, "--as-of", SECOND)
    assert code == 0, output
    print(output)
    names = sorted(set(expected[FIRST]["segment"]) | set(expected[SECOND]["segment"]))
    memberships, changes = update_memberships(None, expected[FIRST], FIRST, names)
    memberships, changes = update_memberships(memberships, expected[SECOND], SECOND, names)
    stored = pd.read_parquet(history / "changes.parquet")
    second = stored[stored["at"] == pd.Timestamp(SECOND)].reset_index(drop=True)
    assert len(stored) == len(first) + len(second)
    assert {"enter", "exit"} <= set(second["change"])  # a month later, some came and some left
    pd.testing.assert_frame_equal(
        second[["customer_id", "segment", "change"]].astype(str),
        changes[["customer_id", "segment", "change"]].astype(str),
    )
    kept = pd.read_parquet(history / "memberships.parquet")
    assert len(kept) == len(memberships)
    open_now = kept[kept["exited_at"].isna()]
    assert len(open_now) == len(expected[SECOND])

    code, output = _evaluate(home, "--as-of", FIRST)  # going back in time is refused
    assert code == 2
    assert "before the latest change" in output


def test_a_bad_definitions_file_exits_2_with_file_and_line(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "segments:\n"
        "  - name: big\n"
        "    description: test\n"
        "    condition: {feature: spend_in_mars, op: '>', value: 1}\n"
    )
    code, output = _evaluate(home, "--definitions", str(bad), "--as-of", FIRST)
    assert code == 2
    flat = "".join(output.split())  # rich wraps long messages
    assert "bad.yaml:4:" in flat
    assert "spend_in_mars" in flat


def test_predicted_segments_read_the_prediction_files_given(home: Path, tmp_path: Path) -> None:
    with Warehouse(Settings(home=home).warehouse_path, read_only=True) as wh:
        buyers = wh.query("SELECT DISTINCT customer_id FROM orders ORDER BY 1")["customer_id"]
    churn = pd.DataFrame(
        {
            "customer_id": buyers,
            "churn_probability": (buyers.index % 10) / 10,
            "predicted_value": buyers.index.astype(float),
        }
    )
    categories = pd.DataFrame({"customer_id": buyers, "propensity_coffee": buyers.index % 2})
    churn.to_parquet(tmp_path / "churn.parquet")
    categories.to_csv(tmp_path / "categories.csv", index=False)
    out = tmp_path / "members.parquet"
    files = ["--predictions", str(tmp_path / "churn.parquet")]
    files += ["--predictions", str(tmp_path / "categories.csv")]
    code, output = _evaluate(home, "--as-of", "2026-10-15", *files, "--out", str(out))
    assert code == 0, output
    assert "skipped" not in output
    members = pd.read_parquet(out)
    chosen = {s: set(g) for s, g in members.groupby("segment")["customer_id"]}
    assert chosen["churn_risk_high"] == set(
        churn.loc[churn["churn_probability"] >= 0.7, "customer_id"]
    )
    assert chosen["likely_to_buy_coffee"] == set(
        categories.loc[buyers.index % 2 == 1, "customer_id"]
    )
    assert len(chosen["high_predicted_value"]) == round(0.1 * len(buyers))

    churn.to_parquet(tmp_path / "again.parquet")  # the same columns twice: refused
    again = ["--predictions", str(tmp_path / "again.parquet")]
    code, output = _evaluate(home, "--as-of", "2026-10-15", *files[:2], *again)
    assert code == 2
    assert "isalsoin" in "".join(output.split())
