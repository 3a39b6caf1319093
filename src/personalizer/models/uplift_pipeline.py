"""Uplift pipeline: compare every uplift model on a randomised send, log, register, gate.

`train` reads a Hillstrom-format table (one row per customer: the history columns, the arm in
`segment`, the outcomes), keeps one treated arm and the control, and follows the published
protocol: `train_test_split(test_size=0.5, random_state=42)` of the rows in file order. Every model
of `models.uplift.MODELS` learns on the first half and is scored on the second (uplift@30% overall
and by group, Qini AUC), next to random targeting, whose expected uplift@k is the test half's
average effect. The default model (the X-learner, chosen by cross-validation on the train half
only) is registered; its uplift@30% is the promotion gate's metric.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split

from personalizer import tracking
from personalizer.config import Settings
from personalizer.data.adapters.hillstrom import HISTORY, read_campaign
from personalizer.evaluation.importance import gain_importance
from personalizer.evaluation.uplift import qini_auc_score, qini_curve, uplift_at_k
from personalizer.models.uplift import MODELS, UpliftModel, XLearner, hillstrom_features

log = logging.getLogger(__name__)

MODEL_NAME = "uplift"
EXPERIMENT = "uplift"
GATE_METRIC = "uplift_at_30"
LOADER = "personalizer.models.uplift_pipeline:load_scorer"
DEFAULT_MODEL = XLearner.name
# scikit-uplift's pipeline notebook: ClassTransformation(XGBClassifier), Womens E-Mail vs No
# E-Mail, target `visit`, 50/50 split with random_state 42, uplift@30% (overall) on the test half.
PUBLISHED_UPLIFT_AT_30 = 0.0661
TEST_SIZE = 0.5
SPLIT_SEED = 42
K = 0.3
RANDOM = "random targeting"


@dataclass(frozen=True)
class UpliftTrainResult:
    """What `personalizer train uplift` prints."""

    model_dir: Path
    version: str
    decision: tracking.PromotionDecision
    table: pd.DataFrame  # test half: one row per model, then random targeting
    default_model: str
    test_customers: int


class UpliftScorer:
    """A fitted uplift model as a directory model: `predict_frame` gives each row's uplift."""

    def __init__(self, model: UpliftModel) -> None:
        self.model = model

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`uplift` (change in response probability if emailed) per row of Hillstrom columns."""
        missing = [c for c in HISTORY if c not in frame.columns]
        if missing:
            raise ValueError(f"the frame lacks the Hillstrom column(s) {missing}")
        return pd.DataFrame({"uplift": self.model.predict_uplift(hillstrom_features(frame))})

    def save(self, path: Path) -> None:
        """The model's LightGBM text files and JSON in the folder `path`."""
        self.model.save(path)


def load_scorer(path: Path) -> UpliftScorer:
    """Open a folder written by `UpliftScorer.save`."""
    return UpliftScorer(UpliftModel.load(Path(path)))


def compare_models(
    train_rows: pd.DataFrame, test_rows: pd.DataFrame, target: str
) -> tuple[pd.DataFrame, dict[str, UpliftModel], dict[str, np.ndarray]]:
    """Fit every uplift model on `train_rows`, score `test_rows`; random targeting last.

    Returns:
        The table (index: model; `uplift@30%`, `uplift@30% by_group`, `qini_auc`), the fitted
        models and their test scores.
    """
    y, t = test_rows[target].to_numpy(), test_rows["treatment"].to_numpy()
    X_train, X_test = hillstrom_features(train_rows), hillstrom_features(test_rows)
    models: dict[str, UpliftModel] = {}
    scores: dict[str, np.ndarray] = {}
    rows = {}
    for name, kind in MODELS.items():
        models[name] = kind().fit(
            X_train, train_rows[target].to_numpy(), train_rows["treatment"].to_numpy()
        )
        scores[name] = score = models[name].predict_uplift(X_test)
        rows[name] = {
            "uplift@30%": uplift_at_k(y, t, score, k=K),
            "uplift@30% by_group": uplift_at_k(y, t, score, k=K, strategy="by_group"),
            "qini_auc": qini_auc_score(y, t, score),
        }
        log.info("%s on the test half: %s", name, rows[name])
    # Random targeting's expected uplift at any k is the average effect; its Qini AUC is 0.
    effect = float(y[t == 1].mean() - y[t == 0].mean())
    rows[RANDOM] = {"uplift@30%": effect, "uplift@30% by_group": effect, "qini_auc": 0.0}
    return pd.DataFrame.from_dict(rows, orient="index"), models, scores


def train(
    settings: Settings,
    dataset: Path,
    treatment: str = "Womens E-Mail",
    control: str = "No E-Mail",
    target: str = "visit",
) -> UpliftTrainResult:
    """Compare the uplift models on the published split, log, register the default, gate."""
    kept = read_campaign(Path(dataset), treatment, control, target)
    train_rows, test_rows = train_test_split(kept, test_size=TEST_SIZE, random_state=SPLIT_SEED)
    table, models, scores = compare_models(train_rows, test_rows, target)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    model_dir = settings.home / "models" / MODEL_NAME / stamp
    UpliftScorer(models[DEFAULT_MODEL]).save(model_dir)
    best = table.loc[DEFAULT_MODEL]
    metrics = {
        "uplift_at_30": float(best["uplift@30%"]),
        "uplift_at_30_by_group": float(best["uplift@30% by_group"]),
        "qini_auc": float(best["qini_auc"]),
        "random_uplift_at_30": float(table.loc[RANDOM, "uplift@30%"]),
        "published_uplift_at_30": PUBLISHED_UPLIFT_AT_30,
    }
    for name in MODELS:
        metrics[f"{name}_uplift_at_30"] = float(table.loc[name, "uplift@30%"])
        metrics[f"{name}_qini_auc"] = float(table.loc[name, "qini_auc"])
    params = {
        "source": str(dataset),
        "treatment": treatment,
        "control": control,
        "target": target,
        "test_size": TEST_SIZE,
        "random_state": SPLIT_SEED,
        "customers": len(kept),
        "treated_share": round(float(kept["treatment"].mean()), 4),
        "default_model": DEFAULT_MODEL,
        **{f"model_{k}": v for k, v in models[DEFAULT_MODEL].get_params().items()},
    }
    example = test_rows[list(HISTORY)].head(3).reset_index(drop=True)
    y, t = test_rows[target].to_numpy(), test_rows["treatment"].to_numpy()
    with tracking.start_run(settings, EXPERIMENT, run_name=f"train {stamp}", params=params):
        tracking.log_table(table.reset_index(names="model"), "test_comparison")
        tracking.log_figure(_qini_plot(y, t, scores), "qini")
        tracking.log_table(gain_importance(models[DEFAULT_MODEL].boosters_), "feature_importance")
        version = tracking.log_directory_model(
            settings, model_dir, MODEL_NAME, metrics, loader=LOADER, input_example=example
        )
    decision = tracking.promote_if_better(settings, MODEL_NAME, version.version, GATE_METRIC)
    return UpliftTrainResult(
        model_dir, str(version.version), decision, table, DEFAULT_MODEL, len(test_rows)
    )


def _qini_plot(y: np.ndarray, treatment: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    n = len(y)
    for name, score in scores.items():
        x, q = qini_curve(y, treatment, score)
        ax.plot(x / n, q, label=name, linewidth=2.5 if name == DEFAULT_MODEL else 1.2)
    ax.plot([0, 1], [0, q[-1]], color="grey", linestyle="--", label="random")
    ax.axvline(K, color="lightgrey", linestyle=":")
    ax.set_xlabel("share of customers targeted (by predicted uplift)")
    ax.set_ylabel("incremental responders (Qini)")
    ax.set_title("Qini curves on the test half")
    ax.legend()
    return fig
