"""`personalizer customers`: erase, export and find one customer (thin: the library does the work)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from personalizer.config import Settings
from personalizer.terminal import HomeOption, console

app = typer.Typer(
    help="One customer's data: erase it (right to erasure), export it (subject access), find it.",
    no_args_is_help=True,
)
IdArgument = Annotated[str, typer.Argument(help="The customer_id.")]


@app.command("erase")
def erase(
    customer_id: IdArgument,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    home: HomeOption = None,
) -> None:
    """Remove the customer from every store of the data home; record it without their data."""
    from personalizer.privacy.erasure import ErasureBlocked, erase_customer

    settings = Settings.from_env(home, show_progress=False)
    if not yes:
        typer.confirm(f"Erase customer {customer_id} from {settings.home}? This cannot be undone",
                      abort=True)  # fmt: skip
    try:
        report = erase_customer(settings, customer_id)
    except ErasureBlocked as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    table = Table("store", "removed")
    for store, count in report.removed.items():
        table.add_row(store, f"{count:,}")
    console.print(table)
    for note in report.notes:
        console.print(note)
    status = "erased" if report.total else "nothing found (already erased or unknown)"
    console.print(f"{status}; audit: pseudonym {report.pseudonym[:16]}… in privacy/audit.jsonl")


@app.command("export")
def export(
    customer_id: IdArgument,
    out: Annotated[
        Path | None, typer.Option("--out", help="JSON file to write (default: standard output).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Everything held about the customer, as JSON."""
    from personalizer.privacy.export import export_customer

    data = export_customer(Settings.from_env(home, show_progress=False), customer_id)
    text = json.dumps(data, indent=1, default=str)
    if out is None:
        sys.stdout.write(text + "\n")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(
        f"{len(data['orders']):,} order lines, {len(data['events']):,} events, "
        f"{len(data['live_events']):,} live events → {out}"
    )


@app.command("find")
def find(
    customer_id: IdArgument,
    email: Annotated[str | None, typer.Option("--email", help="Also look for this email.")] = None,
    home: HomeOption = None,
) -> None:
    """Every file (and table or column) of the data home where the id or email still appears."""
    from personalizer.privacy.traces import find_traces

    settings = Settings.from_env(home, show_progress=False)
    traces = find_traces(settings.home, [customer_id, *([email] if email else [])])
    for trace in traces:
        console.print(f"{trace.path.relative_to(settings.home)}  {trace.where}  {trace.needle}")
    console.print(f"{len(traces)} places")
    if traces:
        raise typer.Exit(1)
