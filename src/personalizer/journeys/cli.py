"""`personalizer journeys`: run the flows (a scheduler's call), read the queue, validate, replay."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from personalizer.config import Settings
from personalizer.terminal import HomeOption, console
from personalizer.terminal import fail as _fail

if TYPE_CHECKING:
    import pandas as pd

    from personalizer.journeys.definitions import FlowSet

app = typer.Typer(
    help="Journeys: flows with triggers, steps, exits and frequency caps; the send queue.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
FlowsOption = Annotated[
    Path | None,
    typer.Option("--flows", help="A flows YAML file (default: the shipped flows).", dir_okay=False),
]
PerWeekOption = Annotated[
    int | None,
    typer.Option("--per-week", min=1, help="Cap: emails per customer in any 7 days (file's)."),
]
PerDayOption = Annotated[
    int | None,
    typer.Option("--per-day", min=1, help="Cap: emails per customer per local day (file's)."),
]
HoldoutOption = Annotated[
    float | None,
    typer.Option("--holdout", min=0.0, max=1.0, help="Global holdout share (file's)."),
]


@contextmanager
def _user_errors() -> Iterator[None]:
    """Expected failures (bad files, bad values, a locked store) end with a message and exit 2."""
    from personalizer.data.warehouse import WarehouseLocked

    try:
        yield
    except (WarehouseLocked, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc


def _moment(text: str, option: str) -> pd.Timestamp:
    """A timestamp option as naive UTC; a clear error naming the option and the value."""
    import pandas as pd

    try:
        moment = pd.Timestamp(text)
    except (ValueError, TypeError):
        moment = pd.NaT
    if moment is pd.NaT or pd.isna(moment):
        raise _fail(
            f"{option}: not a timestamp: {text!r} (expected ISO 8601, e.g. 2026-06-01T10:00)"
        )
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC").tz_localize(None)
    return moment


def _duration(text: str, option: str) -> timedelta:
    from personalizer.journeys.definitions import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise _fail(f"{option}: {exc}") from exc


def _flows(
    path: Path | None, per_week: int | None, per_day: int | None, holdout: float | None
) -> FlowSet:
    from personalizer.journeys.definitions import default_flows, load_flows

    flows = default_flows() if path is None else load_flows(path)
    caps = flows.caps.model_copy(
        update={k: v for k, v in (("per_week", per_week), ("per_day", per_day)) if v is not None}
    )
    update: dict[str, object] = {"caps": caps}
    if holdout is not None:
        update["holdout"] = holdout
    return flows.model_copy(update=update)


def _write(frame: pd.DataFrame, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise _fail(f"--out: {out} must end in .csv or .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)


def _print_table(title: str, frame: pd.DataFrame) -> None:
    table = Table(title=title)
    from pandas.api.types import is_numeric_dtype

    for column in frame.columns:
        numeric = is_numeric_dtype(frame[column])
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:,}" if isinstance(v, Integral) else str(v) for v in row))
    console.print(table)


@app.command("run")
def run(
    now: Annotated[
        str,
        typer.Option("--now", help="The run's moment (ISO 8601; UTC unless an offset is given)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the rows queued by this run (.csv or .parquet)."),
    ] = None,
    flows: FlowsOption = None,
    per_week: PerWeekOption = None,
    per_day: PerDayOption = None,
    holdout: HoldoutOption = None,
    late_arrival: Annotated[
        str, typer.Option(help="Re-read triggers this far before the previous run.")
    ] = "1d",
    send_time_model: Annotated[
        bool, typer.Option(help="Use the send-time champion for `send_time: model` steps.")
    ] = True,
    home: HomeOption = None,
) -> None:
    """Advance every journey to NOW and append the due emails to the queue (idempotent)."""
    from personalizer.journeys.runs import run_journeys

    moment = _moment(now, "--now")
    lateness = _duration(late_arrival, "--late-arrival")
    settings = Settings.from_env(home)
    with _user_errors():
        summary = run_journeys(
            settings,
            moment,
            _flows(flows, per_week, per_day, holdout),
            late_arrival=lateness,
            send_time_model=send_time_model,
        )
    table = summary.table()
    entered = summary.entered
    _print_table(
        f"journeys at {moment:%Y-%m-%d %H:%M} (triggers since {summary.since:%Y-%m-%d %H:%M})",
        table,
    )
    console.print("entered: " + ", ".join(f"{f} {n:,}" for f, n in entered.items()))
    if summary.exited:
        console.print(
            "exited: " + ", ".join(f"{f} {r} {n:,}" for (f, r), n in sorted(summary.exited.items()))
        )
    queued = summary.queued
    console.print(f"{len(queued):,} emails queued in {summary.seconds:.1f} s")
    if out is not None:
        _write(queued, out)
        console.print(f"queued rows → {out}")


@app.command("queue")
def queue(
    since: Annotated[
        str | None, typer.Option("--since", help="Only rows queued at or after this moment.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the rows (.csv or .parquet).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Read the send queue."""
    from personalizer.journeys.runs import read_queue

    moment = _moment(since, "--since") if since is not None else None
    with _user_errors():
        rows = read_queue(Settings.from_env(home), moment)
    if out is not None:
        _write(rows.drop(columns=["queued_at"]), out)
        console.print(f"{len(rows):,} queued emails → {out}")
        return
    counts = rows.groupby(["flow", "step"]).size().rename("queued").reset_index()
    _print_table("send queue", counts.astype({"queued": int}))
    console.print(f"{len(rows):,} queued emails")


@app.command("validate")
def validate(
    path: Annotated[Path, typer.Argument(help="A flows YAML file.", dir_okay=False)],
) -> None:
    """Check a flows file: fields, durations, segments and templates, with the line of any error."""
    from personalizer.journeys.definitions import FlowDefinitionError, format_duration, load_flows

    try:
        flows = load_flows(path)
    except FlowDefinitionError as exc:
        raise _fail(str(exc)) from exc
    except OSError as exc:
        raise _fail(f"{path}: {exc.strerror or exc}") from exc
    for flow in flows.flows:
        steps = ", ".join(
            f"{n} +{format_duration(o)}" for n, o in zip(flow.step_names, flow.offsets, strict=True)
        )
        state = "" if flow.enabled else " (disabled)"
        console.print(f"{flow.name}{state}: priority {flow.priority}, {steps}")
    caps = flows.caps
    console.print(
        f"{path}: {len(flows.flows)} flows OK; caps {caps.per_week}/week, {caps.per_day}/day, "
        f"holdout {flows.holdout:g}"
    )


@app.command("replay")
def replay(
    start: Annotated[
        str | None, typer.Option("--start", help="First day reported (default: the data's first).")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", help="End of the replay (default: the day after the data's last)."),
    ] = None,
    every: Annotated[
        str, typer.Option("--every", help="Time between two runs of the engine.")
    ] = "1h",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the day-by-day table (.csv or .parquet).")
    ] = None,
    sends: Annotated[
        Path | None, typer.Option("--sends", help="Write every step decided, with its outcome.")
    ] = None,
    consent: Annotated[
        str,
        typer.Option(
            help="historical (unsubscribers consented until then), recorded, or all (a what-if for order-only data)."
        ),
    ] = "historical",
    flows: FlowsOption = None,
    per_week: PerWeekOption = None,
    per_day: PerDayOption = None,
    holdout: HoldoutOption = None,
    home: HomeOption = None,
) -> None:
    """Replay the flows over the warehouse's history: what they would have sent, day by day."""
    from personalizer.journeys.replay import replay as run_replay

    if consent not in ("historical", "recorded", "all"):
        raise _fail(f"--consent: expected historical, recorded or all, got {consent!r}")
    first = _moment(start, "--start") if start is not None else None
    last = _moment(end, "--end") if end is not None else None
    period = _duration(every, "--every")
    settings = Settings.from_env(home)
    with _user_errors():
        result = run_replay(
            settings,
            _flows(flows, per_week, per_day, holdout),
            start=first,
            end=last,
            every=period,
            consent=consent,  # type: ignore[arg-type]
            progress=settings.show_progress and sys.stderr.isatty(),
        )
    days = max(result.daily["day"].nunique(), 1)
    totals = result.totals()
    totals.insert(3, "queued/day", (totals["queued"] / days).round(1))
    _print_table(f"replay {result.start:%Y-%m-%d} → {result.end:%Y-%m-%d}, every {every}", totals)
    console.print(
        f"caps: at most {result.max_per_week} emails per customer in any 7 days, "
        f"{result.max_per_day} per local day; {result.ticks:,} runs in {result.seconds:.1f} s"
    )
    if out is not None:
        _write(result.daily, out)
        console.print(f"day-by-day table → {out}")
    if sends is not None:
        _write(result.decided, sends)
        console.print(f"steps decided → {sends}")
