"""Email engagement pipeline: validate out of time, fit on all, log, register, gate.

`train` reads the warehouse's orders and events (cut at `until`). It first judges the model
where the outcomes are known: fitted on the data before a validation cutoff (the last 90 days, at
most 30% of the history), it scores every email sent from the cutoff on, next to the customer's
own historical rate and the global rate (`evaluation.propensity.evaluate_engagement`). The model's
open AUC there is the promotion gate's metric. The registered model is then fitted on all the
data; its directory carries the events and order lines it needs, so `predict_frame` gives each
customer's P(open), P(click) and P(purchase) for an email sent at the end of the data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from personalizer import tracking
from personalizer.config import Settings
from personalizer.data.training import load_training_data
from personalizer.data.training import validation_cutoff as held_out_from
from personalizer.evaluation.importance import gain_importance
from personalizer.evaluation.propensity import METHODS, evaluate_engagement
from personalizer.features.email_history import EmailHistory
from personalizer.features.engagement_times import machine_opens
from personalizer.models.propensity import EngagementModel
from personalizer.schema import EventType

log = logging.getLogger(__name__)

MODEL_NAME = "engagement"
EXPERIMENT = "engagement"
GATE_METRIC = "open_auc"
LOADER = "personalizer.models.engagement_pipeline:load_scorer"
MEASURES = ("auc", "pr_auc", "brier")
_SNAPSHOT = ("events.parquet", "orders.parquet")
_EVENT_COLUMNS = ["customer_id", "type", "occurred_at", "campaign_id", "properties"]
_ORDER_COLUMNS = ["customer_id", "order_id", "quantity", "unit_price", "ordered_at"]
_MACHINE = json.dumps({"machine_open": True})


@dataclass(frozen=True)
class EngagementTrainResult:
    """What `personalizer train engagement` prints."""

    model_dir: Path
    version: str
    decision: tracking.PromotionDecision
    table: pd.DataFrame  # out of time: one row per (target, method)
    validation_cutoff: pd.Timestamp
    as_of: pd.Timestamp


class EngagementScorer:
    """A fitted engagement model with the history it was fitted on: scores an email at `as_of`."""

    def __init__(
        self,
        model: EngagementModel,
        events: pd.DataFrame,
        orders: pd.DataFrame,
        as_of: pd.Timestamp,
    ) -> None:
        self.model = model
        self.events = events
        self.orders = orders
        self.as_of = as_of
        self._history: EmailHistory | None = None

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`customer_id, p_open, p_click, p_purchase` for `frame["customer_id"]`, as of `as_of`.

        Customers without any history get the propensities of a customer never seen.
        """
        if "customer_id" not in frame.columns:
            raise ValueError("the frame has no customer_id column")
        if self._history is None:
            # Indexed once: the history is fixed, whatever the requests.
            self._history = EmailHistory(self.events, self.orders, self.model.window_days)
        moments = pd.DataFrame(
            {"customer_id": frame["customer_id"].astype(str).to_numpy(), "at": self.as_of}
        )
        scores = self.model.predict_features(self._history.features(moments, self.model.priors_))
        return pd.concat([moments[["customer_id"]], scores], axis=1)

    def save(self, path: Path) -> None:
        """The model (LightGBM text + JSON) and its history (Parquet) in the folder `path`."""
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "model")
        for name, frame in zip(_SNAPSHOT, (self.events, self.orders), strict=True):
            frame.to_parquet(path / name, index=False)
        (path / "scorer.json").write_text(json.dumps({"as_of": self.as_of.isoformat()}))


def load_scorer(path: Path) -> EngagementScorer:
    """Open a folder written by `EngagementScorer.save`."""
    path = Path(path)
    meta_file = path / "scorer.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{meta_file} is missing: not an engagement model folder")
    meta = json.loads(meta_file.read_text())
    events, orders = (pd.read_parquet(path / name) for name in _SNAPSHOT)
    return EngagementScorer(
        EngagementModel.load(path / "model"), events, orders, pd.Timestamp(meta["as_of"])
    )


def snapshot(events: pd.DataFrame, orders: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Only what the email history reads: no emails, names, pages or order details travel.

    An event's `properties` only tell machine opens from human ones, so they are reduced to
    that flag.
    """
    machine = machine_opens(events)
    events = events[[c for c in _EVENT_COLUMNS if c in events.columns]].copy()
    events["properties"] = pd.Series(None, index=events.index, dtype=object).mask(machine, _MACHINE)
    orders = orders[[c for c in _ORDER_COLUMNS if c in orders.columns]]
    return events.reset_index(drop=True), orders.reset_index(drop=True)


def train(settings: Settings, until: str | None = None) -> EngagementTrainResult:
    """Validate out of time against the baselines, fit on everything, log, register, gate.

    Raises:
        ValueError: When the warehouse holds no email sends (before `until`), or too few to learn.
    """
    data = load_training_data(settings, None, until)
    sent = EventType.EMAIL_SENT.value
    if data.events is None or not (data.events["type"] == sent).any():
        raise ValueError(
            f"the warehouse {settings.warehouse_path} has no {sent} events"
            + (f" before {until}" if until else "")
            + ": import a shop with email campaigns (e.g. `make demo`) first"
        )
    events, orders = snapshot(data.events, data.orders)
    as_of = data.until if data.until is not None else _after_last(events, orders)
    first = min(
        pd.to_datetime(events["occurred_at"]).min(), pd.to_datetime(orders["ordered_at"]).min()
    )
    validation_cutoff = held_out_from(pd.Timestamp(first), as_of)
    long = evaluate_engagement(
        events, orders, validation_cutoff, model=EngagementModel(), end=as_of
    )
    model = EngagementModel().fit(events, orders, as_of)
    scorer = EngagementScorer(model, events, orders, as_of)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    model_dir = settings.home / "models" / MODEL_NAME / stamp
    scorer.save(model_dir)
    table = long.set_index(["target", "method"])
    metrics: dict[str, float] = {}
    for target in model.targets:
        for method in METHODS:
            prefix = "" if method == "model" else f"{method}_"
            for measure in MEASURES:
                metrics[f"{prefix}{target}_{measure}"] = float(table.loc[(target, method), measure])
        metrics[f"{target}_rate"] = float(table.loc[(target, "model"), "positive_rate"])
    metrics["validation_sends"] = float(long["n"].iloc[0])
    params = {
        "source": str(settings.warehouse_path),
        "as_of": str(as_of),
        "validation_cutoff": str(validation_cutoff),
        "events": len(events),
        "sends": int((events["type"] == sent).sum()),
        "order_lines": len(orders),
        **{f"model_{k}": v for k, v in model.get_params().items()},
    }
    ids = events.loc[events["type"] == sent, "customer_id"].astype(str).unique()[:3]
    example = pd.DataFrame({"customer_id": ids})
    with tracking.start_run(settings, EXPERIMENT, run_name=f"train {stamp}", params=params):
        tracking.log_table(long, "validation_comparison")
        tracking.log_table(gain_importance(model.boosters_), "feature_importance")
        version = tracking.log_directory_model(
            settings, model_dir, MODEL_NAME, metrics, loader=LOADER, input_example=example
        )
    decision = tracking.promote_if_better(settings, MODEL_NAME, version.version, GATE_METRIC)
    return EngagementTrainResult(
        model_dir, str(version.version), decision, long, validation_cutoff, as_of
    )


def _after_last(events: pd.DataFrame, orders: pd.DataFrame) -> pd.Timestamp:
    """Just after the last event or order: the moment the next email is scored for."""
    last = max(
        pd.to_datetime(events["occurred_at"]).max(), pd.to_datetime(orders["ordered_at"]).max()
    )
    return pd.Timestamp(last) + pd.Timedelta(seconds=1)
