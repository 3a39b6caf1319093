"""Ranking metrics of top-k recommendations against what customers went on to buy.

For one customer with truth set T (distinct products bought in the test window), top-k list R
(rows of `recs` with `rank <= k`; a product listed twice counts once, at its best rank),
hits H = R ∩ T and m = min(|T|, k):

- recall@k    = |H| / m  (capped recall: a perfect list scores 1 even when |T| > k; this is the
                definition behind the published reference figures);
- precision@k = |H| / k;
- hit_rate@k  = 1 if |H| > 0 else 0;
- ndcg@k      = Σ_{h∈H} 1/log2(rank_h + 1)  /  Σ_{i=1..m} 1/log2(i + 1)  (binary relevance);
- map@k       = Σ_{h∈H} precision@rank_h / m, where precision@rank_h counts the hits at or
                above rank_h (average precision at k, normalised by m);
- coverage@k  = distinct products in the top k of the given customers / catalog size.

Averages run over the given customers whose truth is not empty; a customer without
recommendations scores 0. Ranks are taken as given (1-based), not the order of the rows. Capped
recall and NDCG are not monotone in k (a perfect first item then a miss drops recall@2 to 1/2);
the hit count and hit rate are.

Everything is vectorised over integer codes (one `get_indexer` per id column, then numpy), so
100,000 customers x 10 recommendations take well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from personalizer.evaluation.split import MODES, Mode, Split

METRICS = ("recall", "ndcg", "map", "hit_rate", "precision")
# The per-customer column averaged into each metric.
_COLUMN = {
    "recall": "recall",
    "ndcg": "ndcg",
    "map": "ap",
    "hit_rate": "hit",
    "precision": "precision",
}


def per_customer(
    recs: pd.DataFrame, truth: pd.DataFrame, customers: Iterable[str], k: int = 10
) -> pd.DataFrame:
    """Each evaluated customer's scores: the table the averages of `evaluate` are taken over.

    Args:
        recs: Recommendations with `customer_id`, `rank` (1-based) and `product_id`.
        truth: Relevant `customer_id`, `product_id` pairs (duplicates are ignored).
        customers: Customers to evaluate; those without truth are left out.
        k: Length of the list that counts.

    Returns:
        One row per customer of `customers` with non-empty truth, in the order given, with
        columns `customer_id`, `n_truth`, `hits`, `recall`, `ndcg`, `ap`, `precision`, `hit`.

    Raises:
        ValueError: When `k < 1` or a relevant rank is missing or below 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    wanted = _as_index(customers).unique()
    truth_customer, truth_product, products = _truth_codes(truth, wanted)
    n_truth = np.bincount(truth_customer, minlength=len(wanted))
    truth_keys = truth_customer * len(products) + truth_product

    customer, rank, product = _top_k_codes(recs, wanted, products, k)
    relevant = n_truth[customer] > 0
    customer, rank, product = customer[relevant], rank[relevant], product[relevant]
    if not np.all(rank >= 1):
        raise ValueError("ranks must be 1-based numbers")
    keys = customer * len(products) + product
    is_hit = (product >= 0) & np.isin(keys, truth_keys)
    hit_customer, hit_rank = _first_hits(customer[is_hit], rank[is_hit], keys[is_hit])

    hits = np.bincount(hit_customer, minlength=len(wanted))
    dcg = np.bincount(hit_customer, weights=1.0 / np.log2(hit_rank + 1), minlength=len(wanted))
    ap = np.bincount(
        hit_customer,
        weights=_hits_so_far(hit_customer) / hit_rank,
        minlength=len(wanted),
    )
    evaluated = n_truth > 0
    m = np.minimum(n_truth, k)[evaluated]
    ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))
    hits, dcg, ap = hits[evaluated], dcg[evaluated], ap[evaluated]
    return pd.DataFrame(
        {
            "customer_id": wanted[evaluated],
            "n_truth": n_truth[evaluated],
            "hits": hits,
            "recall": hits / m,
            "ndcg": dcg / ideal[m - 1],
            "ap": ap / m,
            "precision": hits / k,
            "hit": (hits > 0).astype(float),
        }
    )


def evaluate(
    recs: pd.DataFrame,
    truth: pd.DataFrame,
    customers: Iterable[str],
    k: int = 10,
    catalog_size: int | None = None,
) -> dict[str, float]:
    """Average ranking metrics at `k` (definitions in the module docstring).

    Args:
        recs: Recommendations with `customer_id`, `rank` (1-based) and `product_id`; other columns
            (`score`, `strategy`) are ignored.
        truth: Relevant `customer_id`, `product_id` pairs.
        customers: Customers to evaluate; those without truth are left out of the averages,
            those without recommendations count as 0.
        k: Length of the list that counts.
        catalog_size: Number of products that could be recommended; `coverage@k` is reported only
            when given.

    Returns:
        `recall@k`, `ndcg@k`, `map@k`, `hit_rate@k`, `precision@k`, optionally `coverage@k`
        (NaN averages when no customer has truth), and `customers`, the number evaluated.
    """
    customers = _as_index(customers)
    scores = per_customer(recs, truth, customers, k)
    out: dict[str, float] = {
        f"{name}@{k}": float(scores[_COLUMN[name]].mean()) if len(scores) else float("nan")
        for name in METRICS
    }
    if catalog_size is not None:
        out[f"coverage@{k}"] = coverage(recs, customers, k, catalog_size)
    out["customers"] = len(scores)
    return out


def coverage(recs: pd.DataFrame, customers: Iterable[str], k: int, catalog_size: int) -> float:
    """Share of the catalog appearing in the top `k` of at least one of `customers`.

    Args:
        recs: Recommendations with `customer_id`, `rank` and `product_id`.
        customers: Whose lists count (truth plays no part here).
        k: Length of the list that counts.
        catalog_size: Number of recommendable products.

    Returns:
        Distinct recommended products / `catalog_size`.
    """
    if catalog_size <= 0:
        raise ValueError(f"catalog_size must be positive, got {catalog_size}")
    wanted = _as_index(customers).unique()
    shown = (recs["rank"] <= k).to_numpy() & (_codes(recs["customer_id"], wanted) >= 0)
    return recs.loc[shown, "product_id"].nunique() / catalog_size


def evaluate_split(
    recs: pd.DataFrame,
    split: Split,
    k: int = 10,
    catalog_size: int | None = None,
    modes: Iterable[Mode] = MODES,
) -> dict[str, dict[str, float]]:
    """`evaluate` in each mode of `split` (`all`, `new`, `cold`), ready for `compare`.

    Args:
        recs: One model's recommendations for (at least) the split's test customers.
        split: The temporal split the model was trained on.
        k: Length of the list that counts.
        catalog_size: Number of recommendable products, for coverage.
        modes: Which modes to evaluate.

    Returns:
        Metrics by mode.
    """
    out: dict[str, dict[str, float]] = {}
    for mode in modes:
        truth, customers = split.targets(mode)
        out[mode] = evaluate(recs, truth, customers, k, catalog_size)
    return out


def _as_index(customers: Iterable[str]) -> pd.Index:
    """Customer ids of any list-like (sets included) as a pandas Index."""
    if isinstance(customers, pd.Index | pd.Series | np.ndarray | list | tuple):
        return pd.Index(customers)
    return pd.Index(list(customers))


def _truth_codes(truth: pd.DataFrame, wanted: pd.Index) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Distinct truth pairs of wanted customers, as (customer code, product code, products)."""
    customer = _codes(truth["customer_id"], wanted)
    kept = customer >= 0
    products = pd.Index(truth["product_id"][kept]).unique()
    product = _codes(truth["product_id"][kept], products)
    keys = np.unique(customer[kept].astype(np.int64) * len(products) + product)
    if len(products) == 0:
        return keys, keys, products
    return keys // len(products), keys % len(products), products


def _top_k_codes(
    recs: pd.DataFrame, wanted: pd.Index, products: pd.Index, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k rows of wanted customers as (customer code, rank, product code or -1)."""
    rank = recs["rank"].to_numpy(dtype=float, na_value=np.nan)
    customer = _codes(recs["customer_id"], wanted)
    # NaN ranks are kept here so that they are reported, not silently dropped.
    kept = (customer >= 0) & ~(rank > k)
    product = _codes(recs["product_id"][kept], products)
    return customer[kept].astype(np.int64), rank[kept], product.astype(np.int64)


def _codes(values: pd.Series, index: pd.Index) -> np.ndarray:
    """Position of each value in `index` (-1 when absent), looking up each distinct value once."""
    codes, uniques = pd.factorize(values)
    lookup = np.append(index.get_indexer(uniques), -1)  # code -1 (missing) maps to -1
    return lookup[codes].astype(np.int64)


def _first_hits(
    customer: np.ndarray, rank: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hits sorted by customer then rank, a product listed twice kept at its best rank."""
    by_key = np.lexsort((rank, keys))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[by_key][1:] != keys[by_key][:-1]
    kept = by_key[first]
    order = kept[np.lexsort((rank[kept], customer[kept]))]
    return customer[order], rank[order]


def _hits_so_far(customer: np.ndarray) -> np.ndarray:
    """1, 2, 3, ... within each run of equal (sorted) customer codes."""
    position = np.arange(len(customer))
    starts = np.ones(len(customer), dtype=bool)
    starts[1:] = customer[1:] != customer[:-1]
    return position - np.maximum.accumulate(np.where(starts, position, 0)) + 1
