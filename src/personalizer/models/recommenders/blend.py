"""The blend: a LightGBM LambdaRank model over the candidates of every strategy.

Candidates of all strategies are merged by (customer, product); each pair gets every strategy's
score and rank plus product, customer and pair features (popularity, price, the customer's history
with the product, its usual re-buy interval, category affinity, recency). The ranker learns from a
window held out at the end of the training data, so it sees the future the way it will at scoring.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalizer.features.interactions import Interactions
from personalizer.models.recommenders.base import Candidates, Recommender
from personalizer.models.recommenders.history import rebuy_intervals


def merge_candidates(
    proposals: dict[str, Candidates], n_products: int, depth: dict[str, int]
) -> pd.DataFrame:
    """One row per distinct (row, item) proposed by any strategy, with each one's score and rank."""
    keys = [c.row * n_products + c.item for c in proposals.values()]
    every = np.unique(np.concatenate(keys)) if keys else np.empty(0, np.int64)
    frame = pd.DataFrame({"row": every // n_products, "item": every % n_products})
    proposed = np.zeros(len(every), np.int16)
    for (name, cand), key in zip(proposals.items(), keys, strict=True):
        pos = np.searchsorted(every, key)
        score = np.zeros(len(every), np.float32)
        rank = np.full(len(every), depth.get(name, 100) + 1, np.int32)
        score[pos] = cand.score
        rank[pos] = cand.rank
        frame[f"{name}_score"] = score
        frame[f"{name}_rank"] = rank
        # The score relative to the customer's best for this strategy: comparable across people.
        best = np.zeros(int(frame["row"].max()) + 1 if len(frame) else 0, np.float32)
        np.maximum.at(best, cand.row, np.abs(cand.score))
        rows = frame["row"].to_numpy()
        frame[f"{name}_rel"] = np.divide(
            score, best[rows], out=np.zeros_like(score), where=best[rows] > 0
        )
        proposed[pos] += 1
    frame["n_strategies"] = proposed
    return frame


class ProductStats:
    """Per-product features computed once per training window."""

    def __init__(self, data: Interactions) -> None:
        last = data.last_age.tocoo()
        n = data.n_products
        buyers = np.bincount(last.col, minlength=n).astype(np.float32)
        recent = np.bincount(last.col, weights=(last.data <= 31), minlength=n).astype(np.float32)
        rebuyers = np.bincount(
            data.order_counts.tocoo().col,
            weights=(data.order_counts.tocoo().data >= 2),
            minlength=n,
        ).astype(np.float32)
        lines = data.lines
        # Adopters: customers whose first purchase of the product is recent (what new buyers pick).
        adopted = lines.groupby(["c", "p"])["age"].max()
        adopters = {
            days: np.bincount(
                adopted.index.get_level_values("p")[(adopted <= days).to_numpy()], minlength=n
            ).astype(np.float32)
            for days in (14, 30, 90)
        }
        first = lines.groupby("p")["age"].max().reindex(range(n)).to_numpy(np.float32)
        latest = lines.groupby("p")["age"].min().reindex(range(n)).to_numpy(np.float32)
        price = lines.groupby("p")["unit_price"].median().reindex(range(n)).to_numpy(np.float32)
        self.table = {
            "item_log_buyers": np.log1p(buyers),
            "item_recent_share": recent / np.maximum(buyers, 1.0),
            "item_rebuy_share": rebuyers / np.maximum(buyers, 1.0),
            "item_interval": rebuy_intervals(data),
            "item_age": first,
            "item_since_sold": latest,
            "item_log_price": np.log1p(np.maximum(price, 0.0)),
            **{f"item_log_adopters_{d}": np.log1p(a) for d, a in adopters.items()},
            "item_adopter_growth": (adopters[30] + 1.0) / (adopters[90] - adopters[30] + 3.0),
        }


class CustomerStats:
    """Per-customer features of the training window."""

    def __init__(self, data: Interactions) -> None:
        lines = data.lines
        per = lines.groupby("c").agg(
            orders=("o", "nunique"),
            products=("p", "nunique"),
            first=("age", "max"),
            last=("age", "min"),
            lines=("p", "size"),
        )
        # How often the customer tries something new: first purchases of a product / all lines.
        firsts = lines.sort_values("age", ascending=False).drop_duplicates(["c", "p"])
        per["firsts"] = firsts.groupby("c").size()
        per = per.reindex(range(data.n_customers))
        self.table = {
            "cust_log_orders": np.log1p(per["orders"].to_numpy(np.float32)),
            "cust_log_products": np.log1p(per["products"].to_numpy(np.float32)),
            "cust_tenure": per["first"].to_numpy(np.float32),
            "cust_recency": per["last"].to_numpy(np.float32),
            "cust_basket": (per["lines"] / per["orders"]).to_numpy(np.float32),
            "cust_new_share": (per["firsts"] / per["lines"]).to_numpy(np.float32),
        }
        self.categories = _category_shares(data)


def _category_shares(data: Interactions) -> tuple[sp.csr_matrix, np.ndarray] | None:
    """Customers × categories shares of the customer's lines, and each product's category code."""
    cats = pd.Series(data.categories)
    if cats.isna().all():
        return None
    codes, _ = pd.factorize(cats)
    line_cat = codes[data.lines["p"].to_numpy()]
    ok = line_cat >= 0
    m = sp.csr_matrix(
        (np.ones(ok.sum(), np.float32), (data.lines["c"].to_numpy()[ok], line_cat[ok])),
        shape=(data.n_customers, int(codes.max()) + 1),
    )
    m.sum_duplicates()
    totals = np.asarray(m.sum(axis=1)).ravel()
    scale = sp.diags(1.0 / np.maximum(totals, 1.0))
    return (scale @ m).tocsr(), codes


def add_features(
    frame: pd.DataFrame,
    data: Interactions,
    customers: np.ndarray,
    products: ProductStats,
    people: CustomerStats,
) -> pd.DataFrame:
    """Product, customer and pair features for merged candidates (`row` indexes `customers`)."""
    item = frame["item"].to_numpy()
    cust = customers[frame["row"].to_numpy()]
    for name, values in products.table.items():
        frame[name] = values[item]
    for name, values in people.table.items():
        frame[name] = values[cust]
    counts = _lookup(data.order_counts, cust, item)
    last = _lookup(data.last_age, cust, item)
    frame["pair_orders"] = counts
    frame["pair_since"] = np.where(last > 0, last - 1.0, np.nan).astype(np.float32)
    interval = products.table["item_interval"][item]
    frame["pair_due"] = (frame["pair_since"].to_numpy() / interval).astype(np.float32)
    if people.categories is not None:
        shares, product_codes = people.categories
        codes = product_codes[item]
        affinity = _lookup(shares, cust, np.maximum(codes, 0))
        frame["pair_category_share"] = np.where(codes >= 0, affinity, np.nan).astype(np.float32)
    else:
        frame["pair_category_share"] = np.float32(np.nan)
    return frame


def _lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """matrix[rows[k], cols[k]] for each k, vectorised (0 where absent)."""
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    return np.asarray(matrix[rows, cols]).ravel().astype(np.float32)


def propose(
    strategies: dict[str, Recommender],
    data: Interactions,
    customers: np.ndarray,
    depth: dict[str, int],
    exclude: sp.csr_matrix | None,
) -> dict[str, Candidates]:
    """Every strategy's top candidates for the batch."""
    return {
        name: strat.candidates(data, customers, depth[name], exclude)
        for name, strat in strategies.items()
        if depth.get(name, 0) > 0
    }


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The model's inputs: every column but the keys and the label."""
    return [c for c in frame.columns if c not in ("row", "item", "label")]
