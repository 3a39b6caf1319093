"""The serving snapshot: everything a decision reads, computed once and held in memory.

A decision must answer in well under a millisecond of CPU, so nothing on the request path fits a
model or scans a table: at load, the champions of the registry (`recommender`, `churn`,
`send_time`, `engagement`, `categories`) score every customer of the warehouse in batch, and the
results land in plain dictionaries keyed by customer or product. This is how production
personalization systems serve (precomputed candidates, looked up per request); `reload` builds a
new snapshot and swaps it in one assignment, so a new champion is picked up without a restart.

Each model loads on its own: a missing or corrupt one leaves its part empty and says why in
`status`, and the decisions fall back (popular products, the shop-wide send time, no score).
An empty or missing warehouse gives an empty snapshot that still answers (nothing is known).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from personalizer.config import Settings
from personalizer.data.warehouse import Warehouse
from personalizer.segments.incremental import SegmentUpdater

log = logging.getLogger(__name__)

MODELS = ("recommender", "churn", "send_time", "engagement", "categories")
PRODUCTS_PER_CUSTOMER = 12  # kept per customer and strategy: a block shows at most this many
SIMILAR_PER_PRODUCT = 8
TRENDING_DAYS = 30
CART_DAYS = 14
VIEW_DAYS = 30


@dataclass(frozen=True)
class Product:
    """A catalog entry as decisions use it."""

    product_id: str
    title: str
    price: float | None
    category: str | None
    url: str | None
    image_url: str | None
    in_stock: bool


@dataclass(frozen=True)
class Customer:
    """What decisions need of a customer: consent, time zone, a greeting name. No email address."""

    customer_id: str
    email_consent: bool
    timezone: str
    first_name: str | None


@dataclass(frozen=True)
class ModelStatus:
    """One model of the snapshot: loaded, which version, or why not."""

    name: str
    loaded: bool
    version: str | None = None
    detail: str = ""


Ranked = list[tuple[str, float, str]]  # (product_id, score, strategy), best first


@dataclass
class Snapshot:
    """Lookups by customer and product; see the module docstring."""

    as_of: pd.Timestamp
    products: dict[str, Product] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    personal: dict[str, Ranked] = field(default_factory=dict)
    personal_new: dict[str, Ranked] = field(default_factory=dict)
    similar: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    trending: list[tuple[str, float]] = field(default_factory=list)
    last_order: dict[str, list[str]] = field(default_factory=dict)
    purchased: dict[str, frozenset[str]] = field(default_factory=dict)
    cart: dict[str, list[str]] = field(default_factory=dict)
    viewed: dict[str, list[str]] = field(default_factory=dict)  # most viewed product first
    send_hour: dict[str, tuple[int, float]] = field(default_factory=dict)
    shop_hour: int | None = None
    churn: dict[str, tuple[float, float, list[str]]] = field(default_factory=dict)
    engagement: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    predictions: pd.DataFrame | None = None  # for the predicted segments
    status: dict[str, ModelStatus] = field(default_factory=dict)
    updater: SegmentUpdater | None = None  # live memberships (events update them)
    warehouse: str = ""  # "" when loaded, else why it could not be read
    seconds: float = 0.0

    @property
    def degraded(self) -> list[str]:
        """The parts that are not there, with the reason."""
        parts = [f"{s.name}: {s.detail}" for s in self.status.values() if not s.loaded]
        if self.warehouse:
            parts.insert(0, f"warehouse: {self.warehouse}")
        return parts

    def versions(self) -> dict[str, str | None]:
        """Model versions in use (None for a model that is not loaded)."""
        return {name: s.version if s.loaded else None for name, s in self.status.items()}


def build_snapshot(
    settings: Settings,
    as_of: pd.Timestamp | None = None,
    *,
    max_customers: int | None = None,
) -> Snapshot:
    """Read the warehouse and score every customer with every champion that loads.

    Args:
        settings: the data home (warehouse and MLflow registry).
        as_of: the moment the snapshot describes (default: now, naive UTC).
        max_customers: precompute recommendations for at most this many customers (the most
            recent buyers first); the others get the fallbacks. None: everyone.
    """
    started = time.perf_counter()
    now = as_of if as_of is not None else pd.Timestamp.now("UTC").tz_localize(None)
    snap = Snapshot(as_of=now)
    tables = _read_warehouse(settings, now, snap)
    if tables is not None:
        _fill_tables(snap, *tables, now)
    buyers = list(snap.purchased)
    if max_customers is not None:
        buyers = buyers[:max_customers]
    for name, loader in _LOADERS.items():
        snap.status[name] = _load_part(settings, snap, name, loader, buyers)
    if tables is not None:
        snap.status["segments"] = _load_segments(settings, snap, now)
    snap.seconds = time.perf_counter() - started
    log.info(
        "serving snapshot: %d customers, %d products, %.1f s; degraded: %s",
        len(snap.customers),
        len(snap.products),
        snap.seconds,
        snap.degraded or "nothing",
    )
    return snap


# ---------------------------------------------------------------------------------- warehouse
_Frames = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]


def _read_warehouse(settings: Settings, now: pd.Timestamp, snap: Snapshot) -> _Frames | None:
    path = settings.warehouse_path
    if not path.exists():
        snap.warehouse = f"no warehouse at {path}"
        return None
    since = (now - pd.Timedelta(days=max(TRENDING_DAYS, VIEW_DAYS, CART_DAYS))).to_pydatetime()
    try:
        with Warehouse(path, read_only=True, wait_seconds=10) as wh:
            customers = wh.query(
                "SELECT customer_id, email_consent, timezone, attributes FROM customers"
            )
            products = wh.query(
                "SELECT product_id, title, price, category, url, image_url, in_stock FROM products"
            )
            orders = wh.query(
                "SELECT customer_id, order_id, product_id, quantity, ordered_at FROM orders "
                "WHERE ordered_at < ? ORDER BY customer_id, ordered_at",
                [now.to_pydatetime()],
            )
            events = wh.query(
                "SELECT customer_id, type, product_id, occurred_at FROM events "
                "WHERE occurred_at >= ? AND occurred_at < ? "
                "AND type IN ('product_view', 'add_to_cart', 'purchase')",
                [since, now.to_pydatetime()],
            )
    except Exception as exc:  # a locked or corrupt warehouse: serve what needs no data
        snap.warehouse = f"{type(exc).__name__}: {exc}"
        log.warning("serving snapshot without the warehouse: %s", snap.warehouse)
        return None
    if customers.empty and orders.empty:
        snap.warehouse = "the warehouse holds no customers and no orders"
    return customers, products, orders, events


def _fill_tables(
    snap: Snapshot,
    customers: pd.DataFrame,
    products: pd.DataFrame,
    orders: pd.DataFrame,
    events: pd.DataFrame,
    now: pd.Timestamp,
) -> None:
    for row in products.itertuples(index=False):
        price = None if row.price is None or pd.isna(row.price) else float(row.price)
        snap.products[str(row.product_id)] = Product(
            str(row.product_id),
            str(row.title) if isinstance(row.title, str) and row.title else str(row.product_id),
            price,
            row.category if isinstance(row.category, str) else None,
            row.url if isinstance(row.url, str) else None,
            row.image_url if isinstance(row.image_url, str) else None,
            bool(row.in_stock) if row.in_stock is not None and not pd.isna(row.in_stock) else True,
        )
    for row in customers.itertuples(index=False):
        cid = str(row.customer_id)
        snap.customers[cid] = Customer(
            cid,
            bool(row.email_consent) if not pd.isna(row.email_consent) else False,
            row.timezone if isinstance(row.timezone, str) and row.timezone else "UTC",
            _first_name(row.attributes),
        )
    if len(orders):
        orders = orders.assign(customer_id=orders["customer_id"].astype(str))
        ids = orders["customer_id"].to_numpy(dtype=object)
        pids = orders["product_id"].astype(str).to_numpy(dtype=object)
        # most recent buyers first (`max_customers` keeps them)
        last_at = orders.groupby("customer_id", sort=False)["ordered_at"].max()
        for cid in last_at.sort_values(ascending=False).index:
            snap.purchased[str(cid)] = frozenset()
        bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
        order_ids = orders["order_id"].astype(str).to_numpy(dtype=object)
        for lo, hi in itertools.pairwise(bounds):
            cid = ids[lo]
            snap.purchased[cid] = frozenset(pids[lo:hi])
            last = order_ids[hi - 1]
            snap.last_order[cid] = list(
                dict.fromkeys(pids[k] for k in range(lo, hi) if order_ids[k] == last)
            )
        recent = orders[orders["ordered_at"] >= now - pd.Timedelta(days=TRENDING_DAYS)]
        if recent.empty:
            recent = orders
        counts = recent.groupby("product_id")["customer_id"].nunique().sort_values(ascending=False)
        total = max(int(counts.sum()), 1)
        snap.trending = [(str(p), float(c) / total) for p, c in counts.head(200).items()]
    _fill_events(snap, events, now)


def _fill_events(snap: Snapshot, events: pd.DataFrame, now: pd.Timestamp) -> None:
    if events.empty:
        return
    events = events.dropna(subset=["customer_id"]).assign(
        customer_id=lambda f: f["customer_id"].astype(str)
    )
    views = events[
        (events["type"] == "product_view")
        & events["product_id"].notna()
        & (events["occurred_at"] >= now - pd.Timedelta(days=VIEW_DAYS))
    ]
    counted = views.groupby(["customer_id", "product_id"]).size().rename("n").reset_index()
    counted = counted.sort_values(["customer_id", "n"], ascending=[True, False], kind="stable")
    for cid, group in counted.groupby("customer_id", sort=False):
        snap.viewed[str(cid)] = group["product_id"].astype(str).head(5).tolist()
    carts = events[
        (events["type"] == "add_to_cart")
        & events["product_id"].notna()
        & (events["occurred_at"] >= now - pd.Timedelta(days=CART_DAYS))
    ]
    bought = events[events["type"] == "purchase"].groupby("customer_id")["occurred_at"].max()
    carts = carts.join(bought.rename("bought_at"), on="customer_id")
    open_carts = carts[carts["bought_at"].isna() | (carts["occurred_at"] > carts["bought_at"])]
    open_carts = open_carts.sort_values("occurred_at", ascending=False)
    for cid, group in open_carts.groupby("customer_id", sort=False):
        snap.cart[str(cid)] = list(dict.fromkeys(group["product_id"].astype(str)))[:5]


def _first_name(attributes: Any) -> str | None:
    if not isinstance(attributes, str) or "first_name" not in attributes:
        return None
    try:
        value = json.loads(attributes).get("first_name")
    except (ValueError, AttributeError):
        return None
    return str(value)[:60] if value else None


# ---------------------------------------------------------------------------------- segments
def _load_segments(settings: Settings, snap: Snapshot, now: pd.Timestamp) -> ModelStatus:
    """The default segments for everyone, kept current by `SegmentUpdater` as events arrive."""
    from personalizer.segments.definitions import default_segments

    started = time.perf_counter()
    at = [now.to_pydatetime()]
    try:
        with Warehouse(settings.warehouse_path, read_only=True, wait_seconds=10) as wh:
            orders = wh.query(
                "SELECT customer_id, order_id, product_id, quantity, unit_price, ordered_at "
                "FROM orders WHERE ordered_at < ?",
                at,
            )
            events = wh.query(
                "SELECT event_id, customer_id, type, occurred_at, product_id, "
                "CASE WHEN type = 'email_open' THEN properties END AS properties "
                "FROM events WHERE occurred_at < ? AND customer_id IS NOT NULL",
                at,
            )
            customers = wh.query("SELECT customer_id, signed_up_at, email_consent FROM customers")
        predictions = None if snap.predictions is None else snap.predictions.reset_index()
        snap.updater = SegmentUpdater(
            default_segments(), orders, events, customers, now, predictions
        )
    except Exception as exc:
        log.warning("segments not available: %s", exc, exc_info=True)
        return ModelStatus("segments", False, None, _short(exc))
    return ModelStatus("segments", True, "default", f"{time.perf_counter() - started:.1f} s")


# ------------------------------------------------------------------------------------ models
def _load_part(
    settings: Settings,
    snap: Snapshot,
    name: str,
    loader: Callable[[Settings, Snapshot, list[str]], None],
    buyers: list[str],
) -> ModelStatus:
    from personalizer import tracking

    try:
        version = str(tracking.champion_version(settings, name).version)
    except Exception as exc:  # no registry, no champion: the fallback serves
        return ModelStatus(name, False, None, _short(exc))
    try:
        started = time.perf_counter()
        loader(settings, snap, buyers)
    except Exception as exc:  # a corrupt or incompatible model must not take the service down
        log.warning("model %s v%s not loaded: %s", name, version, exc, exc_info=True)
        return ModelStatus(name, False, version, f"v{version} failed to load: {_short(exc)}")
    detail = f"{time.perf_counter() - started:.1f} s"
    return ModelStatus(name, True, version, detail)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _load_recommender(settings: Settings, snap: Snapshot, buyers: list[str]) -> None:
    from personalizer import tracking
    from personalizer.models.recommenders.engine import load_engine

    engine = load_engine(tracking.champion_engine_dir(settings, "recommender"))
    for exclude, target in ((False, snap.personal), (True, snap.personal_new)):
        recs = engine.recommend(buyers, n=PRODUCTS_PER_CUSTOMER, exclude_purchased=exclude)
        _group_ranked(recs, target)
    for pid in list(snap.products) or list(engine.data_.product_ids):
        similar = engine.similar([pid], SIMILAR_PER_PRODUCT + 1)
        pairs = [
            (str(p), float(s))
            for p, s in zip(similar["product_id"], similar["score"], strict=True)
            if str(p) != pid
        ]
        if pairs:
            snap.similar[pid] = pairs[:SIMILAR_PER_PRODUCT]


def _group_ranked(recs: pd.DataFrame, target: dict[str, Ranked]) -> None:
    ids = recs["customer_id"].astype(str).to_numpy(dtype=object)
    rows = zip(
        recs["product_id"].astype(str),
        recs["score"].astype(float),
        recs["strategy"].astype(str),
        strict=True,
    )
    for cid, row in zip(ids, rows, strict=True):
        target.setdefault(cid, []).append(row)


def _load_churn(settings: Settings, snap: Snapshot, buyers: list[str]) -> None:
    from personalizer import tracking
    from personalizer.models.churn_pipeline import load_scorer

    scores = load_scorer(tracking.champion_artifact_dir(settings, "churn")).score_all()
    for row in scores.itertuples(index=False):
        reasons = [r for r in str(row.reasons).split("; ") if r]
        value = float(row.predicted_value) if math.isfinite(row.predicted_value) else 0.0
        snap.churn[str(row.customer_id)] = (float(row.churn_probability), value, reasons)
    _add_predictions(snap, scores[["customer_id", "churn_probability", "predicted_value"]])


def _load_send_time(settings: Settings, snap: Snapshot, buyers: list[str]) -> None:
    from personalizer import tracking
    from personalizer.models.send_time_pipeline import load_scorer

    scorer = load_scorer(tracking.champion_artifact_dir(settings, "send_time"))
    known = list(snap.customers) or [str(c) for c in scorer.model.customer_ids_]
    hours = scorer.model.best_hour(known)
    # the model's documented answer for a customer it does not know is the shop's best hour
    shop = scorer.model.best_hour(["\x00no such customer"])
    snap.shop_hour = int(shop["hour_of_week"].iloc[0])
    evidence = scorer.model.signal_counts(known).sum(axis=1).to_numpy()
    for cid, hour, conf, seen in zip(
        hours["customer_id"], hours["hour_of_week"], hours["confidence"], evidence, strict=True
    ):
        if seen > 0:  # the others get the shop's hour, said so in the reasons
            snap.send_hour[str(cid)] = (int(hour), float(conf))


def _load_engagement(settings: Settings, snap: Snapshot, buyers: list[str]) -> None:
    from personalizer import tracking
    from personalizer.models.engagement_pipeline import load_scorer

    scorer = load_scorer(tracking.champion_artifact_dir(settings, "engagement"))
    ids = list(snap.customers)
    if not ids:
        return
    scores = scorer.predict_frame(pd.DataFrame({"customer_id": ids}))
    for row in scores.itertuples(index=False):
        snap.engagement[str(row.customer_id)] = (
            float(row.p_open),
            float(row.p_click),
            float(row.p_purchase),
        )


def _load_categories(settings: Settings, snap: Snapshot, buyers: list[str]) -> None:
    from personalizer import tracking
    from personalizer.models.category_pipeline import load_scorer

    scores = load_scorer(tracking.champion_artifact_dir(settings, "categories")).score_all()
    _add_predictions(snap, scores)


def _add_predictions(snap: Snapshot, frame: pd.DataFrame) -> None:
    frame = frame.assign(customer_id=frame["customer_id"].astype(str)).set_index("customer_id")
    if snap.predictions is None:
        snap.predictions = frame
    else:
        snap.predictions = snap.predictions.join(frame, how="outer")


_LOADERS: dict[str, Callable[[Settings, Snapshot, list[str]], None]] = {
    "recommender": _load_recommender,
    "churn": _load_churn,
    "send_time": _load_send_time,
    "engagement": _load_engagement,
    "categories": _load_categories,
}
