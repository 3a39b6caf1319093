"""The tracking store: its URI, MLflow sessions and clients, experiments, and errors."""

from __future__ import annotations

import hashlib
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
# MLmodel metadata: {artifact: {relative path: sha256}} of each model folder, checked on load.
CHECKSUMS_KEY = "personalizer_checksums"
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
        raise TrackingError(f"could not {action}{_where(uri, action)}: {_reason(exc)}") from exc
    except Exception as exc:
        # sqlalchemy/alembic errors from a corrupt or foreign database file
        if type(exc).__module__.split(".")[0] in {"sqlalchemy", "alembic", "sqlite3"}:
            reason = _reason(exc)
            if reason == _first_line(exc):
                reason = f"the store is unreadable or corrupt: {reason}"
            raise TrackingError(f"could not {action}{_where(uri, action)}: {reason}") from exc
        raise


def _where(uri: str | None, action: str = "") -> str:
    """The " (tracking store URI)" of a message; the active store when the caller names none."""
    if uri is not None and uri in action:
        return ""
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    return f" (tracking store {uri})" if uri else ""


# What a store that does not answer says, deep inside a long HTTP or database error.
_UNREACHABLE = re.compile(
    r"\[Errno -?\d+\] [^\"')(]+|Connection refused|timed out|Name or service not known"
    r"|unable to open database file|database is locked|attempt to write a readonly database",
    re.IGNORECASE,
)


def _reason(exc: BaseException) -> str:
    """The first line of an error; for a store that does not answer, just why."""
    line = _first_line(exc)
    found = _UNREACHABLE.search(line)
    if found is None:
        return line
    return f"the store does not answer ({found.group(0).strip()})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def folder_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by POSIX path relative to it."""
    sums = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as handle:
            sums[path.relative_to(folder).as_posix()] = hashlib.file_digest(
                handle, "sha256"
            ).hexdigest()
    return sums


def _tracking_uri(settings: Settings) -> str:
    """The store URI, making the data home so SQLite can create the file."""
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(
            f"data home {settings.home} is not a usable folder for the tracking store: {exc}"
        ) from exc
    uri = settings.mlflow_uri
    _check_sqlite(uri)
    return uri


def _check_sqlite(uri: str) -> None:
    """Fail at once on a SQLite store that cannot be opened.

    MLflow retries opening its database ten times with exponential back-off (about 100 s)
    before it gives up, which a local file that cannot be opened does not deserve.
    """
    import sqlite3

    if not uri.startswith("sqlite:///"):
        return
    path = uri.removeprefix("sqlite:///").split("?")[0]
    try:
        con = sqlite3.connect(path, timeout=1)
        try:
            con.execute("PRAGMA schema_version")
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if "unable to open" in str(exc):
            raise TrackingError(f"could not open the tracking store {uri}: {_reason(exc)}") from exc
    except sqlite3.DatabaseError:
        pass  # not a database: MLflow's own error says so, as "unreadable or corrupt"


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
    with _errors(f"open the tracking store {uri}", uri):
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
