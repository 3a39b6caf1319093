"""Everything the report reads from a data home, read-only; nothing is created in an empty home.

- email events: the warehouse's `events` table and the real-time event store (deduplicated by
  `event_id`);
- orders: the warehouse's order lines summed per order, plus purchases known only as real-time
  `purchase` events (their `order_id` and `value` properties) not imported as orders yet;
- model versions: the MLflow registry (`tracking.list_models`) and the recommender's validation
  comparison tables (run artifacts under `mlartifacts/`);
- segment memberships: `segments/memberships.parquet`;
- the journeys' send queue (`journeys/journeys.sqlite`), None before the first run. Experiments
  are analysed from the sends tagged with `experiment` and `variant` (`build.analyse`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from personalizer.analytics.attribution import ORDER_COLUMNS, order_totals
from personalizer.analytics.emails import EMAIL_TYPES, parse_properties
from personalizer.analytics.history import QUALITY_METRICS
from personalizer.config import Settings
from personalizer.data.event_store import SqliteEventStore, store_path
from personalizer.data.warehouse import Warehouse
from personalizer.schema import EventType
from personalizer.segments.store import load_history, segments_dir

logger = logging.getLogger(__name__)

EVENT_COLUMNS = ["event_id", "customer_id", "type", "occurred_at", "campaign_id", "properties"]
_PAGE = 50_000


@dataclass(frozen=True)
class ReportData:
    """The raw frames one report is built from (`load_report_data`).

    Attributes:
        events: Email events (`EVENT_COLUMNS`), warehouse and event store together.
        orders: Orders (`attribution.ORDER_COLUMNS`).
        versions: Registered model versions (`tracking.list_models`), empty without a registry.
        tables: Validation comparison tables by run id (recommender runs).
        memberships: Segment membership history, None before the first evaluation.
        queue: The journeys' send queue, None when no journeys module provides one.
        experiments: Experiment results (`sections.RESULT_COLUMNS`), None without any.
    """

    events: pd.DataFrame
    orders: pd.DataFrame
    versions: pd.DataFrame = field(default_factory=pd.DataFrame)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    memberships: pd.DataFrame | None = None
    queue: pd.DataFrame | None = None
    experiments: pd.DataFrame | None = None


def load_report_data(settings: Settings, since: pd.Timestamp | None = None) -> ReportData:
    """Read every source of the report from the data home of `settings`."""
    versions, tables = load_models(settings)
    live = read_event_store(settings)
    return ReportData(
        events=load_email_events(settings, since, live),
        orders=load_orders(settings, since, live),
        versions=versions,
        tables=tables,
        memberships=load_memberships(settings),
        queue=load_queue(settings),
        experiments=None,
    )


def load_email_events(
    settings: Settings, since: pd.Timestamp | None = None, live: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Email events at or after `since` from the warehouse and the event store (`EVENT_COLUMNS`).

    `live` is the event store's content when already read (`read_event_store`).
    """
    parts = []
    if settings.warehouse_path.exists():
        kinds = ", ".join(f"'{t}'" for t in EMAIL_TYPES)
        where = f"type IN ({kinds})" + (" AND occurred_at >= ?" if since is not None else "")
        with Warehouse(settings.warehouse_path, read_only=True) as wh:
            parts.append(
                wh.query(
                    f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE {where}",
                    [pd.Timestamp(since).to_pydatetime()] if since is not None else None,
                )
            )
    live = read_event_store(settings) if live is None else live
    if len(live):
        live = live[live["type"].isin(EMAIL_TYPES).to_numpy(bool)]
        if since is not None:
            live = live[(live["occurred_at"] >= pd.Timestamp(since)).to_numpy(bool)]
        parts.append(live[EVENT_COLUMNS])
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in EVENT_COLUMNS}).astype(
            {"occurred_at": "datetime64[us]"}
        )
    events = pd.concat(parts, ignore_index=True)
    events["occurred_at"] = pd.to_datetime(events["occurred_at"]).astype("datetime64[us]")
    return events.drop_duplicates("event_id", keep="first", ignore_index=True)


def load_orders(
    settings: Settings, since: pd.Timestamp | None = None, live: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Orders at or after `since` (`ORDER_COLUMNS`), with real-time purchases not imported yet.

    `live` is the event store's content when already read (`read_event_store`).
    """
    orders = order_totals(pd.DataFrame(columns=["order_id", "customer_id", "ordered_at"]))
    if settings.warehouse_path.exists():
        where = " WHERE ordered_at >= ?" if since is not None else ""
        with Warehouse(settings.warehouse_path, read_only=True) as wh:
            orders = wh.query(
                "SELECT order_id, customer_id, min(ordered_at) AS ordered_at, "
                f"sum(quantity * unit_price) AS revenue FROM orders{where} "
                "GROUP BY order_id, customer_id",
                [pd.Timestamp(since).to_pydatetime()] if since is not None else None,
            )
    live = read_event_store(settings) if live is None else live
    if len(live):
        bought = live[(live["type"] == EventType.PURCHASE.value).to_numpy(bool)]
        if since is not None:
            bought = bought[(bought["occurred_at"] >= pd.Timestamp(since)).to_numpy(bool)]
        extra = _purchases(bought, set(orders["order_id"].astype(str)))
        if len(extra):
            orders = pd.concat([orders, extra], ignore_index=True)
    orders = orders.astype({"order_id": str, "customer_id": str, "revenue": float})
    orders["ordered_at"] = pd.to_datetime(orders["ordered_at"]).astype("datetime64[us]")
    return orders[ORDER_COLUMNS]


def _purchases(events: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    rows = []
    for record in events.itertuples(index=False):
        props = parse_properties(record.properties)
        order_id, value = props.get("order_id"), props.get("value")
        if order_id is None or str(order_id) in known:
            continue
        try:
            revenue = float(value)  # type: ignore[arg-type]  # None and text: refused below
        except (TypeError, ValueError):
            continue
        rows.append((str(order_id), str(record.customer_id), record.occurred_at, revenue))
        known.add(str(order_id))
    return pd.DataFrame(rows, columns=ORDER_COLUMNS)


def read_event_store(settings: Settings) -> pd.DataFrame:
    """Every event of the real-time store (empty when the home has none; none is created)."""
    path = store_path(settings)
    if not path.exists():
        return pd.DataFrame(columns=EVENT_COLUMNS)
    with SqliteEventStore(path) as store:
        pages = list(store.pages(limit=_PAGE))
    return pd.concat(pages, ignore_index=True) if pages else pd.DataFrame(columns=EVENT_COLUMNS)


def load_models(settings: Settings) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Registered versions (`tracking.list_models`) and the comparison tables their baselines need.

    A home without a tracking store gives an empty frame (and no store is created).
    """
    if not (settings.home / "mlflow.db").exists():
        return pd.DataFrame(columns=["name", "version", "aliases", "created", "run_id"]), {}
    from personalizer.tracking import artifact_root, list_models

    versions = list_models(settings)
    tables: dict[str, pd.DataFrame] = {}
    with_tables = [n for n, spec in QUALITY_METRICS.items() if spec.table_column]
    for run_id in versions.loc[versions["name"].isin(with_tables), "run_id"].dropna():
        pattern = f"*/{run_id}/artifacts/tables/validation_comparison.csv"
        found = sorted(artifact_root(settings).glob(pattern))
        if found:
            tables[str(run_id)] = pd.read_csv(found[0])
    return versions, tables


def load_memberships(settings: Settings) -> pd.DataFrame | None:
    """The segment membership history, None before the first evaluation."""
    memberships, _ = load_history(segments_dir(settings))
    return memberships


def load_queue(settings: Settings) -> pd.DataFrame | None:
    """The journeys' send queue, None when no journey has run in this home."""
    from personalizer.journeys.queue import store_path
    from personalizer.journeys.runs import read_queue

    if not store_path(settings).exists():
        return None
    return read_queue(settings)
