"""What the flows read, loaded from the data home: warehouse, event store, segment history, models.

Only the event types the flows name are read (plus `unsubscribe`, `signup` and `purchase`, which
every run needs), over the span asked for; unsubscribes and signups over all time. Events of the
warehouse and of the real-time event store are merged (an `event_id` in both counts once). Segment
entries and exits come from the membership history `personalizer segments evaluate` keeps; the
customers' best hours from the send-time champion, when a step asks for it and one is registered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from personalizer.config import Settings
from personalizer.data.event_store import SqliteEventStore, store_path
from personalizer.data.warehouse import Warehouse
from personalizer.journeys.definitions import ORDER, FlowSet
from personalizer.journeys.timeline import Timeline, build_timeline

log = logging.getLogger(__name__)

ALWAYS_READ = ("unsubscribe", "signup", "purchase")
ALL_TIME = ("unsubscribe", "signup")
CUSTOMER_COLUMNS = ["customer_id", "timezone", "email_consent", "signed_up_at"]
ORDER_COLUMNS = ["customer_id", "order_id", "product_id", "ordered_at"]
EVENT_COLUMNS = ["event_id", "customer_id", "type", "occurred_at", "product_id"]


@dataclass(frozen=True)
class Activity:
    """The tables the flows read (see `build_timeline` for their columns)."""

    customers: pd.DataFrame
    orders: pd.DataFrame
    events: pd.DataFrame
    changes: pd.DataFrame | None = None
    products: pd.DataFrame | None = None
    send_hours: pd.DataFrame | None = None
    shop_hour: int | None = None

    def timeline(self, extra_ids: list[str] | None = None) -> Timeline:
        """The indexed timeline of these tables."""
        return build_timeline(
            self.customers,
            self.orders,
            self.events,
            changes=self.changes,
            products=self.products,
            send_hours=self.send_hours,
            shop_hour=self.shop_hour,
            extra_ids=extra_ids or [],
        )


def needs(flows: FlowSet) -> tuple[set[str], set[str], bool, bool]:
    """Event types, segments, whether products (categories) and the send-time model are needed."""
    events, segments = set(ALWAYS_READ), set()
    products = model = False
    for flow in flows.enabled:
        t = flow.trigger
        if t.event:
            events.add(t.event)
            products |= t.category is not None
        if t.segment_entry:
            segments.add(t.segment_entry)
        for e in flow.exit:
            events.update([e.event] if e.event else [])
            segments.update([e.segment_exit] if e.segment_exit else [])
        for step in flow.steps:
            model |= step.send_time == "model"
            for c in step.condition:
                events.update(x for x in (c.did, c.did_not) if x)
                segments.update(x for x in (c.in_segment, c.not_in_segment) if x)
    events.discard(ORDER)
    return events, segments, products, model


def load_activity(
    settings: Settings,
    flows: FlowSet,
    start: pd.Timestamp | None,
    end: pd.Timestamp,
    *,
    send_time_model: bool = True,
) -> Activity:
    """The tables the flows read, from `start` (None: the beginning) to before `end`.

    Args:
        settings: the data home.
        flows: the flows to run.
        start: the earliest moment read (unsubscribes and signups: all time).
        end: nothing at or after this moment is read.
        send_time_model: read the send-time champion's best hours when a step asks for them.
    """
    types, segments, with_products, wants_model = needs(flows)
    tables = _warehouse(settings, sorted(types), start, end, with_products)
    realtime = _event_store(settings, types, start, end)
    if len(realtime):
        tables["events"] = (
            pd.concat([tables["events"], realtime], ignore_index=True)
            .drop_duplicates("event_id")
            .reset_index(drop=True)
        )
    changes = _segment_changes(settings, segments, start, end) if segments else None
    hours, shop = (None, None)
    if wants_model and send_time_model:
        hours, shop = send_hours(settings, tables["customers"]["customer_id"])
    return Activity(
        tables["customers"],
        tables["orders"],
        tables["events"],
        changes,
        tables.get("products"),
        hours,
        shop,
    )


def _warehouse(
    settings: Settings,
    types: list[str],
    start: pd.Timestamp | None,
    end: pd.Timestamp,
    with_products: bool,
) -> dict[str, pd.DataFrame]:
    if not settings.warehouse_path.exists():
        log.warning(
            "no warehouse at %s: journeys see no customers, orders or events",
            settings.warehouse_path,
        )
        return {
            "customers": pd.DataFrame(columns=CUSTOMER_COLUMNS),
            "orders": _typed(pd.DataFrame(columns=ORDER_COLUMNS), "ordered_at"),
            "events": _typed(pd.DataFrame(columns=EVENT_COLUMNS), "occurred_at"),
        }
    since = (start if start is not None else pd.Timestamp("1970-01-01")).to_pydatetime()
    until = end.to_pydatetime()
    marks = ", ".join("?" for _ in types)
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        out = {
            "customers": wh.query(f"SELECT {', '.join(CUSTOMER_COLUMNS)} FROM customers"),
            "orders": wh.query(
                f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders "
                "WHERE ordered_at >= ? AND ordered_at < ?",
                [since, until],
            ),
            "events": wh.query(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE customer_id IS NOT NULL "
                f"AND type IN ({marks}) AND occurred_at < ? "
                f"AND (occurred_at >= ? OR type IN ({', '.join('?' for _ in ALL_TIME)}))",
                [*types, until, since, *ALL_TIME],
            ),
        }
        if with_products:
            out["products"] = wh.query("SELECT product_id, category FROM products")
    out["orders"] = _typed(out["orders"], "ordered_at")
    out["events"] = _typed(out["events"], "occurred_at")
    return out


def _event_store(
    settings: Settings, types: set[str], start: pd.Timestamp | None, end: pd.Timestamp
) -> pd.DataFrame:
    """Real-time events of the wanted types in the span (the whole store is paged through)."""
    path = store_path(settings)
    if not path.exists():
        return pd.DataFrame(columns=EVENT_COLUMNS)
    parts = []
    with SqliteEventStore(path) as store:
        for page in store.pages():
            keep = page["type"].isin(types) & (page["occurred_at"] < end)
            if start is not None:
                keep &= (page["occurred_at"] >= start) | page["type"].isin(ALL_TIME)
            parts.append(page.loc[keep, EVENT_COLUMNS])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EVENT_COLUMNS)


def _segment_changes(
    settings: Settings, segments: set[str], start: pd.Timestamp | None, end: pd.Timestamp
) -> pd.DataFrame | None:
    from personalizer.segments.store import load_history, segments_dir

    _, changes = load_history(segments_dir(settings))
    if changes is None:
        log.warning(
            "flows name segments %s but there is no segment history in %s: run "
            "`personalizer segments evaluate` (on a schedule) to record entries and exits",
            sorted(segments),
            segments_dir(settings),
        )
        return None
    keep = changes["segment"].isin(segments) & (changes["at"] < end)
    return changes[keep].reset_index(drop=True)


def send_hours(
    settings: Settings, customer_ids: pd.Series
) -> tuple[pd.DataFrame | None, int | None]:
    """Best hours of the week of the send-time champion, and the shop's; (None, None) without.

    Customers the model has no signal for are left out (they get the shop's hour), as the
    decision service does (`decisions.snapshot`).
    """
    if not (settings.home / "mlflow.db").exists():
        return None, None
    try:
        from personalizer import tracking
        from personalizer.models.send_time_pipeline import load_scorer

        scorer = load_scorer(tracking.champion_artifact_dir(settings, "send_time"))
    except Exception as exc:  # no champion, a broken one: the default hour serves
        log.info("no send-time model (%s): best hours fall back to the default", exc)
        return None, None
    model: Any = scorer.model
    ids = customer_ids.astype(str).tolist()
    hours = model.best_hour(ids)
    seen = model.signal_counts(ids).sum(axis=1).to_numpy() > 0
    shop = int(model.best_hour(["\x00no such customer"])["hour_of_week"].iloc[0])
    return hours.loc[seen, ["customer_id", "hour_of_week"]].reset_index(drop=True), shop


def _typed(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    frame[column] = pd.to_datetime(frame[column])
    return frame
