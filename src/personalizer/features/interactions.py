"""Customer × product interaction data, indexed once, for every recommender.

`Interactions` holds the order lines of a training window with customers and products mapped to
dense integer indices, plus the matrices the strategies share (purchase counts, time-decayed
confidence). All times are measured in days before `as_of`, the moment recommendations are made for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

DAY = np.timedelta64(1, "D")


@dataclass(frozen=True, eq=False)
class Interactions:
    """Order lines of one training window, indexed.

    Attributes:
        customer_ids: index → customer_id (str).
        product_ids: index → product_id (str).
        lines: one row per order line with `c` (customer index), `p` (product index), `o` (order
            index), `age` (days before `as_of`, ≥ 0), `quantity`, `unit_price`.
        as_of: the moment the data ends and recommendations are made for.
        categories: product index → category (None where unknown).
        in_stock: product index → bool.
    """

    customer_ids: np.ndarray
    product_ids: np.ndarray
    lines: pd.DataFrame
    as_of: pd.Timestamp
    categories: np.ndarray
    in_stock: np.ndarray
    _cache: dict[str, sp.csr_matrix] = field(default_factory=dict, repr=False)

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)

    @property
    def n_products(self) -> int:
        return len(self.product_ids)

    @cached_property
    def customer_index(self) -> dict[str, int]:
        """customer_id → index."""
        return {c: i for i, c in enumerate(self.customer_ids.tolist())}

    @cached_property
    def product_index(self) -> dict[str, int]:
        """product_id → index."""
        return {p: i for i, p in enumerate(self.product_ids.tolist())}

    def lookup_customers(self, customer_ids: list[str] | np.ndarray) -> np.ndarray:
        """Indices of customers, -1 for customers without history."""
        index = self.customer_index
        return np.array([index.get(c, -1) for c in customer_ids], dtype=np.int64)

    def matrix(self, values: np.ndarray | None = None, rows: str = "c") -> sp.csr_matrix:
        """A (customers or orders) × products CSR matrix summing `values` (default 1 per line)."""
        data = np.ones(len(self.lines), np.float32) if values is None else values
        n_rows = self.n_customers if rows == "c" else int(self.lines["o"].max()) + 1
        out = sp.csr_matrix(
            (data.astype(np.float32), (self.lines[rows].to_numpy(), self.lines["p"].to_numpy())),
            shape=(n_rows, self.n_products),
        )
        out.sum_duplicates()
        return out

    @cached_property
    def purchased(self) -> sp.csr_matrix:
        """Customers × products: 1 where the customer bought the product in the window."""
        m = self.matrix()
        m.data[:] = 1.0
        return m

    @cached_property
    def order_counts(self) -> sp.csr_matrix:
        """Customers × products: number of distinct orders containing the product."""
        pairs = self.lines[["c", "p", "o"]].drop_duplicates()
        m = sp.csr_matrix(
            (np.ones(len(pairs), np.float32), (pairs["c"].to_numpy(), pairs["p"].to_numpy())),
            shape=(self.n_customers, self.n_products),
        )
        m.sum_duplicates()
        return m

    def decayed(self, half_life_days: float, per: str = "order") -> sp.csr_matrix:
        """Customers × products, each order (or line) counting 0.5 ** (age / half_life)."""
        key = f"decayed:{half_life_days}:{per}"
        if key not in self._cache:
            lines = self.lines
            if per == "order":
                lines = lines.groupby(["c", "p", "o"], as_index=False)["age"].min()
            weight = np.power(0.5, lines["age"].to_numpy() / half_life_days).astype(np.float32)
            m = sp.csr_matrix(
                (weight, (lines["c"].to_numpy(), lines["p"].to_numpy())),
                shape=(self.n_customers, self.n_products),
            )
            m.sum_duplicates()
            m.sort_indices()
            self._cache[key] = m
        return self._cache[key]

    @cached_property
    def last_age(self) -> sp.csr_matrix:
        """Customers × products: 1 + days since the customer last bought the product."""
        last = self.lines.groupby(["c", "p"], as_index=False)["age"].min()
        m = sp.csr_matrix(
            (
                (last["age"].to_numpy() + 1.0).astype(np.float32),
                (last["c"].to_numpy(), last["p"].to_numpy()),
            ),
            shape=(self.n_customers, self.n_products),
        )
        m.sum_duplicates()
        m.sort_indices()
        return m

    @cached_property
    def customer_last_age(self) -> np.ndarray:
        """Days since each customer's last order."""
        out = np.full(self.n_customers, np.inf, np.float32)
        ages = self.lines.groupby("c")["age"].min()
        out[ages.index.to_numpy()] = ages.to_numpy()
        return out


def build_interactions(
    orders: pd.DataFrame,
    as_of: pd.Timestamp | None = None,
    products: pd.DataFrame | None = None,
) -> Interactions:
    """Index order lines (canonical `orders` columns) bought before `as_of`.

    Args:
        orders: order lines; rows at or after `as_of` are ignored.
        as_of: the end of the window (default: just after the last order).
        products: optional catalog (product_id, category, in_stock) for rules and features.
    """
    ordered_at = pd.to_datetime(orders["ordered_at"])
    if as_of is None:
        as_of = ordered_at.max() + pd.Timedelta(seconds=1)
    as_of = pd.Timestamp(as_of)
    keep = (ordered_at < as_of).to_numpy()
    frame = orders.loc[keep, ["customer_id", "product_id", "order_id", "quantity", "unit_price"]]
    when = ordered_at[keep].to_numpy()
    customer_codes, customer_ids = pd.factorize(frame["customer_id"].astype(str), sort=True)
    product_codes, product_ids = pd.factorize(frame["product_id"].astype(str), sort=True)
    order_codes, _ = pd.factorize(frame["order_id"].astype(str))
    age = (np.datetime64(as_of.to_datetime64()) - when) / DAY
    lines = pd.DataFrame(
        {
            "c": customer_codes.astype(np.int32),
            "p": product_codes.astype(np.int32),
            "o": order_codes.astype(np.int32),
            "age": age.astype(np.float32),
            "quantity": frame["quantity"].to_numpy(np.float32),
            "unit_price": frame["unit_price"].to_numpy(np.float32),
        }
    )
    product_ids = np.asarray(product_ids, dtype=str)
    categories = np.full(len(product_ids), None, dtype=object)
    in_stock = np.ones(len(product_ids), dtype=bool)
    if products is not None and len(products):
        catalog = products.assign(product_id=products["product_id"].astype(str))
        aligned = catalog.drop_duplicates("product_id").set_index("product_id").reindex(product_ids)
        if "category" in aligned:
            categories = aligned["category"].astype(object).where(aligned["category"].notna(), None)
            categories = categories.to_numpy()
        if "in_stock" in aligned:
            in_stock = aligned["in_stock"].fillna(True).astype(bool).to_numpy()
    return Interactions(
        customer_ids=np.asarray(customer_ids, dtype=str),
        product_ids=product_ids,
        lines=lines,
        as_of=as_of,
        categories=categories,
        in_stock=in_stock,
    )
