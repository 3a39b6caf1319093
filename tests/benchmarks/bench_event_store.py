"""Benchmark: real-time events ingested per second with durability on (`make bench`).

Target (issue 5): 100,000 events through the library (`ingest_events`: validation, deduplication,
one fsynced SQLite transaction per batch) at >= 5,000 events/s sustained. Events arrive as parsed
JSON objects, as an HTTP request body would give them, in batches of 1,000 and of 100. Each run uses
a fresh store; figures are medians over the runs. Baselines measured in the same run: the same
ingestion with `synchronous=OFF` (no fsync: the cost of durability), and the store alone appending
already-validated batches durably (the cost of validation).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personalizer.data.event_store import SqliteEventStore, ingest_events
from personalizer.data.validate import validate_frame
from personalizer.schema import EventType

TARGET_PER_SECOND = 5_000


def make_events(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` valid events of every type, as parsed JSON objects (seeded)."""
    rng = np.random.default_rng(seed)
    types = [t.value for t in EventType]
    start = pd.Timestamp("2024-01-01", tz="UTC")
    offsets = np.sort(rng.integers(0, 90 * 86_400, n))
    customers = rng.integers(0, 20_000, n)
    products = rng.integers(0, 2_000, n)
    kinds = rng.integers(0, len(types), n)
    return [
        {
            "event_id": f"ev-{seed}-{i:07d}",
            "customer_id": f"c{customers[i]}",
            "type": types[kinds[i]],
            "occurred_at": (start + pd.Timedelta(seconds=int(offsets[i]))).isoformat(),
            "product_id": f"p{products[i]}",
            "properties": {"source": "web"},
        }
        for i in range(n)
    ]


def run(batches: list[Any], ingest: Callable[[SqliteEventStore, Any], int], durable: bool) -> float:
    """Seconds to push every batch through `ingest` into a fresh store."""
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        store = SqliteEventStore(Path(tmp) / "events.sqlite", durable=durable)
        started = time.perf_counter()
        stored = sum(ingest(store, batch) for batch in batches)
        seconds = time.perf_counter() - started
        assert stored == store.count() == sum(len(b) for b in batches), stored
        store.close()
    return seconds


def through_library(store: SqliteEventStore, batch: list[dict[str, Any]]) -> int:
    result = ingest_events(store, batch)
    assert not result.rejected
    assert not result.duplicates
    return result.accepted


def store_only(store: SqliteEventStore, batch: pd.DataFrame) -> int:
    return store.append(batch).accepted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    events = make_events(args.events, args.seed)
    print(
        f"event store benchmark: {len(events):,} events through ingest_events, "
        f"median of {args.repeats} runs, fresh SQLite store (WAL) each run"
    )

    for size in (1_000, 100):
        batches = [events[i : i + size] for i in range(0, len(events), size)]
        validated = [validate_frame("events", pd.DataFrame(b)).good for b in batches]
        modes: list[tuple[str, list[Any], Callable[..., int], bool]] = [
            ("ingest, durable (synchronous=FULL)", batches, through_library, True),
            ("baseline: ingest, synchronous=OFF", batches, through_library, False),
            ("baseline: store only, durable", validated, store_only, True),
        ]
        print(f"\n  batches of {size:,} ({len(batches):,} transactions)")
        rates = {}
        for name, data, ingest, durable in modes:
            seconds = statistics.median(run(data, ingest, durable) for _ in range(args.repeats))
            rates[name] = len(events) / seconds
            print(f"    {name:<36} {seconds:6.2f} s {rates[name]:10,.0f} events/s", flush=True)
        durable_rate = rates[modes[0][0]]
        print(
            f"    durability costs {rates[modes[1][0]] / durable_rate:.2f}x; validation takes "
            f"{1 - durable_rate / rates[modes[2][0]]:.0%} of the durable time"
        )
        ok = durable_rate >= TARGET_PER_SECOND

        print(
            f"    target >= {TARGET_PER_SECOND:,}/s durable -> {durable_rate / TARGET_PER_SECOND:.1f}x "
            f"({'met' if ok else 'NOT met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
