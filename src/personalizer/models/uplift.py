"""Uplift models: who is moved by an email, estimated from a randomised send.

Each model learns τ(x) = P(respond | x, treated) − P(respond | x, control) from features `X`,
binary outcomes `y` and `treatment` (1 = sent, 0 = held out), with small, strongly regularised
LightGBM boosters (email effects are a few points on a noisy outcome). One interface:
`__init__` stores parameters, `fit(X, y, treatment) -> self`, `predict_uplift(X)`, and
`save`/`load` as a folder of LightGBM text models plus `uplift.json`.

- `ClassTransformation` (Jaskowski & Jaroszewicz 2012): one classifier of z = 1 when
  (treated, responded) or (control, did not respond); τ = 2·P(z=1|x) − 1. When the treated
  share p ≠ ½ the rows are weighted 1/(2p) and 1/(2(1−p)) so the identity still holds.
- `TwoModel` (T-learner): a response model per group; τ = μ₁(x) − μ₀(x).
- `XLearner` (Künzel et al. 2019): the two response models impute each customer's effect
  (treated: y − μ₀(x); control: μ₁(x) − y), two regressors smooth it, and
  τ = p·τ₀(x) + (1−p)·τ₁(x), p the (constant, randomised) treated share.
- `TransformedOutcome` (Athey & Imbens 2016): one regressor of y·(t − p)/(p(1 − p)), whose
  expectation given x is τ(x).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Self

import lightgbm as lgb
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Category level -> column suffix, per categorical column.
HILLSTROM_CATEGORIES: dict[str, dict[str, str]] = {
    "history_segment": {
        "1) $0 - $100": "0_100",
        "2) $100 - $200": "100_200",
        "3) $200 - $350": "200_350",
        "4) $350 - $500": "350_500",
        "5) $500 - $750": "500_750",
        "6) $750 - $1,000": "750_1000",
        "7) $1,000 +": "1000_plus",
    },
    "zip_code": {"Surburban": "suburban", "Rural": "rural", "Urban": "urban"},  # sic "Surburban"
    "channel": {"Phone": "phone", "Web": "web", "Multichannel": "multichannel"},
}
HILLSTROM_NUMERIC = ("recency", "history", "mens", "womens", "newbie")


def hillstrom_features(df: pd.DataFrame) -> pd.DataFrame:
    """Model features of Hillstrom customers: the numeric columns and one-hot categories.

    The categories are fixed (unknown values get all zeros), so any subset of rows gets the same
    columns in the same order.
    """
    columns: dict[str, np.ndarray] = {
        name: df[name].to_numpy(dtype=float) for name in HILLSTROM_NUMERIC
    }
    for name, levels in HILLSTROM_CATEGORIES.items():
        values = df[name].astype(str).to_numpy()
        for level, suffix in levels.items():
            columns[f"{name}_{suffix}"] = (values == level).astype(float)
    return pd.DataFrame(columns, index=df.index)


class UpliftModel:
    """Shared parameters, validation and persistence of the LightGBM uplift models.

    The defaults are deliberately under-fitted (50 rounds at rate 0.03, depth 3, 200 customers a
    leaf): in 5×5-fold cross-validation on the Hillstrom train half only, uplift@30% and Qini
    fell for every model as rounds grew past ~75, and the X-learner ranked first.

    Args:
        n_estimators: Boosting rounds of every booster.
        learning_rate: Shrinkage per round.
        num_leaves: Leaves per tree; with `max_depth` kept small so trees capture main effects
            and low-order interactions, not noise.
        max_depth: Depth limit per tree.
        min_data_in_leaf: Fewest customers per leaf; large because a leaf's uplift is the
            difference of two noisy response rates.
        lambda_l2: L2 penalty on leaf values.
        feature_fraction: Share of features tried per tree.
        bagging_fraction: Share of rows drawn per tree (every round).
        seed: Seed of every random step.
        num_threads: LightGBM threads.
    """

    name: ClassVar[str] = ""
    roles: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        n_estimators: int = 50,
        learning_rate: float = 0.03,
        num_leaves: int = 8,
        max_depth: int = 3,
        min_data_in_leaf: int = 200,
        lambda_l2: float = 10.0,
        feature_fraction: float = 0.8,
        bagging_fraction: float = 0.8,
        seed: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.max_depth = max_depth
        self.min_data_in_leaf = min_data_in_leaf
        self.lambda_l2 = lambda_l2
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.seed = seed
        self.num_threads = num_threads

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters."""
        return {name: getattr(self, name) for name in _PARAMS}

    # ------------------------------------------------------------------ contract
    def fit(self, X: pd.DataFrame | np.ndarray, y: np.ndarray, treatment: np.ndarray) -> Self:
        """Learn uplift from a randomised send.

        Args:
            X: Features, one row per customer (a DataFrame keeps its column names).
            y: Binary outcomes (1 = responded).
            treatment: 1 for customers who were sent the email, 0 for the held-out control.

        Raises:
            ValueError: On lengths that differ, a non-binary `y` or `treatment`, or a group
                (treated or control) that is missing.
        """
        features, names = _as_matrix(X, None)
        y_arr, t_arr = _check_fit(features, y, treatment)
        self.feature_names_ = names
        self.treated_share_ = float(t_arr.mean())
        self.boosters_: dict[str, lgb.Booster] = {}
        self._fit(features, y_arr, t_arr)
        log.debug("fitted %s on %d customers", self.name, len(y_arr))
        return self

    def predict_uplift(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predicted uplift (change in response probability if sent) per row of `X`."""
        if not hasattr(self, "boosters_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit first")
        features, _ = _as_matrix(X, self.feature_names_)
        return self._predict(features)

    # --------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        """Write the model as `uplift.json` and one LightGBM text model per booster."""
        if not hasattr(self, "boosters_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for role, booster in self.boosters_.items():
            booster.save_model(str(path / f"{role}.txt"))
        meta = {
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "params": self.get_params(),
            "feature_names": self.feature_names_,
            "treated_share": self.treated_share_,
        }
        (path / "uplift.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: Path) -> UpliftModel:
        """Read a model written by `save` (of whichever kind it was)."""
        path = Path(path)
        meta = json.loads((path / "uplift.json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported uplift model format {meta.get('format_version')!r}")
        kind = MODELS.get(meta["model"])
        if kind is None or not issubclass(kind, cls):
            raise ValueError(f"{path} holds a {meta['model']!r} model, not a {cls.__name__}")
        model = kind(**meta["params"])
        model.feature_names_ = meta["feature_names"]
        model.treated_share_ = float(meta["treated_share"])
        model.boosters_ = {
            role: lgb.Booster(model_file=str(path / f"{role}.txt")) for role in kind.roles
        }
        return model

    # ------------------------------------------------------------------- helpers
    def _fit(self, X: np.ndarray, y: np.ndarray, treatment: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _train(
        self,
        role: str,
        X: np.ndarray,
        target: np.ndarray,
        objective: str,
        weight: np.ndarray | None = None,
    ) -> lgb.Booster:
        params = {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_data_in_leaf": self.min_data_in_leaf,
            "lambda_l2": self.lambda_l2,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1.0 else 0,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }
        # LightGBM sees positional names (it rejects some characters); ours live in the JSON.
        data = lgb.Dataset(X, label=target, weight=weight, free_raw_data=True)
        booster = lgb.train(params, data, num_boost_round=self.n_estimators)
        self.boosters_[role] = booster
        return booster


class ClassTransformation(UpliftModel):
    """One classifier of the transformed class z; τ = 2·P(z=1|x) − 1 (propensity-weighted)."""

    name = "class_transformation"
    roles = ("z",)

    def _fit(self, X: np.ndarray, y: np.ndarray, treatment: np.ndarray) -> None:
        z = (y == treatment).astype(float)
        p = self.treated_share_
        # Weights that make both groups count half, so E[z|x] = (1 + τ(x)) / 2 for any p.
        weight = np.where(treatment == 1, 0.5 / p, 0.5 / (1.0 - p))
        self._train("z", X, z, "binary", weight)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return 2.0 * np.asarray(self.boosters_["z"].predict(X), dtype=float) - 1.0


class TwoModel(UpliftModel):
    """T-learner: a response model for the treated and one for the control."""

    name = "two_model"
    roles = ("treated", "control")

    def _fit(self, X: np.ndarray, y: np.ndarray, treatment: np.ndarray) -> None:
        treated = treatment == 1
        self._train("treated", X[treated], y[treated], "binary")
        self._train("control", X[~treated], y[~treated], "binary")

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return _prob(self.boosters_["treated"], X) - _prob(self.boosters_["control"], X)


class XLearner(UpliftModel):
    """X-learner: impute each customer's effect with the other group's model, then smooth it."""

    name = "x_learner"
    roles = ("treated", "control", "effect_treated", "effect_control")

    def _fit(self, X: np.ndarray, y: np.ndarray, treatment: np.ndarray) -> None:
        treated = treatment == 1
        mu1 = self._train("treated", X[treated], y[treated], "binary")
        mu0 = self._train("control", X[~treated], y[~treated], "binary")
        # Each group's imputation uses only the other group's model, so nothing leaks.
        effect_treated = y[treated] - _prob(mu0, X[treated])
        effect_control = _prob(mu1, X[~treated]) - y[~treated]
        self._train("effect_treated", X[treated], effect_treated, "regression")
        self._train("effect_control", X[~treated], effect_control, "regression")

    def _predict(self, X: np.ndarray) -> np.ndarray:
        p = self.treated_share_
        tau1 = np.asarray(self.boosters_["effect_treated"].predict(X), dtype=float)
        tau0 = np.asarray(self.boosters_["effect_control"].predict(X), dtype=float)
        return p * tau0 + (1.0 - p) * tau1


class TransformedOutcome(UpliftModel):
    """One regressor of y·(t − p)/(p(1 − p)), an unbiased signal of τ(x)."""

    name = "transformed_outcome"
    roles = ("outcome",)

    def _fit(self, X: np.ndarray, y: np.ndarray, treatment: np.ndarray) -> None:
        p = self.treated_share_
        self._train("outcome", X, y * (treatment - p) / (p * (1.0 - p)), "regression")

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.boosters_["outcome"].predict(X), dtype=float)


MODELS: dict[str, type[UpliftModel]] = {
    cls.name: cls for cls in (ClassTransformation, TwoModel, XLearner, TransformedOutcome)
}
_PARAMS = (
    "n_estimators",
    "learning_rate",
    "num_leaves",
    "max_depth",
    "min_data_in_leaf",
    "lambda_l2",
    "feature_fraction",
    "bagging_fraction",
    "seed",
    "num_threads",
)


def load_uplift_model(path: Path) -> UpliftModel:
    """The uplift model saved in folder `path`."""
    return UpliftModel.load(Path(path))


def _prob(booster: lgb.Booster, X: np.ndarray) -> np.ndarray:
    return np.asarray(booster.predict(X), dtype=float)


def _as_matrix(
    X: pd.DataFrame | np.ndarray, names: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """`X` as a float matrix in the column order `names` (a fit's order when given)."""
    if isinstance(X, pd.DataFrame):
        columns = [str(c) for c in X.columns]
        if names is not None:
            missing = sorted(set(names) - set(columns))
            if missing:
                raise ValueError(f"X lacks the features the model was fitted on: {missing}")
            X = X.set_axis(columns, axis=1)[names]
            columns = names
        return X.to_numpy(dtype=float), columns
    matrix = np.asarray(X, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"X must be two-dimensional, got shape {matrix.shape}")
    if names is not None and matrix.shape[1] != len(names):
        raise ValueError(f"X has {matrix.shape[1]} columns, the model was fitted on {len(names)}")
    return matrix, names if names is not None else [f"x{i}" for i in range(matrix.shape[1])]


def _check_fit(
    X: np.ndarray, y: np.ndarray, treatment: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y_arr, t_arr = np.asarray(y).ravel(), np.asarray(treatment).ravel()
    if not len(X) == len(y_arr) == len(t_arr):
        raise ValueError(
            f"X, y and treatment must have the same length, got {len(X)}, {len(y_arr)}, "
            f"{len(t_arr)}"
        )
    for name, values in (("y", y_arr), ("treatment", t_arr)):
        if values.dtype.kind not in "biuf" or not np.isin(values, (0, 1)).all():
            raise ValueError(f"{name} must be 0/1, got values {np.unique(values)[:5].tolist()}")
    if t_arr.min() == t_arr.max():
        raise ValueError(f"treatment must hold both groups, got only {int(t_arr[0])}")
    return y_arr.astype(float), t_arr.astype(np.int64)
