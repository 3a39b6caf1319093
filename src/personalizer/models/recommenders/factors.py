"""Personal collaborative filtering with `implicit`: ALS and BPR on a confidence matrix.

Confidence grows with quantity (log-damped, so one bulk order does not dominate) and fades with age.
Only the learned factors are kept (npz); scoring uses implicit's C++ top-k over them, filtering
excluded products per customer.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from implicit.cpu.topk import topk
from threadpoolctl import threadpool_limits

from personalizer.config import cpu_threads
from personalizer.features.interactions import Interactions
from personalizer.models.recommenders.base import Candidates, Recommender


def confidence(data: Interactions, half_life_days: float) -> sp.csr_matrix:
    """Customers × products: Σ log1p(quantity) × 0.5 ** (age / half_life) over order lines."""
    lines = data.lines
    weight = np.log1p(lines["quantity"].to_numpy()) * np.power(
        0.5, lines["age"].to_numpy() / half_life_days
    )
    return data.matrix(weight.astype(np.float32))


class ALS(Recommender):
    """Alternating least squares (Hu, Koren & Volinsky 2008), via implicit."""

    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.1,
        alpha: float = 1.0,
        iterations: int = 15,
        half_life_days: float = 180.0,
        random_state: int = 42,
        show_progress: bool = False,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.half_life_days = half_life_days
        self.random_state = random_state
        self.show_progress = show_progress

    def _model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=cpu_threads(),
        )

    def fit(self, data: Interactions) -> Self:
        with threadpool_limits(1, "blas"):  # implicit runs its own threads
            model = self._model()
            model.fit(confidence(data, self.half_life_days), show_progress=self.show_progress)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def candidates(
        self, data: Interactions, customers: np.ndarray, n: int, exclude: sp.csr_matrix | None
    ) -> Candidates:
        if len(customers) == 0:
            return Candidates.empty()
        k = min(n, self.item_factors_.shape[0])
        ids, scores = topk(
            self.item_factors_,
            self.user_factors_[customers],
            k,
            filter_query_items=exclude if exclude is not None and exclude.nnz else None,
            num_threads=cpu_threads(),
        )
        # topk returns each row best first; filtered slots come last with a huge negative score.
        rows = np.repeat(np.arange(len(customers), dtype=np.int64), ids.shape[1])
        ranks = np.tile(np.arange(1, ids.shape[1] + 1, dtype=np.int32), len(customers))
        valid = (ids.ravel() >= 0) & (scores.ravel() > -1e30)
        return Candidates(
            rows[valid],
            ids.ravel()[valid].astype(np.int64),
            scores.ravel()[valid].astype(np.float32),
            ranks[valid],
        )


class BPR(ALS):
    """Bayesian personalised ranking (Rendle et al. 2009), via implicit."""

    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        half_life_days: float = 180.0,
        random_state: int = 42,
        show_progress: bool = False,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.half_life_days = half_life_days
        self.random_state = random_state
        self.show_progress = show_progress

    def _model(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.random_state,
            num_threads=cpu_threads(),
        )
