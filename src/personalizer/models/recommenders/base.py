"""One interface for every recommendation strategy, and the top-n machinery they share.

A strategy learns from `Interactions` (`fit`), proposes scored candidates for a batch of known
customers (`candidates`), and saves its learned state as npz + JSON (`save` / `load`), never pickles.
Candidates come in long form — one row per (customer row, product) — so the blender can merge the
proposals of all strategies by key.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from personalizer.features.interactions import Interactions


@dataclass(frozen=True)
class Candidates:
    """Top products per query row, in long form, best first within each row.

    Attributes:
        row: position of the customer in the query batch.
        item: product index.
        score: the strategy's score (higher is better).
        rank: 1-based rank within the row.
    """

    row: np.ndarray
    item: np.ndarray
    score: np.ndarray
    rank: np.ndarray

    @classmethod
    def empty(cls) -> Candidates:
        return cls(*(np.empty(0, t) for t in (np.int64, np.int64, np.float32, np.int32)))

    def __len__(self) -> int:
        return len(self.row)


def top_n(
    rows: np.ndarray,
    items: np.ndarray,
    scores: np.ndarray,
    n: int,
    exclude: sp.csr_matrix | None,
    floor: float = 0.0,
) -> Candidates:
    """Keep the `n` best-scored items per row, dropping pairs in `exclude` and scores ≤ `floor`.

    Args:
        rows, items, scores: candidate triples in any order (rows index the query batch).
        n: how many to keep per row.
        exclude: query rows × products; nonzero entries are removed.
        floor: scores at or below it are no recommendation (0 for counts and similarities).
    """
    keep = scores > floor
    if exclude is not None and exclude.nnz:
        keep &= ~is_member(rows, items, exclude)
    rows, items, scores = rows[keep], items[keep], scores[keep]
    # Order by row, then score descending, then item for determinism.
    order = np.lexsort((items, -scores, rows))
    rows, items, scores = rows[order], items[order], scores[order]
    if len(rows) == 0:
        return Candidates.empty()
    starts = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    counts = np.diff(np.r_[starts, len(rows)])
    rank = np.arange(len(rows)) - np.repeat(starts, counts) + 1
    take = rank <= n
    return Candidates(
        rows[take].astype(np.int64),
        items[take].astype(np.int64),
        scores[take].astype(np.float32),
        rank[take].astype(np.int32),
    )


def is_member(rows: np.ndarray, items: np.ndarray, matrix: sp.csr_matrix) -> np.ndarray:
    """For each (row, item) pair: is the entry of `matrix` nonzero?"""
    coo = matrix.tocoo()
    width = np.int64(matrix.shape[1])
    known = np.sort(coo.row.astype(np.int64) * width + coo.col.astype(np.int64))
    keys = rows.astype(np.int64) * width + items.astype(np.int64)
    pos = np.searchsorted(known, keys)
    pos[pos == len(known)] = 0
    return known[pos] == keys if len(known) else np.zeros(len(keys), bool)


def sparse_top_n(scores: sp.csr_matrix, n: int, exclude: sp.csr_matrix | None) -> Candidates:
    """Top-n per row of a sparse score matrix (rows = query batch)."""
    coo = scores.tocoo()
    return top_n(coo.row, coo.col, coo.data.astype(np.float32), n, exclude)


def dense_top_n(scores: np.ndarray, n: int, exclude: sp.csr_matrix | None) -> Candidates:
    """Top-n per row of a dense score matrix, with `exclude`d entries removed first."""
    if exclude is not None and exclude.nnz:
        scores = scores.copy()
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    k = min(n, scores.shape[1])
    if k == 0:
        return Candidates.empty()
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    picked = np.take_along_axis(scores, part, axis=1)
    rows = np.repeat(np.arange(scores.shape[0]), k)
    return top_n(rows, part.ravel(), picked.ravel(), n, None, floor=-np.inf)


def select_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """Rows of `matrix` for query customers (-1, an unknown customer, gives an empty row)."""
    known = rows >= 0
    out = sp.csr_matrix((len(rows), matrix.shape[1]), dtype=matrix.dtype)
    if known.all():
        return matrix[rows]
    if known.any():
        picked = matrix[rows[known]].tocoo()
        where = np.flatnonzero(known)
        out = sp.csr_matrix(
            (picked.data, (where[picked.row], picked.col)), shape=(len(rows), matrix.shape[1])
        )
    return out


class Recommender(ABC):
    """A recommendation strategy: `fit` → `candidates`, saved as npz + JSON."""

    name: ClassVar[str]

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (as stored by `__init__`)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    @abstractmethod
    def fit(self, data: Interactions) -> Self:
        """Learn from the training window."""

    @abstractmethod
    def candidates(
        self, data: Interactions, customers: np.ndarray, n: int, exclude: sp.csr_matrix | None
    ) -> Candidates:
        """Top-n products for customers (indices into `data`, all ≥ 0), minus `exclude`."""

    # Learned state: arrays go to npz, everything else to JSON.
    def _state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k.endswith("_")}

    def save(self, path: Path) -> None:
        """Write parameters and learned state to the folder `path` (no pickles)."""
        path.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        for key, value in self._state().items():
            if sp.issparse(value):
                m = sp.csr_matrix(value)
                arrays.update(
                    {
                        f"{key}__data": m.data,
                        f"{key}__indices": m.indices,
                        f"{key}__indptr": m.indptr,
                        f"{key}__shape": np.asarray(m.shape, np.int64),
                    }
                )
            elif isinstance(value, np.ndarray):
                arrays[key] = value
            else:
                meta[key] = value
        np.savez(path / "state.npz", **arrays)  # type: ignore[arg-type]
        doc = {"strategy": self.name, "params": self.get_params(), "state": meta}
        (path / "strategy.json").write_text(json.dumps(doc, indent=1, default=str))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read a strategy written by `save`."""
        doc = json.loads((path / "strategy.json").read_text())
        obj = cls(**doc["params"])
        with np.load(path / "state.npz", allow_pickle=False) as npz:
            names = set(npz.files)
            for name in names:
                if name.endswith("__data"):
                    key = name[: -len("__data")]
                    shape = tuple(int(x) for x in npz[f"{key}__shape"])
                    setattr(
                        obj,
                        key,
                        sp.csr_matrix(
                            (npz[f"{key}__data"], npz[f"{key}__indices"], npz[f"{key}__indptr"]),
                            shape=shape,
                        ),
                    )
                elif "__" not in name:
                    setattr(obj, name, npz[name])
        for key, value in doc["state"].items():
            setattr(obj, key, value)
        return obj
