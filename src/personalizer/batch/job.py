"""`personalizer score all`: one run over every customer, resumable, with either engine.

Resumability rule: the folder's `manifest.json` names the champion versions, `as_of`, the number of
partitions, `n` and `exclude_purchased` of the run that wrote it. A re-run with the same values
scores only the partitions that are not finished (listed in the manifest with their files in
place); without `--as-of` it reuses the manifest's `as_of`, so a re-run after an interruption
needs no option. A re-run whose values differ (a new champion, another `n`, ...) is refused with
the differences named, unless `restart` is given, which empties the folder and starts over. The
engine may change between runs: both write the same layout.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd

from personalizer.batch.models import (
    champion_versions,
    load_models,
    prepare_customers,
)
from personalizer.batch.output import (
    Manifest,
    ManifestMismatch,
    clear,
    finished_partitions,
    read_manifest,
    write_manifest,
)
from personalizer.batch.scoring import partition_of
from personalizer.config import Settings

log = logging.getLogger(__name__)

Engine = Literal["local", "spark"]


@dataclass(frozen=True)
class BatchResult:
    """What a run did."""

    out: Path
    manifest: Manifest
    scored: list[int]  # partitions computed by this run (the others were finished before)
    customers: int  # customers in the scored partitions
    seconds: float


def score_all(
    settings: Settings,
    out: Path,
    *,
    engine: Engine = "local",
    partitions: int = 16,
    n: int = 10,
    exclude_purchased: bool = False,
    as_of: str | pd.Timestamp | None = None,
    restart: bool = False,
    master: str = "local[2]",
) -> BatchResult:
    """Score every customer of the warehouse into `out` (see the module docstring).

    Args:
        settings: data home (warehouse and registry); `show_progress` draws the bar.
        out: output folder (`personalizer.batch.output` describes it).
        engine: "local" (this process) or "spark" (a PySpark job on `master`).
        partitions: customer partitions (the unit of resumption).
        n: products per consenting customer.
        exclude_purchased: recommend only products the customer never bought.
        as_of: naive UTC moment (default: the manifest's when resuming, else now).
        restart: discard a previous run in `out` that does not match, instead of refusing.
        master: Spark master URL for `engine="spark"`.
    """
    if engine not in ("local", "spark"):
        raise ValueError(f"engine must be 'local' or 'spark', got {engine!r}")
    started = time.perf_counter()
    out = Path(out)
    previous = None if restart else read_manifest(out)
    moment = _as_of(as_of, previous)
    versions = champion_versions(settings)
    manifest = Manifest(versions, moment.isoformat(), partitions, n, exclude_purchased, engine)
    if previous is not None and previous.key() != manifest.key():
        raise ManifestMismatch(_differences(out, previous, manifest))
    if restart:
        clear(out)
    done = finished_partitions(out, previous) if previous is not None else set()
    todo = [k for k in range(partitions) if k not in done]
    clear(out, todo)  # half-written leftovers of an interrupted run
    manifest.finished = sorted(done)
    write_manifest(out, manifest)
    log.info("batch scoring %s: %d partitions to score, %d finished", out, len(todo), len(done))
    customers = prepare_customers(settings, versions, moment)
    customers["part"] = partition_of(customers["customer_id"], partitions)
    manifest.customers = len(customers)
    todo_rows = customers[customers["part"].isin(todo)]
    if todo:
        models = load_models(settings, versions, moment, n, exclude_purchased)

        def finished(part: int) -> None:
            manifest.finished.append(part)
            write_manifest(out, manifest)

        if engine == "spark":
            from personalizer.batch.spark import run_spark

            run_spark(models, todo_rows, todo, out, finished, master, settings.show_progress)
        else:
            from personalizer.batch.local import run_local

            run_local(models, todo_rows, todo, out, finished, settings.show_progress)
    manifest.completed_at = datetime.now(UTC).replace(tzinfo=None).isoformat()
    write_manifest(out, manifest)
    seconds = time.perf_counter() - started
    return BatchResult(out, manifest, todo, len(todo_rows), seconds)


def _as_of(given: str | pd.Timestamp | None, previous: Manifest | None) -> pd.Timestamp:
    if given is not None:
        moment = pd.Timestamp(given)
        if moment.tzinfo is not None:
            moment = moment.tz_convert("UTC").tz_localize(None)
        return moment
    if previous is not None:
        return pd.Timestamp(previous.as_of)
    return pd.Timestamp.now("UTC").tz_localize(None).floor("s")


def _differences(out: Path, previous: Manifest, current: Manifest) -> str:
    old, new = previous.key(), current.key()
    diffs = [f"{k}: {old[k]!r} → {new[k]!r}" for k in new if old.get(k) != new[k]]
    return (
        f"{out} holds a run made with other models or options ({'; '.join(diffs)}); "
        "use --restart to discard it, or another --out folder"
    )
