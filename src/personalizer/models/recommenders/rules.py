"""Business rules, applied after ranking; the list is then refilled to N from the fallback.

Rules never reorder: they remove (already purchased, out of stock, recently sent, outside the
category or price filter) and cap (at most `max_per_category` products of one category), walking each
customer's ranked list in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalizer.features.interactions import Interactions
from personalizer.models.recommenders.base import is_member


@dataclass(frozen=True)
class Rules:
    """What may be recommended.

    Attributes:
        exclude_purchased: drop products the customer already bought...
        repurchasable_categories: ...except in these categories (consumables people rebuy).
        exclude_out_of_stock: drop products marked out of stock.
        recently_sent: (customer_id, product_id) pairs sent lately (the caller picks the window).
        categories: if set, only products of these categories.
        min_price, max_price: price filter (products without a price pass).
        max_per_category: diversity cap per category (None: no cap).
    """

    exclude_purchased: bool = False
    repurchasable_categories: tuple[str, ...] = ()
    exclude_out_of_stock: bool = True
    recently_sent: pd.DataFrame | None = field(default=None, compare=False)
    categories: tuple[str, ...] | None = None
    min_price: float | None = None
    max_price: float | None = None
    max_per_category: int | None = None

    def exclusion(self, data: Interactions, customers: np.ndarray) -> sp.csr_matrix | None:
        """Query rows × products to remove before ranking (purchased, minus rebuyable categories)."""
        if not self.exclude_purchased:
            return None
        rows = data.purchased[np.maximum(customers, 0)].tocsr()
        rows = sp.diags((customers >= 0).astype(np.float32)) @ rows
        if self.repurchasable_categories:
            keep = ~np.isin(data.categories, list(self.repurchasable_categories))
            rows = rows @ sp.diags(keep.astype(np.float32))
        out = sp.csr_matrix(rows)
        out.eliminate_zeros()
        return out

    def allowed_products(self, data: Interactions, prices: np.ndarray) -> np.ndarray:
        """Per product: passes the customer-independent rules."""
        ok = np.ones(data.n_products, bool)
        if self.exclude_out_of_stock:
            ok &= data.in_stock
        if self.categories is not None:
            ok &= np.isin(data.categories, list(self.categories))
        with np.errstate(invalid="ignore"):
            if self.min_price is not None:
                ok &= ~(prices < self.min_price)
            if self.max_price is not None:
                ok &= ~(prices > self.max_price)
        return ok

    def sent_matrix(self, data: Interactions, customer_ids: list[str]) -> sp.csr_matrix | None:
        """Query rows × products recently sent to each customer."""
        if self.recently_sent is None or self.recently_sent.empty:
            return None
        row_of = {c: i for i, c in enumerate(customer_ids)}
        sent = self.recently_sent
        rows = sent["customer_id"].astype(str).map(row_of)
        cols = sent["product_id"].astype(str).map(data.product_index)
        ok = rows.notna() & cols.notna()
        return sp.csr_matrix(
            (
                np.ones(int(ok.sum()), np.float32),
                (rows[ok].astype(int).to_numpy(), cols[ok].astype(int).to_numpy()),
            ),
            shape=(len(customer_ids), data.n_products),
        )


def apply_rules(
    ranked: pd.DataFrame,
    n: int,
    allowed: np.ndarray,
    categories: np.ndarray,
    rules: Rules,
    exclude: sp.csr_matrix | None,
) -> pd.DataFrame:
    """Filter a ranked long frame (row, item, score, strategy; best first per row) and cap to n.

    Returns the kept rows, at most `n` per query row, in their original order.
    """
    if ranked.empty:
        return ranked
    rows = ranked["row"].to_numpy()
    items = ranked["item"].to_numpy()
    keep = allowed[items]
    if exclude is not None and exclude.nnz:
        keep &= ~is_member(rows, items, exclude)
    out = ranked[keep]
    if rules.max_per_category is not None:
        cats = pd.Series(categories[out["item"].to_numpy()], index=out.index).fillna("")
        nth = cats.groupby([out["row"], cats]).cumcount()
        out = out[(nth < rules.max_per_category).to_numpy() | (cats == "").to_numpy()]
    position = out.groupby("row").cumcount()
    return out[(position < n).to_numpy()]
