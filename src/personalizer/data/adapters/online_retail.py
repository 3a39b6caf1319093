"""UCI Online Retail (and Online Retail II): invoice lines of a UK gift shop.

Cleaning, each row counted under the first reason that applies:
- no CustomerID: the line cannot be tied to a customer (quarantined);
- a fee or service code (postage, manual, discount, bank charges, samples...): not a product
  (quarantined);
- a cancellation (InvoiceNo starting with `C`): kept, as a `return` event of the customer;
- a non-positive quantity outside a cancellation: a stock adjustment (quarantined);
- a zero or negative price: a free or adjustment line (quarantined).
What remains are order lines; customers (country, time zone) and products (most common description,
median price) are derived from them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from personalizer.data.adapters.common import country_and_zone, id_text, most_common, reject

FEE_CODES = frozenset(
    {"POST", "DOT", "M", "D", "C2", "CRUK", "BANK CHARGES", "AMAZONFEE", "PADS", "B", "S"}
)
FEE_PATTERN = re.compile(r"^(TEST|ADJUST|GIFT_)", re.IGNORECASE)

# Online Retail II renamed some columns; both spellings map to one set of names.
ALIASES = {
    "invoiceno": "invoice",
    "invoice": "invoice",
    "stockcode": "stockcode",
    "description": "description",
    "quantity": "quantity",
    "invoicedate": "invoicedate",
    "unitprice": "price",
    "price": "price",
    "customerid": "customer",
    "customer id": "customer",
    "country": "country",
}
REQUIRED = ("invoice", "stockcode", "quantity", "invoicedate", "price", "customer")


def recognises(names: set[str]) -> bool:
    """True for the column set of Online Retail or Online Retail II."""
    mapped = {ALIASES.get(n) for n in names}
    return set(REQUIRED) <= mapped


def _load(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif suffix in (".xlsx", ".xls"):
        try:
            frame = pd.read_excel(path, dtype={"StockCode": str, "InvoiceNo": str, "Invoice": str})
        except ImportError as exc:
            from personalizer.data.validate import FeedError

            raise FeedError(
                f"{path}: reading Excel needs openpyxl (pip install openpyxl), or export the "
                "sheet to CSV or Parquet"
            ) from exc
    else:
        frame = pd.read_csv(
            path,
            dtype={"StockCode": str, "InvoiceNo": str, "Invoice": str},
            encoding_errors="replace",
        )
    frame = frame.rename(columns={c: ALIASES.get(str(c).strip().lower(), c) for c in frame.columns})
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        from personalizer.data.validate import FeedError

        raise FeedError(f"{path}: not an Online Retail file: missing column(s) {missing}")
    return frame


def clean(raw: pd.DataFrame) -> pd.DataFrame:
    """Every input row once, with canonical order columns and `_error` where it was removed."""
    frame = pd.DataFrame(
        {
            "customer_id": id_text(raw["customer"]),
            "order_id": raw["invoice"].astype("string").str.strip(),
            "product_id": raw["stockcode"].astype("string").str.strip(),
            "quantity": pd.to_numeric(raw["quantity"], errors="coerce"),
            "unit_price": pd.to_numeric(raw["price"], errors="coerce"),
            "ordered_at": raw["invoicedate"],
            "_row": np.arange(1, len(raw) + 1),
            "_error": pd.Series(None, index=raw.index, dtype=object),
            "_field": pd.Series(None, index=raw.index, dtype=object),
            "_value": pd.Series(None, index=raw.index, dtype=object),
        }
    )
    code = frame["product_id"].fillna("")
    cancelled = frame["order_id"].str.upper().str.startswith("C").fillna(False).to_numpy(bool)
    is_fee = code.str.upper().isin(FEE_CODES) | code.str.match(FEE_PATTERN)
    reject(
        frame,
        frame["customer_id"].isna(),
        "customer_id",
        "missing (line without CustomerID)",
        frame["customer_id"],
    )
    reject(
        frame,
        is_fee.to_numpy(bool),
        "product_id",
        "fee or service code, not a product",
        frame["product_id"],
    )
    frame["_cancelled"] = cancelled & frame["_error"].isna().to_numpy()
    sale = ~frame["_cancelled"].to_numpy()
    reject(
        frame,
        sale & (frame["quantity"] <= 0).to_numpy(bool),
        "quantity",
        "non-positive quantity outside a cancellation (stock adjustment)",
        frame["quantity"],
    )
    reject(
        frame,
        sale & (frame["unit_price"] <= 0).to_numpy(bool),
        "unit_price",
        "zero or negative price (free or adjustment line)",
        frame["unit_price"],
    )
    frame["description"] = raw.get("description")
    frame["country"] = raw.get("country")
    return frame


def _returns(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame["_cancelled"]]
    k = rows.groupby(["order_id", "product_id"]).cumcount().astype(str)
    properties = [
        f'{{"order_id":"{o}","quantity":{abs(q):g},"unit_price":{p:g}}}'
        for o, q, p in zip(rows["order_id"], rows["quantity"], rows["unit_price"], strict=True)
    ]
    return pd.DataFrame(
        {
            "event_id": "online_retail:return:"
            + rows["order_id"]
            + ":"
            + rows["product_id"]
            + ":"
            + k,
            "customer_id": rows["customer_id"],
            "type": "return",
            "occurred_at": rows["ordered_at"],
            "product_id": rows["product_id"],
            "campaign_id": None,
            "properties": properties,
            "_row": rows["_row"],
        }
    )


def _customers(sales: pd.DataFrame) -> pd.DataFrame:
    first = most_common(sales, "customer_id", "country").sort_index()
    country, zone = country_and_zone(first)
    return pd.DataFrame(
        {
            "customer_id": first.index.astype(str),
            "country": country.to_numpy(),
            "timezone": zone.to_numpy(),
            "email_consent": False,
            "attributes": '{"source":"online_retail"}',
        }
    )


def _products(sales: pd.DataFrame) -> pd.DataFrame:
    grouped = sales.groupby("product_id")
    title = most_common(sales, "product_id", "description").sort_index()
    title = title.astype("string").str.strip().str.title()
    return pd.DataFrame(
        {
            "product_id": title.index.astype(str),
            "title": title.to_numpy(),
            "price": grouped["unit_price"].median().reindex(title.index).to_numpy(),
            "in_stock": True,
        }
    )


def read(path: Path, batch_rows: int) -> Iterator[tuple[str, list[pd.DataFrame], set[str]]]:
    """Customers, products, orders and return events from an Online Retail file."""
    frame = clean(_load(path))
    sales = frame[frame["_error"].isna() & ~frame["_cancelled"]]
    yield (
        "customers",
        [_customers(sales)],
        {"customer_id", "country", "timezone", "email_consent", "attributes"},
    )
    yield "products", [_products(sales)], {"product_id", "title", "price", "in_stock"}
    orders = frame[~frame["_cancelled"]].drop(columns=["_cancelled"])
    yield (
        "orders",
        [orders],
        {"customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"},
    )
    yield (
        "events",
        [_returns(frame)],
        {"event_id", "customer_id", "type", "occurred_at", "product_id", "properties"},
    )
