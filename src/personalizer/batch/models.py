"""The champions of a batch run, loaded once, and the customers' prepared rows.

Two kinds of output come from the registry's champions:

* per customer, computed partition by partition (`score_partition`): the recommender's products and
  the send-time model's best hour. These models travel in `ScoringModels`, a picklable bundle that
  the Spark engine broadcasts once per executor.
* over the whole customer base, computed once here (`prepare_customers`): churn, P(alive),
  expected purchases, value and next order date (BG/NBD and Gamma-Gamma are fitted on the whole
  base, so a partition cannot compute them alone: the values are exactly those of `score churn`),
  and the segments (a `top` condition ranks over the whole population; the predicted segments read
  the churn and category predictions, as `segments evaluate` does).

A champion that is missing leaves its columns empty (logged); the manifest records `null` for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from personalizer.batch.scoring import INPUT_COLUMNS, PREDICTION_COLUMNS
from personalizer.config import Settings

if TYPE_CHECKING:
    from personalizer.models.recommenders.engine import Engine
    from personalizer.models.send_time import SendTimeModel

log = logging.getLogger(__name__)

MODELS = ("recommender", "churn", "send_time", "categories")


@dataclass
class ScoringModels:
    """What `score_partition` needs: the per-customer models and the run's options."""

    versions: dict[str, str | None]
    as_of: pd.Timestamp  # naive UTC: send times are the next ones after it, segments as of it
    n: int = 10
    exclude_purchased: bool = False
    recommender: Engine | None = None
    send_time: SendTimeModel | None = None


def champion_versions(settings: Settings) -> dict[str, str | None]:
    """The champion version of each of `MODELS` (None where there is none)."""
    from personalizer import tracking

    versions: dict[str, str | None] = {}
    for name in MODELS:
        try:
            versions[name] = str(tracking.champion_version(settings, name).version)
        except tracking.TrackingError as exc:
            log.warning("batch scoring without %s: %s", name, exc)
            versions[name] = None
    return versions


def load_models(
    settings: Settings,
    versions: dict[str, str | None],
    as_of: pd.Timestamp,
    n: int = 10,
    exclude_purchased: bool = False,
) -> ScoringModels:
    """Load the recommender and send-time champions of `versions` into one bundle."""
    from personalizer import tracking
    from personalizer.models.recommenders.engine import load_engine
    from personalizer.models.send_time_pipeline import load_scorer

    models = ScoringModels(dict(versions), as_of, n, exclude_purchased)
    if versions.get("recommender") is not None:
        models.recommender = load_engine(tracking.champion_engine_dir(settings, "recommender"))
    if versions.get("send_time") is not None:
        path = tracking.champion_artifact_dir(settings, "send_time")
        models.send_time = load_scorer(path).model
    return models


def prepare_customers(
    settings: Settings, versions: dict[str, str | None], as_of: pd.Timestamp
) -> pd.DataFrame:
    """Every customer of the warehouse with the predictions computed over the whole base.

    Returns:
        Columns `INPUT_COLUMNS`, one row per customer of the `customers` table, sorted by id.
    """
    from personalizer.data.warehouse import Warehouse

    with Warehouse(settings.warehouse_path, read_only=True, wait_seconds=10) as wh:
        customers = wh.query(
            "SELECT customer_id, email_consent, timezone FROM customers ORDER BY customer_id"
        )
    customers = customers.assign(
        customer_id=customers["customer_id"].astype(str),
        email_consent=customers["email_consent"].fillna(False).astype(bool),
    )
    predictions = _predictions(settings, versions)
    rows = customers.merge(predictions, on="customer_id", how="left")
    segments = _segments(settings, as_of, predictions if len(predictions.columns) > 1 else None)
    rows = rows.merge(segments, on="customer_id", how="left")
    rows["segments"] = [s if isinstance(s, list) else [] for s in rows["segments"]]
    for column in (*PREDICTION_COLUMNS, "next_order_date"):
        if column not in rows.columns:
            rows[column] = pd.NaT if column == "next_order_date" else float("nan")
    log.info("batch scoring: %d customers prepared as of %s", len(rows), as_of)
    return rows.loc[:, list(INPUT_COLUMNS)]


def _predictions(settings: Settings, versions: dict[str, str | None]) -> pd.DataFrame:
    """Churn/value (all contract columns but reasons) and category propensities by customer."""
    from personalizer import tracking
    from personalizer.models import category_pipeline, churn_pipeline

    table = pd.DataFrame({"customer_id": pd.Series(dtype=str)})
    if versions.get("churn") is not None:
        path = tracking.champion_artifact_dir(settings, "churn")
        churn = churn_pipeline.load_scorer(path).score_all().drop(columns=["reasons"])
        table = churn.assign(customer_id=churn["customer_id"].astype(str))
    if versions.get("categories") is not None:
        path = tracking.champion_artifact_dir(settings, "categories")
        categories = category_pipeline.load_scorer(path).score_all()
        categories = categories.assign(customer_id=categories["customer_id"].astype(str))
        table = table.merge(categories, on="customer_id", how="outer")
    return table


def _segments(
    settings: Settings, as_of: pd.Timestamp, predictions: pd.DataFrame | None
) -> pd.DataFrame:
    """`customer_id, segments` (sorted list of names) for customers in at least one segment."""
    from personalizer.data.warehouse import Warehouse
    from personalizer.segments.batch import evaluate_warehouse
    from personalizer.segments.definitions import default_segments

    with Warehouse(settings.warehouse_path, read_only=True, wait_seconds=10) as wh:
        members = evaluate_warehouse(wh, default_segments(), as_of, predictions)
    members = members.assign(customer_id=members["customer_id"].astype(str))
    grouped = members.sort_values("segment").groupby("customer_id")["segment"].agg(list)
    return grouped.rename("segments").reset_index()
