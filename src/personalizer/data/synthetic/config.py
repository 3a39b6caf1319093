"""Configuration, random streams and calendar of the synthetic shop.

Simulated time is kept as seconds since `ShopConfig.start` (00:00 UTC) in float64 arrays and only
turned into timestamps when the tables are built. Local time comes from a small table of UTC offsets
per time zone and hour, so converting millions of timestamps is a lookup, not a tz database call.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

DAY = 86_400
HOUR = 3_600
WEEK_HOURS = 168

# Independent random streams: `SeedSequence([seed, stream, ...])`.
STREAM_CATALOG = 0
STREAM_CAMPAIGNS = 1
STREAM_CHUNK = 2

# country: (share of customers, ((IANA zone, share within the country), ...))
COUNTRIES: dict[str, tuple[float, tuple[tuple[str, float], ...]]] = {
    "US": (
        0.34,
        (
            ("America/New_York", 0.47),
            ("America/Chicago", 0.29),
            ("America/Denver", 0.07),
            ("America/Los_Angeles", 0.17),
        ),
    ),
    "GB": (0.15, (("Europe/London", 1.0),)),
    "DE": (0.12, (("Europe/Berlin", 1.0),)),
    "FR": (0.10, (("Europe/Paris", 1.0),)),
    "CA": (
        0.08,
        (("America/Toronto", 0.6), ("America/Vancouver", 0.25), ("America/Edmonton", 0.15)),
    ),
    "AU": (
        0.07,
        (("Australia/Sydney", 0.5), ("Australia/Melbourne", 0.35), ("Australia/Perth", 0.15)),
    ),
    "NL": (0.07, (("Europe/Amsterdam", 1.0),)),
    "ES": (0.07, (("Europe/Madrid", 1.0),)),
}
ZONE_NAMES: tuple[str, ...] = tuple(z for _, (_, zones) in COUNTRIES.items() for z, _ in zones)
ZONE_COUNTRY: tuple[str, ...] = tuple(c for c, (_, zones) in COUNTRIES.items() for _ in zones)
ZONE_SHARE: np.ndarray = np.array(
    [share * zshare for share, zones in COUNTRIES.values() for _, zshare in zones]
)


@dataclass(frozen=True)
class ShopConfig:
    """What to simulate. Equal configs give identical shops, whatever the machine or run.

    Attributes:
        n_customers: Customers in the shop (1,000 to 1,000,000 are the intended range).
        seed: Root seed of every random stream.
        start: First simulated day (UTC, ISO date).
        end: Last simulated day (UTC, inclusive); timestamps stay before `end` + 1 day.
        n_products: Catalog size; None scales with customers (`n_customers // 5` in [200, 2000]).
        campaign_every_days: Days between two email campaigns.
        chunk_size: Customers simulated together; part of the identity of the output.
    """

    n_customers: int = 2000
    seed: int = 42
    start: str = "2024-11-01"
    end: str = "2026-10-31"
    n_products: int | None = None
    campaign_every_days: int = 14
    chunk_size: int = 20_000

    def __post_init__(self) -> None:
        if self.n_customers < 1:
            raise ValueError("n_customers must be positive")
        if self.seed < 0:
            raise ValueError("seed must be non-negative")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if self.campaign_every_days < 1:
            raise ValueError("campaign_every_days must be positive")
        if self.n_products is not None and self.n_products < 24:
            raise ValueError("n_products must be at least 24 (two per category)")
        if self.n_days < 28:
            raise ValueError("simulate at least 28 days (end - start)")

    @property
    def product_count(self) -> int:
        """Number of products in the catalog."""
        if self.n_products is not None:
            return self.n_products
        return int(np.clip(self.n_customers // 5, 200, 2000))

    @property
    def n_chunks(self) -> int:
        """Number of customer chunks."""
        return -(-self.n_customers // self.chunk_size)

    def chunk_bounds(self, chunk_index: int) -> tuple[int, int]:
        """Global customer positions [first, stop) of one chunk."""
        if not 0 <= chunk_index < self.n_chunks:
            raise IndexError(f"chunk {chunk_index} out of range 0..{self.n_chunks - 1}")
        first = chunk_index * self.chunk_size
        return first, min(first + self.chunk_size, self.n_customers)

    @property
    def start_epoch(self) -> int:
        """Unix seconds of `start` 00:00 UTC."""
        return int(pd.Timestamp(self.start).value // 1_000_000_000)

    @property
    def n_days(self) -> int:
        """Simulated days, `start` and `end` included."""
        return int((pd.Timestamp(self.end) - pd.Timestamp(self.start)).days) + 1

    @property
    def horizon(self) -> int:
        """Seconds from `start` to `end` + 1 day: every timestamp is in [0, horizon)."""
        return self.n_days * DAY

    def rng(self, *stream: int) -> np.random.Generator:
        """A generator for one named stream; depends on nothing but the seed and `stream`."""
        return np.random.default_rng(np.random.SeedSequence([self.seed, *stream]))


@lru_cache(maxsize=4)
def _zone_offsets(start: str, n_hours: int) -> np.ndarray:
    """UTC offset in seconds per (zone, hour since start), DST included."""
    hours = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=n_hours, freq="h")
    naive = hours.tz_localize(None)
    rows = [(hours.tz_convert(z).tz_localize(None) - naive).total_seconds() for z in ZONE_NAMES]
    offsets = np.asarray(rows, dtype=np.int64)
    offsets.flags.writeable = False
    return offsets


def local_epoch(config: ShopConfig, zone: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Local wall-clock time, as Unix-like seconds, of simulated times `t` in zones `zone`."""
    offsets = _zone_offsets(config.start, config.n_days * 24 + 72)
    hour = np.clip((t // HOUR).astype(np.int64), 0, offsets.shape[1] - 1)
    return config.start_epoch + np.floor(t).astype(np.int64) + offsets[zone, hour]


def hour_of_week(local: np.ndarray) -> np.ndarray:
    """Local hour of the week, Monday 00:00 = 0 .. Sunday 23:00 = 167 (1970-01-01 was a Thursday)."""
    days = local // DAY
    return ((days + 3) % 7) * 24 + (local % DAY) // HOUR


def circular_hours(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in hours between two hours of the week, going round the week."""
    d = np.abs(a - b) % WEEK_HOURS
    return np.minimum(d, WEEK_HOURS - d)
