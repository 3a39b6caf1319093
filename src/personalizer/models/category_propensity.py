"""Category propensity: P(at least one order holding a product of category c in the next H days).

For every customer and each category c (the `max_categories` most ordered; products without a
category are ignored):

    propensity_c = 1 − exp(−E · q_c),    q_c = (w_c + alpha · share_c) / (w + alpha),

with E the customer's expected orders in the horizon (given by the caller, e.g. BG/NBD's
`expected_purchases` of `personalizer score churn`), w the customer's orders before `as_of`, each
weighted 2^(−age / half_life), w_c the weighted orders among them that hold a product of c, and
share_c the same weighted share over the whole shop. Read the E orders as a Poisson stream, each
holding c with probability q_c, and the chance of at least one is the formula; q_c is the
customer's own category mix shrunk towards the shop's by alpha pseudo-orders, so one order says
little and fifty say a lot. Everything is `np.bincount` and sparse matrices over orders, with one
loop over categories: a million customers and fifty categories take seconds.

`fit` chooses alpha and the half-life out of time: the last `horizon_days` before `as_of` (at
most `MAX_VALIDATION_SHARE` of a short history) are labels for the customers who ordered before
them, and the grid point of lowest mean log loss over categories wins (log loss rather than AUC:
alpha sets how far a thin history is trusted, which is calibration as much as ranking). The
expected orders of that window are the caller's (best from the same source as those given to
`predict`: `evaluate_category_propensity` passes BG/NBD fitted before the window), or else
`past_rate_orders`, the customer's order rate over the last year times the window.

Category names become column names by `category_slug`; names that share a slug are one category.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.metrics import roc_auc_score

from personalizer.evaluation.split import TimeLike, to_utc_timestamp
from personalizer.features.customer_history import CustomerHistory

log = logging.getLogger(__name__)

PREFIX = "propensity_"
ALPHAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
HALF_LIVES = (30.0, 90.0, 180.0, 365.0, 730.0, math.inf)  # days; inf: no decay
# Shops younger than a horizon validate on the last 30% of their history at most, so that most of
# it stays to learn the category mix from.
MAX_VALIDATION_SHARE = 0.3
# The grid is scored on a seeded sample: 200k customers pin a mean log loss far below the gaps
# between grid points.
MAX_VALIDATION_CUSTOMERS = 200_000
RATE_WINDOW_DAYS = 365.0  # the order rate of `past_rate_orders` is over the last year
LOG_LOSS_CLIP = 1e-15  # as `evaluation.churn.evaluate_churn`
NS_PER_DAY = 86_400 * 10**9
LINE_COLUMNS = ("customer_id", "order_id", "product_id", "quantity", "ordered_at")


def category_slug(name: str) -> str:
    """`name` as a column suffix: lowercase ASCII, every run of other characters one `_`.

    Accents are folded first ("Café & Tea" → "cafe_tea"); a name with no letter or digit left
    gives "".
    """
    folded = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", folded.lower()).strip("_")


# ---------------------------------------------------------------------------------- the index
@dataclass(frozen=True, eq=False)
class OrderCategories:
    """Orders before a moment, and which categories each holds, as arrays.

    Attributes:
        customer_ids: code → customer_id as text, sorted.
        order_c, order_t: customer code and time (days since the epoch) of every order.
        pair_order, pair_k: one row per (order, category) it holds: order position, category code.
        categories: category code → slug.
    """

    customer_ids: pd.Index
    order_c: np.ndarray
    order_t: np.ndarray
    pair_order: np.ndarray
    pair_k: np.ndarray
    categories: tuple[str, ...]

    @classmethod
    def build(
        cls,
        orders: pd.DataFrame,
        products: pd.DataFrame,
        until: pd.Timestamp,
        *,
        categories: Sequence[str] | None = None,
        max_categories: int = 50,
    ) -> OrderCategories:
        """Index the purchase lines (positive quantity) before `until`.

        Args:
            orders: order lines (`LINE_COLUMNS`).
            products: catalog with `product_id` and `category`.
            until: lines at or after it are dropped.
            categories: the slugs to keep, in this order; None keeps the `max_categories` with
                the most orders.
        """
        at = _days(orders, "ordered_at")
        keep = (pd.to_numeric(orders["quantity"], errors="coerce").to_numpy() > 0) & (
            at < _day(until)
        )
        if not keep.any():
            raise ValueError(f"as_of: no order line with a positive quantity before {until}")
        lines = orders.loc[keep]
        c_code, names = _text_codes(lines["customer_id"])
        by_name = np.argsort(names, kind="stable")
        rank = np.empty(len(names), dtype=np.int64)
        rank[by_name] = np.arange(len(names))
        c = rank[c_code]
        o_code, _ = pd.factorize(lines["order_id"])
        key, _ = pd.factorize(c * (int(o_code.max()) + 1) + o_code)
        per_order = pd.DataFrame({"k": key, "c": c, "t": at[keep]}).groupby("k", sort=True)
        order_c = per_order["c"].first().to_numpy()
        order_t = per_order["t"].min().to_numpy()

        p_code, p_names = _text_codes(lines["product_id"])
        line_slug = _slugs_of(products).reindex(p_names).to_numpy()[p_code]
        k_code, slugs = pd.factorize(line_slug)  # NaN (no category) → -1
        known = k_code >= 0
        pair = pd.unique(key[known].astype(np.int64) * len(slugs) + k_code[known])
        pair_order, pair_k = pair // max(len(slugs), 1), pair % max(len(slugs), 1)
        counts = pd.Series(np.bincount(pair_k, minlength=len(slugs)), index=list(slugs))
        if categories is None:
            ranked = counts.sort_index().sort_values(ascending=False, kind="stable")
            chosen = [str(s) for s in ranked.index[:max_categories]]
        else:
            chosen = list(categories) if len(slugs) else []
        remap = pd.Index(chosen).get_indexer(list(slugs)) if len(slugs) else np.zeros(0, int)
        new_k = remap[pair_k]
        return cls(
            customer_ids=pd.Index(names[by_name], name="customer_id", dtype=object),
            order_c=order_c,
            order_t=order_t,
            pair_order=pair_order[new_k >= 0],
            pair_k=new_k[new_k >= 0],
            categories=tuple(chosen),
        )

    def weights(self, now: float, half_life_days: float) -> np.ndarray:
        """Per order: 2^(−age / half-life) before `now`, 0 from `now` on."""
        age = now - self.order_t
        decay = np.exp2(-age / half_life_days) if math.isfinite(half_life_days) else 1.0
        return np.where(age > 0, decay, 0.0)

    def shares(self, weights: np.ndarray) -> np.ndarray:
        """Per category: weighted share of the shop's orders holding it."""
        total = weights.sum()
        held = np.bincount(self.pair_k, weights[self.pair_order], len(self.categories))
        return held / total if total > 0 else np.zeros(len(self.categories))

    def tallies(self, weights: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, sparse.csc_array]:
        """Weighted orders of the customers `rows` (codes, -1 for none), and of each category.

        Returns:
            `(total, held)`: per row the summed order weights, and the (rows × categories) sparse
            sums of the weights of the orders holding each category.
        """
        order_row = self.order_rows(rows)
        used = (order_row >= 0) & (weights > 0)
        total = np.bincount(order_row[used], weights[used], len(rows))
        pair_row, pair_w = order_row[self.pair_order], weights[self.pair_order]
        used = (pair_row >= 0) & (pair_w > 0)
        held = sparse.csc_array(
            (pair_w[used], (pair_row[used], self.pair_k[used])),
            shape=(len(rows), len(self.categories)),
        )
        held.sum_duplicates()
        return total, held

    def mix(
        self, now: float, half_life_days: float, rows: np.ndarray
    ) -> tuple[np.ndarray, sparse.csc_array, np.ndarray]:
        """`tallies` of the orders before `now` weighted with this half-life, and the shares."""
        weights = self.weights(now, half_life_days)
        return (*self.tallies(weights, rows), self.shares(weights))

    def order_rows(self, rows: np.ndarray) -> np.ndarray:
        """Per order: the position in `rows` (customer codes, -1 for none) of its customer, or -1."""
        position = np.full(len(self.customer_ids), -1, dtype=np.int64)
        found = rows >= 0
        position[rows[found]] = np.flatnonzero(found)
        return position[self.order_c]

    def bought(self, start: float, end: float, rows: np.ndarray) -> sparse.csc_array:
        """(rows × categories) 1 where the customer ordered the category in [start, end)."""
        inside = ((self.order_t >= start) & (self.order_t < end)).astype(float)
        held = self.tallies(inside, rows)[1]
        held.data[:] = 1.0
        return held

    def ordered_before(self, now: float) -> np.ndarray:
        """Codes of the customers with an order before `now`, ascending."""
        seen = np.bincount(self.order_c[self.order_t < now], minlength=len(self.customer_ids))
        return np.flatnonzero(seen)


# ---------------------------------------------------------------------------------- the model
@dataclass(eq=False)
class CategoryPropensity:
    """P(buying in each category within the horizon), from the category mix and expected orders.

    Args:
        max_categories: categories kept, the most ordered before the `as_of` of `fit`.
        alphas, half_lives: the grid searched by `fit` (half-lives in days, inf for no decay).
        max_validation_customers: customers sampled (seeded) to score the grid.
        seed: seed of that sample.

    Attributes:
        categories_: slugs of the categories predicted, most ordered first.
        alpha_: prior strength, in pseudo-orders of the shop's mix.
        half_life_days_: recency half-life of the orders counted.
        validation_: the grid, `alpha`, `half_life_days`, `log_loss` (mean over categories).
        validation_auc_: mean AUC over categories of the chosen point on the validation window.
        validation_days_: length of the validation window.
    """

    max_categories: int = 50
    alphas: tuple[float, ...] = ALPHAS
    half_lives: tuple[float, ...] = HALF_LIVES
    max_validation_customers: int = MAX_VALIDATION_CUSTOMERS
    seed: int = 0
    categories_: tuple[str, ...] | None = field(default=None, init=False)
    alpha_: float = field(default=math.nan, init=False)
    half_life_days_: float = field(default=math.nan, init=False)
    validation_: pd.DataFrame | None = field(default=None, init=False, repr=False)
    validation_auc_: float = field(default=math.nan, init=False)
    validation_days_: float = field(default=math.nan, init=False)

    def fit(
        self,
        orders: pd.DataFrame,
        products: pd.DataFrame,
        as_of: TimeLike,
        horizon_days: float = 90.0,
        expected_orders: pd.Series | None = None,
    ) -> Self:
        """Choose the categories, alpha and the half-life on the history before `as_of`.

        Args:
            orders: order lines (`customer_id, order_id, product_id, quantity, ordered_at`).
            products: catalog with `product_id` and `category`.
            as_of: nothing from it on is read.
            horizon_days: horizon of the predictions, and length of the validation window.
            expected_orders: expected orders in the validation window (`validation_window`) per
                customer_id, as of its start; None uses `past_rate_orders`.

        Raises:
            ValueError: on bad parameters or input, or when nobody ordered before `as_of`.
        """
        self._check_params(horizon_days)
        _check_inputs(orders, products)
        stop = to_utc_timestamp(as_of, "as_of")
        index = OrderCategories.build(orders, products, stop, max_categories=self.max_categories)
        self.categories_ = index.categories
        if not index.categories:
            log.warning("category propensity: no ordered product has a category; nothing to fit")
            return self
        start, days = _window(float(index.order_t.min()), _day(stop), horizon_days)
        rows = index.ordered_before(start)
        if days <= 0 or len(rows) == 0:
            self.alpha_, self.half_life_days_ = 2.0, 180.0
            log.warning("category propensity: history too short to validate; alpha 2, 180 days")
            return self
        if len(rows) > self.max_validation_customers:
            rng = np.random.default_rng(self.seed)
            rows = np.sort(rng.choice(rows, self.max_validation_customers, replace=False))
        ids = index.customer_ids[rows]
        if expected_orders is None:
            expected = past_rate_orders(index, rows, start, days)
        else:
            expected = _expected(expected_orders, ids)
        labels = index.bought(start, start + days, rows).toarray() > 0
        self._search(index, rows, start, expected, labels)
        self.validation_days_ = days
        log.info(
            "category propensity: %d categories, alpha %.3g, half-life %s days (validation: %d "
            "customers, %.0f days, log loss %.4f, AUC %.3f)",
            len(index.categories),
            self.alpha_,
            self.half_life_days_,
            len(rows),
            days,
            float(self.validation_["log_loss"].min()) if self.validation_ is not None else np.nan,
            self.validation_auc_,
        )
        return self

    def predict(
        self,
        orders: pd.DataFrame,
        products: pd.DataFrame,
        as_of: TimeLike,
        expected_orders: pd.Series,
    ) -> pd.DataFrame:
        """Propensities as of `as_of` for every customer of `expected_orders`.

        Args:
            orders, products: as for `fit`; only lines before `as_of` are read.
            as_of: the scoring moment.
            expected_orders: expected orders in the horizon, indexed by customer_id (unique).

        Returns:
            `customer_id` (text, in the order of `expected_orders`) and `propensity_<slug>` per
            category of `categories_`; a customer without a categorised order before `as_of`
            gets the shop's mix (q_c = share_c). Only `customer_id` when there is no category.
        """
        if self.categories_ is None:
            raise ValueError("category propensity: not fitted; call fit first")
        ids, expected = _expected_values(expected_orders)
        out: dict[str, object] = {"customer_id": ids.to_numpy()}
        if not self.categories_:
            log.warning("category propensity: no category known; only customer_id returned")
            return pd.DataFrame(out)
        _check_inputs(orders, products)
        stop = to_utc_timestamp(as_of, "as_of")
        index = OrderCategories.build(orders, products, stop, categories=self.categories_)
        if not index.categories:
            log.warning("category propensity: no ordered product has a category as of %s", stop)
            return pd.DataFrame(out)
        rows = index.customer_ids.get_indexer(ids)
        total, held, shares = index.mix(_day(stop), self.half_life_days_, rows)
        for k, slug in enumerate(index.categories):
            out[PREFIX + slug] = propensity(
                expected, _column(held, k), total, self.alpha_, shares[k]
            )
        log.info("category propensity: %d customers × %d categories", len(ids), len(shares))
        return pd.DataFrame(out)

    def _search(
        self,
        index: OrderCategories,
        rows: np.ndarray,
        start: float,
        expected: np.ndarray,
        labels: np.ndarray,
    ) -> None:
        alphas = np.asarray(self.alphas, dtype=float)
        grid = []
        for half_life in self.half_lives:
            total, held, shares = index.mix(start, half_life, rows)
            loss = np.zeros(len(alphas))
            for k in range(len(index.categories)):
                p = propensity(
                    expected[:, None], _column(held, k)[:, None], total[:, None], alphas, shares[k]
                )
                loss += log_loss(labels[:, k, None], p, axis=0)
            grid += [(a, half_life, v / len(shares)) for a, v in zip(alphas, loss, strict=True)]
        self.validation_ = pd.DataFrame(grid, columns=["alpha", "half_life_days", "log_loss"])
        best = self.validation_.loc[self.validation_["log_loss"].idxmin()]
        self.alpha_, self.half_life_days_ = float(best["alpha"]), float(best["half_life_days"])
        total, held, shares = index.mix(start, self.half_life_days_, rows)
        scores = [
            propensity(expected, _column(held, k), total, self.alpha_, shares[k])
            for k in range(len(shares))
        ]
        self.validation_auc_ = mean_auc(labels, scores)

    def _check_params(self, horizon_days: float) -> None:
        if not horizon_days > 0:
            raise ValueError(f"horizon_days must be positive, got {horizon_days}")
        if self.max_categories < 1:
            raise ValueError(f"max_categories must be ≥ 1, got {self.max_categories}")
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError(f"alphas must be positive, got {self.alphas}")
        if not self.half_lives or min(self.half_lives) <= 0:
            raise ValueError(f"half_lives must be positive, got {self.half_lives}")


# ---------------------------------------------------------------------------------- formulas
def propensity(
    expected: np.ndarray,
    held: np.ndarray,
    total: np.ndarray,
    alpha: float | np.ndarray,
    share: float,
) -> np.ndarray:
    """1 − exp(−E · q), q = (held + alpha · share) / (total + alpha); broadcasts."""
    q = (held + alpha * share) / (total + alpha)
    return -np.expm1(-expected * q)


def log_loss(y: np.ndarray, p: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean binary log loss along `axis`, probabilities clipped to [1e-15, 1 − 1e-15]."""
    p = np.clip(p, LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
    return np.asarray(-np.mean(np.where(y, np.log(p), np.log1p(-p)), axis=axis))


def mean_auc(labels: np.ndarray, scores: Sequence[np.ndarray]) -> float:
    """Mean AUC over the categories (columns of `labels`) that have both classes."""
    aucs = [
        roc_auc_score(labels[:, k], s)
        for k, s in enumerate(scores)
        if 0 < labels[:, k].sum() < len(labels)
    ]
    return float(np.mean(aucs)) if aucs else math.nan


def validation_window(
    orders: pd.DataFrame, as_of: TimeLike, horizon_days: float
) -> tuple[pd.Timestamp, float]:
    """Start and length in days of the window `fit` validates on (its labels end at `as_of`).

    Callers who pass `expected_orders` to `fit` compute them as of the start, for that many days.
    """
    stop = to_utc_timestamp(as_of, "as_of")
    at = _days(orders, "ordered_at")
    bought = pd.to_numeric(orders["quantity"], errors="coerce").to_numpy() > 0
    before = at[bought & (at < _day(stop))]
    if len(before) == 0:
        raise ValueError(f"as_of: no order line with a positive quantity before {stop}")
    _, days = _window(float(before.min()), _day(stop), horizon_days)
    return stop - pd.Timedelta(days=days), days


def _window(first: float, now: float, horizon_days: float) -> tuple[float, float]:
    days = min(horizon_days, MAX_VALIDATION_SHARE * (now - first))
    return now - days, days


def past_rate_orders(
    index: OrderCategories, rows: np.ndarray, now: float, days: float
) -> np.ndarray:
    """Expected orders in `days` after `now`: the customer's orders per day over the last year
    (or their tenure, when shorter, but at least `days`), times `days`.

    The year forgets customers who left long ago (the part of BG/NBD that matters most here);
    the floor keeps a customer who first ordered yesterday from being expected daily.
    """
    before = index.order_t < now
    recent = before & (index.order_t >= now - RATE_WINDOW_DAYS)
    n = np.bincount(index.order_c[recent], minlength=len(index.customer_ids))[rows]
    first = pd.Series(index.order_t[before]).groupby(index.order_c[before]).min()
    tenure = np.minimum(now - first.reindex(rows).to_numpy(), RATE_WINDOW_DAYS)
    return n * days / np.maximum(tenure, days)


def bgnbd_expected_orders(
    orders: pd.DataFrame, as_of: TimeLike, horizon_days: float, seed: int = 0
) -> pd.Series:
    """BG/NBD expected purchase days in the horizon per customer_id, as `score churn` has them."""
    history = CustomerHistory.build(orders, until=as_of)
    lifetime = history.lifetime_models(as_of, spend=False, seed=seed)
    summary = history.rfm_summary(as_of, lifetime.unit)
    expected = lifetime.expected_purchases(summary, horizon_days)
    return pd.Series(expected, index=summary.index.astype(str), name="expected_purchases")


# ---------------------------------------------------------------------------------- evaluation
def evaluate_category_propensity(
    orders: pd.DataFrame,
    products: pd.DataFrame,
    cutoff: TimeLike,
    horizon_days: float = 90.0,
    *,
    model: CategoryPropensity | None = None,
) -> pd.DataFrame:
    """The model against simple baselines on one time split at `cutoff`.

    The customers are those who ordered before `cutoff`; the label of category c is an order
    holding c in [cutoff, cutoff + horizon). Expected orders come from BG/NBD fitted before the
    cutoff (`bgnbd_expected_orders`). Baselines: `popularity` (1 − exp(−E · share_c)),
    `personal_frequency` (1 − exp(−E · the customer's raw share of orders holding c)) and
    `recency` (minus the days since the customer's last order in c; a ranking, no log loss).

    Args:
        orders, products: as for `CategoryPropensity.fit`, with lines after the cutoff.
        cutoff: the split; the model sees nothing from it on.
        horizon_days: length of the label window.
        model: an unfitted model with the parameters to evaluate; it is fitted here (default
            parameters when None).

    Returns:
        One row per model (`category_propensity` first): `model`, `auc` and `log_loss` (means over
        the categories with buyers and non-buyers in the window), `categories` (that many),
        `customers`.
    """
    cut = to_utc_timestamp(cutoff, "cutoff")
    now = _day(cut)
    model = CategoryPropensity() if model is None else model
    start, days = validation_window(orders, cut, horizon_days)
    validation = bgnbd_expected_orders(orders, start, days, seed=model.seed) if days > 0 else None
    model.fit(orders, products, cut, horizon_days, expected_orders=validation)
    if not model.categories_:
        raise ValueError("products: no ordered product has a category; nothing to evaluate")
    expected = bgnbd_expected_orders(orders, cut, horizon_days, seed=model.seed)
    predicted = model.predict(orders, products, cut, expected)
    end = cut + pd.Timedelta(days=horizon_days)
    index = OrderCategories.build(orders, products, end, categories=model.categories_)
    rows = index.customer_ids.get_indexer(expected.index)
    labels = index.bought(now, now + horizon_days, rows).toarray() > 0
    e = expected.to_numpy(dtype=float)
    total, held, shares = index.mix(now, math.inf, rows)
    days_since = _days_since_last(index, now, rows)
    scores = {
        "category_propensity": [predicted[PREFIX + s].to_numpy() for s in index.categories],
        "popularity": [-np.expm1(-e * s) for s in shares],
        "personal_frequency": [
            -np.expm1(-e * _column(held, k) / total) for k in range(len(shares))
        ],
        "recency": [
            np.where(d > 0, -d, -1e9) for d in (_column(days_since, k) for k in range(len(shares)))
        ],
    }
    both = (labels.sum(axis=0) > 0) & (labels.sum(axis=0) < len(labels))
    table = [
        {
            "model": name,
            "auc": mean_auc(labels[:, both], [s for s, b in zip(ss, both, strict=True) if b]),
            "log_loss": np.nan
            if name == "recency"
            else float(np.mean([log_loss(labels[:, k], ss[k]) for k in np.flatnonzero(both)])),
            "categories": int(both.sum()),
            "customers": len(labels),
        }
        for name, ss in scores.items()
    ]
    return pd.DataFrame(table)


def _days_since_last(index: OrderCategories, now: float, rows: np.ndarray) -> sparse.csc_array:
    """(rows × categories) days from the last order holding the category to `now`; 0: never."""
    pair_row = index.order_rows(rows)[index.pair_order]
    t = index.order_t[index.pair_order]
    used = (pair_row >= 0) & (t < now)
    last = (
        pd.DataFrame({"r": pair_row[used], "k": index.pair_k[used], "t": t[used]})
        .groupby(["r", "k"], sort=False)["t"]
        .max()
    )
    r, k = (last.index.get_level_values(n).to_numpy() for n in ("r", "k"))
    shape = (len(rows), len(index.categories))
    return sparse.csc_array((now - last.to_numpy(), (r, k)), shape=shape)


# ---------------------------------------------------------------------------------- input
def _check_inputs(orders: pd.DataFrame, products: pd.DataFrame) -> None:
    missing = [c for c in LINE_COLUMNS if c not in orders.columns]
    if missing:
        raise ValueError(f"orders: missing column(s) {missing}; found {list(orders.columns)}")
    for name in ("customer_id", "order_id"):
        if orders[name].isna().any():
            raise ValueError(f"{name}: missing in {int(orders[name].isna().sum())} order lines")
    missing = [c for c in ("product_id", "category") if c not in products.columns]
    if missing:
        raise ValueError(f"products: missing column(s) {missing}; found {list(products.columns)}")


def _expected_values(expected_orders: pd.Series) -> tuple[pd.Index, np.ndarray]:
    ids = pd.Index(expected_orders.index.astype(str), name="customer_id")
    if ids.has_duplicates:
        raise ValueError("expected_orders: customer_id repeated in the index")
    values = pd.to_numeric(expected_orders, errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(values) & (values >= 0)).all():
        raise ValueError("expected_orders: values must be finite and non-negative")
    return ids, values


def _expected(expected_orders: pd.Series, ids: pd.Index) -> np.ndarray:
    given, values = _expected_values(expected_orders)
    where = given.get_indexer(ids)
    if (where < 0).any():
        raise ValueError(
            f"expected_orders: no value for {int((where < 0).sum())} customers who ordered before "
            f"the validation window, e.g. {ids[where < 0][0]!r}"
        )
    return values[where]


def _slugs_of(products: pd.DataFrame) -> pd.Series:
    """product_id (text) → category slug, for products with a category that has a slug."""
    catalog = products.dropna(subset=["category"])
    names, uniques = pd.factorize(catalog["category"].astype(str))
    slugs = pd.Series([category_slug(u) for u in uniques], index=uniques)
    merged = slugs[slugs.duplicated(keep=False) & (slugs != "")]
    if len(merged):
        log.warning("categories merged by their shared slug: %s", sorted(merged.index))
    if (slugs == "").any():
        log.warning("categories ignored, no letter or digit: %s", list(slugs.index[slugs == ""]))
    mapping = pd.Series(
        slugs.to_numpy()[names], index=catalog["product_id"].astype(str).to_numpy()
    ).replace("", np.nan)
    return mapping[~mapping.index.duplicated()].dropna()


def _text_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes of `values` and the distinct values as text; values that print alike share a code."""
    codes, uniques = pd.factorize(values)
    merged, names = pd.factorize(np.asarray(pd.Index(uniques).astype(str), dtype=object))
    return merged[codes], np.asarray(names, dtype=object)


def _days(orders: pd.DataFrame, name: str) -> np.ndarray:
    stamps = pd.to_datetime(orders[name])
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    if stamps.isna().any():
        raise ValueError(f"{name}: missing timestamp in {int(stamps.isna().sum())} order lines")
    return stamps.to_numpy(dtype="datetime64[ns]").astype(np.int64) / NS_PER_DAY


def _day(moment: pd.Timestamp) -> float:
    return float(moment.as_unit("ns").value / NS_PER_DAY)


def _column(matrix: sparse.csc_array, k: int) -> np.ndarray:
    out = np.zeros(matrix.shape[0])
    lo, hi = matrix.indptr[k], matrix.indptr[k + 1]
    out[matrix.indices[lo:hi]] = matrix.data[lo:hi]
    return out
