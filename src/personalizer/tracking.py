"""Every MLflow call: runs, the recommender as a pyfunc model, the registry and its champion.

Where things live, all under the data home (`settings.home`):

- `mlflow.db`: the tracking store and model registry (`settings.mlflow_uri`, SQLite).
- `mlartifacts/<experiment>/`: artifacts of each experiment (run files; logged models under
  `models/<model_id>/artifacts/`).

No tracking URI is set at import. Functions build an explicit `MlflowClient`, or, where MLflow's
fluent API is needed (runs, `log_model`), set the tracking URI for the duration of the call and
restore the previous one afterwards (a process-wide setting: do not drive two data homes from
two threads at once). MLflow's own metric, tag and parameter names may not contain
"@", so "ndcg@10" is stored as "ndcg_at_10" (see `mlflow_key`); the functions here accept either.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

from personalizer.config import Settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import ActiveRun, MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.pyfunc import PyFuncModel

logger = logging.getLogger(__name__)

CHAMPION = "champion"
DEFAULT_EXPERIMENT = "recommenders"
DEFAULT_METRIC = "ndcg@10"
MODEL_NAME = "recommender"
METRIC_TAG_PREFIX = "metric."
PYFUNC_CODE = Path(__file__).resolve().parent / "models" / "recommender_pyfunc.py"
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


# --------------------------------------------------------------------------- the recommender


def _default_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in ("mlflow", "pandas", "numpy")]


def _check_engine(engine_dir: Path, loader: str, input_example: pd.DataFrame | None) -> None:
    """Load the engine (and predict once) outside MLflow, so a broken one logs nothing."""
    from mlflow.pyfunc import PythonModelContext

    from personalizer.models import recommender_pyfunc as rp

    model = rp.RecommenderModel()
    context = PythonModelContext(
        artifacts={rp.ENGINE_ARTIFACT: str(engine_dir)}, model_config={rp.LOADER_KEY: loader}
    )
    try:
        model.load_context(context)
        if input_example is not None:
            output = model.predict(context, input_example)
            missing = set(rp.OUTPUT_COLUMNS) - set(output.columns)
            if missing:
                raise ValueError(f"recommendations lack columns {sorted(missing)}")
    except Exception as exc:
        raise TrackingError(
            f"the engine in {engine_dir} does not load or predict with loader {loader!r}: {exc}"
        ) from exc


def log_recommender(
    settings: Settings,
    engine_dir: Path,
    registered_name: str,
    metrics: Mapping[str, float],
    *,
    input_example: pd.DataFrame | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
    engine_loader: str | None = None,
    pip_requirements: Sequence[str] | None = None,
) -> ModelVersion:
    """Log a saved engine directory as a models-from-code pyfunc, register it, tag its metrics.

    Uses the active run when inside `start_run`, else opens one in `experiment`. The engine is
    first loaded (and run on `input_example`) outside MLflow, so a broken engine raises before
    anything is logged; the version is registered only after the model is fully logged.

    Args:
        settings: Where the tracking store lives.
        engine_dir: Folder written by `engine.save` (npz + JSON + LightGBM text).
        registered_name: Registered model name (e.g. "recommender").
        metrics: Validation metrics, logged to the run and tagged on the version.
        input_example: A frame with a `customer_id` column, stored with the model and used to
            record its output schema.
        experiment: Experiment for the run, when no run is active.
        run_name: Name of that run.
        params: Parameters to log (to the active run, or to the new one).
        engine_loader: "module:function" that opens the engine directory; default
            `personalizer.models.recommenders.engine:load_engine`.
        pip_requirements: The model's requirements; default pinned mlflow, pandas and numpy.

    Returns:
        The new model version (its tags hold the metrics, e.g. `metric.ndcg_at_10`).

    Raises:
        TrackingError: When the engine does not load, or the store refuses.
    """
    import mlflow

    from personalizer.models import recommender_pyfunc as rp

    engine_dir = Path(engine_dir)
    if not engine_dir.is_dir():
        raise TrackingError(f"engine directory {engine_dir} does not exist")
    loader = engine_loader or rp.DEFAULT_LOADER
    _check_engine(engine_dir, loader, input_example)
    values = {name: float(value) for name, value in metrics.items()}

    with _session(settings) as uri:
        run = mlflow.active_run()
        runs: AbstractContextManager[ActiveRun] = (
            start_run(settings, experiment, run_name=run_name, params=params)
            if run is None
            else nullcontext(run)
        )
        with runs as active, _errors("log the recommender model", uri):
            if run is not None and params:
                mlflow.log_params({mlflow_key(str(k)): v for k, v in params.items()})
            if values:
                mlflow.log_metrics({mlflow_key(k): v for k, v in values.items()})
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(PYFUNC_CODE),
                artifacts={rp.ENGINE_ARTIFACT: str(engine_dir.resolve())},
                model_config={rp.LOADER_KEY: loader},
                signature=rp.model_signature(),
                input_example=input_example,
                pip_requirements=list(pip_requirements or _default_requirements()),
            )
            run_id = active.info.run_id
    version = _register(settings, registered_name, info.model_uri, info.model_id, run_id, values)
    logger.info("registered %s version %s (run %s)", registered_name, version.version, run_id)
    return version


def _register(
    settings: Settings,
    name: str,
    model_uri: str,
    model_id: str,
    run_id: str,
    metrics: Mapping[str, float],
) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    tags = {METRIC_TAG_PREFIX + mlflow_key(k): repr(v) for k, v in metrics.items()}
    # The SQL registry resolves a "models:/<id>" source through the *global* tracking URI
    # (an MLflow TODO), so the session must point at this home while the version is created.
    with _session(settings), _errors(f"register model {name!r}", settings.mlflow_uri):
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        return client.create_model_version(
            name=name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id
        )


# --------------------------------------------------------------------------- registry


def _version(client: MlflowClient, name: str, version: int | str) -> ModelVersion:
    """Model version `version` of `name`, or a `TrackingError` naming what exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise TrackingError(f"no registered model named {name!r}") from exc
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        known = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
        raise TrackingError(
            f"model {name!r} has no version {version}; versions: {known or 'none'}"
        ) from exc


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def version_metric(version: ModelVersion, metric: str) -> float | None:
    """The validation metric tagged on a model version, if any."""
    raw = (version.tags or {}).get(METRIC_TAG_PREFIX + mlflow_key(metric))
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def promote(settings: Settings, name: str, version: int | str) -> None:
    """Give version `version` of `name` the `champion` alias, whatever its metrics.

    Raises:
        TrackingError: When the model or version does not exist.
    """
    client = _client(settings)
    with _errors(f"promote {name!r} version {version}", settings.mlflow_uri):
        chosen = _version(client, name, version)
        client.set_registered_model_alias(name, CHAMPION, chosen.version)
    logger.info("%s version %s is now the champion", name, chosen.version)


def promote_if_better(
    settings: Settings,
    name: str,
    version: int | str,
    metric: str = DEFAULT_METRIC,
    higher_is_better: bool = True,
) -> PromotionDecision:
    """Make `version` the champion if its `metric` is at least as good as the champion's.

    A candidate with no champion to beat is promoted; one without the metric tag is not.

    Args:
        settings: Where the registry lives.
        name: Registered model name.
        version: Candidate version.
        metric: Metric tag to compare (as tagged by `log_recommender`).
        higher_is_better: Direction of the metric.

    Returns:
        The decision, with the reason in words.

    Raises:
        TrackingError: When the model or version does not exist, or the store refuses.
    """
    client = _client(settings)
    with _errors(f"decide promotion of {name!r} version {version}", settings.mlflow_uri):
        candidate = _version(client, name, version)
        score = version_metric(candidate, metric)
        champion = _champion(client, name)
        best = None if champion is None else version_metric(champion, metric)
        best_version = None if champion is None else str(champion.version)

        def decision(promoted: bool, reason: str) -> PromotionDecision:
            return PromotionDecision(promoted, reason, best_version, best, score)

        if score is None:
            return decision(False, f"version {candidate.version} has no {metric} tag")
        if champion is None:
            verdict = decision(True, f"no champion yet; {metric} {score:.4g}")
        elif str(champion.version) == str(candidate.version):
            return decision(True, f"version {candidate.version} is already the champion")
        elif best is None:
            verdict = decision(True, f"champion v{best_version} has no {metric} tag")
        else:
            better = score >= best if higher_is_better else score <= best
            relation = {
                (True, True): ">=",
                (True, False): "<",
                (False, True): "<=",
                (False, False): ">",
            }
            reason = (
                f"{metric} {score:.4g} {relation[higher_is_better, better]} "
                f"champion v{best_version}'s {best:.4g}"
            )
            if not better:
                logger.info("%s version %s not promoted: %s", name, candidate.version, reason)
                return decision(False, reason)
            verdict = decision(True, reason)
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
    logger.info("%s version %s promoted: %s", name, candidate.version, verdict.reason)
    return verdict


def list_models(settings: Settings, name: str | None = None) -> pd.DataFrame:
    """Every registered version: name, version, aliases, created, run_id and metric tags.

    Args:
        settings: Where the registry lives.
        name: Only this registered model, if given.

    Returns:
        One row per version, sorted by name and version; aliases joined by ", "; one float
        column per tagged metric (e.g. "ndcg@10").
    """
    client = _client(settings)
    query = None if name is None else f"name = '{name}'"
    with _errors("list registered models", settings.mlflow_uri):
        # version searches leave `aliases` empty; the registered models carry them
        aliases: dict[tuple[str, str], list[str]] = {}
        for model in _pages(client.search_registered_models, query):
            for alias, number in (model.aliases or {}).items():
                aliases.setdefault((model.name, str(number)), []).append(alias)
        versions = list(_pages(client.search_model_versions, query))
    rows = []
    for v in versions:
        row: dict[str, Any] = {
            "name": v.name,
            "version": int(v.version),
            "aliases": ", ".join(sorted(aliases.get((v.name, str(v.version)), []))),
            "created": pd.Timestamp(v.creation_timestamp, unit="ms", tz="UTC"),
            "run_id": v.run_id,
        }
        for key, value in (v.tags or {}).items():
            if key.startswith(METRIC_TAG_PREFIX):
                row[display_key(key.removeprefix(METRIC_TAG_PREFIX))] = float(value)
        rows.append(row)
    columns = ["name", "version", "aliases", "created", "run_id"]
    metrics = sorted({key for row in rows for key in row} - set(columns))
    frame = pd.DataFrame(rows, columns=columns + metrics)
    return frame.sort_values(["name", "version"], ignore_index=True)


def _pages(search: Any, query: str | None) -> Iterator[Any]:
    """Every result of a paged MLflow search."""
    token = None
    while True:
        page = search(query, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


# --------------------------------------------------------------------------- the champion


def champion_version(settings: Settings, name: str) -> ModelVersion:
    """The version of `name` holding the `champion` alias.

    Raises:
        TrackingError: When the model does not exist or has no champion.
    """
    client = _client(settings)
    with _errors(f"look up the champion of {name!r}", settings.mlflow_uri):
        champion = _champion(client, name)
        if champion is None:
            if not client.search_registered_models(f"name = '{name}'"):
                raise TrackingError(f"no registered model named {name!r}")
            raise TrackingError(f"model {name!r} has no champion yet; promote a version first")
    return champion


def _model_location(settings: Settings, version: ModelVersion) -> str:
    """The artifact URI of the logged model behind a registered version."""
    client = _client(settings)
    with _errors(f"locate model {version.name!r} version {version.version}", settings.mlflow_uri):
        return str(client.get_model_version_download_uri(version.name, version.version))


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" and uri:
        return Path(uri)
    return None


def champion_engine_dir(settings: Settings, name: str, dst: Path | None = None) -> Path:
    """The champion's engine directory, ready for `load_engine` (no pyfunc in between).

    With the local artifact store this is the folder inside `<home>/mlartifacts`, returned in
    place (treat it as read-only). A remote store is downloaded to `dst`, by default
    `<home>/champions/<name>/v<version>`.

    Raises:
        TrackingError: When there is no champion or its files are missing.
    """
    import mlflow
    from mlflow.models import Model

    from personalizer.models import recommender_pyfunc as rp

    version = champion_version(settings, name)
    location = _model_location(settings, version).rstrip("/")
    local = _local_path(location)
    with _quiet(settings), _errors(f"fetch the engine of {name!r} v{version.version}"):
        if local is None:
            target = dst or settings.home / "champions" / name / f"v{version.version}"
            target.mkdir(parents=True, exist_ok=True)
            local = Path(mlflow.artifacts.download_artifacts(location, dst_path=str(target)))
        pyfunc = Model.load(str(local / "MLmodel")).flavors["python_function"]
        relative = pyfunc["artifacts"][rp.ENGINE_ARTIFACT]["path"]
    engine = local / relative
    if not engine.is_dir():
        raise TrackingError(f"the champion's engine folder {engine} is missing")
    return engine


def load_champion(settings: Settings, name: str) -> PyFuncModel:
    """The champion as an MLflow pyfunc model (`predict(frame, params=...)`)."""
    import mlflow

    version = champion_version(settings, name)
    location = _model_location(settings, version)
    with _session(settings), _errors(f"load {name!r} v{version.version}"):
        return mlflow.pyfunc.load_model(location)
