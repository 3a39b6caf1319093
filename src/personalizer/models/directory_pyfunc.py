"""Any model saved as a directory, as an MLflow pyfunc logged from code (no pickle).

`personalizer.tracking.log_directory_model` passes this file's path as `python_model=`. The model
travels as the artifact directory `model` (JSON, npz, LightGBM text, Parquet) and is opened by a
loader named in the model config (`loader`, "module:function"); the loaded object answers
`predict_frame(frame) -> frame`. The churn and send-time models use it; the recommender has its
own richer signature (`recommender_pyfunc.py`).

The one side effect on import, `mlflow.models.set_model(...)`, is what models-from-code requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from personalizer.models.recommender_pyfunc import resolve_loader

MODEL_ARTIFACT = "model"
LOADER_KEY = "loader"


class DirectoryModel(PythonModel):
    """Serves `predict_frame` of the object the loader opens from the model directory."""

    def __init__(self) -> None:
        self.model: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        """Open the model directory shipped with the logged model."""
        config = context.model_config or {}
        if not config.get(LOADER_KEY):
            raise ValueError(f"the model config names no {LOADER_KEY!r} ('module:function')")
        loader = resolve_loader(str(config[LOADER_KEY]))
        self.model = loader(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The model's answer for the rows of `model_input` (typically a `customer_id` column)."""
        if self.model is None:
            raise RuntimeError("the model is not loaded; call load_context first")
        return self.model.predict_frame(model_input)


mlflow.models.set_model(DirectoryModel())
