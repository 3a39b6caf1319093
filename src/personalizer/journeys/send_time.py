"""When a due step is sent: never in the customer's quiet hours, at their best hour when asked.

A step is due at its moment (entry plus waits) or, when the run comes later, at the run. Then:

- `send_time: model`: the customer's best hour from the send-time model (the champion's hour of the
  week, in their time zone; the shop's best hour for customers it does not know; Tuesday 10:00
  without a model). With `send_within` under 7 days only the hour of the day counts: the first
  such hour after the due moment (at most a day later); with 7 days or more, the hour of the week.
- otherwise the due moment itself, unless it falls in the quiet hours (22:00–06:59 local), which
  move it to 09:00 local, as the decision service does.

Both go through `decisions.decider.next_local_hour`, so journeys and decisions agree on quiet
hours and time zones (daylight saving included).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

from personalizer.decisions.decider import QUIET_HOURS, next_local_hour
from personalizer.journeys.timeline import Customers

DEFAULT_HOUR_OF_WEEK = 24 + 10  # Tuesday 10:00 local, the decision service's default
QUIET_RESUME_HOUR = 9
_EPOCH = datetime(1970, 1, 1)
_WEEK = timedelta(days=7)


def send_moments(
    customers: Customers,
    codes: np.ndarray,
    due: np.ndarray,
    *,
    model: bool,
    within: timedelta,
) -> np.ndarray:
    """The send moment (seconds) of each due send; see the module docstring.

    Args:
        customers: time zones and best hours, by code.
        codes: the customer of each send.
        due: when each is due (seconds, naive UTC), not before the run.
        model: whether the step asks for the send-time model's hour.
        within: the step's `send_within`.
    """
    out = np.empty(len(codes), dtype=np.int64)
    for i, (code, moment) in enumerate(zip(codes.tolist(), due.tolist(), strict=True)):
        zone = str(customers.zone[code])
        after = _EPOCH + timedelta(seconds=moment)
        if model:
            hour = int(customers.send_hour[code])
            if hour < 0:
                shop = customers.shop_hour
                hour = shop if shop is not None else DEFAULT_HOUR_OF_WEEK
            at = _best_hour(hour, zone, after, weekly=within >= _WEEK)
        else:
            at = out_of_quiet_hours(zone, after)
        out[i] = int((at - _EPOCH).total_seconds())
    return out


def _best_hour(hour_of_week: int, zone: str, after: datetime, *, weekly: bool) -> datetime:
    if weekly:
        return next_local_hour(hour_of_week, zone, after)
    hour = hour_of_week % 24
    weekday = _local(after, zone).weekday()
    # the same hour on the local day of `after` or the next one: whichever comes first after it
    return min(next_local_hour((weekday + d) % 7 * 24 + hour, zone, after) for d in (0, 1))


def out_of_quiet_hours(zone: str, moment: datetime) -> datetime:
    """`moment` (naive UTC), or 09:00 local after it when it falls in the quiet hours."""
    local = _local(moment, zone)
    start, end = QUIET_HOURS
    if end <= local.hour < start:
        return moment
    day = local.weekday() + (1 if local.hour >= start else 0)
    return next_local_hour(day % 7 * 24 + QUIET_RESUME_HOUR, zone, moment)


def local_hours(zones: np.ndarray, moments: np.ndarray) -> np.ndarray:
    """The local hour of each moment (seconds, naive UTC) in each time zone."""
    return np.asarray(
        [
            _local(_EPOCH + timedelta(seconds=int(m)), str(z)).hour
            for z, m in zip(zones, moments, strict=True)
        ],
        dtype=np.int64,
    )


def _local(moment: datetime, zone: str) -> datetime:
    return moment.replace(tzinfo=UTC).astimezone(zone_info(zone))


@lru_cache(maxsize=1024)
def zone_info(name: str) -> ZoneInfo:
    """The time zone `name` (UTC for an unknown one), cached."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")
