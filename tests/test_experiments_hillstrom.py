"""Hillstrom as an experiment: the published arm means are reproduced with intervals, the split
passes the SRM check, and the uplift model's top 30% earns more incremental visits than a random
30% (the dataset is read from ../shared/datasets, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import dataset
from personalizer.experiments.cli import app
from personalizer.experiments.hillstrom import (
    PUBLISHED_ARM_MEANS,
    arm_balance,
    arm_table,
    read_arms,
    targeting,
)

pytestmark = pytest.mark.slow


def test_arm_means_match_the_published_figures() -> None:
    frame = read_arms(dataset("hillstrom", "hillstrom.csv"))
    table = arm_table(frame).set_index(["metric", "variant"])
    for metric, arms in PUBLISHED_ARM_MEANS.items():
        digits = 2 if metric == "spend" else 4  # the README: 18.28%, 1.25%, $1.42
        for arm, published in arms.items():
            row = table.loc[(metric, arm)]
            assert round(row["mean"], digits) == pytest.approx(published), (metric, arm)
            assert row["ci_low"] < row["mean"] < row["ci_high"]
            if arm != "No E-Mail":  # every email beat no email on every outcome
                assert row["diff_low"] > 0, (metric, arm)
                assert row["p_value"] < 0.01, (metric, arm)
    assert table["n"].groupby(level="metric").sum().eq(64_000).all()
    assert not arm_balance(frame).mismatch


def test_uplift_targeting_beats_random_targeting() -> None:
    result = targeting(dataset("hillstrom", "hillstrom.csv"), bootstraps=500, random_draws=100)
    assert result.customers == 21_347
    assert result.targeted == int(0.3 * 21_347)
    assert result.model_incremental > result.random_expected
    assert result.model_incremental > result.random_empirical
    assert result.gain_ci[0] > 0  # the bootstrap interval of the gain excludes zero
    # Random picks average out to 0.3 × N × ATE.
    assert abs(result.random_empirical - result.random_expected) < 3 * (
        result.random_empirical_sd / result.random_draws**0.5
    )
    assert result.model_ci[0] < result.model_incremental < result.model_ci[1]


def test_cli_hillstrom_prints_and_tracks(tmp_path: Path) -> None:
    args = ["hillstrom", "--dataset", str(dataset("hillstrom", "hillstrom.csv"))]
    result = CliRunner().invoke(
        app, [*args, "--bootstraps", "100", "--track", "--home", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    for figure in ("18.28%", "15.14%", "10.62%", "1.25%", "0.88%", "0.57%", "model top 30%"):
        assert figure in result.output
    assert "no sample ratio mismatch" in result.output
    assert "logged to MLflow run" in result.output
    assert (tmp_path / "mlflow.db").exists()


def test_cli_hillstrom_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "not_hillstrom.csv"
    bad.write_text("segment,visit\nNo E-Mail,1\n")
    result = CliRunner().invoke(app, ["hillstrom", "--dataset", str(bad)])
    assert result.exit_code == 2
    assert "missing column(s) ['conversion', 'spend']" in result.output
    args = ["hillstrom", "--dataset", str(dataset("hillstrom", "hillstrom.csv"))]
    result = CliRunner().invoke(app, [*args, "--treatment", "Kids E-Mail"])
    assert result.exit_code == 2
    assert "'Kids E-Mail'" in result.output
