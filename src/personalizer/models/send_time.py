"""Send time: each customer's preference over the 168 local hours of the week, and when to send.

Signals (`personalizer.features.engagement_times`), weighted by `DEFAULT_WEIGHTS`: email clicks >
human email opens > orders > site visits; machine opens are ignored. Orders and site visits speak
mostly for customers without email history: for customers with human opens or clicks their weights
are multiplied by `activity_with_email`. Every timestamp is placed in the customer's local hour of
the week (0 = Monday 00:00 in their `timezone`, UTC when unknown).

A customer's preference is a Dirichlet posterior mean:

    posterior = (smooth(counts) + prior_strength × prior) / (evidence + prior_strength)

`smooth` is a circular kernel over the week: Gaussian over neighbouring hours (`hour_bandwidth`)
times Gaussian over the same hour on neighbouring days (`day_bandwidth`). The prior is the pattern
of the customer's segment (a customer column, `country` by default), itself the average of its
customers' normalised patterns shrunk towards the shop's with `segment_strength` pseudo-customers.
Customers with little evidence stay near their segment; those with much follow their own data.
Unknown customers get the shop's pattern.

Only the raw weighted counts are kept per customer (sparse); preferences are computed on demand,
in batches, so a million customers fit in memory.

The chosen hour maximises the expected hits of a ±1 hour tolerance: the posterior mass within ±1
hour of its local time of day (all days together) plus the mass within ±1 hour of it in the week.
Times of day pool seven times more evidence than hours of the week, so they lead and the day
follows. Confidence is the first term: the predicted chance that the customer's next engagement
falls within an hour of the chosen time of day. It is the prior's mass for unknown customers and
grows as consistent evidence accumulates; erratic customers get less.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy import sparse

from personalizer.features.engagement_times import (
    EMAIL_SIGNALS,
    SIGNALS,
    WEEK_HOURS,
    engagement_signals,
    groups,
    local_seconds,
    naive_utc,
    require_columns,
    unix_seconds,
    valid_zone,
    week_hour,
    zone_wall_clock,
)

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS: dict[str, float] = {
    "email_click": 3.0,
    "email_open": 1.0,
    "order": 0.5,
    "site_visit": 0.25,
}
FORMAT_VERSION = 1
STATE_ARRAYS = ("customer_ids_", "zone_", "segment_", "signal_counts_")
STATE_DENSE = ("shop_pattern_", "segment_patterns_")


class SendTimeModel:
    """Each customer's preferred local hours of the week, shrunk towards their segment's and shop's.

    Args:
        weights: Weight of each signal (`SIGNALS`); missing ones take `DEFAULT_WEIGHTS`, 0 drops one.
        activity_with_email: Factor on the order and site-visit weights of customers with human
            email opens or clicks (1 = no discount).
        prior_strength: Pseudo-events of the segment's pattern in each customer's posterior.
        segment_strength: Pseudo-customers of the shop's pattern in each segment's pattern.
        hour_bandwidth: Gaussian smoothing over neighbouring hours (standard deviation, hours).
        day_bandwidth: Gaussian smoothing over the same hour on neighbouring days (days; 0 = none).
        segment_by: Customer column whose values are the segments (None: the shop is one segment).
        batch_size: Customers scored together (bounds memory: 168 floats per customer).

    Attributes:
        customer_ids_: Customers known at fit (those of `customers` and of any signal).
        counts_: Sparse (customers × 168) weighted signal counts by local hour of the week.
        signal_counts_: (customers × 4) number of events of each signal, in `SIGNALS` order.
        zone_, zones_: Each customer's time zone, as a code into the zone names ("UTC" first).
        segment_, segments_: Each customer's segment, as a code into the segment names.
        segment_patterns_: (segments × 168) prior of each segment (rows sum to 1).
        shop_pattern_: (168,) the shop's pattern (sums to 1).
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        activity_with_email: float = 0.25,
        prior_strength: float = 5.0,
        segment_strength: float = 50.0,
        hour_bandwidth: float = 1.0,
        day_bandwidth: float = 1.0,
        segment_by: str | None = "country",
        batch_size: int = 16_384,
    ) -> None:
        self.weights = dict(weights) if weights is not None else None
        self.activity_with_email = activity_with_email
        self.prior_strength = prior_strength
        self.segment_strength = segment_strength
        self.hour_bandwidth = hour_bandwidth
        self.day_bandwidth = day_bandwidth
        self.segment_by = segment_by
        self.batch_size = batch_size

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (as stored by `__init__`)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and k[0] != "_"}

    # --- fitting ------------------------------------------------------------------------------

    def fit(
        self,
        events: pd.DataFrame | None,
        orders: pd.DataFrame,
        customers: pd.DataFrame | None = None,
    ) -> Self:
        """Learn every customer's weighted counts and the segment and shop patterns.

        Args:
            events: Canonical events (`customer_id`, `type`, `occurred_at`, optional `campaign_id`,
                `properties`), or None when the shop has no event feed.
            orders: Order lines (`customer_id`, `ordered_at`, optional `order_id`).
            customers: Customers (`customer_id`, optional `timezone` and the `segment_by` column).
        """
        weights = self._check_params()
        signals = engagement_signals(events, orders)
        codes, coded = pd.factorize(signals["customer_id"])  # hash the long column once
        uniques = pd.Index(coded).astype(str)
        zone_names, segment_names = self._customer_table(customers, pd.Series(uniques))
        n = len(self.customer_ids_)
        rows = self._index.get_indexer(uniques)[codes]
        seconds = unix_seconds(signals["at"])
        how = week_hour(local_seconds(seconds, self.zone_[rows], zone_names))
        code = signals["signal"].to_numpy()
        signal_counts = np.zeros((n, len(SIGNALS)), dtype=np.int32)
        np.add.at(signal_counts, (rows, code), 1)
        self.signal_counts_ = signal_counts
        weight = np.asarray([weights[s] for s in SIGNALS], dtype=np.float32)[code]
        emailed = signal_counts[:, : len(EMAIL_SIGNALS)].sum(axis=1) > 0
        activity = code >= len(EMAIL_SIGNALS)
        weight[activity & emailed[rows]] *= np.float32(self.activity_with_email)
        self.counts_ = sparse.csr_matrix(
            (weight, (rows, how)), shape=(n, WEEK_HOURS), dtype=np.float32
        )
        self.counts_.sum_duplicates()
        self.counts_.eliminate_zeros()
        self.zones_, self.segments_ = zone_names, segment_names
        evidence = np.asarray(self.counts_.sum(axis=1)).ravel()
        if not (evidence > 0).any():
            raise ValueError(
                "orders: no usable engagement to learn from (no orders, and no weighted events)"
            )
        self._fit_patterns(evidence)
        logger.info(
            "send time fitted: %d customers (%d with evidence), %d segments, %d signals",
            n,
            int((evidence > 0).sum()),
            len(segment_names),
            len(signals),
        )
        return self

    def _check_params(self) -> dict[str, float]:
        weights = {**DEFAULT_WEIGHTS, **(self.weights or {})}
        unknown = sorted(set(weights) - set(SIGNALS))
        if unknown:
            raise ValueError(f"weights: unknown signal(s) {unknown}; expected some of {SIGNALS}")
        for name, value in weights.items():
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"weights: {name} must be a finite number ≥ 0; got {value!r}")
        for name in (
            "activity_with_email",
            "prior_strength",
            "segment_strength",
            "hour_bandwidth",
            "day_bandwidth",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number ≥ 0; got {value!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {self.batch_size!r}")
        return weights

    def _customer_table(
        self, customers: pd.DataFrame | None, signal_ids: pd.Series
    ) -> tuple[list[str], list[str]]:
        """Set the customer universe, their zones and segments; return zone and segment names."""
        if customers is None:
            customers = pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
        require_columns(customers, "customers", ("customer_id",))
        segment_by = self.segment_by
        if segment_by is not None and len(customers) and segment_by not in customers.columns:
            raise ValueError(f"customers: missing column {segment_by!r} (segment_by)")
        customers = customers.drop_duplicates("customer_id", keep="last")
        known_ids = customers["customer_id"].astype(str)
        ids = pd.Index(pd.concat([known_ids, signal_ids.astype(str)]).unique())
        pos = ids.get_indexer(known_ids)

        zone_text = np.full(len(ids), "UTC", dtype=object)
        if "timezone" in customers.columns:
            codes, names = pd.factorize(customers["timezone"].to_numpy(dtype=object))
            valid = np.array([valid_zone(z) for z in names] + ["UTC"], dtype=object)
            zone_text[pos] = valid[codes]  # code -1 (missing) takes the trailing "UTC"
        zone_codes, zone_names = pd.factorize(np.concatenate([["UTC"], zone_text]))
        segment_text = np.full(len(ids), "", dtype=object)
        if segment_by is not None and segment_by in customers.columns:
            values = customers[segment_by].astype("string").fillna("")
            segment_text[pos] = values.to_numpy(dtype=object)
        segment_codes, segment_names = pd.factorize(np.concatenate([[""], segment_text]))

        self.customer_ids_ = np.asarray(ids.astype(str), dtype=str)
        self._index = ids.astype(str)
        self.zone_ = zone_codes[1:].astype(np.int32)
        self.segment_ = segment_codes[1:].astype(np.int32)
        return [str(z) for z in zone_names], [str(s) for s in segment_names]

    def _fit_patterns(self, evidence: np.ndarray) -> None:
        """Shop and segment patterns: one vote per customer with evidence, then smoothed."""
        has = evidence > 0
        scale = np.where(has, 1.0 / np.where(has, evidence, 1.0), 0.0)
        normalised = sparse.diags(scale) @ self.counts_
        n_seg = len(self.segments_)
        member = sparse.csr_matrix(
            (np.ones(len(self.segment_)), (self.segment_, np.arange(len(self.segment_)))),
            shape=(n_seg, len(self.segment_)),
        )
        votes = np.asarray((member @ normalised).todense(), dtype=np.float64)
        kernel = self._kernel()
        shop = votes.sum(axis=0) @ kernel + 1e-9
        self.shop_pattern_ = shop / shop.sum()
        seg = votes @ kernel + self.segment_strength * self.shop_pattern_[None, :]
        total = seg.sum(axis=1, keepdims=True)
        self.segment_patterns_ = np.where(
            total > 0, seg / np.maximum(total, 1e-300), self.shop_pattern_
        )

    def _kernel(self) -> np.ndarray:
        """The circulant (168 × 168) smoothing matrix; rows sum to 1."""
        offsets = np.arange(WEEK_HOURS)
        row = np.zeros(WEEK_HOURS)
        days = range(-3, 4) if self.day_bandwidth > 0 else range(0, 1)
        for day in days:
            shift = (offsets - 24 * day) % WEEK_HOURS
            distance = np.minimum(shift, WEEK_HOURS - shift).astype(np.float64)
            if self.hour_bandwidth > 0:
                near = np.exp(-0.5 * (distance / self.hour_bandwidth) ** 2)
            else:
                near = (distance == 0).astype(np.float64)
            day_weight = np.exp(-0.5 * (day / self.day_bandwidth) ** 2) if day else 1.0
            row += day_weight * near
        row /= row.sum()
        index = (offsets[None, :] - offsets[:, None]) % WEEK_HOURS
        return row[index]

    # --- scoring ------------------------------------------------------------------------------

    def preferences(self, customer_ids: Iterable[Any]) -> np.ndarray:
        """(n × 168) float32 preference of each customer over local hours of the week (rows sum
        to 1); the shop's pattern for customers unknown at fit."""
        rows = self._rows(customer_ids)
        out = np.empty((len(rows), WEEK_HOURS), dtype=np.float32)
        kernel = self._kernel()
        for lo in range(0, len(rows), self.batch_size):
            out[lo : lo + self.batch_size] = self._posterior(
                rows[lo : lo + self.batch_size], kernel
            )
        return out

    def _posterior(self, rows: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        out = np.tile(self.shop_pattern_, (len(rows), 1))
        known = rows >= 0
        if known.any():
            counts = self.counts_[rows[known]]
            evidence = np.asarray(counts.sum(axis=1)).ravel()
            prior = self.segment_patterns_[self.segment_[rows[known]]]
            alpha = self.prior_strength
            mass = counts @ kernel + alpha * prior
            denominator = evidence + alpha
            out[known] = np.where(
                denominator[:, None] > 0,
                mass / np.where(denominator > 0, denominator, 1.0)[:, None],
                prior,
            )
        return out

    def best_hour(
        self, customer_ids: Iterable[Any], quiet_hours: tuple[int, int] | None = None
    ) -> pd.DataFrame:
        """Each customer's best local hour of the week, and its confidence.

        Args:
            customer_ids: Customers to score (unknown ones get the shop's best hour).
            quiet_hours: Optional local (start, end) hours of the day never chosen, e.g. (22, 7).

        Returns:
            `customer_id`, `hour_of_week` (0 = Monday 00:00 local), `confidence` in [0, 1].
        """
        ids = _ids(customer_ids)
        rows = self._rows(ids)
        best = np.empty(len(rows), dtype=np.int64)
        confidence = np.empty(len(rows), dtype=np.float64)
        kernel = self._kernel()
        for lo in range(0, len(rows), self.batch_size):
            pref = self._posterior(rows[lo : lo + self.batch_size], kernel)
            hi = lo + len(pref)
            best[lo:hi], confidence[lo:hi] = best_hours(pref, quiet_hours)
        return pd.DataFrame({"customer_id": ids, "hour_of_week": best, "confidence": confidence})

    def next_send_time(
        self,
        customer_ids: Iterable[Any],
        after: pd.Timestamp | str,
        window_hours: int = 168,
        quiet_hours: tuple[int, int] | None = (22, 7),
    ) -> pd.DataFrame:
        """The best moment to send to each customer within `window_hours` from `after`.

        Candidates are the starts of the customer's local hours in [after, after + window); local
        hours in `quiet_hours` (start inclusive, end exclusive; (22, 7) = 22:00 to 06:59) are
        never chosen; ties go to the earliest.

        Returns:
            `customer_id`, `send_at` (naive UTC; NaT when every candidate is quiet),
            `hour_of_week` (local), `confidence` (0 when nothing could be chosen).
        """
        if not isinstance(window_hours, int | np.integer) or window_hours < 1:
            raise ValueError(f"window_hours must be a positive integer; got {window_hours!r}")
        start = naive_utc(pd.Series([pd.Timestamp(after)]), "after").iloc[0]
        if pd.isna(start):
            raise ValueError("after: missing timestamp")
        quiet = _quiet_mask(quiet_hours)
        ids = _ids(customer_ids)
        rows = self._rows(ids)
        begin = int(pd.Timestamp(start).value // 10**9)
        stop = begin + 3600 * int(window_hours)
        grid = begin - begin % 3600 + 3600 * np.arange(int(window_hours) + 1, dtype=np.int64)
        zone = np.where(rows >= 0, self.zone_[np.maximum(rows, 0)], 0)

        send = np.full(len(ids), -1, dtype=np.int64)
        best = np.full(len(ids), -1, dtype=np.int64)
        confidence = np.zeros(len(ids))
        kernel = self._kernel()
        for code, members in groups(zone):
            name = self.zones_[code]
            offset = zone_wall_clock(grid, name) - grid
            candidate = grid + (-offset) % 3600  # a local hour's start, also in :30 and :45 zones
            local_how = week_hour(zone_wall_clock(candidate, name))
            usable = (candidate >= begin) & (candidate < stop) & ~quiet[local_how % 24]
            if not usable.any():
                continue
            for lo in range(0, len(members), self.batch_size):
                part = members[lo : lo + self.batch_size]
                pref = self._posterior(rows[part], kernel)
                score = _score(pref)[:, local_how]
                pick = np.argmax(np.where(usable[None, :], score, -1.0), axis=1)
                send[part] = candidate[pick]
                best[part] = local_how[pick]
                confidence[part] = _confidence(pref, local_how[pick])
        chosen = send >= 0
        return pd.DataFrame(
            {
                "customer_id": ids,
                "send_at": pd.Series(pd.to_datetime(send, unit="s")).where(chosen),
                "hour_of_week": pd.Series(best, dtype="Int64").where(chosen),
                "confidence": confidence,
            }
        )

    def signal_counts(self, customer_ids: Iterable[Any]) -> pd.DataFrame:
        """Events of each signal per customer (one column per `SIGNALS`; 0 for unknown ones)."""
        rows = self._rows(customer_ids)
        counts = np.where(rows[:, None] >= 0, self.signal_counts_[np.maximum(rows, 0)], 0)
        return pd.DataFrame(counts, columns=list(SIGNALS))

    def timezones(self, customer_ids: Iterable[Any]) -> np.ndarray:
        """Each customer's time zone name as used by the model ("UTC" when unknown)."""
        rows = self._rows(customer_ids)
        zone = np.where(rows >= 0, self.zone_[np.maximum(rows, 0)], 0)
        return np.asarray(self.zones_, dtype=object)[zone]

    def _rows(self, customer_ids: Iterable[Any]) -> np.ndarray:
        if not hasattr(self, "counts_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit first")
        if not hasattr(self, "_index"):
            self._index = pd.Index(self.customer_ids_.astype(object))
        ids = _ids(customer_ids)
        return np.asarray(self._index.get_indexer(ids), dtype=np.int64)

    # --- persistence --------------------------------------------------------------------------

    def save(self, path: Path | str) -> None:
        """Write the model to the folder `path`: `send_time.json` and `send_time.npz`."""
        self._rows([])
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in (*STATE_ARRAYS, *STATE_DENSE)}
        counts = self.counts_
        arrays |= {
            "counts__data": counts.data,
            "counts__indices": counts.indices,
            "counts__indptr": counts.indptr,
        }
        np.savez(path / "send_time.npz", **arrays)
        doc = {
            "format_version": FORMAT_VERSION,
            "model": type(self).__name__,
            "params": self.get_params(),
            "zones": self.zones_,
            "segments": self.segments_,
        }
        (path / "send_time.json").write_text(json.dumps(doc, indent=1))

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read a model written by `save`."""
        path = Path(path)
        doc = json.loads((path / "send_time.json").read_text())
        if doc.get("model") != cls.__name__ or doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path}: holds {doc.get('model')!r} format {doc.get('format_version')!r}, "
                f"not a {cls.__name__} of format {FORMAT_VERSION}"
            )
        model = cls(**doc["params"])
        model.zones_, model.segments_ = list(doc["zones"]), list(doc["segments"])
        with np.load(path / "send_time.npz", allow_pickle=False) as npz:
            for name in (*STATE_ARRAYS, *STATE_DENSE):
                setattr(model, name, npz[name])
            n = len(model.customer_ids_)
            model.counts_ = sparse.csr_matrix(
                (npz["counts__data"], npz["counts__indices"], npz["counts__indptr"]),
                shape=(n, WEEK_HOURS),
            )
        return model


# --- choosing hours ---------------------------------------------------------------------------


def _quiet_mask(quiet_hours: tuple[int, int] | None) -> np.ndarray:
    """(24,) True for the local hours of the day inside [start, end), wrapping past midnight."""
    mask = np.zeros(24, dtype=bool)
    if quiet_hours is None:
        return mask
    try:
        start, end = (int(h) for h in quiet_hours)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"quiet_hours: expected (start, end) hours; got {quiet_hours!r}") from exc
    if not (0 <= start <= 23 and 0 <= end <= 24):
        raise ValueError(f"quiet_hours: hours must lie in 0..23 (end ≤ 24); got {quiet_hours!r}")
    hours = np.arange(24)
    mask = (hours >= start) & (hours < end) if start <= end else (hours >= start) | (hours < end)
    return mask


def best_hours(
    pref: np.ndarray, quiet_hours: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The chosen hour of the week of each row of (n × 168) preferences, and its confidence.

    The choice maximises `_score` outside the quiet hours; see the module docstring.
    """
    pref = np.atleast_2d(np.asarray(pref, dtype=np.float64))
    if pref.shape[1] != WEEK_HOURS:
        raise ValueError(f"pref: expected {WEEK_HOURS} columns, got {pref.shape[1]}")
    quiet = _quiet_mask(quiet_hours)[np.arange(WEEK_HOURS) % 24]
    if quiet.all():
        raise ValueError(f"quiet_hours: {quiet_hours!r} leaves no hour to send in")
    choice = np.argmax(np.where(quiet[None, :], -1.0, _score(pref)), axis=1)
    return choice.astype(np.int64), _confidence(pref, choice)


def _score(pref: np.ndarray) -> np.ndarray:
    """Expected ±1 hour hits of each hour: by local time of day plus by hour of the week."""
    by_hour = pref.reshape(len(pref), 7, 24).sum(axis=1)
    day_window = by_hour + np.roll(by_hour, 1, axis=1) + np.roll(by_hour, -1, axis=1)
    week_window = pref + np.roll(pref, 1, axis=1) + np.roll(pref, -1, axis=1)
    return np.tile(day_window, (1, 7)) + week_window


def _confidence(pref: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Posterior mass within ±1 hour of the chosen local time of day, all days together."""
    by_hour = pref.reshape(len(pref), 7, 24).sum(axis=1)
    hour = np.asarray(chosen) % 24
    rows = np.arange(len(pref))
    mass = sum(by_hour[rows, (hour + d) % 24] for d in (-1, 0, 1))
    return np.clip(np.asarray(mass, dtype=np.float64), 0.0, 1.0)


def _ids(customer_ids: Iterable[Any]) -> np.ndarray:
    if isinstance(customer_ids, str):
        raise TypeError("customer_ids: expected a sequence of ids, got one string")
    return np.asarray(pd.Series(list(customer_ids), dtype=object).astype(str), dtype=object)
