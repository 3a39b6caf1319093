"""Benchmark: train and score the recommender at scale (`make bench`).

Target (issue): train and score one million synthetic customers × 50,000 products; report the
training time, customers scored per second, and the time against a bare `implicit` batch
`recommend` over the same ALS factors, measured in the same run (target ≤ 1.5×), plus peak memory.

Order lines come from the synthetic shop, simulated chunk by chunk in memory (generation is timed
apart from training). Scoring runs over the same sample of customers with history for every path;
figures are medians of the repeats, so compare the ratios, not the absolute times (the machine is
shared and noisy).
"""

from __future__ import annotations

import argparse
import faulthandler
import resource
import signal
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from personalizer.data.synthetic import ShopConfig, make_catalog, simulate_chunk
from personalizer.models.recommenders.engine import Engine, EngineConfig
from personalizer.models.recommenders.factors import ALS

TARGET_RATIO = 1.5
TOP_N = 10
SLOW_SECONDS = 120.0  # a scoring path slower than this is measured once


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KB on Linux), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory() -> str:
    return f"rss {rss_mb():,.0f} MB, peak {peak_mb():,.0f} MB"


def make_orders(customers: int, products: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Order lines of the synthetic shop (one chunk at a time, only orders kept), and its catalog."""
    config = ShopConfig(n_customers=customers, seed=seed, n_products=products)
    catalog = make_catalog(config)
    parts = [simulate_chunk(config, catalog, chunk)["orders"] for chunk in range(config.n_chunks)]
    orders = pd.concat(parts, ignore_index=True)
    return orders, catalog.products[["product_id", "category", "in_stock", "price"]]


class PhaseClock:
    """Seconds spent in the engine's fitting steps, taken by wrapping one engine's methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.rss: dict[str, float] = {}

    def wrap(self, key: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - started
                self.rss[key] = max(self.rss.get(key, 0.0), rss_mb())

        return timed

    def instrument(self, engine: Engine) -> Engine:
        """Time every strategy's `fit` and each blend mode, on this engine only (no src change)."""
        make_strategies = engine._strategies

        def strategies() -> dict[str, Any]:
            made = make_strategies()
            for name, strat in made.items():
                strat.fit = self.wrap(f"fit {name}", strat.fit)  # type: ignore[method-assign]
            return made

        engine._strategies = strategies  # type: ignore[method-assign]
        fit_mode = engine._fit_mode
        engine._fit_mode = lambda mode, slices: self.wrap(f"blend {mode}", fit_mode)(mode, slices)  # type: ignore[method-assign]
        return engine


def median_seconds(run: Callable[[], Any], repeats: int) -> tuple[float, int, Any]:
    """Median wall time of `run` over `repeats` (one run if it is slow), the runs made, the result."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
        if seconds[-1] > SLOW_SECONDS:
            break
    return statistics.median(seconds), len(seconds), result


def bare_model(als: ALS) -> AlternatingLeastSquares:
    """An implicit ALS model holding the engine's factors, nothing else."""
    model = AlternatingLeastSquares(factors=als.user_factors_.shape[1])
    model.user_factors = als.user_factors_
    model.item_factors = als.item_factors_
    return model


def score(engine: Engine, ids: np.ndarray, repeats: int, label: str) -> None:
    """Customers/s of bare implicit and of the engine's paths, over the same customers."""
    data = engine.data_
    model = bare_model(engine.strategies_["als"])  # type: ignore[arg-type]
    rows = data.lookup_customers(ids)
    assert (rows >= 0).all()

    def bare(filter_liked: bool) -> Callable[[], Any]:
        def run() -> Any:
            with threadpool_limits(1, "blas"):
                userids = data.lookup_customers(ids)
                return model.recommend(
                    userids,
                    data.purchased[userids],
                    N=TOP_N,
                    filter_already_liked_items=filter_liked,
                )

        return run

    def engine_path(model_name: str | None, exclude: bool) -> Callable[[], Any]:
        def run() -> Any:
            with threadpool_limits(1, "blas"):
                return engine.recommend(ids, TOP_N, exclude_purchased=exclude, model=model_name)

        return run

    choices = {mode: engine.choices_[mode].model for mode in engine.choices_}
    cases = [
        ("bare implicit recommend", "a", bare(False), None),
        ("engine, model='als'", "b", engine_path("als", False), "a"),
        (f"engine, default ({choices.get('all')})", "c", engine_path(None, False), "a"),
        ("bare implicit, filter liked", "a'", bare(True), None),
        ("engine, 'als', exclude purchased", "b'", engine_path("als", True), "a'"),
        (f"engine, default ({choices.get('new')}), exclude", "c'", engine_path(None, True), "a'"),
    ]
    print(f"\nscoring {len(ids):,} customers with history, top {TOP_N} ({label}):", flush=True)
    times: dict[str, float] = {}
    for title, key, run, base in cases:
        seconds, runs, result = median_seconds(run, repeats)
        times[key] = seconds
        got = len(result[0]) if isinstance(result, tuple) else result["customer_id"].nunique()
        ratio = f"{seconds / times[base]:6.2f}x ({base})" if base else ""
        print(
            f"  {key:<3}{title:<40}{seconds:8.2f} s {len(ids) / seconds:12,.0f} cust/s   "
            f"{ratio:<14} n={runs}  {memory()}",
            flush=True,
        )
        assert got == len(ids), (key, got)
    headline = times["b"] / times["a"]
    excluded = times["b'"] / times["a'"]
    default = times["c"] / times["a"], times["c'"] / times["a'"]
    print(
        f"  headline: engine ALS path / bare implicit = {headline:.2f}x "
        f"(target <= {TARGET_RATIO}x: {'met' if headline <= TARGET_RATIO else 'NOT met'}); "
        f"with exclusion {excluded:.2f}x; default path {default[0]:.1f}x / {default[1]:.1f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--products", type=int, default=50_000)
    parser.add_argument("--score-customers", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--full", action="store_true", help="also score every customer")
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a long run is

    print(
        f"recommender benchmark: {args.customers:,} customers x {args.products:,} products, "
        f"seed {args.seed}  ({memory()})",
        flush=True,
    )
    started = time.perf_counter()
    orders, products = make_orders(args.customers, args.products, args.seed)
    generate = time.perf_counter() - started
    print(
        f"  generate   {generate:7.1f} s  {len(orders):,} order lines "
        f"({len(orders) / args.customers:.1f} per customer), {memory()}",
        flush=True,
    )

    clock = PhaseClock()
    engine = clock.instrument(Engine(EngineConfig()))
    started = time.perf_counter()
    engine.fit(orders, products=products)
    train = time.perf_counter() - started
    data = engine.data_
    print(
        f"  train      {train:7.1f} s  Engine.fit: {data.n_customers:,} customers with history, "
        f"{data.n_products:,} products, {data.purchased.nnz:,} pairs, {memory()}",
        flush=True,
    )
    other = train - sum(clock.seconds.values())
    for key, seconds in sorted(clock.seconds.items(), key=lambda kv: -kv[1]):
        print(
            f"    {key:<22}{seconds:7.1f} s  {seconds / train:4.0%}  rss after {clock.rss[key]:,.0f} MB"
        )
    print(f"    {'other (indexing, ...)':<22}{other:7.1f} s  {other / train:4.0%}")
    for mode, choice in engine.choices_.items():
        print(f"    mode {mode}: {choice.reason}")
    started = time.perf_counter()
    ALS().fit(data)
    als = time.perf_counter() - started
    print(f"  reference  {als:7.1f} s  ALS().fit alone on the full data, {memory()}", flush=True)
    del orders

    rng = np.random.default_rng(args.seed)
    size = min(args.score_customers, data.n_customers)
    sample = np.sort(rng.choice(data.n_customers, size, replace=False))
    score(engine, data.customer_ids[sample], args.repeats, f"median of {args.repeats}")
    if args.full:
        score(engine, data.customer_ids, 1, "full population, one run")
    print(f"\npeak memory {peak_mb():,.0f} MB (ru_maxrss); rss now {rss_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
