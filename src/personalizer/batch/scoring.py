"""Scoring one partition of customers: the one function both engines (local, Spark) run.

`score_partition` takes the prepared rows of some customers (see `personalizer.batch.models`:
consent, time zone, segments and the churn/value predictions, which are fitted over the whole
customer base and so computed once) and adds what is computed per customer: the champion
recommender's `n` products and the send-time model's best hour with the next send moment.

Consent rule: every customer gets a `scores` row (segments and predictions describe the customer,
they are not content), but a customer whose `email_consent` is not true gets no recommendation rows
and `send_at` is null: nothing is prepared to be sent to them.

Partitions are a stable hash of the customer id (`crc32(customer_id) % partitions`), the same on
every machine and Python run, so a re-run finds the same customers in the same partition.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from personalizer.batch.models import ScoringModels

SCORE_COLUMNS = (
    "customer_id",
    "email_consent",
    "segments",  # list of segment names, sorted
    "churn_probability",
    "p_alive",
    "expected_purchases",
    "predicted_value",
    "next_order_date",  # naive UTC; null when unknown or not expected
    "send_hour_of_week",  # 0 = Monday 00:00 in the customer's zone; null without a model
    "send_confidence",
    "send_at",  # naive UTC, the next such hour after as_of (quiet hours moved to 09:00); null
    # without consent
)
RECOMMENDATION_COLUMNS = ("customer_id", "rank", "product_id", "score", "strategy")
PREDICTION_COLUMNS = ("churn_probability", "p_alive", "expected_purchases", "predicted_value")
INPUT_COLUMNS = (
    "customer_id",
    "email_consent",
    "timezone",
    "segments",
    *PREDICTION_COLUMNS,
    "next_order_date",
)


def partition_of(customer_ids: pd.Series, partitions: int) -> np.ndarray:
    """Each customer's partition: `crc32(utf-8 id) % partitions`."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    codes = [zlib.crc32(str(c).encode()) % partitions for c in customer_ids]
    return np.asarray(codes, dtype=np.int64)


def score_partition(models: ScoringModels, customers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Score the prepared rows of some customers.

    Args:
        models: the loaded champions and the run's options (`load_models`).
        customers: rows of `prepare_customers` (columns `INPUT_COLUMNS`, extra ones ignored).

    Returns:
        `{"scores": ..., "recommendations": ...}` with columns `SCORE_COLUMNS` (one row per
        customer, sorted by customer_id) and `RECOMMENDATION_COLUMNS` (consenting customers only,
        sorted by customer_id and rank).
    """
    rows = customers.sort_values("customer_id", ignore_index=True)
    ids = rows["customer_id"].astype(str)
    consent = rows["email_consent"].fillna(False).astype(bool).to_numpy()
    hour, confidence = _send_hours(models, ids)
    send_at = _send_at(models, hour, rows["timezone"], consent)
    scores = pd.DataFrame(
        {
            "customer_id": ids,
            "email_consent": consent,
            "segments": [list(s) if s is not None else [] for s in rows["segments"]],
            **{c: rows[c].astype(float).to_numpy() for c in PREDICTION_COLUMNS},
            "next_order_date": pd.to_datetime(rows["next_order_date"]).astype("datetime64[us]"),
            "send_hour_of_week": hour,
            "send_confidence": confidence,
            "send_at": send_at,
        }
    )
    return {"scores": scores, "recommendations": _recommend(models, ids[consent].tolist())}


def _send_hours(models: ScoringModels, ids: pd.Series) -> tuple[pd.Series, np.ndarray]:
    if models.send_time is None or ids.empty:
        return pd.Series(pd.NA, index=ids.index, dtype="Int64"), np.full(len(ids), np.nan)
    best = models.send_time.best_hour(ids.tolist())
    hour = pd.Series(best["hour_of_week"].to_numpy(dtype=np.int64), dtype="Int64")
    return hour, best["confidence"].to_numpy(dtype=float)


def _send_at(
    models: ScoringModels, hour: pd.Series, zones: pd.Series, consent: np.ndarray
) -> pd.Series:
    """`next_local_hour` of each consenting customer with an hour, else null.

    The answer depends only on (hour, zone), so it is computed once per distinct pair (at most
    168 per zone) and spread back to the customers: per-customer datetime work was most of this.
    """
    from personalizer.decisions.decider import next_local_hour

    after = models.as_of.to_pydatetime()
    moments = np.full(len(hour), np.datetime64("NaT"), dtype="datetime64[us]")
    wanted = consent & hour.notna().to_numpy()
    if wanted.any():
        zone = zones.to_numpy(dtype=object)[wanted]
        zone = np.asarray([z if isinstance(z, str) and z else "UTC" for z in zone], dtype=object)
        pairs = pd.DataFrame({"hour": hour.to_numpy()[wanted].astype(np.int64), "zone": zone})
        codes, distinct = pd.MultiIndex.from_frame(pairs).factorize()
        answers = np.array(
            [next_local_hour(int(h), str(z), after) for h, z in distinct],
            dtype="datetime64[us]",
        )
        moments[wanted] = answers[codes]
    return pd.Series(moments, dtype="datetime64[us]")


def _recommend(models: ScoringModels, ids: list[str]) -> pd.DataFrame:
    if models.recommender is None or not ids:
        return empty_recommendations()
    recs = models.recommender.recommend(ids, models.n, exclude_purchased=models.exclude_purchased)
    recs = recs.assign(
        customer_id=recs["customer_id"].astype(str),
        rank=recs["rank"].astype("int64"),
        product_id=recs["product_id"].astype(str),
        score=recs["score"].astype(float),
        strategy=recs["strategy"].astype(str),
    )
    return recs.loc[:, list(RECOMMENDATION_COLUMNS)].sort_values(
        ["customer_id", "rank"], ignore_index=True
    )


def empty_recommendations() -> pd.DataFrame:
    """The recommendations table with no rows and its dtypes."""
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=str),
            "rank": pd.Series(dtype="int64"),
            "product_id": pd.Series(dtype=str),
            "score": pd.Series(dtype=float),
            "strategy": pd.Series(dtype=str),
        }
    )
