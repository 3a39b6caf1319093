"""The Hillstrom e-mail test analysed as an experiment, and uplift targeting priced in visits.

Two questions on Kevin Hillstrom's randomised campaign (64,000 customers: Mens E-Mail, Womens
E-Mail, No E-Mail):

1. What did each email do? `arm_table` gives each arm's visit, conversion and spend per
   customer with 95% intervals and its difference from No E-Mail with a p-value; the published
   arm means (`PUBLISHED_ARM_MEANS`) are reproduced. `arm_balance` is the SRM check of the
   equal three-way split.
2. Whom should we email? `targeting` follows the uplift pipeline's protocol (Womens E-Mail vs
   No E-Mail, target `visit`, `train_test_split(test_size=0.5, random_state=42)`), fits the
   default uplift model on the train half and prices its pick on the test half: emailing the
   top 30% by predicted uplift yields ⌊0.3·N⌋ · uplift@30% incremental visits; emailing 30% at
   random yields 0.3 · N · ATE in expectation (also drawn at random, seeded, and averaged).
   Intervals come from a seeded bootstrap of the test half with the model held fixed (they
   do not include the model's own training variance).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from personalizer import tracking
from personalizer.config import Settings
from personalizer.data.adapters.hillstrom import read_campaign
from personalizer.evaluation.uplift import uplift_at_k
from personalizer.experiments.analysis import CONFIDENCE, analyze
from personalizer.experiments.assignment import SRMResult, srm_check
from personalizer.models.uplift import MODELS, hillstrom_features
from personalizer.models.uplift_pipeline import DEFAULT_MODEL, SPLIT_SEED, TEST_SIZE

log = logging.getLogger(__name__)

CONTROL = "No E-Mail"
ARMS = ("Mens E-Mail", "Womens E-Mail", CONTROL)
OUTCOMES = ("visit", "conversion", "spend")
PUBLISHED_ARM_MEANS: dict[str, dict[str, float]] = {
    "visit": {"Mens E-Mail": 0.1828, "Womens E-Mail": 0.1514, "No E-Mail": 0.1062},
    "conversion": {"Mens E-Mail": 0.0125, "Womens E-Mail": 0.0088, "No E-Mail": 0.0057},
    "spend": {"Mens E-Mail": 1.42, "Womens E-Mail": 1.08, "No E-Mail": 0.65},
}
"""Arm means from the dataset's README (rates to 0.01 points, spend to the cent)."""
EXPERIMENT = "experiments"
SHARE = 0.3
BOOTSTRAPS = 1000
RANDOM_DRAWS = 200
SEED = 0
_CHUNK = 50  # bootstrap replicates built at once (memory: _CHUNK x test customers)


def read_arms(path: Path) -> pd.DataFrame:
    """The Hillstrom table with lower-case columns, checked for the arm and outcome columns.

    Raises:
        ValueError: naming the missing columns or the missing control arm.
    """
    frame = pd.read_csv(path)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = sorted({"segment", *OUTCOMES} - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: not a Hillstrom-format file, missing column(s) {missing}")
    if CONTROL not in set(frame["segment"].astype(str)):
        raise ValueError(f"{path}: no customer in the control arm {CONTROL!r}")
    return frame


def arm_table(frame: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Visit, conversion and spend per arm with intervals, each email vs No E-Mail.

    Returns:
        `analyze`'s table over `segment`, plus `published` (the README's figure, NaN for an
        arm it does not list).
    """
    table = analyze(frame, "segment", CONTROL, list(OUTCOMES), confidence)
    table["published"] = [
        PUBLISHED_ARM_MEANS.get(m, {}).get(v, np.nan)
        for m, v in zip(table["metric"], table["variant"], strict=True)
    ]
    return table


def arm_balance(frame: pd.DataFrame) -> SRMResult:
    """Sample-ratio-mismatch check of the arms against an equal split."""
    counts = frame["segment"].astype(str).value_counts()
    return srm_check(counts.to_dict(), dict.fromkeys(counts.index.astype(str), 1.0))


@dataclass(frozen=True)
class TargetingResult:
    """Incremental outcomes from emailing a share of the test half, by model and at random.

    Attributes:
        treatment: the treated arm.
        control: the control arm.
        target: the outcome counted (visit).
        model: the uplift model's name.
        share: share of customers emailed.
        customers: customers in the test half (N).
        targeted: customers emailed, ⌊share·N⌋.
        ate: average effect of the email on the test half.
        model_uplift: uplift among the model's top `share` (uplift@30%).
        model_incremental: targeted · model_uplift.
        model_ci: bootstrap interval of `model_incremental`.
        random_expected: share · N · ate.
        random_ci: bootstrap interval of `random_expected`.
        random_empirical: mean incremental outcome of `random_draws` seeded random picks.
        random_empirical_sd: their standard deviation.
        random_draws: number of random picks.
        gain: model_incremental − random_expected.
        gain_ci: bootstrap interval of `gain`.
        confidence: level of the intervals.
    """

    treatment: str
    control: str
    target: str
    model: str
    share: float
    customers: int
    targeted: int
    ate: float
    model_uplift: float
    model_incremental: float
    model_ci: tuple[float, float]
    random_expected: float
    random_ci: tuple[float, float]
    random_empirical: float
    random_empirical_sd: float
    random_draws: int
    gain: float
    gain_ci: tuple[float, float]
    confidence: float

    def per_thousand(self, value: float) -> float:
        """A total on the test half scaled to 1,000 customers of the base."""
        return 1000.0 * value / self.customers

    def table(self) -> pd.DataFrame:
        """One row per policy: customers emailed, uplift among them, incremental outcomes."""
        pct = f"{self.share:.0%}"
        rows = [
            (f"model top {pct}", self.model_uplift, self.model_incremental, self.model_ci),
            (f"random {pct} (expected)", self.ate, self.random_expected, self.random_ci),
            (
                f"random {pct} ({self.random_draws} draws)",
                self.random_empirical / self.targeted,
                self.random_empirical,
                (np.nan, np.nan),
            ),
            ("model − random", np.nan, self.gain, self.gain_ci),
        ]
        return pd.DataFrame(
            [
                {
                    "policy": name,
                    "emailed": self.targeted,
                    "uplift": uplift,
                    f"incremental {self.target}s": total,
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                    "per 1,000 customers": self.per_thousand(total),
                }
                for name, uplift, total, ci in rows
            ]
        )


def _incremental(
    y: np.ndarray, t: np.ndarray, weights: np.ndarray, targeted: int, share: float
) -> tuple[np.ndarray, np.ndarray]:
    """Model and random incremental totals for bootstrap `weights` (rows: replicates).

    `y` and `t` are in descending score order; a replicate's top `targeted` are the first rows
    whose cumulative weight reaches `targeted` (the last one counted in part). Random targeting
    is worth `share` · N · ATE of the replicate.
    """
    before = np.cumsum(weights, axis=1) - weights
    chosen = np.clip(targeted - before, 0.0, weights)

    def effect(w: np.ndarray) -> np.ndarray:
        treated = (w * t).sum(axis=1)
        control = (w * (1 - t)).sum(axis=1)
        return (w * y * t).sum(axis=1) / treated - (w * y * (1 - t)).sum(axis=1) / control

    return targeted * effect(chosen), share * weights.sum(axis=1) * effect(weights)


def price_targeting(
    y: np.ndarray,
    t: np.ndarray,
    score: np.ndarray,
    share: float = SHARE,
    bootstraps: int = BOOTSTRAPS,
    random_draws: int = RANDOM_DRAWS,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> TargetingResult:
    """Incremental outcomes of emailing the top `share` by `score` vs `share` at random.

    Args:
        y: outcome per test customer (0/1).
        t: 1 = emailed in the experiment, 0 = control.
        score: predicted uplift.
        share: share of customers to email, in (0, 1).
        bootstraps: bootstrap replicates for the intervals.
        random_draws: random picks averaged for the empirical random figure.
        seed: seed of the bootstrap and the random picks.
        confidence: level of the percentile intervals.

    Returns:
        The figures, under generic names (treatment, control, outcome, score).
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"share: must be in (0, 1), got {share!r}")
    y, t = np.asarray(y, dtype=float), np.asarray(t, dtype=float)
    n = len(y)
    targeted = int(n * share)
    uplift = uplift_at_k(y, t, score, k=share)
    ate = float(y[t == 1].mean() - y[t == 0].mean())
    order = np.argsort(np.asarray(score), kind="mergesort")[::-1]  # uplift_at_k's order
    y_sorted, t_sorted = y[order], t[order]

    rng = np.random.default_rng(seed)
    model_boot, random_boot = [], []
    for start in range(0, bootstraps, _CHUNK):
        rows = min(_CHUNK, bootstraps - start)
        picks = rng.integers(0, n, size=(rows, n)) + n * np.arange(rows)[:, None]
        weights = np.bincount(picks.ravel(), minlength=rows * n).reshape(rows, n)
        model_b, random_b = _incremental(y_sorted, t_sorted, weights.astype(float), targeted, share)
        model_boot.append(model_b)
        random_boot.append(random_b)
    model_all, random_all = np.concatenate(model_boot), np.concatenate(random_boot)
    tail = 50.0 * (1.0 - confidence)

    def interval(values: np.ndarray) -> tuple[float, float]:
        low, high = np.percentile(values, [tail, 100.0 - tail])
        return float(low), float(high)

    draws = np.empty(random_draws)
    for i in range(random_draws):
        pick = rng.choice(n, size=targeted, replace=False)
        yp, tp = y[pick], t[pick]
        draws[i] = targeted * (yp[tp == 1].mean() - yp[tp == 0].mean())
    model_incremental = targeted * uplift
    random_expected = share * n * ate
    log.info(
        "top %.0f%%: %.1f incremental, %.1f at random",
        100 * share,
        model_incremental,
        random_expected,
    )
    return TargetingResult(
        treatment="treatment",
        control="control",
        target="outcome",
        model="score",
        share=share,
        customers=n,
        targeted=targeted,
        ate=ate,
        model_uplift=uplift,
        model_incremental=model_incremental,
        model_ci=interval(model_all),
        random_expected=random_expected,
        random_ci=interval(random_all),
        random_empirical=float(draws.mean()),
        random_empirical_sd=float(draws.std(ddof=1)) if random_draws > 1 else 0.0,
        random_draws=random_draws,
        gain=model_incremental - random_expected,
        gain_ci=interval(model_all - random_all),
        confidence=confidence,
    )


def targeting(
    path: Path,
    treatment: str = "Womens E-Mail",
    control: str = CONTROL,
    target: str = "visit",
    model: str = DEFAULT_MODEL,
    share: float = SHARE,
    bootstraps: int = BOOTSTRAPS,
    random_draws: int = RANDOM_DRAWS,
    seed: int = SEED,
) -> TargetingResult:
    """Fit the uplift model on the train half, price its top `share` on the test half.

    Args:
        path: a Hillstrom-format CSV.
        treatment: the treated arm.
        control: the control arm.
        target: outcome, visit or conversion.
        model: a name of `personalizer.models.uplift.MODELS` (default: the X-learner).
        share: share of customers to email.
        bootstraps: bootstrap replicates for the intervals.
        random_draws: random picks averaged for the empirical random figure.
        seed: seed of the bootstrap and the random picks (the split is the pipeline's, 42).

    Returns:
        The model's and random targeting's incremental outcomes with intervals.
    """
    if model not in MODELS:
        raise ValueError(f"model: unknown {model!r}; one of {sorted(MODELS)}")
    kept = read_campaign(Path(path), treatment, control, target)
    train_rows, test_rows = train_test_split(kept, test_size=TEST_SIZE, random_state=SPLIT_SEED)
    fitted = MODELS[model]().fit(
        hillstrom_features(train_rows),
        train_rows[target].to_numpy(),
        train_rows["treatment"].to_numpy(),
    )
    score = fitted.predict_uplift(hillstrom_features(test_rows))
    figures = price_targeting(
        test_rows[target].to_numpy(),
        test_rows["treatment"].to_numpy(),
        score,
        share,
        bootstraps,
        random_draws,
        seed,
    )
    return replace(figures, treatment=treatment, control=control, target=target, model=model)


def log_run(
    settings: Settings, arms: pd.DataFrame, balance: SRMResult, result: TargetingResult
) -> str:
    """Log the arm table, the SRM check and the targeting result as one MLflow run.

    Returns:
        The run's id.
    """
    params = {
        "dataset": "hillstrom",
        "treatment": result.treatment,
        "control": result.control,
        "target": result.target,
        "model": result.model,
        "share": result.share,
        "test_size": TEST_SIZE,
        "random_state": SPLIT_SEED,
        "bootstraps": BOOTSTRAPS,
    }
    metrics = {
        "srm_p_value": balance.p_value,
        "ate": result.ate,
        "model_uplift_at_30": result.model_uplift,
        "model_incremental": result.model_incremental,
        "random_expected": result.random_expected,
        "random_empirical": result.random_empirical,
        "gain": result.gain,
        "gain_ci_low": result.gain_ci[0],
        "gain_ci_high": result.gain_ci[1],
    }
    for row in arms.itertuples(index=False):
        metrics[f"{row.metric}_{str(row.variant).split()[0].lower()}"] = float(row.mean)
    with tracking.start_run(settings, EXPERIMENT, run_name="hillstrom", params=params) as run:
        tracking.log_metrics(metrics)
        tracking.log_table(arms, "arm_means")
        tracking.log_table(result.table(), "targeting")
    return str(run.info.run_id)
