"""`personalizer report`: a plain function with Typer-annotated options, registered by `cli.py`."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from personalizer.config import Settings
from personalizer.terminal import HomeOption, fail


def report(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="HTML file to write (default: HOME/report.html)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only emails sent from this moment (ISO 8601, UTC)."),
    ] = None,
    attribution_days: Annotated[
        float,
        typer.Option(
            "--attribution-days",
            help="Orders up to this many days after a click on a tagged link count for its "
            "campaign (last click wins).",
        ),
    ] = 3.0,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the report in the default browser.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """Write the self-contained HTML report: KPIs, model quality, segments, funnels, experiments."""
    import pandas as pd

    from personalizer.report.build import write_report
    from personalizer.report.tables import fmt
    from personalizer.tracking import TrackingError

    settings = Settings.from_env(home)
    try:
        moment = None
        if since:
            moment = pd.Timestamp(since)
            if moment.tzinfo is not None:
                moment = moment.tz_convert("UTC").tz_localize(None)
        result = write_report(settings, out, since=moment, attribution_days=attribution_days)
    except (ValueError, TrackingError) as exc:
        raise fail(str(exc)) from exc
    total = result.total
    typer.echo(
        f"report written to {result.path} ({result.size_bytes / 1024:,.0f} KiB): "
        f"{fmt(total['sends'], 'int')} sends, human open rate "
        f"{fmt(total['human_open_rate'], 'pct')}, CTR {fmt(total['ctr'], 'pct')}, "
        f"{fmt(total['conversions'], 'int')} conversions, attributed revenue "
        f"{fmt(total['revenue'], 'money')}"
    )
    if result.empty_sections:
        typer.echo(f"no data yet for: {', '.join(result.empty_sections)}")
    if open_browser:
        webbrowser.open(result.path.resolve().as_uri())
