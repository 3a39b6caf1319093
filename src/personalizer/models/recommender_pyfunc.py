"""The recommender engine as an MLflow pyfunc model, logged from code (no pickle).

`personalizer.tracking.log_recommender` passes this file's path as `python_model=`; MLflow copies
the file into the logged model and runs it again at load time. The engine itself travels as the
artifact directory `engine` (npz + JSON + LightGBM text) and is opened with a loader named in the
model config (`engine_loader`, "module:function"), so a test can swap in a fake engine and the real
one plugs in unchanged.

The one side effect on import, `mlflow.models.set_model(...)`, is what models-from-code requires;
it only records the model object for MLflow to pick up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

DEFAULT_LOADER = "personalizer.models.recommenders.engine:load_engine"
ENGINE_ARTIFACT = "engine"
LOADER_KEY = "engine_loader"
DEFAULT_N = 10
OUTPUT_COLUMNS = ["customer_id", "rank", "product_id", "score", "strategy"]


def resolve_loader(spec: str) -> Callable[[Path], Any]:
    """The engine loader named by `spec`, "package.module:function".

    Args:
        spec: Dotted module path and attribute, separated by a colon.

    Returns:
        The callable, which takes the engine directory and returns an engine.

    Raises:
        ValueError: When `spec` is not of the form "module:function".
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"engine loader must look like 'package.module:function', got {spec!r}")
    loader = getattr(importlib.import_module(module_name), attr)
    if not callable(loader):
        raise ValueError(f"engine loader {spec!r} is not callable")
    return loader


def model_signature() -> ModelSignature:
    """The model's contract: inputs, optional per-row settings, params and the engine's output."""
    inputs = Schema(
        [
            ColSpec("string", "customer_id"),
            ColSpec("long", "n", required=False),
            ColSpec("boolean", "exclude_purchased", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("string", "customer_id"),
            ColSpec("long", "rank"),
            ColSpec("string", "product_id"),
            ColSpec("double", "score"),
            ColSpec("string", "strategy"),
        ]
    )
    params = ParamSchema(
        [ParamSpec("n", "long", DEFAULT_N), ParamSpec("exclude_purchased", "boolean", False)]
    )
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _settings(frame: pd.DataFrame, params: dict[str, Any] | None) -> pd.DataFrame:
    """Per-row `n` and `exclude_purchased`: columns win, then params, then defaults."""
    params = params or {}
    n_default = int(params.get("n", DEFAULT_N))
    exclude_default = bool(params.get("exclude_purchased", False))
    out = pd.DataFrame({"customer_id": frame["customer_id"].astype(str).to_numpy()})
    if "n" in frame.columns:
        out["n"] = pd.to_numeric(frame["n"]).fillna(n_default).astype(int).to_numpy()
    else:
        out["n"] = n_default
    if "exclude_purchased" in frame.columns:
        filled = frame["exclude_purchased"].astype(object).where(frame["exclude_purchased"].notna())
        out["exclude_purchased"] = [
            exclude_default if value is None else bool(value) for value in filled
        ]
    else:
        out["exclude_purchased"] = exclude_default
    return out


class RecommenderModel(PythonModel):
    """Serves `engine.recommend` for a frame of customers."""

    def __init__(self) -> None:
        self.engine: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        """Open the engine directory shipped with the model.

        Args:
            context: MLflow context; `artifacts["engine"]` is the engine directory and
                `model_config["engine_loader"]` optionally names the loader.
        """
        config = context.model_config or {}
        loader = resolve_loader(str(config.get(LOADER_KEY) or DEFAULT_LOADER))
        self.engine = loader(Path(context.artifacts[ENGINE_ARTIFACT]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Recommendations for the customers in `model_input`.

        Args:
            context: MLflow context (unused; the engine is loaded in `load_context`).
            model_input: A `customer_id` column, with optional per-row `n` and
                `exclude_purchased` columns.
            params: Optional `n` (default 10) and `exclude_purchased` (default False), used
                where the columns are absent or empty.

        Returns:
            The engine's frame: customer_id, rank (1-based), product_id, score, strategy, in the
            order of the input customers.
        """
        if self.engine is None:
            raise RuntimeError("the recommender engine is not loaded; call load_context first")
        if "customer_id" not in model_input.columns:
            raise ValueError("model input needs a 'customer_id' column")
        rows = _settings(model_input, params)
        if rows.empty:
            return pd.DataFrame(columns=OUTPUT_COLUMNS)
        parts = []
        for (n, exclude), group in rows.groupby(["n", "exclude_purchased"], sort=False):
            customers = list(dict.fromkeys(group["customer_id"].tolist()))
            parts.append(
                self.engine.recommend(customers, n=int(n), exclude_purchased=bool(exclude))
            )
        if len(parts) == 1:
            return parts[0].reset_index(drop=True)
        result = pd.concat(parts, ignore_index=True)
        order = {cid: i for i, cid in enumerate(dict.fromkeys(rows["customer_id"]))}
        position = result["customer_id"].astype(str).map(order)
        return (
            result.assign(_order=position)
            .sort_values(["_order", "rank"], kind="stable")
            .drop(columns="_order")
            .reset_index(drop=True)
        )


mlflow.models.set_model(RecommenderModel())
