"""Frequency caps across all flows: journey emails per customer per rolling week and per day.

The caps count every email queued so far (whatever its flow) by its send moment, those of earlier
runs included:

- `per_week`: a send is admitted only if no 7-day window containing it would then hold more than
  the limit, windows reaching into the future (where sends queued for later sit) included;
- `per_day`: at most so many sends on one calendar day of the customer's time zone (so a cart
  reminder one morning and its discount the next morning are two days, not one rolling 24 h).

Among the sends decided in the same run, the most important flow (lowest `priority`) goes first;
then the earlier send, then flow and step order. A send refused by a cap is **dropped**, not
deferred, and recorded as `capped`: what it said was tied to its moment (a cart, a day of a
series), and its flow goes on with its next step, as Klaviyo's smart sending and Braze's frequency
capping do. A send queued in an earlier run is never taken back (the sender may have sent it), so
priorities decide between flows competing in the same run only.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

from personalizer.journeys.definitions import Caps
from personalizer.journeys.send_time import zone_info

WEEK = 7 * 86_400
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FrequencyCaps:
    """The caps and the send moments (seconds) they count, per customer code.

    Args:
        caps: the limits.
        sends: queued send moments per customer code, kept sorted; updated as sends are admitted.
        zones: each customer code's time zone (for `per_day`).
    """

    def __init__(self, caps: Caps, sends: dict[int, list[int]], zones: np.ndarray) -> None:
        self.per_week, self.per_day = caps.per_week, caps.per_day
        self.sends = sends
        self.zones = zones

    def admit(
        self,
        codes: np.ndarray,
        send_at: np.ndarray,
        priority: np.ndarray,
        tiebreak: np.ndarray,
    ) -> np.ndarray:
        """Which of these candidate sends fit the caps, decided in priority order.

        Args:
            codes: customer code of each candidate.
            send_at: its send moment (seconds).
            priority: its flow's priority (lower goes first).
            tiebreak: a last sort key (the flow and step order), for determinism.

        Returns:
            A mask of the admitted candidates; their moments are added to `sends`.
        """
        admitted = np.zeros(len(codes), dtype=bool)
        for i in np.lexsort((tiebreak, send_at, priority, codes)):
            code, moment = int(codes[i]), int(send_at[i])
            times = self.sends.setdefault(code, [])
            if self.fits(code, times, moment):
                bisect.insort(times, moment)
                admitted[i] = True
        return admitted

    def fits(self, code: int, times: Sequence[int], moment: int) -> bool:
        """Whether one more send at `moment` keeps the customer within both caps."""
        if self.per_week is not None and not _fits_window(times, moment, WEEK, self.per_week):
            return False
        if self.per_day is not None:
            zone = str(self.zones[code])
            lo = bisect.bisect_right(times, moment - 2 * 86_400)
            hi = bisect.bisect_left(times, moment + 2 * 86_400)
            day = local_day(moment, zone)
            same = sum(1 for t in times[lo:hi] if local_day(t, zone) == day)
            if same + 1 > self.per_day:
                return False
        return True


def prune_sends(sends: dict[int, list[int]], now: int) -> None:
    """Forget send moments more than a week before `now`: no later send shares a cap with them."""
    for code in list(sends):
        times = sends[code]
        cut = bisect.bisect_left(times, now - WEEK)
        if cut:
            del times[:cut]
        if not times:
            del sends[code]


def _fits_window(times: Sequence[int], moment: int, window: int, limit: int) -> bool:
    """Whether no `window` containing `moment` would hold more than `limit` sends with it."""
    lo = bisect.bisect_right(times, moment - window)
    hi = bisect.bisect_left(times, moment + window)
    near = sorted([*times[lo:hi], moment])
    # the busiest window holding `moment` starts at one of the sends not after it
    for start in near:
        if start > moment:
            break
        if bisect.bisect_left(near, start + window) - bisect.bisect_left(near, start) > limit:
            return False
    return True


def local_day(moment: int, zone: str) -> int:
    """The calendar day (days since 1970-01-01) of a moment (seconds, UTC) in a time zone."""
    local = (_EPOCH + timedelta(seconds=moment)).astimezone(zone_info(zone))
    return local.toordinal()


def busiest_window(customer_ids: np.ndarray, send_at: np.ndarray, window: int) -> int:
    """The most sends of one customer within any `window` seconds (0 for no sends).

    Args:
        customer_ids: the customer of each send.
        send_at: its moment (seconds).
        window: the window's length in seconds.
    """
    if not len(send_at):
        return 0
    codes = np.unique(np.asarray(customer_ids).astype(str), return_inverse=True)[1]
    order = np.lexsort((send_at, codes))
    codes, times = codes[order].astype(np.int64), np.asarray(send_at, dtype=np.int64)[order]
    # per send: how many sends of the same customer fall in [its moment, its moment + window)
    key = codes * (np.int64(1) << 34) + times
    ends = np.searchsorted(key, codes * (np.int64(1) << 34) + times + window, "left")
    return int((ends - np.arange(len(key))).max())
