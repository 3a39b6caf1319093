"""What the command-line modules share: the consoles, the `--home` option, a clean failure.

`cli.py` and each package's own `cli.py` (journeys, experiments, privacy, batch, report) import
these, so every verb prints and fails the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# Tables are wide; off a terminal (CI logs, pipes) rich would assume 80 columns and truncate them.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home", help="Data home (default: $PERSONALIZER_HOME or ./data).", show_default=False
    ),
]


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr; the exit (code 2) for the caller to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code=2)
