"""Benchmark: synthetic events generated and imported per second (`make bench`).

Target (issue 2): one million events generated and imported in under 60 s on this machine.
Each repeat uses a fresh data home; figures are medians over the repeats, and the import is compared
with a baseline measured in the same run: DuckDB copying the same Parquet files into tables with no
validation, deduplication or quarantine (the floor any importer pays).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from personalizer.config import Settings
from personalizer.data.importer import import_path
from personalizer.data.synthetic import ShopConfig, generate_shop, make_catalog, simulate_chunk

TARGET_EVENTS = 1_000_000
TARGET_SECONDS = 60.0


def customers_for(events: int, seed: int) -> int:
    """Customers needed for about `events` events, from a small calibration chunk."""
    probe = ShopConfig(n_customers=2_000, seed=seed)
    frames = simulate_chunk(probe, make_catalog(probe), 0)
    per_customer = len(frames["events"]) / probe.n_customers
    return math.ceil(events / per_customer)


def raw_copy_seconds(shop: Path, home: Path) -> float:
    """Baseline: the same Parquet files straight into DuckDB tables."""
    started = time.perf_counter()
    con = duckdb.connect(str(home / "baseline.duckdb"))
    for table in ("customers", "products"):
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{shop / table}.parquet')")
    for table in ("orders", "events"):
        con.execute(
            f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{shop / table}/*.parquet')"
        )
    con.close()
    return time.perf_counter() - started


def feed_formats(seed: int, repeats: int) -> None:
    """Import throughput of one million events as Parquet, CSV and JSON Lines files."""
    config = ShopConfig(n_customers=10_000, seed=seed)
    events = simulate_chunk(config, make_catalog(config), 0)["events"]
    print(f"\nfeed formats: {len(events):,} events imported from one file (median of {repeats})")
    base = None
    for fmt in ("parquet", "csv", "jsonl"):
        seconds = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="bench-formats-") as tmp:
                path = Path(tmp) / f"events.{fmt}"
                if fmt == "parquet":
                    events.to_parquet(path, index=False)
                elif fmt == "csv":
                    events.to_csv(path, index=False)
                else:
                    events.to_json(path, orient="records", lines=True, date_format="iso")
                started = time.perf_counter()
                [report] = import_path(Settings(home=Path(tmp) / "home"), path)
                seconds.append(time.perf_counter() - started)
                assert report.added == len(events)
        median = statistics.median(seconds)
        base = base or median
        print(
            f"  {fmt:<8} {median:5.1f} s {len(events) / median:12,.0f} events/s   "
            f"{median / base:.1f}x Parquet's time"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=TARGET_EVENTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    n_customers = customers_for(args.events, args.seed)
    gen, imp, raw, counts = [], [], [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
            home = Path(tmp)
            settings = Settings(home=home, show_progress=False)
            config = ShopConfig(n_customers=n_customers, seed=args.seed)
            started = time.perf_counter()
            summary = generate_shop(config, settings.synthetic_dir)
            gen.append(time.perf_counter() - started)
            started = time.perf_counter()
            reports = import_path(settings, settings.synthetic_dir)
            imp.append(time.perf_counter() - started)
            raw.append(raw_copy_seconds(settings.synthetic_dir, home))
            added = sum(r.added for r in reports if r.table == "events")
            assert added == summary.rows["events"], (added, summary.rows)
            counts.append(summary.rows["events"])
            print(
                f"  repeat {repeat + 1}: {summary.rows['events']:,} events, "
                f"generate {gen[-1]:.1f}s, import {imp[-1]:.1f}s, raw copy {raw[-1]:.1f}s",
                flush=True,
            )

    events = statistics.median(counts)
    g, i, r = (statistics.median(x) for x in (gen, imp, raw))
    total = g + i
    print(
        f"\ningest benchmark: {n_customers:,} customers, {events:,.0f} events "
        f"(median of {args.repeats})"
    )
    print(f"  generate            {g:6.1f} s   {events / g:12,.0f} events/s")
    print(f"  import              {i:6.1f} s   {events / i:12,.0f} events/s")
    print(f"  generate + import   {total:6.1f} s   {events / total:12,.0f} events/s")
    print(f"  baseline raw copy   {r:6.1f} s   import / raw copy = {i / r:.1f}x")
    per_million = total * 1_000_000 / events
    print(
        f"  1M events take {per_million:.1f} s; target {TARGET_SECONDS:.0f} s -> "
        f"{TARGET_SECONDS / per_million:.2f}x the required speed "
        f"({'met' if per_million <= TARGET_SECONDS else 'NOT met'})"
    )
    feed_formats(args.seed, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
