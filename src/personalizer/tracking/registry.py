"""The model registry: versions, the `champion` alias, the promotion gate, and champions' files."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pandas as pd

from personalizer.config import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.pyfunc import PyFuncModel

from personalizer.tracking.store import (
    CHAMPION,
    CHECKSUMS_KEY,
    DEFAULT_METRIC,
    METRIC_TAG_PREFIX,
    PromotionDecision,
    TrackingError,
    _client,
    _errors,
    _quiet,
    _session,
    display_key,
    folder_checksums,
    mlflow_key,
)

logger = logging.getLogger(__name__)


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
    candidate = None
    try:
        with _errors(f"decide promotion of {name!r} version {version}", settings.mlflow_uri):
            candidate = _version(client, name, version)
            verdict = _gate(client, name, candidate, metric, higher_is_better)
            if verdict.promoted and verdict.champion_version != str(candidate.version):
                client.set_registered_model_alias(name, CHAMPION, candidate.version)
    except TrackingError as exc:
        if candidate is None:
            raise
        raise TrackingError(
            f"{exc}. Version {candidate.version} of {name!r} is registered but was not promoted; "
            f"the champion is unchanged (personalizer models promote {name} "
            f"{candidate.version} once the store answers)"
        ) from exc
    if verdict.promoted:
        logger.info("%s version %s promoted: %s", name, candidate.version, verdict.reason)
    else:
        logger.info("%s version %s not promoted: %s", name, candidate.version, verdict.reason)
    return verdict


def _gate(
    client: MlflowClient,
    name: str,
    candidate: ModelVersion,
    metric: str,
    higher_is_better: bool,
) -> PromotionDecision:
    """The promotion gate's decision for `candidate` against the current champion."""
    score = version_metric(candidate, metric)
    champion = _champion(client, name)
    best = None if champion is None else version_metric(champion, metric)
    best_version = None if champion is None else str(champion.version)

    def decision(promoted: bool, reason: str) -> PromotionDecision:
        return PromotionDecision(promoted, reason, best_version, best, score)

    if score is None:
        return decision(False, f"version {candidate.version} has no {metric} tag")
    if champion is None:
        return decision(True, f"no champion yet; {metric} {score:.4g}")
    if str(champion.version) == str(candidate.version):
        return decision(True, f"version {candidate.version} is already the champion")
    if best is None:
        return decision(True, f"champion v{best_version} has no {metric} tag")
    better = score >= best if higher_is_better else score <= best
    relation = {(True, True): ">=", (True, False): "<", (False, True): "<=", (False, False): ">"}
    reason = (
        f"{metric} {score:.4g} {relation[higher_is_better, better]} "
        f"champion v{best_version}'s {best:.4g}"
    )
    return decision(better, reason)


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
                raise TrackingError(
                    f"no registered model named {name!r} in {settings.home}: train one first"
                )
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

    See `champion_artifact_dir`.
    """
    from personalizer.models import recommender_pyfunc as rp

    return champion_artifact_dir(settings, name, rp.ENGINE_ARTIFACT, dst)


def champion_artifact_dir(
    settings: Settings, name: str, artifact: str = "model", dst: Path | None = None
) -> Path:
    """The champion's model directory (the pyfunc artifact `artifact`), opened without MLflow.

    With the local artifact store this is the folder inside `<home>/mlartifacts`, returned in
    place (treat it as read-only). A remote store is downloaded to `dst`, by default
    `<home>/champions/<name>/v<version>`.

    Raises:
        TrackingError: When there is no champion, or its files are missing or damaged (each
            file is checked against the SHA-256 logged with the model, when there is one).
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    version = champion_version(settings, name)
    location = _model_location(settings, version).rstrip("/")
    local = _local_path(location)
    with _quiet(settings), _errors(f"fetch the files of {name!r} v{version.version}"):
        if local is None:
            target = dst or settings.home / "champions" / name / f"v{version.version}"
            target.mkdir(parents=True, exist_ok=True)
            local = Path(mlflow.artifacts.download_artifacts(location, dst_path=str(target)))
        try:
            model = Model.load(str(local / "MLmodel"))
            relative = model.flavors["python_function"]["artifacts"][artifact]["path"]
            expected = (model.metadata or {}).get(CHECKSUMS_KEY, {}).get(artifact)
        except (OSError, MlflowException):
            raise
        except Exception as exc:  # YAML garbage, a missing key: a damaged MLmodel file
            raise TrackingError(
                f"the champion of {name!r} (version {version.version}) is corrupt: its MLmodel "
                f"file in {local} is unreadable ({type(exc).__name__}: {exc})"
            ) from exc
    folder = local / relative
    if not folder.is_dir():
        raise TrackingError(f"the champion's model folder {folder} is missing")
    if expected:
        _verify(folder, expected, name, str(version.version))
    return folder


def _verify(folder: Path, expected: dict[str, str], name: str, version: str) -> None:
    """Compare a model folder with the checksums logged with it; name what is damaged."""
    found = folder_checksums(folder)
    missing = sorted(set(expected) - set(found))
    changed = sorted(k for k in set(expected) & set(found) if found[k] != expected[k])
    if not missing and not changed:
        return
    damaged = [f"{k} is missing" for k in missing] + [f"{k} has changed" for k in changed]
    more = f" and {len(damaged) - 3} more" if len(damaged) > 3 else ""
    raise TrackingError(
        f"the champion of {name!r} (version {version}) is corrupt: "
        f"{', '.join(damaged[:3])}{more} since it was logged (in {folder}); promote another "
        f"version (personalizer models promote {name} VERSION) or train it again"
    )


def load_champion(settings: Settings, name: str) -> PyFuncModel:
    """The champion as an MLflow pyfunc model (`predict(frame, params=...)`)."""
    import mlflow

    version = champion_version(settings, name)
    location = _model_location(settings, version)
    with _session(settings), _errors(f"load {name!r} v{version.version}"):
        return mlflow.pyfunc.load_model(location)
