"""Strategies read straight from purchase history: popular, trending, repeat, purchase frequency."""

from __future__ import annotations

from typing import Self

import numpy as np
import scipy.sparse as sp

from personalizer.features.interactions import Interactions
from personalizer.models.recommenders.base import Candidates, Recommender, sparse_top_n, top_n


class Popular(Recommender):
    """Products bought by the most customers, each customer's last purchase decayed by age.

    With `half_life_days=None` this is all-time popularity (the baseline); a short half-life makes
    it *trending*. It serves new customers and fills any list that comes up short.
    """

    name = "popular"

    def __init__(self, half_life_days: float | None = None) -> None:
        self.half_life_days = half_life_days

    def fit(self, data: Interactions) -> Self:
        last = data.last_age.tocoo()  # one entry per (customer, product): 1 + days since
        weight = np.ones(len(last.data), np.float64)
        if self.half_life_days:
            weight = np.power(0.5, (last.data - 1.0) / self.half_life_days)
        scores = np.bincount(last.col, weights=weight, minlength=data.n_products)
        # A tiny all-time count breaks ties among products no one bought recently.
        scores = scores + 1e-6 * np.bincount(last.col, minlength=data.n_products)
        self.scores_ = scores.astype(np.float32)
        return self

    def ranked(self) -> np.ndarray:
        """Product indices, most popular first (stable for ties)."""
        return np.argsort(-self.scores_, kind="stable")

    def candidates(
        self, data: Interactions, customers: np.ndarray, n: int, exclude: sp.csr_matrix | None
    ) -> Candidates:
        depth = n
        if exclude is not None and exclude.nnz:
            depth += int(np.diff(exclude.indptr).max())
        order = self.ranked()[: min(depth, len(self.scores_))]
        rows = np.repeat(np.arange(len(customers)), len(order))
        items = np.tile(order, len(customers))
        return top_n(rows, items, self.scores_[items], n, exclude)


class Trending(Popular):
    """Popularity over the last weeks (half-life 14 days by default)."""

    name = "trending"

    def __init__(self, half_life_days: float | None = 14.0) -> None:
        super().__init__(half_life_days)


class Repeat(Recommender):
    """The customer's own products, by how often and how recently they bought them.

    Each order containing the product counts 0.5 ** (age / half_life). A product the customer
    rebuys at a regular interval is boosted as it falls due: by `due_weight` × a bell around the
    customer's usual interval since the last purchase. With `exclude_purchased` it has nothing to
    say, which the engine knows.
    """

    name = "repeat"

    def __init__(self, half_life_days: float = 120.0, due_weight: float = 0.5) -> None:
        self.half_life_days = half_life_days
        self.due_weight = due_weight

    def fit(self, data: Interactions) -> Self:
        self.interval_ = rebuy_intervals(data)
        return self

    def scores(self, data: Interactions, customers: np.ndarray) -> sp.csr_matrix:
        """Customers × products repeat scores."""
        freq = data.decayed(self.half_life_days)[customers]
        if self.due_weight and len(self.interval_):
            last = data.last_age[customers]
            if not np.array_equal(last.indices, freq.indices):
                raise AssertionError("repeat: frequency and recency matrices disagree")
            interval = self.interval_[last.indices]
            since = last.data - 1.0
            ok = np.isfinite(interval) & (interval > 0)
            due = np.zeros(len(since), np.float32)
            ratio = since[ok] / interval[ok]
            due[ok] = np.exp(-0.5 * ((ratio - 1.0) / 0.5) ** 2)
            # `last` and `freq` share the sparsity pattern (both from the same lines).
            freq = freq.copy()
            freq.data = freq.data * (1.0 + self.due_weight * due)
        return freq

    def candidates(
        self, data: Interactions, customers: np.ndarray, n: int, exclude: sp.csr_matrix | None
    ) -> Candidates:
        return sparse_top_n(self.scores(data, customers), n, exclude)


class PurchaseFrequency(Recommender):
    """Baseline: the customer's products by the number of orders containing them."""

    name = "purchase_frequency"

    def fit(self, data: Interactions) -> Self:
        return self

    def candidates(
        self, data: Interactions, customers: np.ndarray, n: int, exclude: sp.csr_matrix | None
    ) -> Candidates:
        return sparse_top_n(data.order_counts[customers], n, exclude)


def rebuy_intervals(data: Interactions) -> np.ndarray:
    """Per product: median days between consecutive orders of it by the same customer (nan: none)."""
    lines = data.lines[["c", "p", "o", "age"]].drop_duplicates(["c", "p", "o"])
    lines = lines.sort_values(["c", "p", "age"], ascending=[True, True, False])
    same = (lines["c"].to_numpy()[1:] == lines["c"].to_numpy()[:-1]) & (
        lines["p"].to_numpy()[1:] == lines["p"].to_numpy()[:-1]
    )
    gaps = lines["age"].to_numpy()[:-1] - lines["age"].to_numpy()[1:]
    product = lines["p"].to_numpy()[1:][same]
    gaps = gaps[same]
    out = np.full(data.n_products, np.nan, np.float32)
    valid = gaps > 0.5  # same-day reorders are split baskets, not rebuys
    if valid.any():
        import pandas as pd

        med = pd.Series(gaps[valid]).groupby(product[valid]).median()
        out[med.index.to_numpy()] = med.to_numpy()
    return out
