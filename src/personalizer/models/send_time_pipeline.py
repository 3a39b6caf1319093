"""Send-time pipelines: train (validate on next-order hours, log, register, gate) and score.

`train` first checks the model where the answer is known: fitted on the data before a validation
cutoff (the last 90 days, at most 30% of the history), it must place each customer's next order
within ±1 hour of the predicted time of day more often than the shop-wide best hour does. That
hit rate is the promotion gate's metric. The registered model is then fitted on all the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from personalizer import tracking
from personalizer.config import Settings
from personalizer.data.training import load_training_data
from personalizer.data.training import validation_cutoff as held_out_from
from personalizer.evaluation.send_time import next_order_hits
from personalizer.models.send_time import SendTimeModel

log = logging.getLogger(__name__)

MODEL_NAME = "send_time"
EXPERIMENT = "send_time"
GATE_METRIC = "time_of_day_hit"
LOADER = "personalizer.models.send_time_pipeline:load_scorer"


@dataclass(frozen=True)
class SendTimeTrainResult:
    """What `personalizer train send-time` prints."""

    model_dir: Path
    version: str
    decision: tracking.PromotionDecision
    validation: dict[str, float]
    validation_cutoff: pd.Timestamp


class SendTimeScorer:
    """The fitted model as a directory model: `predict_frame` gives best hours."""

    def __init__(self, model: SendTimeModel) -> None:
        self.model = model

    def score_all(self) -> pd.DataFrame:
        """`customer_id, hour_of_week, confidence` for every customer the model knows."""
        return self.model.best_hour(self.model.customer_ids_)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Best hours for `frame["customer_id"]` (unknown customers get the shop's)."""
        return self.model.best_hour(frame["customer_id"].astype(str))


def load_scorer(path: Path) -> SendTimeScorer:
    """Open a folder written by `SendTimeModel.save`."""
    return SendTimeScorer(SendTimeModel.load(path))


def train(
    settings: Settings, transactions: Path | None = None, until: str | None = None
) -> SendTimeTrainResult:
    """Validate on next-order hours against the shop-wide best hour, fit on all, log, gate."""
    data = load_training_data(settings, transactions, until)
    first = pd.to_datetime(data.orders["ordered_at"]).min()
    validation_cutoff = held_out_from(first, data.as_of)
    validation = next_order_hits(
        data.orders, validation_cutoff, events=data.events, customers=data.customers
    )
    model = SendTimeModel().fit(data.events, data.orders, data.customers)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    model_dir = settings.home / "models" / MODEL_NAME / stamp
    model.save(model_dir)
    metrics = {
        "time_of_day_hit": validation["model/time_of_day_hit"],
        "hour_of_week_hit": validation["model/hour_of_week_hit"],
        "shop_time_of_day_hit": validation["global/time_of_day_hit"],
        "shop_hour_of_week_hit": validation["global/hour_of_week_hit"],
        "mean_confidence": validation["mean_confidence"],
        "validation_customers": validation["customers"],
    }
    params = {
        "source": str(transactions or settings.warehouse_path),
        "as_of": str(data.as_of),
        "validation_cutoff": str(validation_cutoff),
        "order_lines": len(data.orders),
        "events": 0 if data.events is None else len(data.events),
        **{f"model_{k}": v for k, v in model.get_params().items()},
    }
    example = pd.DataFrame({"customer_id": pd.Series(model.customer_ids_[:3]).astype(str)})
    with tracking.start_run(settings, EXPERIMENT, run_name=f"train {stamp}", params=params):
        table = pd.DataFrame(
            {
                "model": ["send_time", "shop-wide best hour"],
                "time_of_day_hit": [metrics["time_of_day_hit"], metrics["shop_time_of_day_hit"]],
                "hour_of_week_hit": [
                    metrics["hour_of_week_hit"],
                    metrics["shop_hour_of_week_hit"],
                ],
            }
        )
        tracking.log_table(table, "validation_comparison")
        version = tracking.log_directory_model(
            settings, model_dir, MODEL_NAME, metrics, loader=LOADER, input_example=example
        )
    decision = tracking.promote_if_better(settings, MODEL_NAME, version.version, GATE_METRIC)
    return SendTimeTrainResult(
        model_dir, str(version.version), decision, validation, validation_cutoff
    )


def score(settings: Settings) -> pd.DataFrame:
    """The champion's best hour for every customer it knows."""
    return load_scorer(tracking.champion_artifact_dir(settings, MODEL_NAME)).score_all()
