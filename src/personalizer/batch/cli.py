"""`personalizer score all`: the verb's options, registered by `personalizer.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from personalizer.terminal import HomeOption, console, fail


def score_all(
    out: Annotated[Path, typer.Option("--out", help="Output folder (Parquet, partitioned).")],
    engine: Annotated[
        str, typer.Option("--engine", help="local (this process) or spark (a PySpark job).")
    ] = "local",
    partitions: Annotated[
        int, typer.Option("--partitions", help="Customer partitions (unit of resumption).", min=1)
    ] = 16,
    n: Annotated[int, typer.Option("--n", help="Products per consenting customer.", min=1)] = 10,
    exclude_purchased: Annotated[
        bool, typer.Option("--exclude-purchased", help="Only products new to the customer.")
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Naive UTC moment (default: the interrupted run's, else now).",
            show_default=False,
        ),
    ] = None,
    master: Annotated[
        str, typer.Option("--master", help="Spark master URL (with --engine spark).")
    ] = "local[2]",
    restart: Annotated[
        bool, typer.Option("--restart", help="Discard a previous run in --out and start over.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Score every customer: segments, recommendations, churn/value, next send time (Parquet)."""
    from personalizer.batch.job import score_all as run
    from personalizer.config import Settings
    from personalizer.data.warehouse import WarehouseLocked
    from personalizer.tracking import TrackingError

    if engine not in ("local", "spark"):
        raise typer.BadParameter("must be local or spark", param_hint="--engine")
    try:
        result = run(
            Settings.from_env(home),
            out,
            engine=engine,  # type: ignore[arg-type]
            partitions=partitions,
            n=n,
            exclude_purchased=exclude_purchased,
            as_of=as_of,
            restart=restart,
            master=master,
        )
    except (TrackingError, WarehouseLocked, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    manifest = result.manifest
    skipped = manifest.partitions - len(result.scored)
    rate = result.customers / result.seconds if result.seconds > 0 else 0.0
    console.print(
        f"{manifest.customers:,} customers in {manifest.partitions} partitions → {out} "
        f"({len(result.scored)} scored now, {skipped} already finished; "
        f"{result.customers:,} customers in {result.seconds:.1f} s, {rate:,.0f}/s)"
    )
    models = ", ".join(f"{k} v{v}" if v else f"{k} (none)" for k, v in manifest.models.items())
    console.print(f"models: {models}; as of {manifest.as_of}")
