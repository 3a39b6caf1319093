"""Logging models as MLflow pyfuncs from code (no pickles) and registering their versions."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from personalizer.config import Settings

if TYPE_CHECKING:
    from mlflow import ActiveRun
    from mlflow.entities.model_registry import ModelVersion

from personalizer.tracking.runs import start_run
from personalizer.tracking.store import (
    CHECKSUMS_KEY,
    DEFAULT_EXPERIMENT,
    METRIC_TAG_PREFIX,
    PYFUNC_CODE,
    TrackingError,
    _client,
    _errors,
    _session,
    folder_checksums,
    mlflow_key,
)

logger = logging.getLogger(__name__)


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
    from personalizer.models import recommender_pyfunc as rp

    engine_dir = Path(engine_dir)
    if not engine_dir.is_dir():
        raise TrackingError(f"engine directory {engine_dir} does not exist")
    loader = engine_loader or rp.DEFAULT_LOADER
    _check_engine(engine_dir, loader, input_example)
    return _log_pyfunc(
        settings,
        registered_name,
        metrics,
        python_model=PYFUNC_CODE,
        artifacts={rp.ENGINE_ARTIFACT: str(engine_dir.resolve())},
        model_config={rp.LOADER_KEY: loader},
        signature=rp.model_signature(),
        input_example=input_example,
        experiment=experiment,
        run_name=run_name,
        params=params,
        pip_requirements=pip_requirements,
    )


def log_directory_model(
    settings: Settings,
    model_dir: Path,
    registered_name: str,
    metrics: Mapping[str, float],
    *,
    loader: str,
    input_example: pd.DataFrame,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> ModelVersion:
    """Log a model saved as a directory (churn, send time) as a pyfunc, register it, tag metrics.

    The directory is opened with `loader` ("module:function") and asked to `predict_frame`
    `input_example` before anything is logged, so a broken model leaves nothing half-registered.

    Raises:
        TrackingError: When the model does not load or predict, or the store refuses.
    """
    from mlflow.models import infer_signature

    from personalizer.models import directory_pyfunc as dp
    from personalizer.models.recommender_pyfunc import resolve_loader

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise TrackingError(f"model directory {model_dir} does not exist")
    try:
        output = resolve_loader(loader)(model_dir).predict_frame(input_example)
    except Exception as exc:
        raise TrackingError(
            f"the model in {model_dir} does not load or predict with loader {loader!r}: {exc}"
        ) from exc
    with warnings.catch_warnings():
        # integer ids and hours: MLflow's hint about missing values does not apply
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(input_example, output)
    return _log_pyfunc(
        settings,
        registered_name,
        metrics,
        python_model=Path(dp.__file__),
        artifacts={dp.MODEL_ARTIFACT: str(model_dir.resolve())},
        model_config={dp.LOADER_KEY: loader},
        signature=signature,
        input_example=input_example,
        experiment=experiment,
        run_name=run_name,
        params=params,
        pip_requirements=None,
    )


def _log_pyfunc(
    settings: Settings,
    registered_name: str,
    metrics: Mapping[str, float],
    *,
    python_model: Path,
    artifacts: dict[str, str],
    model_config: dict[str, Any],
    signature: Any,
    input_example: pd.DataFrame | None,
    experiment: str,
    run_name: str | None,
    params: Mapping[str, Any] | None,
    pip_requirements: Sequence[str] | None,
) -> ModelVersion:
    """Log a models-from-code pyfunc in the active run (or a new one), then register it."""
    import mlflow

    values = {name: float(value) for name, value in metrics.items()}
    # The champion's folder is checked against these when it is opened: a damaged file is then
    # named as such, instead of failing deep inside a parser.
    checksums = {key: folder_checksums(Path(folder)) for key, folder in artifacts.items()}
    with _session(settings) as uri:
        run = mlflow.active_run()
        runs: AbstractContextManager[ActiveRun] = (
            start_run(settings, experiment, run_name=run_name, params=params)
            if run is None
            else nullcontext(run)
        )
        with runs as active, _errors(f"log the {registered_name} model", uri):
            if run is not None and params:
                mlflow.log_params({mlflow_key(str(k)): v for k, v in params.items()})
            if values:
                mlflow.log_metrics({mlflow_key(k): v for k, v in values.items()})
            info = mlflow.pyfunc.log_model(
                name=registered_name,
                python_model=str(python_model),
                artifacts=artifacts,
                model_config=model_config,
                signature=signature,
                input_example=input_example,
                pip_requirements=list(pip_requirements or _default_requirements()),
                metadata={CHECKSUMS_KEY: checksums},
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
        created = False
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
            created = True
        try:
            return client.create_model_version(
                name=name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id
            )
        except BaseException:
            if created:  # leave no empty registered model behind
                with contextlib.suppress(Exception):
                    if not client.search_model_versions(f"name = '{name}'"):
                        client.delete_registered_model(name)
            raise
