"""MLflow runs and what is logged into them: parameters, metrics, tables, figures, text."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from personalizer.config import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import ActiveRun

from personalizer.tracking.store import (
    TrackingError,
    _errors,
    _session,
    ensure_experiment,
    mlflow_key,
)

# --------------------------------------------------------------------------- runs


@contextmanager
def start_run(
    settings: Settings,
    experiment: str,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[ActiveRun]:
    """Open an MLflow run in `experiment` (created if needed) and log `params`.

    Inside the block, `log_metrics`, `log_table`, `log_figure`, `log_text` and `log_recommender`
    write to this run. The run ends FAILED if the block raises.

    Args:
        settings: Where the tracking store lives.
        experiment: Experiment name.
        run_name: Optional human name for the run.
        params: Parameters to log (values are stored as strings).
        tags: Extra run tags.

    Yields:
        The active run (`run.info.run_id`, `run.info.artifact_uri`).
    """
    import mlflow

    experiment_id = ensure_experiment(settings, experiment)
    with _session(settings) as uri:
        with _errors(f"start a run in experiment {experiment!r}", uri):
            run = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=run_name,
                tags=dict(tags or {}),
                nested=mlflow.active_run() is not None,
            )
        status = "FAILED"
        try:
            if params:
                with _errors("log parameters", uri):
                    mlflow.log_params({mlflow_key(str(k)): v for k, v in params.items()})
            yield run
            status = "FINISHED"
        finally:
            with _errors("end the run", uri):
                mlflow.end_run(status=status)


def _active_run() -> ActiveRun:
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise TrackingError("no active run: call this inside `with tracking.start_run(...)`")
    return run


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log numeric metrics to the active run ("ndcg@10" is stored as "ndcg_at_10")."""
    import mlflow

    _active_run()
    with _errors("log metrics"):
        mlflow.log_metrics({mlflow_key(k): float(v) for k, v in metrics.items()}, step=step)


def _markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pandas' `to_markdown` needs tabulate)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join(lines) + "\n"


def log_table(frame: pd.DataFrame, name: str) -> None:
    """Log a table to the active run as `tables/<name>.md` and `tables/<name>.csv`."""
    import mlflow

    _active_run()
    with _errors(f"log table {name!r}"):
        mlflow.log_text(_markdown(frame), f"tables/{name}.md")
        mlflow.log_text(frame.to_csv(index=False), f"tables/{name}.csv")


def log_figure(figure: Figure, name: str) -> None:
    """Log a matplotlib figure to the active run as `figures/<name>` (".png" unless given)."""
    import mlflow

    _active_run()
    filename = name if Path(name).suffix else f"{name}.png"
    with _errors(f"log figure {name!r}"):
        mlflow.log_figure(figure, f"figures/{filename}")


def log_text(text: str, name: str) -> None:
    """Log `text` to the active run as the artifact file `name` (e.g. "notes/report.md")."""
    import mlflow

    _active_run()
    with _errors(f"log text {name!r}"):
        mlflow.log_text(text, name)
