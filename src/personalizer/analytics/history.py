"""How things moved over time: model quality per registered version, and segment sizes.

Model quality: each registered version is one training run; its validation metrics are tagged on
it (`tracking.list_models`). Per model, one *main* metric (the promotion gate's) is followed with
the baselines validated in the same run: the column `<baseline>_<metric>` next to `<metric>`, or
for the recommender the baselines' rows of the run's validation comparison table.

Segments: the membership history (`segments.store.load_history`) records every stay of a customer
in a segment; each evaluation that changed anything is a moment of that history, at which a
segment's size is the number of stays open then.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

QUALITY_COLUMNS = ["model", "version", "created", "champion", "metric", "series", "value"]
SIZE_COLUMNS = ["at", "segment", "size"]
MOVEMENT_COLUMNS = ["segment", "before", "entered", "exited", "size"]
MODEL_SERIES = "model"  # the `series` of the model's own metric; baselines are named


@dataclass(frozen=True)
class QualityMetric:
    """The metric followed for one registered model and where its baselines are found.

    Attributes:
        metric: Tagged metric name (display form, e.g. "ndcg@10").
        baselines: Baseline names; their value is the tag `<baseline>_<metric>`, or the row of
            that name in the run's comparison table when `table_column` is set.
        table_column: Column of the run's `validation_comparison` table holding the metric.
        higher_is_better: Direction of the metric.
    """

    metric: str
    baselines: tuple[str, ...] = ()
    table_column: str | None = None
    higher_is_better: bool = True


QUALITY_METRICS: dict[str, QualityMetric] = {
    "recommender": QualityMetric(
        "ndcg@10", ("popular", "purchase_frequency", "item_knn"), table_column="all/ndcg@10"
    ),
    "churn": QualityMetric("auc", ("recency", "bgnbd", "rfm_lightgbm")),
    "send_time": QualityMetric("time_of_day_hit", ("shop",)),
    "engagement": QualityMetric("open_auc", ("global_rate", "historical_rate")),
    "categories": QualityMetric("auc", ("popularity", "personal_frequency", "recency")),
    "uplift": QualityMetric("uplift@30", ("random", "published")),
}


def quality_metric(name: str, versions: pd.DataFrame) -> QualityMetric | None:
    """The metric followed for model `name`: the known one, else "auc" or its first metric tag.

    For a model not in `QUALITY_METRICS`, baselines are the tags ending in `_<metric>`.
    """
    if name in QUALITY_METRICS:
        return QUALITY_METRICS[name]
    fixed = {"name", "version", "aliases", "created", "run_id"}
    rows = versions[versions["name"] == name]
    tags = [c for c in versions.columns if c not in fixed and rows[c].notna().any()]
    if not tags:
        return None
    metric = "auc" if "auc" in tags else tags[0]
    found = tuple(t.removesuffix("_" + metric) for t in tags if t.endswith("_" + metric))
    return QualityMetric(metric, found)


def model_quality(
    versions: pd.DataFrame, tables: Mapping[str, pd.DataFrame] | None = None
) -> pd.DataFrame:
    """The main metric of every registered version and its baselines, as a long frame.

    Args:
        versions: `tracking.list_models` output (name, version, aliases, created, run_id, one
            column per metric tag).
        tables: Validation comparison tables by run id (a `model` column, one column per metric),
            for models whose baselines are rows of that table (the recommender).

    Returns:
        `QUALITY_COLUMNS`: one row per version and series (`series` is "model" or the baseline's
        name), `champion` True for the version holding the champion alias; sorted by model and
        creation time. Versions without the metric are left out.
    """
    rows: list[dict[str, object]] = []
    for name in sorted(versions["name"].unique()) if len(versions) else []:
        spec = quality_metric(str(name), versions)
        if spec is None:
            continue
        for record in versions[versions["name"] == name].to_dict("records"):
            value = _number(record.get(spec.metric))
            if value is None:
                continue
            aliases = str(record.get("aliases") or "")
            base = {
                "model": str(name),
                "version": int(record["version"]),
                "created": pd.Timestamp(record["created"]),
                "champion": "champion" in [a.strip() for a in aliases.split(",")],
                "metric": spec.metric,
            }
            rows.append({**base, "series": MODEL_SERIES, "value": value})
            for baseline, found in _baselines(spec, record, tables or {}).items():
                rows.append({**base, "series": baseline, "value": found})
    frame = pd.DataFrame(rows, columns=QUALITY_COLUMNS)
    if frame.empty:
        return frame.astype({"version": "int64", "champion": bool, "value": float})
    return frame.sort_values(["model", "created", "version"], kind="stable", ignore_index=True)


def _baselines(
    spec: QualityMetric, record: Mapping[str, object], tables: Mapping[str, pd.DataFrame]
) -> dict[str, float]:
    found: dict[str, float] = {}
    if spec.table_column is not None:
        table = tables.get(str(record.get("run_id")))
        if table is None or spec.table_column not in table.columns or "model" not in table:
            return found
        by_model = table.set_index(table["model"].astype(str))[spec.table_column]
        for baseline in spec.baselines:
            value = _number(by_model.get(baseline)) if baseline in by_model.index else None
            if value is not None:
                found[baseline] = value
        return found
    for baseline in spec.baselines:
        value = _number(record.get(f"{baseline}_{spec.metric}"))
        if value is not None:
            found[baseline] = value
    return found


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def evaluation_times(memberships: pd.DataFrame | None) -> list[pd.Timestamp]:
    """The moments of the membership history (every evaluation that changed something)."""
    if memberships is None or memberships.empty:
        return []
    stamps = pd.concat([memberships["entered_at"], memberships["exited_at"]]).dropna()
    return [pd.Timestamp(t) for t in sorted(stamps.unique())]


def segment_sizes(memberships: pd.DataFrame | None) -> pd.DataFrame:
    """The size of every segment at every moment of the history (`SIZE_COLUMNS`)."""
    times = evaluation_times(memberships)
    if memberships is None or not times:
        return pd.DataFrame({"at": [], "segment": [], "size": []}).astype(
            {"at": "datetime64[us]", "segment": "string", "size": "int64"}
        )
    moments = np.array(times, dtype="datetime64[us]")
    parts = []
    for segment, stays in memberships.groupby("segment", sort=True):
        entered = np.sort(stays["entered_at"].to_numpy("datetime64[us]"))
        exited = np.sort(stays["exited_at"].dropna().to_numpy("datetime64[us]"))
        size = np.searchsorted(entered, moments, side="right") - np.searchsorted(
            exited, moments, side="right"
        )
        parts.append(pd.DataFrame({"at": moments, "segment": str(segment), "size": size}))
    frame = pd.concat(parts, ignore_index=True)
    return frame.astype({"at": "datetime64[us]", "segment": "string", "size": "int64"})


def segment_movements(memberships: pd.DataFrame | None) -> pd.DataFrame:
    """Who entered and left each segment at the latest evaluation (`MOVEMENT_COLUMNS`).

    `before` is the size at the evaluation before it (0 at the first evaluation, where everyone
    entered), `size` the size after it; sorted by size, largest first.
    """
    times = evaluation_times(memberships)
    if memberships is None or not times:
        return pd.DataFrame({c: [] for c in MOVEMENT_COLUMNS}).astype(
            {"segment": "string", **dict.fromkeys(MOVEMENT_COLUMNS[1:], "int64")}
        )
    last = np.datetime64(times[-1], "us")
    entered_at = memberships["entered_at"].to_numpy("datetime64[us]")
    exited_at = memberships["exited_at"].to_numpy("datetime64[us]")
    open_after = (entered_at <= last) & (np.isnat(exited_at) | (exited_at > last))
    frame = pd.DataFrame(
        {
            "segment": memberships["segment"].astype(str).to_numpy(),
            "entered": entered_at == last,
            "exited": exited_at == last,
            "size": open_after,
        }
    )
    table = frame.groupby("segment", sort=True)[["entered", "exited", "size"]].sum()
    table["before"] = table["size"] - table["entered"] + table["exited"]
    table = table.reset_index()[MOVEMENT_COLUMNS]
    table = table.astype({"segment": "string", **dict.fromkeys(MOVEMENT_COLUMNS[1:], "int64")})
    return table.sort_values(["size", "segment"], ascending=[False, True], ignore_index=True)
