"""Category propensity pipelines: train (validate out of time, log, register, gate) and score.

`train` judges the model where the outcome is known first: fitted on the data before
`as_of − H`, it is scored on who bought each category in the last H days, next to the baselines of
`evaluate_category_propensity` (popularity, personal frequency, recency). Its mean AUC is the
promotion gate's metric. The registered model is then fitted on all the data as of `as_of`, and its
folder carries the order lines and catalog it read, so `score categories` needs no other input:
expected orders come from BG/NBD fitted on that history, as in `score churn`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from personalizer import tracking
from personalizer.config import Settings
from personalizer.data.training import load_training_data
from personalizer.models.category_propensity import (
    CategoryPropensity,
    bgnbd_expected_orders,
    evaluate_category_propensity,
    validation_window,
)
from personalizer.models.scorers import rows_of

log = logging.getLogger(__name__)

MODEL_NAME = "categories"
EXPERIMENT = "categories"
GATE_METRIC = "auc"
LOADER = "personalizer.models.category_pipeline:load_scorer"
_ORDER_COLUMNS = ["customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"]


@dataclass(frozen=True)
class CategoryTrainResult:
    """What `personalizer train categories` prints."""

    model_dir: Path
    version: str
    decision: tracking.PromotionDecision
    table: pd.DataFrame  # out-of-time validation: model and baselines
    validation_cutoff: pd.Timestamp
    categories: tuple[str, ...]


class CategoryScorer:
    """A fitted category propensity model with the history it was fitted on."""

    def __init__(
        self,
        model: CategoryPropensity,
        orders: pd.DataFrame,
        products: pd.DataFrame,
        as_of: pd.Timestamp,
        horizon_days: float,
    ) -> None:
        self.model, self.orders, self.products = model, orders, products
        self.as_of, self.horizon_days = as_of, horizon_days
        self._scores: pd.DataFrame | None = None

    def score_all(self) -> pd.DataFrame:
        """`customer_id` and `propensity_<category>` for every customer who ordered before."""
        if self._scores is None:
            expected = bgnbd_expected_orders(
                self.orders, self.as_of, self.horizon_days, seed=self.model.seed
            )
            self._scores = self.model.predict(self.orders, self.products, self.as_of, expected)
        return self._scores

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The propensities of the customers of `frame["customer_id"]` that are known."""
        return rows_of(self.score_all(), frame)

    def save(self, path: Path) -> None:
        """Fitted parameters (JSON) and the history (Parquet) in the folder `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self.orders.to_parquet(path / "orders.parquet", index=False)
        self.products.to_parquet(path / "products.parquet", index=False)
        meta = {
            "as_of": self.as_of.isoformat(),
            "horizon_days": self.horizon_days,
            "categories": list(self.model.categories_ or ()),
            "alpha": self.model.alpha_,
            "half_life_days": None
            if math.isinf(self.model.half_life_days_)
            else self.model.half_life_days_,
            "max_categories": self.model.max_categories,
            "seed": self.model.seed,
        }
        (path / "scorer.json").write_text(json.dumps(meta, indent=1))


def load_scorer(path: Path) -> CategoryScorer:
    """Open a folder written by `CategoryScorer.save`."""
    path = Path(path)
    if not (path / "scorer.json").exists():
        raise FileNotFoundError(f"{path / 'scorer.json'} is missing: not a categories model folder")
    meta = json.loads((path / "scorer.json").read_text())
    model = CategoryPropensity(max_categories=int(meta["max_categories"]), seed=int(meta["seed"]))
    model.categories_ = tuple(meta["categories"])
    model.alpha_ = float(meta["alpha"])
    half_life = meta["half_life_days"]
    model.half_life_days_ = math.inf if half_life is None else float(half_life)
    return CategoryScorer(
        model,
        pd.read_parquet(path / "orders.parquet"),
        pd.read_parquet(path / "products.parquet"),
        pd.Timestamp(meta["as_of"]),
        float(meta["horizon_days"]),
    )


def train(
    settings: Settings,
    transactions: Path | None = None,
    until: str | None = None,
    horizon_days: float = 90.0,
) -> CategoryTrainResult:
    """Validate out of time against the baselines, fit on everything, log, register, gate."""
    if not horizon_days > 0:
        raise ValueError(f"horizon_days must be > 0, got {horizon_days!r}")
    data = load_training_data(settings, transactions, until, with_events=False)
    if data.products is None or "category" not in data.products.columns:
        raise ValueError("products: a catalog with a category column is needed (none found)")
    products = data.products[["product_id", "category"]]
    if products["category"].isna().all():
        raise ValueError("products.category: every value is missing; nothing to learn")
    orders = data.orders[[c for c in _ORDER_COLUMNS if c in data.orders.columns]]
    validation_cutoff = data.as_of - pd.Timedelta(days=horizon_days)
    if validation_cutoff <= pd.to_datetime(orders["ordered_at"]).min():
        raise ValueError(
            f"horizon_days={horizon_days:g}: the orders do not span {horizon_days:g} days "
            "of history and as many of validation"
        )
    table = evaluate_category_propensity(orders, products, validation_cutoff, horizon_days)
    model = CategoryPropensity()
    start, days = validation_window(orders, data.as_of, horizon_days)
    expected = bgnbd_expected_orders(orders, start, days) if days > 0 else None
    model.fit(orders, products, data.as_of, horizon_days, expected_orders=expected)
    scorer = CategoryScorer(model, orders, products, data.as_of, horizon_days)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    model_dir = settings.home / "models" / MODEL_NAME / stamp
    scorer.save(model_dir)
    by_model = table.set_index("model")
    metrics = {
        "auc": float(by_model.loc["category_propensity", "auc"]),
        "log_loss": float(by_model.loc["category_propensity", "log_loss"]),
    }
    for name in by_model.index.drop("category_propensity"):
        metrics[f"{name}_auc"] = float(by_model.loc[name, "auc"])
    params = {
        "source": str(transactions or settings.warehouse_path),
        "as_of": str(data.as_of),
        "validation_cutoff": str(validation_cutoff),
        "horizon_days": horizon_days,
        "categories": len(model.categories_ or ()),
        "alpha": model.alpha_,
        "half_life_days": model.half_life_days_,
    }
    example = pd.DataFrame({"customer_id": orders["customer_id"].astype(str).unique()[:3]})
    with tracking.start_run(settings, EXPERIMENT, run_name=f"train {stamp}", params=params):
        tracking.log_table(table, "validation_comparison")
        if model.validation_ is not None:
            tracking.log_table(model.validation_, "grid")
        version = tracking.log_directory_model(
            settings, model_dir, MODEL_NAME, metrics, loader=LOADER, input_example=example
        )
    decision = tracking.promote_if_better(settings, MODEL_NAME, version.version, GATE_METRIC)
    return CategoryTrainResult(
        model_dir,
        str(version.version),
        decision,
        table,
        validation_cutoff,
        tuple(model.categories_ or ()),
    )


def score(settings: Settings) -> pd.DataFrame:
    """The champion's propensities for every customer who ordered before its cutoff."""
    return load_scorer(tracking.champion_artifact_dir(settings, MODEL_NAME)).score_all()
