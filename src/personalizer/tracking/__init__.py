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

from personalizer.tracking.models import log_directory_model, log_recommender
from personalizer.tracking.registry import (
    champion_artifact_dir,
    champion_engine_dir,
    champion_version,
    list_models,
    load_champion,
    promote,
    promote_if_better,
    version_metric,
)
from personalizer.tracking.runs import log_figure, log_metrics, log_table, log_text, start_run
from personalizer.tracking.store import (
    CHAMPION,
    DEFAULT_EXPERIMENT,
    DEFAULT_METRIC,
    METRIC_TAG_PREFIX,
    MODEL_NAME,
    PromotionDecision,
    TrackingError,
    artifact_root,
    display_key,
    ensure_experiment,
    mlflow_key,
)

__all__ = [
    "CHAMPION",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_METRIC",
    "METRIC_TAG_PREFIX",
    "MODEL_NAME",
    "PromotionDecision",
    "TrackingError",
    "artifact_root",
    "champion_artifact_dir",
    "champion_engine_dir",
    "champion_version",
    "display_key",
    "ensure_experiment",
    "list_models",
    "load_champion",
    "log_directory_model",
    "log_figure",
    "log_metrics",
    "log_recommender",
    "log_table",
    "log_text",
    "mlflow_key",
    "promote",
    "promote_if_better",
    "start_run",
    "version_metric",
]
