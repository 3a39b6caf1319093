"""When customers engage: their engagement signals and the local hour of the week of timestamps.

Signals (`SIGNALS`): email clicks, human email opens, orders and site visits. Machine opens (Apple
Mail Privacy Protection prefetches, see `machine_opens`) say nothing about the reader and are
dropped. Repeated opens or clicks of one campaign count once (the first), an order counts once
whatever its lines, and site events count once per customer and UTC hour (a session, not each page
of it). Purchase events mirror orders and are not counted again.

Local time: timestamps are stored as naive UTC; a customer's wall clock comes from their time zone
(UTC when unknown). Conversion runs once per time zone group, never once per row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from personalizer.schema import EventType, known_timezones

logger = logging.getLogger(__name__)

WEEK_HOURS = 168
SIGNALS = ("email_click", "email_open", "order", "site_visit")  # email signals first
EMAIL_SIGNALS = SIGNALS[:2]
SITE_EVENT_TYPES = frozenset(
    {
        EventType.PAGE_VIEW.value,
        EventType.PRODUCT_VIEW.value,
        EventType.ADD_TO_CART.value,
        EventType.CHECKOUT_STARTED.value,
    }
)
# Apple's MPP proxy fetches images as a bare "Mozilla/5.0"; feeds may also flag machine opens.
_MACHINE_AGENT = r"""['"]user_agent['"]\s*:\s*['"]Mozilla/5\.0['"]"""
_MACHINE_FLAG = r"""['"](?:machine_open|is_machine_open|machine|mpp)['"]\s*:\s*(?:true|1)\b"""


def machine_opens(events: pd.DataFrame) -> np.ndarray:
    """True for the `email_open` rows made by a machine (an MPP proxy), not by the reader.

    Recognised from the event's `properties` (`machine_open_properties`).
    """
    opens = (events["type"] == EventType.EMAIL_OPEN.value).to_numpy(bool)
    if "properties" not in events.columns or not opens.any():
        return np.zeros(len(events), dtype=bool)
    out = np.zeros(len(events), dtype=bool)
    out[opens] = machine_open_properties(events["properties"][opens])
    return out


def machine_open_properties(properties: pd.Series) -> np.ndarray:
    """True where an open's `properties` (JSON text or dict) are a machine's: the bare user agent
    "Mozilla/5.0", or a `machine_open` / `is_machine_open` / `machine` / `mpp` flag set to true.
    The one definition of a machine open, for every feature, model and report."""
    if isinstance(properties.dtype, pd.CategoricalDtype):  # each distinct text matched once
        distinct = machine_open_properties(pd.Series(properties.cat.categories, dtype=object))
        return np.append(distinct, False)[properties.cat.codes.to_numpy()]
    if properties.dtype == object:
        properties = properties.map(
            lambda p: json.dumps(p, default=str) if isinstance(p, dict) else p
        )
    text = properties.astype("string").fillna("")
    machine = text.str.contains(_MACHINE_AGENT, regex=True) | text.str.contains(
        _MACHINE_FLAG, regex=True, case=False
    )
    return machine.to_numpy(bool)


def engagement_signals(events: pd.DataFrame | None, orders: pd.DataFrame) -> pd.DataFrame:
    """One row per counted signal: `customer_id` (a categorical of text), `at` (naive UTC),
    `signal` (SIGNALS index).

    Args:
        events: Canonical events (`customer_id`, `type`, `occurred_at`, optional `campaign_id` and
            `properties`), or None when the shop has no event feed.
        orders: Order lines (`customer_id`, `ordered_at`, optional `order_id`).
    """
    require_columns(orders, "orders", ("customer_id", "ordered_at"))
    has_key = "order_id" in orders.columns
    frame = pd.DataFrame(
        {
            "customer_id": orders["customer_id"].to_numpy(),
            "at": naive_utc(orders["ordered_at"], "orders.ordered_at").to_numpy(),
            "key": orders["order_id"].to_numpy() if has_key else None,
        }
    )
    frame = _drop_missing(frame, "orders")
    by = ["customer_id", "key"] if has_key else ["customer_id", "at"]
    parts = [_first(frame, by).assign(signal=SIGNALS.index("order"))]
    if events is not None:
        parts += _event_signals(events)
    ids = union_categoricals([_coded(p["customer_id"]) for p in parts], ignore_order=True)
    signals = pd.concat([p[["at", "signal"]] for p in parts], ignore_index=True)
    signals.insert(0, "customer_id", ids)
    signals["signal"] = signals["signal"].astype(np.int8)
    return signals


def _event_signals(events: pd.DataFrame) -> list[pd.DataFrame]:
    require_columns(events, "events", ("customer_id", "type", "occurred_at"))
    # Ids, types and campaigns stay coded (categoricals): a large shop has a hundred million
    # events, and a string object per value would not fit in memory.
    kind = _coded(events["type"])
    wanted = kind.isin([EventType.EMAIL_OPEN.value, EventType.EMAIL_CLICK.value, *SITE_EVENT_TYPES])
    keep = wanted & ~machine_opens(events)
    rows = events[keep]
    frame = pd.DataFrame(
        {
            "customer_id": _coded(rows["customer_id"]),
            "at": naive_utc(rows["occurred_at"], "events.occurred_at").to_numpy(),
            "type": kind[keep],
            "campaign": _coded(rows["campaign_id"]) if "campaign_id" in rows.columns else None,
        }
    )
    frame = _drop_missing(frame, "events")
    parts = []
    for event_type, signal in (
        (EventType.EMAIL_CLICK.value, "email_click"),
        (EventType.EMAIL_OPEN.value, "email_open"),
    ):
        mail = frame[frame["type"] == event_type]
        # Opens and clicks of one campaign count once; those without a campaign count each.
        tagged = mail["campaign"].notna()
        first = _first(mail[tagged], ["customer_id", "campaign"])
        parts.append(pd.concat([first, mail[~tagged]]).assign(signal=SIGNALS.index(signal)))
    site = frame[frame["type"].isin(SITE_EVENT_TYPES)]
    visits = site.assign(hour=site["at"].dt.floor("h")).drop_duplicates(["customer_id", "hour"])
    parts.append(visits.assign(signal=SIGNALS.index("site_visit")))
    return parts


def _coded(values: pd.Series) -> pd.Categorical:
    """`values` as a categorical of text (a categorical of text is taken as it is), its
    categories of dtype object, so that categoricals of several sources can be joined."""
    if isinstance(values.dtype, pd.CategoricalDtype) and all(
        isinstance(c, str) for c in values.cat.categories
    ):
        coded = values.array
    else:
        coded = pd.Categorical(values.astype("string"))
    return pd.Categorical.from_codes(coded.codes, pd.Index(coded.categories, dtype=object))


def _first(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.sort_values("at", kind="stable").drop_duplicates(by, keep="first")


def _drop_missing(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = (frame["customer_id"].isna() | frame["at"].isna()).to_numpy(bool)
    if missing.any():
        logger.warning("%s: %d rows without customer_id or timestamp ignored", name, missing.sum())
    return frame[~missing]


# --- local time -------------------------------------------------------------------------------


def hour_of_week(at: Iterable[Any], timezone: Iterable[Any] | None = None) -> np.ndarray:
    """Local hour of the week (Monday 00:00 = 0 .. Sunday 23:00 = 167) of UTC timestamps.

    Args:
        at: Timestamps, naive UTC (aware ones are converted to UTC first).
        timezone: One IANA zone name per timestamp; None, missing or unknown names mean UTC.
    """
    stamps = naive_utc(pd.Series(at), "at")
    if stamps.isna().any():
        raise ValueError("at: missing timestamps")
    zones = pd.Series(
        [None] * len(stamps) if timezone is None else list(timezone), dtype=object
    ).to_numpy()
    if len(zones) != len(stamps):
        raise ValueError(f"timezone: {len(zones)} values for {len(stamps)} timestamps")
    codes, names = pd.factorize(zones)
    valid = [valid_zone(z) for z in names] + ["UTC"]  # code -1 (missing) takes the last
    return week_hour(local_seconds(unix_seconds(stamps), codes, valid))


def naive_utc(values: pd.Series, field: str) -> pd.Series:
    """Timestamps as naive UTC datetimes; a clear error naming `field` when they are not."""
    try:
        stamps = pd.to_datetime(values)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{field}: not timestamps ({exc})") from exc
    if not pd.api.types.is_datetime64_any_dtype(stamps.dtype):
        raise ValueError(f"{field}: not timestamps (dtype {values.dtype})")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps


def unix_seconds(stamps: pd.Series) -> np.ndarray:
    """Unix seconds (floored) of naive UTC timestamps."""
    return np.asarray(stamps.to_numpy().astype("datetime64[s]").astype(np.int64))


def zone_wall_clock(utc_seconds: np.ndarray, zone: str) -> np.ndarray:
    """Local wall-clock time, as Unix-like seconds, of UTC Unix seconds in one time zone."""
    if zone == "UTC" or len(utc_seconds) == 0:
        return utc_seconds
    index = pd.DatetimeIndex(pd.to_datetime(utc_seconds, unit="s"))
    local = index.tz_localize("UTC").tz_convert(zone).tz_localize(None)
    return np.asarray(local.as_unit("s").asi8, dtype=np.int64)


def local_seconds(utc_seconds: np.ndarray, zone: np.ndarray, zone_names: list[str]) -> np.ndarray:
    """Local wall-clock seconds of each timestamp, `zone` coding each one's zone in `zone_names`."""
    local = utc_seconds.copy()
    for code, rows in groups(zone):
        local[rows] = zone_wall_clock(utc_seconds[rows], zone_names[code])
    return local


def week_hour(local: np.ndarray) -> np.ndarray:
    """Hour of the week of local Unix-like seconds (1970-01-01 was a Thursday)."""
    days = local // 86_400
    return (((days + 3) % 7) * 24 + (local % 86_400) // 3_600).astype(np.int64)


def valid_zone(name: Any) -> str:
    """`name` when it is a known IANA time zone, else "UTC" (logged unless missing)."""
    if isinstance(name, str) and name in known_timezones():
        return name
    if name is not None and not pd.isna(name):
        logger.warning("unknown time zone %r: UTC used", name)
    return "UTC"


def groups(codes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(code, positions) for every distinct code, by one sort rather than one mask per code."""
    if len(codes) == 0:
        return
    order = np.argsort(codes, kind="stable")
    values, starts = np.unique(codes[order], return_index=True)
    for value, lo, hi in zip(values, starts, [*starts[1:], len(order)], strict=True):
        yield int(value), order[lo:hi]


def require_columns(frame: pd.DataFrame, name: str, columns: Iterable[str]) -> None:
    """A clear error naming the table and the missing columns."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name}: expected a DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}")
