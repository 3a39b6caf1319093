"""Experiments: assignment is a stable hash that honours weights and keeps holdouts independent;
the SRM check catches a 52/48 split; intervals and tests agree with scipy and cover at their
level; the mSPRT keeps its error rate under peeking where repeated z-tests do not; the sample
size matches the textbook figure and delivers its power; the CLI fails cleanly on bad input."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from personalizer.experiments import (
    HOLDOUT,
    Experiment,
    assign_variant,
    bucket,
    in_holdout,
    srm_check,
)
from personalizer.experiments.analysis import (
    analyze,
    block_uplift,
    compare_means,
    compare_proportions,
    wilson_interval,
)
from personalizer.experiments.cli import app
from personalizer.experiments.hillstrom import price_targeting
from personalizer.experiments.sample_size import minimum_detectable_effect, sample_size
from personalizer.experiments.sequential import (
    analyze_sequential,
    mixture_sprt,
    proportion_looks,
)

IDS = [f"c{i}" for i in range(100_000)]
runner = CliRunner()


# ---------------------------------------------------------------------- assignment
def test_bucket_is_sha256_of_salt_and_id() -> None:
    digest = hashlib.sha256(b"welcome\x1fcustomer-42").digest()
    assert bucket("welcome", "customer-42") == (int.from_bytes(digest[:8], "big") >> 11) / 2**53
    assert bucket("welcome", "customer-42") == 0.08818920294027333  # regression: never changes
    assert bucket("welcome", "customer-42") != bucket("welcome2", "customer-42")


def test_assignment_is_the_same_in_another_process() -> None:
    """Another interpreter (another PYTHONHASHSEED) gives the same variants and holdouts."""
    weights = {"a": 1.0, "b": 2.0, "c": 1.0}
    here = [(assign_variant("exp", i, weights), in_holdout(i, 0.2)) for i in IDS[:200]]
    code = (
        "from personalizer.experiments import assign_variant, in_holdout\n"
        f"print([(assign_variant('exp', i, {weights!r}), in_holdout(i, 0.2)) for i in {IDS[:200]!r}])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip() == repr(here)


def test_buckets_are_uniform() -> None:
    values = np.array([bucket("s", i) for i in IDS])
    assert values.min() >= 0.0
    assert values.max() < 1.0
    assert stats.kstest(values, "uniform").pvalue > 0.001


def test_weights_are_respected_and_order_does_not_matter() -> None:
    weights = {"a": 1.0, "b": 2.0, "c": 7.0, "off": 0.0}
    variants = [assign_variant("exp", i, weights) for i in IDS]
    shares = pd.Series(variants).value_counts(normalize=True)
    assert "off" not in shares.index
    for name, expected in (("a", 0.1), ("b", 0.2), ("c", 0.7)):
        sd = math.sqrt(expected * (1 - expected) / len(IDS))
        assert abs(shares[name] - expected) < 4 * sd, (name, shares[name])
    reordered = dict(reversed(list(weights.items())))
    assert [assign_variant("exp", i, reordered) for i in IDS[:2000]] == variants[:2000]
    assert [assign_variant("exp", i, {"a": 10, "b": 20, "c": 70}) for i in IDS[:2000]] == (
        variants[:2000]
    )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": 1.0, "b": -0.5}, r"weights\['b'\]"),
        ({"a": 1.0, "b": float("nan")}, r"weights\['b'\]"),
        ({}, "no variants"),
        ({"a": 0.0, "b": 0.0}, "all zero"),
    ],
)
def test_bad_weights_are_named(weights: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign_variant("exp", "c1", weights)


def test_holdout_share_and_independence_from_variant() -> None:
    variants = np.array([assign_variant("exp", i, {"a": 1, "b": 1}) for i in IDS])
    held = np.array([in_holdout(i, 0.1) for i in IDS])
    assert abs(held.mean() - 0.1) < 4 * math.sqrt(0.09 / len(IDS))
    table = pd.crosstab(held, variants).to_numpy()
    assert stats.chi2_contingency(table).pvalue > 0.001
    # A flow's holdout is drawn independently of the global one: overlap ≈ 0.1 × 0.1.
    flow = np.array([in_holdout(i, 0.1, scope="welcome") for i in IDS])
    assert abs((held & flow).mean() - 0.01) < 4 * math.sqrt(0.0099 / len(IDS))
    # Holdouts are nested as the share grows: raising it only adds customers.
    bigger = np.array([in_holdout(i, 0.2) for i in IDS[:5000]])
    assert bigger[held[:5000]].all()
    with pytest.raises(ValueError, match="share"):
        in_holdout("c1", 1.5)


def test_experiment_model() -> None:
    exp = Experiment(name="subject-line", variants={"control": 1, "emoji": 1}, holdout_share=0.1)
    assert exp.control_variant == "control"
    assigned = pd.Series([exp.assign(i) for i in IDS[:20_000]]).value_counts(normalize=True)
    assert abs(assigned[HOLDOUT] - 0.1) < 0.01
    assert set(assigned.index) == {HOLDOUT, "control", "emoji"}
    with pytest.raises(ValueError, match="control"):
        Experiment(name="x", variants={"a": 1}, control="b")
    with pytest.raises(ValueError, match="'a'"):
        Experiment(name="x", variants={"a": -1})


def test_srm_flags_52_48_and_passes_a_fair_split() -> None:
    assert srm_check({"a": 52_000, "b": 48_000}, {"a": 1, "b": 1}).mismatch
    fair = pd.Series([assign_variant("srm", i, {"a": 1, "b": 1}) for i in IDS]).value_counts()
    result = srm_check(fair.to_dict(), {"a": 1, "b": 1})
    assert not result.mismatch
    assert result.p_value > 0.001
    assert result.expected == {"a": 50_000.0, "b": 50_000.0}
    # Unequal planned weights: a 20/80 split observed as 20/80 is fine.
    assert not srm_check({"a": 20_100, "b": 79_900}, {"a": 1, "b": 4}).mismatch
    assert srm_check({"a": 5, "b": 100, "off": 1}, {"a": 0.05, "b": 1, "off": 0}).mismatch
    with pytest.raises(ValueError, match="'z'"):
        srm_check({"z": 1}, {"a": 1, "b": 1})


# ---------------------------------------------------------------------- fixed-horizon analysis
def test_wilson_matches_scipy_and_covers_at_its_level() -> None:
    low, high = wilson_interval(7, 50)
    ref = stats.binomtest(7, 50).proportion_ci(method="wilson")
    assert low == pytest.approx(ref.low)
    assert high == pytest.approx(ref.high)
    rng = np.random.default_rng(7)
    coverages = []
    for p in (0.02, 0.1, 0.5):
        for n in (200, 2000):
            x = rng.binomial(n, p, 10_000)
            low, high = wilson_interval(x, n)
            coverages.append(((low <= p) & (p <= high)).mean())
    assert min(coverages) > 0.93, coverages
    assert 0.94 < np.mean(coverages) < 0.96, coverages


def test_two_proportion_test_equals_chi_square_and_newcombe_covers() -> None:
    result = compare_proportions(130, 1000, 100, 1000)
    chi2 = stats.chi2_contingency([[130, 870], [100, 900]], correction=False)
    assert result.p_value == pytest.approx(chi2.pvalue)
    assert result.diff == pytest.approx(0.03)
    assert result.relative_lift == pytest.approx(0.3)
    rng = np.random.default_rng(3)
    x1, x0 = rng.binomial(2000, 0.05, 3000), rng.binomial(2000, 0.04, 3000)
    hits = [
        c.diff_low <= 0.01 <= c.diff_high
        for c in (compare_proportions(a, 2000, b, 2000) for a, b in zip(x1, x0, strict=True))
    ]
    assert 0.935 < np.mean(hits) < 0.965


def test_revenue_difference_is_welch() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.exponential(2.0, 500), rng.exponential(1.5, 400)
    ours = compare_means(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval()
    assert ours.p_value == pytest.approx(ref.pvalue)
    assert (ours.diff_low, ours.diff_high) == pytest.approx((ci.low, ci.high))


def _outcomes(n: int = 20_000, seed: int = 11) -> pd.DataFrame:
    """Control converts at 5%, treatment at 6.5%; revenue 20 per conversion."""
    rng = np.random.default_rng(seed)
    variant = rng.choice(["control", "treatment"], n)
    converted = rng.random(n) < np.where(variant == "treatment", 0.065, 0.05)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "variant": variant,
            "converted": converted.astype(int),
            "revenue": converted * rng.gamma(4.0, 5.0, n),
        }
    )


def test_analyze_table() -> None:
    frame = _outcomes()
    table = analyze(frame, control="control")
    assert list(table["metric"]) == ["converted", "converted", "revenue", "revenue"]
    assert list(table["variant"]) == ["control", "treatment"] * 2
    assert list(table["kind"]) == ["rate", "rate", "mean", "mean"]
    control, treated = table.iloc[0], table.iloc[1]
    assert np.isnan(control["diff"])
    assert np.isnan(control["p_value"])
    assert control["ci_low"] < 0.05 < control["ci_high"]
    assert treated["diff_low"] < 0.015 < treated["diff_high"]
    assert treated["p_value"] < 0.001
    assert treated["relative_lift"] == pytest.approx(treated["diff"] / control["mean"])
    revenue = table.iloc[3]
    assert revenue["diff"] > 0
    assert revenue["ci_low"] < revenue["mean"] < revenue["ci_high"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant_col": "arm"}, "variant column 'arm' not found"),
        ({"control": "baseline"}, "control variant 'baseline' not found"),
        ({"control": "control", "outcomes": ["clicked"]}, "outcome column 'clicked' not found"),
        ({"control": "control", "confidence": 1.2}, r"confidence: must be in \(0, 1\), got 1.2"),
    ],
)
def test_analyze_names_bad_input(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze(_outcomes(200), **kwargs)


def test_analyze_rejects_missing_values() -> None:
    frame = _outcomes(200)
    frame.loc[3, "revenue"] = np.nan
    with pytest.raises(ValueError, match="'revenue' has 1 missing"):
        analyze(frame, control="control")


def test_block_uplift_of_personalized_over_generic() -> None:
    rng = np.random.default_rng(2)
    block = rng.choice(["generic", "personalized"], 30_000)
    clicked = (rng.random(30_000) < np.where(block == "personalized", 0.12, 0.10)).astype(int)
    frame = pd.DataFrame({"block": block, "clicked": clicked})
    result = block_uplift(frame)
    assert result.diff_low < 0.02 < result.diff_high
    assert result.p_value < 0.001
    assert result.treatment > result.control
    with pytest.raises(ValueError, match="'clicked' must be 0/1"):
        block_uplift(frame.assign(clicked=frame["clicked"] * 2.5))


# ---------------------------------------------------------------------- sequential
def _peeking(effect: float, seed: int, sims: int = 2000, looks: int = 50, batch: int = 200):
    """Cumulative counts of `sims` tests looked at after every batch (control rate 10%)."""
    rng = np.random.default_rng(seed)
    treated = rng.binomial(batch, 0.10 + effect, (sims, looks)).cumsum(axis=1)
    control = rng.binomial(batch, 0.10, (sims, looks)).cumsum(axis=1)
    n = np.broadcast_to(batch * np.arange(1, looks + 1), (sims, looks)).astype(float)
    return treated, control, n


def test_msprt_keeps_its_error_rate_under_peeking_where_z_tests_do_not() -> None:
    treated, control, n = _peeking(0.0, seed=1)
    always_valid = proportion_looks(treated, n, control, n, alpha=0.05)
    msprt_rate = (always_valid.p_value[:, -1] < 0.05).mean()  # running min: ever below
    pooled = (treated + control) / (2 * n)
    z = (treated - control) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    naive_rate = (2 * stats.norm.sf(np.abs(z)) < 0.05).any(axis=1).mean()
    assert msprt_rate <= 0.05, msprt_rate
    assert naive_rate > 0.15, naive_rate
    # The confidence sequence holds the true difference (0) at every look together.
    covered = (always_valid.ci_low[:, -1] <= 0) & (always_valid.ci_high[:, -1] >= 0)
    assert covered.mean() >= 0.95


def test_msprt_detects_a_real_effect_and_is_monotone() -> None:
    treated, control, n = _peeking(0.02, seed=2, sims=500)
    result = proportion_looks(treated, n, control, n)
    assert (result.p_value[:, -1] < 0.05).mean() > 0.8
    assert (np.diff(result.p_value, axis=1) <= 0).all()
    assert (np.diff(result.ci_low, axis=1) >= 0).all()
    assert (np.diff(result.ci_high, axis=1) <= 0).all()
    covered = (result.ci_low[:, -1] <= 0.02) & (result.ci_high[:, -1] >= 0.02)
    assert covered.mean() >= 0.95


def test_msprt_is_the_normal_mixture_likelihood_ratio() -> None:
    """1/p equals φ(θ̂; 0, V + τ²) / φ(θ̂; 0, V), and the sequence's ends are where it is 1/α."""
    mean_t, mean_c, var, n = 0.13, 0.10, 0.1, 4000
    result = mixture_sprt(mean_t, var, n, mean_c, var, n, effect_size=0.1, alpha=0.05)
    v, tau = 2 * var / n, 0.1 * math.sqrt(var)
    diff = mean_t - mean_c
    ratio = stats.norm.pdf(diff, 0, math.sqrt(v + tau**2)) / stats.norm.pdf(diff, 0, math.sqrt(v))
    assert float(result.p_value) == pytest.approx(min(1.0, 1 / ratio))
    for end in (float(result.ci_low), float(result.ci_high)):
        at_end = stats.norm.pdf(diff - end, 0, math.sqrt(v + tau**2)) / stats.norm.pdf(
            diff - end, 0, math.sqrt(v)
        )
        assert at_end == pytest.approx(20.0)


def test_sequential_is_more_conservative_than_fixed_horizon() -> None:
    frame = _outcomes()
    fixed = analyze(frame, control="control").dropna(subset=["p_value"])
    sequential = analyze_sequential(frame, control="control")
    assert list(sequential["metric"]) == list(fixed["metric"])
    assert (sequential["always_valid_p"].to_numpy() >= fixed["p_value"].to_numpy()).all()
    assert (sequential["cs_low"].to_numpy() <= fixed["diff_low"].to_numpy()).all()
    with pytest.raises(ValueError, match="effect_size"):
        analyze_sequential(frame, control="control", effect_size=0)


# ---------------------------------------------------------------------- sample size
def test_sample_size_textbook_value_and_statsmodels_formula() -> None:
    result = sample_size(0.10, 0.02)
    assert result.n_control == result.n_treatment == 3841
    assert sample_size(0.10, 0.2, relative=True).n_control == 3841
    # statsmodels' NormalIndPower uses Cohen's h: n = 2 ((z_{α/2} + z_β) / h)², about 3,835.
    h = 2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.10))
    arcsine = 2 * ((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / h) ** 2
    assert abs(result.n_control - arcsine) / arcsine < 0.005
    one_sided = sample_size(0.10, 0.02, two_sided=False)
    assert one_sided.n_control < result.n_control
    unequal = sample_size(0.10, 0.02, ratio=2.0)
    assert unequal.n_treatment == pytest.approx(2 * unequal.n_control, abs=1)
    assert unequal.n_control < result.n_control < unequal.total / 2 + result.n_control
    assert minimum_detectable_effect(0.10, 3841) == pytest.approx(0.02, abs=1e-4)


def test_sample_size_delivers_its_power() -> None:
    rng = np.random.default_rng(4)
    n, sims = 3841, 4000
    x1, x0 = rng.binomial(n, 0.12, sims), rng.binomial(n, 0.10, sims)
    pooled = (x1 + x0) / (2 * n)
    z = (x1 - x0) / n / np.sqrt(pooled * (1 - pooled) * 2 / n)
    assert 0.77 < (2 * stats.norm.sf(np.abs(z)) < 0.05).mean() < 0.83


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": 0.0, "mde": 0.02}, r"baseline: must be in \(0, 1\), got 0.0"),
        ({"baseline": 0.1, "mde": 0.0}, "mde: must be a non-zero number"),
        ({"baseline": 0.9, "mde": 0.2}, r"mde: .* gives a rate of 1.1"),
        ({"baseline": 0.1, "mde": 0.02, "power": 1.0}, "power"),
        ({"baseline": 0.1, "mde": 0.02, "ratio": 0.0}, "ratio"),
    ],
)
def test_sample_size_names_bad_parameters(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_size(**kwargs)


# ---------------------------------------------------------------------- pricing targeting
def test_price_targeting_on_a_known_answer() -> None:
    """The email moves only the top 30% by x (+20 points): a perfect score finds all of them."""
    rng = np.random.default_rng(9)
    n = 20_000
    x, t = rng.random(n), rng.integers(0, 2, n)
    y = (rng.random(n) < 0.1 + 0.2 * t * (x > 0.7)).astype(int)
    result = price_targeting(y, t, x, share=0.3, bootstraps=300, random_draws=100, seed=1)
    assert result.targeted == 6000
    assert result.model_ci[0] < 6000 * 0.2 < result.model_ci[1]
    assert result.random_ci[0] < 0.3 * n * 0.2 * 0.3 < result.random_ci[1]
    assert abs(result.random_empirical - result.random_expected) < 30
    assert result.gain_ci[0] > 0
    with pytest.raises(ValueError, match="share"):
        price_targeting(y, t, x, share=1.0)


# ---------------------------------------------------------------------- CLI
def test_cli_analyze_csv_and_parquet(tmp_path: Path) -> None:
    frame = _outcomes(5000)
    csv, parquet = tmp_path / "out.csv", tmp_path / "out.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    for path in (csv, parquet):
        result = runner.invoke(app, ["analyze", str(path), "--control", "control"])
        assert result.exit_code == 0, result.output
        assert "treatment" in result.output
        assert "converted" in result.output
        assert "always-valid" not in result.output
    result = runner.invoke(
        app,
        ["analyze", str(csv), "--control", "control", "--sequential", "--outcome", "converted"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "always-valid p" in result.output
    assert "revenue" not in result.output
    result = runner.invoke(
        app, ["analyze", str(csv), "--control", "control", "--weights", "control=1,treatment=1"]
    )
    assert result.exit_code == 0
    assert "no sample ratio mismatch" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--variant-col", "arm"], "variant column 'arm' not found"),
        (["--control", "baseline"], "control variant 'baseline' not found"),
        (["--control", "control", "--outcome", "opened"], "outcome column 'opened'"),
        (["--control", "control", "--weights", "control=x"], "--weights"),
        (["--control", "control", "--sequential", "--alpha", "2"], "alpha"),
    ],
)
def test_cli_analyze_bad_input_exits_cleanly(tmp_path: Path, args: list[str], message: str) -> None:
    path = tmp_path / "out.csv"
    _outcomes(300).to_csv(path, index=False)
    result = runner.invoke(app, ["analyze", str(path), *args])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_analyze_bad_files(tmp_path: Path) -> None:
    result = runner.invoke(app, ["analyze", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2
    assert "no such file" in result.output
    (tmp_path / "out.txt").write_text("variant,clicked\n")
    result = runner.invoke(app, ["analyze", str(tmp_path / "out.txt")])
    assert result.exit_code == 2
    assert ".csv or .parquet" in result.output


def test_cli_sample_size() -> None:
    result = runner.invoke(app, ["sample-size", "--baseline", "0.1", "--mde", "0.02"])
    assert result.exit_code == 0
    assert "3,841 control + 3,841 treatment" in result.output
    result = runner.invoke(app, ["sample-size", "--baseline", "0.1", "--mde", "0.2", "--relative"])
    assert "3,841 control" in result.output
    result = runner.invoke(app, ["sample-size", "--baseline", "1.5", "--mde", "0.02"])
    assert result.exit_code == 2
    assert "baseline: must be in (0, 1), got 1.5" in result.output
