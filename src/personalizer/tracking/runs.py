"""MLflow runs and what is logged into them: parameters, metrics, tables, figures, text."""

from __future__ import annotations

import logging
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
    _client,
    _errors,
    _session,
    ensure_experiment,
    mlflow_key,
)

logger = logging.getLogger(__name__)

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
    write to this run. If the block raises, the run ends FAILED and the model versions it
    registered are withdrawn (when the store still answers; the block's error is raised either way).

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
        try:
            if params:
                with _errors("log parameters", uri):
                    mlflow.log_params({mlflow_key(str(k)): v for k, v in params.items()})
            yield run
        except BaseException:
            _fail_run(settings, run.info.run_id, uri)
            raise
        with _errors("end the run", uri):
            mlflow.end_run(status="FINISHED")


def _fail_run(settings: Settings, run_id: str, uri: str) -> None:
    """End a run FAILED and withdraw the model versions it registered, if the store answers.

    A registered version must come from a finished run, so that the registry never offers a
    model whose training failed after it was registered. The caller's error is the one that
    matters: a store that does not answer here is only logged.
    """
    import mlflow

    try:
        mlflow.end_run(status="FAILED")  # pops the run first, so no run stays active
        client = _client(settings)
        for version in client.search_model_versions(f"run_id = '{run_id}'"):
            # version searches leave `aliases` empty; the registered model carries them
            aliases = client.get_registered_model(version.name).aliases or {}
            if str(version.version) in {str(v) for v in aliases.values()}:
                logger.warning(
                    "run %s failed; %s version %s keeps its alias", run_id, *_id(version)
                )
                continue
            client.delete_model_version(version.name, version.version)
            logger.warning("run %s failed: withdrew %s version %s", run_id, *_id(version))
    except Exception as exc:
        logger.warning("could not mark run %s FAILED in %s: %s", run_id, uri, exc)


def _id(version: Any) -> tuple[str, str]:
    return str(version.name), str(version.version)


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
