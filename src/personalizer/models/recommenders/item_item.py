"""Item-to-item strategies: also bought (same order), next purchase (A then B), item-kNN.

Each learns a sparse product × product matrix, keeps the strongest `neighbours` per product, and
scores a customer as their recency-weighted purchase profile times that matrix. `similar` serves a
product page or a cart with the same matrix.
"""

from __future__ import annotations

import warnings
from typing import Self

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from personalizer.config import cpu_threads
from personalizer.features.interactions import Interactions
from personalizer.models.recommenders.base import (
    Candidates,
    Recommender,
    dense_top_n,
    sparse_top_n,
)


def keep_top(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The `k` largest entries of each row."""
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    counts = np.diff(matrix.indptr)
    if counts.max(initial=0) <= k:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((-matrix.data, rows))
    rank = np.arange(len(rows)) - np.repeat(matrix.indptr[:-1], counts)
    sorted_rows, sorted_cols, sorted_data = rows[order], matrix.indices[order], matrix.data[order]
    keep = rank < k
    out = sp.csr_matrix(
        (sorted_data[keep], (sorted_rows[keep], sorted_cols[keep])), shape=matrix.shape
    )
    out.sort_indices()
    return out


class _ItemItem(Recommender):
    """Shared scoring: profile (decayed history) × item-item matrix `sim_`."""

    profile_half_life_days: float
    sim_: sp.csr_matrix

    def profile(self, data: Interactions, customers: np.ndarray) -> sp.csr_matrix:
        return data.decayed(self.profile_half_life_days)[customers]

    def candidates(
        self, data: Interactions, customers: np.ndarray, n: int, exclude: sp.csr_matrix | None
    ) -> Candidates:
        scores = (self.profile(data, customers) @ self.sim_).tocsr()
        return sparse_top_n(scores, n, exclude)

    def similar(self, products: np.ndarray, n: int) -> Candidates:
        """Products most related to a set (a product page, a cart), excluding the set itself."""
        basket = sp.csr_matrix(
            (np.ones(len(products), np.float32), (np.zeros(len(products), int), products)),
            shape=(1, self.sim_.shape[0]),
        )
        return sparse_top_n((basket @ self.sim_).tocsr(), n, basket)


class AlsoBought(_ItemItem):
    """Frequently bought together: co-occurrence within an order, cosine-normalised with shrinkage.

    Orders count 0.5 ** (age / half_life), so recent baskets weigh more; pairs seen in fewer than
    `min_support` orders are dropped.
    """

    name = "also_bought"

    def __init__(
        self,
        half_life_days: float = 365.0,
        min_support: int = 2,
        neighbours: int = 100,
        shrink: float = 5.0,
        profile_half_life_days: float = 60.0,
    ) -> None:
        self.half_life_days = half_life_days
        self.min_support = min_support
        self.neighbours = neighbours
        self.shrink = shrink
        self.profile_half_life_days = profile_half_life_days

    def fit(self, data: Interactions) -> Self:
        lines = data.lines.groupby(["o", "p"], as_index=False)["age"].min()
        n_orders = int(lines["o"].max()) + 1 if len(lines) else 0
        weight = np.power(0.5, lines["age"].to_numpy() / self.half_life_days).astype(np.float32)
        shape = (n_orders, data.n_products)
        coords = (lines["o"].to_numpy(), lines["p"].to_numpy())
        binary = sp.csr_matrix((np.ones(len(lines), np.float32), coords), shape=shape)
        decayed = sp.csr_matrix((np.sqrt(weight), coords), shape=shape)
        support = (binary.T @ binary).tocsr()
        together = (decayed.T @ decayed).tocsr()
        support.setdiag(0)
        together.setdiag(0)
        together = together.multiply(support >= self.min_support).tocsr()
        counts = np.asarray(binary.sum(axis=0)).ravel()
        norm = np.sqrt(np.maximum(counts, 1.0))
        coo = together.tocoo()
        values = coo.data / (norm[coo.row] * norm[coo.col] + self.shrink)
        sim = sp.csr_matrix((values.astype(np.float32), (coo.row, coo.col)), shape=together.shape)
        self.sim_ = keep_top(sim, self.neighbours)
        return self


class NextPurchase(_ItemItem):
    """Bought A, then B within `within_days`: P(B in a later order | A), shrunk towards zero.

    Pairs join each order with the customer's next `lookahead` orders inside the window; a product
    followed by itself is left to the repeat strategy.
    """

    name = "next_purchase"

    def __init__(
        self,
        within_days: float = 30.0,
        lookahead: int = 3,
        min_support: int = 2,
        neighbours: int = 100,
        shrink: float = 5.0,
        profile_half_life_days: float = 30.0,
    ) -> None:
        self.within_days = within_days
        self.lookahead = lookahead
        self.min_support = min_support
        self.neighbours = neighbours
        self.shrink = shrink
        self.profile_half_life_days = profile_half_life_days

    def fit(self, data: Interactions) -> Self:
        orders = data.lines.groupby("o", as_index=False).agg(c=("c", "first"), age=("age", "min"))
        orders = orders.sort_values(["c", "age"], ascending=[True, False]).reset_index(drop=True)
        lines = data.lines[["o", "p"]].drop_duplicates()
        n_orders = int(data.lines["o"].max()) + 1 if len(lines) else 0
        basket = sp.csr_matrix(
            (np.ones(len(lines), np.float32), (lines["o"].to_numpy(), lines["p"].to_numpy())),
            shape=(n_orders, data.n_products),
        )
        first, then = [], []
        c, age, o = (orders[k].to_numpy() for k in ("c", "age", "o"))
        for step in range(1, self.lookahead + 1):
            same = c[step:] == c[:-step]
            gap = age[:-step] - age[step:]
            ok = same & (gap <= self.within_days)
            first.append(o[:-step][ok])
            then.append(o[step:][ok])
        a = basket[np.concatenate(first)] if first else basket[:0]
        b = basket[np.concatenate(then)] if then else basket[:0]
        pairs = (a.T @ b).tocsr()
        pairs.setdiag(0)
        pairs = pairs.multiply(pairs >= self.min_support).tocsr()
        base = np.asarray(a.sum(axis=0)).ravel()
        coo = pairs.tocoo()
        values = coo.data / (base[coo.row] + self.shrink)
        sim = sp.csr_matrix((values.astype(np.float32), (coo.row, coo.col)), shape=pairs.shape)
        self.sim_ = keep_top(sim, self.neighbours)
        return self


class ItemKNN(_ItemItem):
    """Item-kNN over customers' purchase sets, via implicit: cosine (the baseline) or BM25.

    The product itself keeps its similarity, so what a customer bought stays a candidate, as in
    implicit's own `recommend`.
    """

    name = "item_knn"
    weighting = "cosine"

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours

    def fit(self, data: Interactions) -> Self:
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        model = (
            BM25Recommender(K=self.neighbours, num_threads=cpu_threads())
            if self.weighting == "bm25"
            else CosineRecommender(K=self.neighbours, num_threads=cpu_threads())
        )
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            # implicit converts its own BM25 weights from COO and warns about it.
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(self.profile(data, None), show_progress=False)
        self.sim_ = sp.csr_matrix(model.similarity, dtype=np.float32)
        return self

    def profile(self, data: Interactions, customers: np.ndarray | None) -> sp.csr_matrix:
        matrix = data.purchased if self.weighting == "cosine" else data.order_counts
        return matrix if customers is None else matrix[customers]


class ItemBM25(ItemKNN):
    """Item-kNN with BM25 weighting over order counts: a strong candidate generator."""

    name = "item_bm25"
    weighting = "bm25"


class Ease(Recommender):
    """EASE (Steck 2019): a closed-form linear item-item model, ridge-regularised by `l2`.

    B = I - P / diag(P) with P = (XᵀX + l2·I)⁻¹ over binary purchases, so each product is predicted
    from all the others, with negative weights where buying one makes another less likely. It is
    strongest at products new to the customer. The inverse is dense, so it is learned over the
    `max_products` most-bought products (memory 4·m² bytes per matrix); the others get no score.
    """

    name = "ease"

    def __init__(self, l2: float = 300.0, max_products: int = 6_000) -> None:
        self.l2 = l2
        self.max_products = max_products

    def fit(self, data: Interactions) -> Self:
        buyers = np.asarray(data.purchased.sum(axis=0)).ravel()
        top = np.argsort(-buyers, kind="stable")[: self.max_products]
        self.products_ = np.sort(top[buyers[top] > 0]).astype(np.int64)
        x = data.purchased[:, self.products_]
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        with threadpool_limits(cpu_threads(), "blas"):
            inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        self.weights_ = weights.astype(np.float32)
        return self

    def candidates(
        self, data: Interactions, customers: np.ndarray, n: int, exclude: sp.csr_matrix | None
    ) -> Candidates:
        scores = data.purchased[customers][:, self.products_] @ self.weights_
        sub_exclude = exclude[:, self.products_] if exclude is not None else None
        found = dense_top_n(np.asarray(scores), n, sub_exclude)
        keep = found.score > 0  # no evidence for the product: no recommendation
        return Candidates(
            found.row[keep], self.products_[found.item[keep]], found.score[keep], found.rank[keep]
        )
