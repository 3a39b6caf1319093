"""What a customer's email and purchase history says at the moment an email is sent.

`EmailHistory` indexes events and orders once; `features(moments)` then describes each
(customer, moment) pair from the data strictly before the moment, so a row never sees its own
outcome or anything later. Every stream (sends, human opens, clicks, orders, ...) is kept as one
sorted array of integer keys `customer code · 2³² + seconds`, and a window count is the difference
of two `searchsorted` positions: no per-row Python, whatever the number of sends.

Opens made by a machine (Apple Mail Privacy Protection's proxy, recognised by
`engagement_times.machine_opens`) are not the reader's and are left out of opens and labels;
repeated opens or clicks of one campaign count once. Rates use a Beta prior: (x + k·m) / (n + k)
with prior mean m (the shop's rate, given by the model) and strength k = `PRIOR_STRENGTH` sends.

The send hour: the share of the customer's past human opens within ±2 hours of the moment's hour
of the day. Distances between two UTC hours equal those between the same two local hours, so no
time zone is needed (up to an hour around DST changes). (A ±3-hour share of the hour of the week
was tried too; it added nothing measurable on the synthetic shop, whose opens are too sparse.)

`engagement_labels(sends, ...)` gives the outcomes: a human open, a click, an order within
`window_days` after the send.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TypeAlias

import numpy as np
import pandas as pd

from personalizer.evaluation.split import to_utc_timestamp
from personalizer.features.customer_history import text_codes
from personalizer.features.engagement_times import (
    SITE_EVENT_TYPES,
    machine_opens,
    naive_utc,
    require_columns,
    unix_seconds,
)
from personalizer.schema import EventType

log = logging.getLogger(__name__)

TimeLike: TypeAlias = str | datetime | pd.Timestamp

DAY = 86_400
WINDOWS = (30, 90, 365)
PRIOR_STRENGTH = 5.0
# Prior means of the smoothed rates when the caller gives none (typical shop figures).
DEFAULT_PRIORS: dict[str, float] = {"open": 0.2, "click": 0.02, "purchase": 0.03}
HOUR_BAND = 2
_SPAN = 2**32  # seconds per customer in a key (136 years)

FEATURE_NAMES: tuple[str, ...] = (
    *(f"{kind}_{w}d" for kind in ("sends", "opens", "clicks") for w in WINDOWS),
    "sends_total",
    "opens_total",
    "clicks_total",
    "open_rate",
    "open_rate_90d",
    "click_rate",
    "click_rate_90d",
    "clicks_per_open",
    "purchase_after_send_rate",
    "machine_open_share",
    "bounces_365d",
    "days_since_send",
    "days_since_open",
    "days_since_click",
    "days_since_order",
    "days_since_site_visit",
    "orders_30d",
    "orders_90d",
    "orders_total",
    "spend_30d",
    "spend_90d",
    "site_visits_30d",
    "site_visits_90d",
    "tenure_days",
    "consented",
    "open_hour_share",
)
# The feature each target's "historical rate" baseline uses.
HISTORICAL_RATE = {
    "open": "open_rate",
    "click": "click_rate",
    "purchase": "purchase_after_send_rate",
}
LABELS = {"open": "opened", "click": "clicked", "purchase": "purchased"}


class _Stream:
    """Times of one kind of thing per key, sorted for as-of counts, sums and last times."""

    def __init__(
        self, keys: np.ndarray, seconds: np.ndarray, weights: np.ndarray | None = None
    ) -> None:
        order = np.lexsort((seconds, keys))
        self.keys = keys[order].astype(np.int64) * _SPAN + seconds[order].astype(np.int64)
        w = np.ones(len(order)) if weights is None else np.asarray(weights, float)[order]
        self.cum = np.concatenate([[0.0], np.cumsum(w)])

    def _pos(self, keys: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        at = keys.astype(np.int64) * _SPAN + np.clip(seconds, 0, _SPAN - 1).astype(np.int64)
        return np.searchsorted(self.keys, at, side="left")

    def count(self, keys: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Entries with time in [start, stop)."""
        return (self._pos(keys, stop) - self._pos(keys, start)).astype(float)

    def total(self, keys: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Sum of the weights of the entries with time in [start, stop)."""
        return self.cum[self._pos(keys, stop)] - self.cum[self._pos(keys, start)]

    def last(self, keys: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Time of the last entry before `stop`, NaN when there is none."""
        if not len(self.keys):
            return np.full(len(keys), np.nan)
        pos = self._pos(keys, stop) - 1
        found = (pos >= 0) & (self.keys[np.maximum(pos, 0)] // _SPAN == keys)
        return np.where(found, (self.keys[np.maximum(pos, 0)] % _SPAN).astype(float), np.nan)

    def first(self, keys: np.ndarray) -> np.ndarray:
        """Time of the first entry of each key, NaN when there is none."""
        if not len(self.keys):
            return np.full(len(keys), np.nan)
        pos = self._pos(keys, np.zeros(len(keys), dtype=np.int64))
        inside = np.minimum(pos, len(self.keys) - 1)
        found = (pos < len(self.keys)) & (self.keys[inside] // _SPAN == keys)
        return np.where(found, (self.keys[inside] % _SPAN).astype(float), np.nan)


class EmailHistory:
    """Events and orders indexed once for as-of email features and labels.

    Args:
        events: Canonical events (`customer_id`, `type`, `occurred_at`, optional `campaign_id`
            and `properties`).
        orders: Order lines (`customer_id`, `ordered_at`; optional `order_id`, `quantity`,
            `unit_price` for counting orders and spend).
        window_days: Days after a send within which its outcomes count.

    Raises:
        ValueError: On missing columns or timestamps that are not timestamps, naming the field.
    """

    def __init__(self, events: pd.DataFrame, orders: pd.DataFrame, window_days: float = 3.0):
        require_columns(events, "events", ("customer_id", "type", "occurred_at"))
        require_columns(orders, "orders", ("customer_id", "ordered_at"))
        if not window_days > 0:
            raise ValueError(f"window_days: must be positive, got {window_days!r}")
        self.window = round(window_days * DAY)
        ev_at = naive_utc(events["occurred_at"], "events.occurred_at")
        or_at = naive_utc(orders["ordered_at"], "orders.ordered_at")
        ev_ok = (events["customer_id"].notna() & ev_at.notna()).to_numpy(bool)
        or_ok = (orders["customer_id"].notna() & or_at.notna()).to_numpy(bool)
        if (~ev_ok).any() or (~or_ok).any():
            log.warning(
                "email history: %d events and %d order lines without customer or time ignored",
                (~ev_ok).sum(),
                (~or_ok).sum(),
            )
        ev_ids = events["customer_id"][ev_ok].astype(str).to_numpy()
        or_ids = orders["customer_id"][or_ok].astype(str).to_numpy()
        self.customers = pd.Index(pd.unique(np.concatenate([ev_ids, or_ids])))
        stamps = np.concatenate([unix_seconds(ev_at[ev_ok]), unix_seconds(or_at[or_ok])])
        self.origin = int(stamps.min()) if len(stamps) else 0
        ev_code = self.customers.get_indexer(ev_ids)
        ev_t = unix_seconds(ev_at[ev_ok]) - self.origin
        # the type of each event as a code into its distinct names (a large shop has a hundred
        # million events: a text per event would not fit); code -1 (missing) names ""
        kind, names = text_codes(events["type"][ev_ok])
        kind_names = np.append(names, "")
        has_campaign = "campaign_id" in events.columns
        campaign = (
            events["campaign_id"][ev_ok].astype("string").to_numpy(object)
            if has_campaign
            else np.full(len(ev_code), None, dtype=object)
        )
        self.campaigns = pd.Index(pd.unique(campaign[pd.notna(campaign)]))
        camp = self.campaigns.get_indexer(np.where(pd.notna(campaign), campaign, "\0"))
        human = ~machine_opens(events)[ev_ok]
        self._index_events(ev_code, ev_t, kind, kind_names, camp, human)
        self._index_orders(orders[or_ok], or_ids, unix_seconds(or_at[or_ok]) - self.origin)
        seen = np.concatenate([ev_code, self.order_code])
        self.seen = _Stream(seen, np.concatenate([ev_t, self.order_t]))

    # ----------------------------------------------------------------------- indexing
    def _index_events(
        self,
        code: np.ndarray,
        t: np.ndarray,
        kind: np.ndarray,
        kind_names: np.ndarray,
        camp: np.ndarray,
        human: np.ndarray,
    ) -> None:
        def rows(event_type: str) -> np.ndarray:
            return (kind_names == event_type)[kind]

        sent = rows(EventType.EMAIL_SENT.value)
        self.send_code, self.send_t, self.send_camp = code[sent], t[sent], camp[sent]
        self.sends = _Stream(self.send_code, self.send_t)
        self.bounces = _Stream(*_pick(code, t, rows(EventType.EMAIL_BOUNCED.value)))
        self.unsubscribes = _Stream(*_pick(code, t, rows(EventType.UNSUBSCRIBE.value)))
        opened = rows(EventType.EMAIL_OPEN.value)
        self.machine = _Stream(*_pick(code, t, opened & ~human))
        open_c, open_t, open_camp = _first_per_campaign(code, t, camp, opened & human)
        click_c, click_t, click_camp = _first_per_campaign(
            code, t, camp, rows(EventType.EMAIL_CLICK.value)
        )
        self.opens, self.clicks = _Stream(open_c, open_t), _Stream(click_c, click_t)
        # Per (customer, campaign) for labels, pairs numbered densely so keys cannot overflow.
        self.pairs = pd.Index(
            np.unique(
                np.concatenate([self._pair(open_c, open_camp), self._pair(click_c, click_camp)])
            )
        )
        self.opens_by_campaign = _Stream(self._pair_code(open_c, open_camp), open_t)
        self.clicks_by_campaign = _Stream(self._pair_code(click_c, click_camp), click_t)
        hours = (open_t + self.origin) // 3600
        self.opens_by_hour = _Stream(open_c * 24 + hours % 24, open_t)
        site = np.isin(kind_names, list(SITE_EVENT_TYPES))[kind]
        visit_c, visit_t = _pick(code, t, site)
        # A visit is a customer's site activity within one UTC hour, not each page of it.
        hour_key = pd.DataFrame({"c": visit_c, "h": visit_t // 3600})
        first = ~hour_key.duplicated().to_numpy(bool)
        self.visits = _Stream(visit_c[first], visit_t[first])

    def _index_orders(self, orders: pd.DataFrame, ids: np.ndarray, t: np.ndarray) -> None:
        value = (
            orders["quantity"].to_numpy(float) * orders["unit_price"].to_numpy(float)
            if {"quantity", "unit_price"} <= set(orders.columns)
            else np.zeros(len(orders))
        )
        key = orders["order_id"].astype(str).to_numpy() if "order_id" in orders.columns else t
        frame = pd.DataFrame({"c": self.customers.get_indexer(ids), "k": key, "t": t, "v": value})
        per_order = frame.groupby(["c", "k"], sort=False).agg(t=("t", "min"), v=("v", "sum"))
        self.order_code = code = per_order.index.get_level_values("c").to_numpy(np.int64)
        self.order_t = per_order["t"].to_numpy(np.int64)
        self.orders = _Stream(code, self.order_t)
        self.spend = _Stream(code, self.order_t, np.nan_to_num(per_order["v"].to_numpy(float)))
        # Whether each send was followed by an order within the window; known once it closes.
        bought = self.orders.count(self.send_code, self.send_t, self.send_t + self.window) > 0
        self.closed_sends = _Stream(self.send_code, self.send_t + self.window, bought)

    # ----------------------------------------------------------------------- public
    def sends_before(self, until: TimeLike | None = None) -> pd.DataFrame:
        """Every `email_sent` (strictly before `until` when given), oldest first.

        Returns:
            Columns `customer_id`, `campaign_id` (None when the event has none), `sent_at`.
        """
        t = self.send_t
        keep = np.ones(len(t), bool) if until is None else t < self._seconds(until, "until")
        order = np.flatnonzero(keep)[np.argsort(t[keep], kind="stable")]
        camp = self.send_camp[order]
        campaigns = self.campaigns.to_numpy(object)
        return pd.DataFrame(
            {
                "customer_id": self.customers.to_numpy(object)[self.send_code[order]],
                "campaign_id": np.where(camp >= 0, campaigns[np.maximum(camp, 0)], None)
                if len(campaigns)
                else np.full(len(order), None, dtype=object),
                "sent_at": pd.to_datetime(t[order] + self.origin, unit="s"),
            }
        )

    def features(
        self, moments: pd.DataFrame, priors: Mapping[str, float] | None = None
    ) -> pd.DataFrame:
        """Features (`FEATURE_NAMES`) of each (customer_id, at) row, from data before `at`.

        Args:
            moments: Columns `customer_id` and `at` (naive UTC); e.g. sends, or every customer
                at one moment for the next email.
            priors: Prior mean of the "open", "click" and "purchase" rates (`DEFAULT_PRIORS`
                for those not given).
        """
        code, t = self._moments(moments)
        prior = {**DEFAULT_PRIORS, **(priors or {})}
        out: dict[str, np.ndarray] = {}
        for name, stream in (("sends", self.sends), ("opens", self.opens), ("clicks", self.clicks)):
            for w in WINDOWS:
                out[f"{name}_{w}d"] = stream.count(code, t - w * DAY, t)
        zero = np.zeros(len(t), dtype=np.int64)
        for name, stream in (("sends", self.sends), ("opens", self.opens), ("clicks", self.clicks)):
            out[f"{name}_total"] = stream.count(code, zero, t)
        sends, opens, clicks = out["sends_total"], out["opens_total"], out["clicks_total"]
        out["open_rate"] = _smoothed(opens, sends, prior["open"])
        out["open_rate_90d"] = _smoothed(out["opens_90d"], out["sends_90d"], prior["open"])
        out["click_rate"] = _smoothed(clicks, sends, prior["click"])
        out["click_rate_90d"] = _smoothed(out["clicks_90d"], out["sends_90d"], prior["click"])
        out["clicks_per_open"] = _smoothed(clicks, opens, prior["click"] / prior["open"])
        closed = self.closed_sends.count(code, zero, t)
        bought = self.closed_sends.total(code, zero, t)
        out["purchase_after_send_rate"] = _smoothed(bought, closed, prior["purchase"])
        machine = self.machine.count(code, zero, t)
        out["machine_open_share"] = np.divide(machine, sends, out=np.zeros(len(t)), where=sends > 0)
        out["bounces_365d"] = self.bounces.count(code, t - 365 * DAY, t)
        for name, stream in (
            ("send", self.sends),
            ("open", self.opens),
            ("click", self.clicks),
            ("order", self.orders),
            ("site_visit", self.visits),
        ):
            out[f"days_since_{name}"] = (t - stream.last(code, t)) / DAY
        for w in (30, 90):
            out[f"orders_{w}d"] = self.orders.count(code, t - w * DAY, t)
            out[f"spend_{w}d"] = self.spend.total(code, t - w * DAY, t)
            out[f"site_visits_{w}d"] = self.visits.count(code, t - w * DAY, t)
        out["orders_total"] = self.orders.count(code, zero, t)
        first = self.seen.first(code)
        out["tenure_days"] = np.where(first < t, (t - first) / DAY, np.nan)
        out["consented"] = (self.unsubscribes.count(code, zero, t) == 0).astype(float)
        out["open_hour_share"] = self._hour_share(code, t, opens)
        return pd.DataFrame({name: out[name] for name in FEATURE_NAMES}, index=moments.index)

    def labels(self, sends: pd.DataFrame) -> pd.DataFrame:
        """Outcomes of each send within the window: `opened`, `clicked` (human), `purchased`.

        Args:
            sends: Columns `customer_id`, `sent_at` and optionally `campaign_id`; an open or
                click counts for a send of the same campaign, or of any campaign when either
                side has none.
        """
        require_columns(sends, "sends", ("customer_id", "sent_at"))
        code, t = self._moments(sends.rename(columns={"sent_at": "at"}))
        stop = t + self.window
        if "campaign_id" in sends.columns:
            camp = self.campaigns.get_indexer(sends["campaign_id"].astype("string").fillna("\0"))
        else:
            camp = np.full(len(t), -1)
        out = {}
        for label, by_customer, by_campaign in (
            ("opened", self.opens, self.opens_by_campaign),
            ("clicked", self.clicks, self.clicks_by_campaign),
        ):
            untagged = by_campaign.count(self._pair_code(code, np.full(len(t), -1)), t, stop)
            tagged = by_campaign.count(self._pair_code(code, camp), t, stop)
            anything = by_customer.count(code, t, stop)
            out[label] = np.where(camp >= 0, tagged + untagged, anything) > 0
        out["purchased"] = self.orders.count(code, t, stop) > 0
        return pd.DataFrame(out, index=sends.index).astype(np.int8)

    # ----------------------------------------------------------------------- helpers
    def _pair(self, code: np.ndarray, camp: np.ndarray) -> np.ndarray:
        # Campaign code -1 (none) takes the slot after the last campaign.
        n_camp = len(self.campaigns) + 1
        return code.astype(np.int64) * n_camp + camp % n_camp

    def _pair_code(self, code: np.ndarray, camp: np.ndarray) -> np.ndarray:
        found = self.pairs.get_indexer(self._pair(code, camp))
        return np.where(found < 0, len(self.pairs), found).astype(np.int64)

    def _hour_share(self, code: np.ndarray, t: np.ndarray, opens: np.ndarray) -> np.ndarray:
        hour = (t + self.origin) // 3600 % 24
        near = np.zeros(len(t))
        zero = np.zeros(len(t), dtype=np.int64)
        for shift in range(-HOUR_BAND, HOUR_BAND + 1):
            near += self.opens_by_hour.count(code * 24 + (hour + shift) % 24, zero, t)
        return _smoothed(near, opens, (2 * HOUR_BAND + 1) / 24)

    def _moments(self, moments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        require_columns(moments, "moments", ("customer_id", "at"))
        at = naive_utc(moments["at"], "moments.at")
        if at.isna().any():
            raise ValueError("moments.at: missing timestamps")
        if moments["customer_id"].isna().any():
            raise ValueError("moments.customer_id: missing customer ids")
        code = self.customers.get_indexer(moments["customer_id"].astype(str).to_numpy())
        # Customers without any history get a code of their own, past every known one.
        code = np.where(code < 0, len(self.customers), code).astype(np.int64)
        return code, unix_seconds(at) - self.origin

    def _seconds(self, moment: TimeLike, name: str) -> int:
        return int(
            unix_seconds(naive_utc(pd.Series([to_utc_timestamp(moment, name)]), name))[0]
        ) - (self.origin)


def email_history_features(
    moments: pd.DataFrame,
    events: pd.DataFrame,
    orders: pd.DataFrame,
    *,
    window_days: float = 3.0,
    priors: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Features of each (customer_id, at) row of `moments` from the events and orders before it."""
    return EmailHistory(events, orders, window_days).features(moments, priors)


def engagement_labels(
    sends: pd.DataFrame, events: pd.DataFrame, orders: pd.DataFrame, *, window_days: float = 3.0
) -> pd.DataFrame:
    """`opened`, `clicked` (human) and `purchased` within `window_days` of each send."""
    return EmailHistory(events, orders, window_days).labels(sends)


def _pick(code: np.ndarray, t: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return code[mask], t[mask]


def _first_per_campaign(
    code: np.ndarray, t: np.ndarray, camp: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of `mask`, keeping a campaign's first per customer (those without a campaign: all)."""
    rows = np.flatnonzero(mask)
    rows = rows[np.lexsort((t[rows], camp[rows], code[rows]))]
    c, k = code[rows], camp[rows]
    repeat = np.r_[False, (c[1:] == c[:-1]) & (k[1:] == k[:-1])] & (k >= 0)
    rows = rows[~repeat]
    return code[rows], t[rows], camp[rows]


def _smoothed(hits: np.ndarray, trials: np.ndarray, prior_mean: float) -> np.ndarray:
    return (hits + PRIOR_STRENGTH * prior_mean) / (trials + PRIOR_STRENGTH)
