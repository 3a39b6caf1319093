"""Benchmark: `personalizer score all` on many synthetic customers, local engine and Spark.

The synthetic shop (`--customers`, default one million) is written chunk by chunk into a DuckDB
warehouse with the project's tables (a bulk insert, as in bench_segments.py: the validating
importer would take an hour at this size); the recommender, churn and send-time champions are
trained on it with the project's pipelines. Then the whole run (`score_all`: the population pass —
churn/value scoring and segments — and every partition's recommendations and send times) is timed
for each engine, each in its own process so each peak resident memory is its own. For Spark the
driver's peak is reported with the largest descendant's (the JVM or a Python worker, sampled from
/proc: they are not the driver's waited-for children, so `ru_maxrss` of children misses them) and
the sum of the descendants' peaks.

    PERSONALIZER_THREADS=1 .venv/bin/python tests/benchmarks/bench_batch.py --customers 20000

Figures vary with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from personalizer.config import Settings
from personalizer.data.synthetic import ShopConfig, make_catalog, simulate_chunk
from personalizer.data.warehouse import Warehouse


def build_home(home: Path, customers: int, seed: int) -> dict[str, float]:
    """The synthetic shop in a warehouse under `home`, with three trained champions."""
    from personalizer.models import churn_pipeline, send_time_pipeline
    from personalizer.models.recommenders import pipeline

    config = ShopConfig(n_customers=customers, seed=seed)
    catalog = make_catalog(config)
    settings = Settings(home=home, show_progress=False)
    started = time.perf_counter()
    with Warehouse(settings.warehouse_path) as wh:
        wh.ensure_schema()
        _insert(wh, "products", catalog.products)
        for chunk in range(config.n_chunks):
            tables = simulate_chunk(config, catalog, chunk)
            for name in ("customers", "orders", "events"):
                frame = tables[name]
                if name == "orders":
                    frame = frame.drop(columns=["line_no"], errors="ignore")
                if name == "events":
                    frame = frame.assign(properties=frame["properties"].astype(str))
                if name == "customers":
                    frame = frame.assign(attributes=frame["attributes"].astype(str))
                _insert(wh, name, frame)
    figures = {"load_s": time.perf_counter() - started}
    for name, train in (
        ("recommender", pipeline.train),
        ("churn", churn_pipeline.train),
        ("send_time", send_time_pipeline.train),
    ):
        started = time.perf_counter()
        train(settings)
        figures[f"train_{name}_s"] = time.perf_counter() - started
    figures["train_s"] = sum(v for k, v in figures.items() if k.startswith("train_"))
    return figures


def _insert(wh: Warehouse, name: str, frame: Any) -> None:
    wh.con.register("chunk", frame)
    names = ", ".join(frame.columns)
    wh.con.execute(f"INSERT INTO {name} ({names}) SELECT {names} FROM chunk")
    wh.con.unregister("chunk")


def run_engine(home: Path, out: Path, engine: str, partitions: int) -> dict[str, Any]:
    """One `score_all` run in this process; prints its figures as JSON."""
    from personalizer.batch.job import score_all

    settings = Settings(home=home, show_progress=False)
    prepared = _Prepared()
    logging.getLogger("personalizer.batch.models").addHandler(prepared)
    logging.getLogger("personalizer.batch.models").setLevel(logging.INFO)
    watch = _Descendants()
    watch.start()
    started = time.perf_counter()
    result = score_all(settings, out, engine=engine, partitions=partitions, restart=True)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    watch.stop = True
    return {
        "engine": engine,
        "customers": result.manifest.customers,
        "seconds": seconds,
        "population_s": prepared.at - started,
        "customers_per_s": result.manifest.customers / seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "child_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "descendant_peak_mb": watch.largest / 1024,
        "descendants_peak_mb": watch.total / 1024,
    }


class _Descendants(threading.Thread):
    """Samples the resident memory of this process's descendants (the JVM, its Python workers):
    `ru_maxrss` of children counts only children that were waited for, which these are not."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = False
        self.largest = 0  # KiB, one process
        self.total = 0  # KiB, the sum of their peaks (an upper bound of their sum)

    def run(self) -> None:
        while not self.stop:
            rss = [_rss_kib(pid) for pid in _descendants(os.getpid())]
            self.largest = max([self.largest, *rss])
            self.total = max(self.total, sum(rss))
            time.sleep(0.5)


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class _Prepared(logging.Handler):
    """Notes when the population pass (`prepare_customers`) has logged its end."""

    at = float("nan")

    def emit(self, record: logging.LogRecord) -> None:
        if "customers prepared" in record.msg:
            self.at = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--engines", default="local,spark")
    parser.add_argument("--home", type=Path, help="reuse (or keep) this data home")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one engine, in a child
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.run:
        home, out, engine = args.run.split("|")
        print(json.dumps(run_engine(Path(home), Path(out), engine, args.partitions)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        home = args.home or Path(tmp) / "home"
        if not (home / "warehouse.duckdb").exists():
            built = build_home(home, args.customers, args.seed)
            print(
                f"shop of {args.customers:,} customers: loaded in {built['load_s']:.1f} s, "
                f"trained in {built['train_s']:.1f} s (recommender "
                f"{built['train_recommender_s']:.1f} s, churn {built['train_churn_s']:.1f} s, "
                f"send time {built['train_send_time_s']:.1f} s)"
            )
        for engine in args.engines.split(","):
            out = Path(tmp) / f"out-{engine}"
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--partitions",
                    str(args.partitions),
                    "--run",
                    f"{home}|{out}|{engine}",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"{engine:>5}: {figures['customers']:,} customers in {figures['seconds']:.1f} s = "
                f"{figures['customers_per_s']:,.0f} customers/s (population pass "
                f"{figures['population_s']:.1f} s); peak RSS {figures['peak_mb']:,.0f} MB"
                + (
                    f" (largest child {figures['descendant_peak_mb']:,.0f} MB, sum of the "
                    f"children's peaks {figures['descendants_peak_mb']:,.0f} MB)"
                    if engine == "spark"
                    else ""
                )
            )


if __name__ == "__main__":
    main()
