"""The tracking store: its URI, MLflow sessions and clients, experiments, and errors."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from personalizer.config import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient


CHAMPION = "champion"
DEFAULT_EXPERIMENT = "recommenders"
DEFAULT_METRIC = "ndcg@10"
MODEL_NAME = "recommender"
METRIC_TAG_PREFIX = "metric."
PYFUNC_CODE = Path(__file__).resolve().parents[1] / "models" / "recommender_pyfunc.py"
_QUIET_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


class TrackingError(RuntimeError):
    """The tracking store or registry refused, is unreachable, or holds no such thing."""


@dataclass(frozen=True)
class PromotionDecision:
    """The outcome of the promotion gate, with the numbers it compared."""

    promoted: bool
    reason: str
    champion_version: str | None
    champion_metric: float | None
    candidate_metric: float | None


def mlflow_key(name: str) -> str:
    """The name MLflow will accept for a metric, parameter or tag: "ndcg@10" -> "ndcg_at_10"."""
    return name.replace("@", "_at_")


def display_key(key: str) -> str:
    """The inverse of `mlflow_key`: "ndcg_at_10" -> "ndcg@10"."""
    return key.replace("_at_", "@")


def artifact_root(settings: Settings) -> Path:
    """Where experiment artifacts are stored: `<home>/mlartifacts`."""
    return settings.home / "mlartifacts"


# --------------------------------------------------------------------------- plumbing


@contextmanager
def _errors(action: str, uri: str | None = None) -> Iterator[None]:
    """Turn MLflow, database and file errors into a `TrackingError` that says what failed."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except TrackingError:
        raise
    except (MlflowException, OSError) as exc:
        where = f" (tracking store {uri})" if uri else ""
        raise TrackingError(f"could not {action}{where}: {_first_line(exc)}") from exc
    except Exception as exc:
        # sqlalchemy/alembic errors from a corrupt or foreign database file
        if type(exc).__module__.split(".")[0] in {"sqlalchemy", "alembic", "sqlite3"}:
            where = f" (tracking store {uri})" if uri else ""
            raise TrackingError(
                f"could not {action}{where}: the store is unreadable or corrupt: {_first_line(exc)}"
            ) from exc
        raise


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _tracking_uri(settings: Settings) -> str:
    """The store URI, making the data home so SQLite can create the file."""
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(
            f"data home {settings.home} is not a usable folder for the tracking store: {exc}"
        ) from exc
    return settings.mlflow_uri


@contextmanager
def _quiet(settings: Settings) -> Iterator[None]:
    """Silence MLflow's progress bars, URL banners and INFO chatter for a while.

    Our own progress bars (`show_progress`) cover the long steps; MLflow's artifact bars would
    only repeat them, line by line, in logs and CI output.
    """
    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    mlflow_logger.setLevel(max(level, logging.WARNING))
    saved = {name: os.environ.get(name) for name in _QUIET_ENV}
    os.environ.update(_QUIET_ENV)
    try:
        yield
    finally:
        mlflow_logger.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _session(settings: Settings) -> Iterator[str]:
    """Point MLflow's fluent API at this data home for the block, then restore the old URI."""
    import mlflow

    uri = _tracking_uri(settings)
    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    with _quiet(settings):
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it


def _client(settings: Settings) -> MlflowClient:
    """A client for this data home's tracking store and registry, checked to be readable."""
    from mlflow import MlflowClient

    uri = _tracking_uri(settings)
    with _errors("open the tracking store", uri):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # fail here, readably, on a corrupt file
    return client


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "-", name).strip("-.") or "experiment"


def ensure_experiment(settings: Settings, name: str) -> str:
    """The id of experiment `name`, created with its artifacts under `<home>/mlartifacts`.

    Args:
        settings: Where the tracking store lives.
        name: Experiment name.

    Returns:
        The experiment id.

    Raises:
        TrackingError: When the store is unusable or the experiment was deleted.
    """
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    with _errors(f"create experiment {name!r}", settings.mlflow_uri):
        found = client.get_experiment_by_name(name)
        if found is None:
            location = (artifact_root(settings) / _slug(name)).resolve()
            try:
                return client.create_experiment(name, artifact_location=location.as_uri())
            except MlflowException:
                found = client.get_experiment_by_name(name)  # created meanwhile by another process
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise TrackingError(
                f"experiment {name!r} is deleted; restore it in MLflow or choose another name"
            )
        return str(found.experiment_id)
