"""Soak: the decision service under sustained mixed load, with its memory watched (issue 8).

`personalizer serve` (the CLI's default workers, or `--workers`) on a trained data home takes for
`--seconds` (300 by default):

- wrk at `--connections` connections, each request drawn at random: `decide` for a random
  customer, template and day (every decision computed and rendered) or `recommend` for a random
  customer and strategy;
- a writer posting a batch of `add_to_cart` / `product_view` events every 100 ms to `/v1/events`
  with the bearer token (each batch also updates the live segment memberships);
- every 10 s, the RSS and PSS of the service summed over the master, its workers and helpers
  (`/proc/<pid>/smaps_rollup`).

It prints requests, errors (non-2xx answers, connection errors and timeouts, failed event posts),
events accepted, p50/p99, and the memory at start, middle and end with its growth after the
warm-up. Exit code 1 on any error, or when PSS grew more than `--max-growth` (10%) from the end of
the warm-up to the end. The shop: `--home` (trained models), else a 2,000-customer synthetic shop
trained here as in `bench_service.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_service: a script beside this
from bench_service import (
    consenting,
    free_port,
    memory_mb,
    prepare_home,
    start,
    stop,
    wait_ready,
)

from personalizer.decisions.decider import STRATEGIES, TEMPLATES

TOKEN = "soak-token"
SAMPLE_SECONDS = 10.0
EVENT_SECONDS = 0.1


def mixed_script(path: Path, ids: list[str]) -> Path:
    """A wrk script: half `decide` (random customer, template, day), half `recommend`."""
    listed = ",".join(json.dumps(i) for i in ids)
    templates = ",".join(json.dumps(t) for t in TEMPLATES)
    strategies = ",".join(json.dumps(s) for s in STRATEGIES)
    path.write_text(
        f"ids = {{{listed}}}\n"
        f"templates = {{{templates}}}\n"
        f"strategies = {{{strategies}}}\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  local id = ids[math.random(#ids)]\n"
        "  if math.random() < 0.5 then\n"
        '    local day = string.format("20%02d-%02d-%02dT12:00:00", math.random(30, 60), '
        "math.random(1, 12), math.random(1, 28))\n"
        '    local body = \'{"customer_id":"\' .. id .. \'","template":"\' .. '
        'templates[math.random(#templates)] .. \'","campaign":"soak","now":"\' .. day .. '
        "'\"}'\n"
        '    return wrk.format(nil, "/v1/decide", nil, body)\n'
        "  end\n"
        '  local body = \'{"customer_id":"\' .. id .. \'","strategy":"\' .. '
        "strategies[math.random(#strategies)] .. '\"}'\n"
        '  return wrk.format(nil, "/v1/recommend", nil, body)\n'
        "end\n"
    )
    return path


def run_wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
    done = subprocess.run([*command, "-s", str(script), url], capture_output=True, text=True)
    out = done.stdout
    requests = re.search(r"(\d+) requests in", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "exit": done.returncode,
        "requests": int(requests.group(1)) if requests else 0,
        "rps": _float(re.search(r"Requests/sec:\s+([\d.]+)", out)),
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)),
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(g) for g in socket_errors.groups()) if socket_errors else 0,
        "raw": out + done.stderr,
    }


def _float(match: re.Match[str] | None) -> float:
    return float(match.group(1)) if match else float("nan")


def _ms(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


@dataclass
class EventWriter:
    """Posts a batch of events every 100 ms until stopped; counts what was accepted or failed."""

    url: str
    ids: list[str]
    products: list[str]
    batch: int
    posted: int = 0
    accepted: int = 0
    failures: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        rng = random.Random(11)
        with httpx.Client(timeout=10, headers=headers) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                now = datetime.now(UTC).isoformat()
                events = [
                    {
                        "event_id": f"soak-{uuid.uuid4().hex}",
                        "customer_id": rng.choice(self.ids),
                        "type": rng.choice(["add_to_cart", "product_view"]),
                        "occurred_at": now,
                        "product_id": rng.choice(self.products),
                    }
                    for _ in range(self.batch)
                ]
                began = time.perf_counter()
                try:
                    response = client.post(self.url, json={"events": events})
                    self.latencies_ms.append((time.perf_counter() - began) * 1000)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                    else:
                        body = response.json()
                        self.accepted += int(body["accepted"])
                        if body.get("rejected_total"):
                            self.failures.append(f"rejected: {body['rejected'][:2]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.posted += len(events)
                next_at += EVENT_SECONDS
                self.stop.wait(max(0.0, next_at - time.monotonic()))


@dataclass
class MemorySampler:
    """RSS and PSS of the service's process tree every 10 s."""

    pid: int
    samples: list[tuple[float, float, float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.monotonic()
        while True:
            rss, pss, processes = memory_mb(self.pid)
            self.samples.append((time.monotonic() - started, rss, pss, processes))
            if self.stop.wait(SAMPLE_SECONDS):
                rss, pss, processes = memory_mb(self.pid)
                self.samples.append((time.monotonic() - started, rss, pss, processes))
                return


def products_of(home: Path) -> list[str]:
    from personalizer.config import Settings
    from personalizer.data.warehouse import Warehouse

    with Warehouse(Settings(home=home).warehouse_path, read_only=True) as wh:
        frame = wh.query("SELECT product_id FROM products ORDER BY 1")
    return frame["product_id"].astype(str).tolist()


def soak(args: argparse.Namespace, home: Path, work: Path) -> int:
    ids = consenting(home)
    products = products_of(home)
    port = free_port()
    env = {**os.environ, "PERSONALIZER_HOME": str(home), "PERSONALIZER_API_TOKEN": TOKEN}
    env.setdefault("PERSONALIZER_THREADS", "1")
    command = [sys.executable, "-m", "personalizer", "serve", "--port", str(port)]
    command += ["--home", str(home), "--workers", str(args.workers)]
    base = f"http://127.0.0.1:{port}"
    process = start(command, env)
    try:
        ready = wait_ready(base + "/readyz")
        print(f"personalizer serve --workers {args.workers or 'default'}: ready in {ready:.1f} s")
        sampler = MemorySampler(process.pid)
        writer = EventWriter(base + "/v1/events", ids, products, args.events_per_batch)
        threads = [threading.Thread(target=t.run, daemon=True) for t in (sampler, writer)]
        for thread in threads:
            thread.start()
        script = mixed_script(work / "mixed.lua", ids)
        load = run_wrk(base + "/", script, args.seconds, args.connections)
        writer.stop.set()
        sampler.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        alive = process.poll() is None
        try:
            still_ready = httpx.get(base + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            still_ready = False
    finally:
        stop(process)
    return report(args, load, writer, sampler, alive and still_ready)


def report(
    args: argparse.Namespace,
    load: dict[str, Any],
    writer: EventWriter,
    sampler: MemorySampler,
    healthy: bool,
) -> int:
    if load["exit"] != 0 or not load["requests"]:
        print(load["raw"])
    print(
        f"load: {load['requests']:,} requests in {args.seconds} s ({load['rps']:,.0f}/s, decide and "
        f"recommend, {args.connections} connections); p50 {load['p50_ms']:.1f} ms, "
        f"p99 {load['p99_ms']:.1f} ms; non-2xx {load['non_2xx']}, connection errors and "
        f"timeouts {load['socket_errors']}"
    )
    p99_events = (
        statistics.quantiles(writer.latencies_ms, n=100)[98]
        if len(writer.latencies_ms) >= 2
        else float("nan")
    )
    print(
        f"events: {writer.accepted:,} accepted of {writer.posted:,} posted in batches of "
        f"{args.events_per_batch} every {EVENT_SECONDS * 1000:.0f} ms; p99 of a post "
        f"{p99_events:.1f} ms; failed posts {len(writer.failures)}"
    )
    for failure in writer.failures[:5]:
        print(f"  {failure}")
    samples = sampler.samples
    warm = next((s for s in samples if s[0] >= args.warmup), samples[-1])
    start_, middle, end = samples[0], samples[len(samples) // 2], samples[-1]
    for label, (at, rss, pss, processes) in (
        ("start", start_),
        ("after warm-up", warm),
        ("middle", middle),
        ("end", end),
    ):
        print(
            f"memory {label:13s} (t={at:5.0f} s, {processes} processes): RSS {rss:7,.0f} MB, "
            f"PSS {pss:7,.0f} MB"
        )
    print("PSS every 10 s (MB): " + ", ".join(f"{s[2]:,.0f}" for s in samples))
    growth = (end[2] - warm[2]) / warm[2] if warm[2] else float("inf")
    print(
        f"PSS growth after the {args.warmup:.0f} s warm-up: {growth:+.1%} "
        f"(RSS {(end[1] - warm[1]) / warm[1]:+.1%}, from start {(end[2] - start_[2]) / start_[2]:+.1%}); "
        f"limit {args.max_growth:.0%}"
    )
    errors = load["non_2xx"] + load["socket_errors"] + len(writer.failures) + (load["exit"] != 0)
    ok = errors == 0 and healthy and load["requests"] > 0 and growth <= args.max_growth
    print(
        f"soak {'passed' if ok else 'FAILED'}: {errors} errors, service "
        f"{'up and ready' if healthy else 'NOT ready at the end'}"
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="a data home with trained models")
    parser.add_argument("--seconds", type=int, default=300, help="length of the soak")
    parser.add_argument("--workers", type=int, default=0, help="serve --workers (0: the default)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--events-per-batch", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before growth counts")
    parser.add_argument("--max-growth", type=float, default=0.10, help="PSS growth allowed")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed (make wrk)")
        return 2
    args.warmup = min(args.warmup, args.seconds / 2)  # a short check run still measures growth
    with tempfile.TemporaryDirectory(prefix="soak-service-") as tmp:
        work = Path(tmp)
        home = prepare_home(args.home, work)
        if args.home is not None:
            # the soak's events must not pile up in the given home: serve a copy of it
            shutil.copytree(home, work / "home", ignore=shutil.ignore_patterns("synthetic"))
            home = work / "home"
        return soak(args, home, work)


if __name__ == "__main__":
    sys.exit(main())
