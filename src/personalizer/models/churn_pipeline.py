"""Churn pipelines: train (validate out of time, log, register, gate) and score every customer.

`train` first judges the model where the outcome is known: it learns from the data before
`as_of − H` and is scored on who ordered again in the last H days, next to the baselines (recency,
BG/NBD, LightGBM on RFM). That AUC is the promotion gate's metric. The model that is registered is
then fitted on all the data, as of `as_of`. The registered directory carries the order lines it was
fitted on, so `score churn` answers for every customer seen before the cutoff with no other input.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from personalizer import tracking
from personalizer.config import Settings
from personalizer.data.training import TrainingData, load_training_data
from personalizer.evaluation.importance import gain_importance
from personalizer.models.churn import ChurnModel
from personalizer.models.churn_baselines import compare_churn
from personalizer.models.churn_scoring import score_customers
from personalizer.models.scorers import rows_of

log = logging.getLogger(__name__)

MODEL_NAME = "churn"
EXPERIMENT = "churn"
GATE_METRIC = "auc"
LOADER = "personalizer.models.churn_pipeline:load_scorer"
_SNAPSHOT = ("orders.parquet", "events.parquet", "products.parquet")


@dataclass(frozen=True)
class ChurnTrainResult:
    """What `personalizer train churn` prints."""

    model_dir: Path
    version: str
    decision: tracking.PromotionDecision
    table: pd.DataFrame  # out-of-time validation: model and baselines
    validation_cutoff: pd.Timestamp


class ChurnScorer:
    """A fitted churn model with the data it was fitted on: scores everyone as of `as_of`."""

    def __init__(
        self,
        model: ChurnModel,
        orders: pd.DataFrame,
        as_of: pd.Timestamp,
        events: pd.DataFrame | None = None,
        products: pd.DataFrame | None = None,
    ) -> None:
        self.model = model
        self.orders = orders
        self.as_of = as_of
        self.events = events
        self.products = products
        self._scores: pd.DataFrame | None = None

    def score_all(self) -> pd.DataFrame:
        """The contract table for every customer who ordered before `as_of`."""
        if self._scores is None:
            # Computed once: the data and the moment are fixed, and BG/NBD / Gamma-Gamma are
            # fitted on the whole customer base, never on the few customers of one request.
            self._scores = score_customers(
                self.model, self.orders, self.as_of, self.events, products=self.products
            )
        return self._scores

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The contract table for the customers of `frame["customer_id"]` that are known."""
        return rows_of(self.score_all(), frame)

    def save(self, path: Path) -> None:
        """The model (LightGBM text + JSON) and its data (Parquet) in the folder `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "model")
        for name, frame in zip(_SNAPSHOT, (self.orders, self.events, self.products), strict=True):
            if frame is not None:
                frame.to_parquet(path / name, index=False)
        (path / "scorer.json").write_text(json.dumps({"as_of": self.as_of.isoformat()}))


def load_scorer(path: Path) -> ChurnScorer:
    """Open a folder written by `ChurnScorer.save`."""
    path = Path(path)
    meta = json.loads((path / "scorer.json").read_text())
    frames = [pd.read_parquet(path / n) if (path / n).exists() else None for n in _SNAPSHOT]
    orders, events, products = frames
    if orders is None:
        raise FileNotFoundError(f"{path / _SNAPSHOT[0]} is missing: not a churn model folder")
    return ChurnScorer(
        ChurnModel.load(path / "model"), orders, pd.Timestamp(meta["as_of"]), events, products
    )


def _snapshot(data: TrainingData) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Only the columns the model reads: no names, emails or free text travel with it."""
    columns = ["customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"]
    orders = data.orders[[c for c in columns if c in data.orders.columns]]
    events = None
    if data.events is not None and len(data.events):
        keep = [c for c in data.events.columns if c not in ("payload", "attributes")]
        events = data.events[keep]
    return orders, events


def train(
    settings: Settings,
    transactions: Path | None = None,
    until: str | None = None,
    horizon_days: float = 90.0,
) -> ChurnTrainResult:
    """Validate out of time against the baselines, fit on everything, log, register, gate."""
    if not horizon_days > 0:
        raise ValueError(f"horizon_days must be > 0, got {horizon_days!r}")
    data = load_training_data(settings, transactions, until)
    orders, events = _snapshot(data)
    validation_cutoff = data.as_of - pd.Timedelta(days=horizon_days)
    first = pd.to_datetime(orders["ordered_at"]).min()
    if validation_cutoff <= first:
        raise ValueError(
            f"horizon_days={horizon_days:g}: the orders span only "
            f"{(data.as_of - first).days} days; validation needs history before "
            f"{validation_cutoff} and {horizon_days:g} days after it"
        )
    table, _, detail = compare_churn(
        orders,
        validation_cutoff,
        events,
        model=ChurnModel(horizon_days=horizon_days),
        products=data.products,
    )
    model = ChurnModel(horizon_days=horizon_days).fit(
        orders, data.as_of, events, products=data.products
    )
    scorer = ChurnScorer(model, orders, data.as_of, events, data.products)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    model_dir = settings.home / "models" / MODEL_NAME / stamp
    scorer.save(model_dir)
    metrics = {
        k: float(v) for k, v in table.loc["model", ["auc", "pr_auc", "brier", "log_loss"]].items()
    }
    for name in table.index.drop("model"):
        metrics[f"{name}_auc"] = float(table.loc[name, "auc"])
    params = {
        "source": str(transactions or settings.warehouse_path),
        "as_of": str(data.as_of),
        "validation_cutoff": str(validation_cutoff),
        "horizon_days": horizon_days,
        "order_lines": len(orders),
        "customers": orders["customer_id"].nunique(),
        **{f"model_{k}": v for k, v in model.get_params().items() if k != "features"},
    }
    example = pd.DataFrame({"customer_id": orders["customer_id"].astype(str).unique()[:3]})
    with tracking.start_run(settings, EXPERIMENT, run_name=f"train {stamp}", params=params):
        tracking.log_table(table.reset_index(names="model"), "validation_comparison")
        tracking.log_table(detail["reliability"], "reliability")
        tracking.log_figure(_reliability_plot(detail["reliability"]), "reliability")
        tracking.log_table(gain_importance({"churn": model.booster_}), "feature_importance")
        version = tracking.log_directory_model(
            settings, model_dir, MODEL_NAME, metrics, loader=LOADER, input_example=example
        )
    decision = tracking.promote_if_better(settings, MODEL_NAME, version.version, GATE_METRIC)
    return ChurnTrainResult(model_dir, str(version.version), decision, table, validation_cutoff)


def score(settings: Settings) -> pd.DataFrame:
    """The champion's contract table for every customer seen before its cutoff."""
    return load_scorer(tracking.champion_artifact_dir(settings, MODEL_NAME)).score_all()


def _reliability_plot(reliability: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect")
    ax.plot(reliability["mean_predicted"], reliability["observed_rate"], marker="o", label="model")
    ax.set_xlabel("predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.set_title("reliability (out of time)")
    ax.legend()
    return fig
