"""CDNOW: CD purchases of 23,570 customers, 1997-01 to 1998-06 (the BG/NBD benchmark data).

The master file holds `customer_id date number_of_cds dollar_value`, whitespace separated; the 1/10
sample adds the original id before them. There are no product ids: every purchase is one order line
of a single catalogue entry, `cdnow:cd`, with the number of CDs as quantity. Several purchases by one
customer on one day stay separate orders.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from personalizer.data.validate import FeedError

PRODUCT_ID = "cdnow:cd"


def _load(path: Path) -> pd.DataFrame:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        first = handle.readline().split()
    has_header = bool(first) and not first[0].isdigit()
    frame = pd.read_csv(path, sep=r"\s+", header=0 if has_header else None, dtype=str)
    if frame.shape[1] == 5:  # the sample: orig_id new_id yyyymmdd cds dollars
        frame = frame.iloc[:, [0, 2, 3, 4]]
    if frame.shape[1] != 4:
        raise FeedError(
            f"{path}: not a CDNOW file: expected 4 columns (customer_id date number_of_cds "
            f"dollar_value), found {frame.shape[1]}"
        )
    frame.columns = ["customer", "date", "cds", "dollars"]
    return frame


def read(path: Path, batch_rows: int) -> Iterator[tuple[str, list[pd.DataFrame], set[str]]]:
    """One catalogue entry and one order line per CDNOW transaction."""
    raw = _load(path)
    customer = raw["customer"].str.lstrip("0").replace("", "0")
    cds = pd.to_numeric(raw["cds"], errors="coerce")
    dollars = pd.to_numeric(raw["dollars"], errors="coerce")
    nth = raw.groupby(["customer", "date"]).cumcount().astype(str)
    orders = pd.DataFrame(
        {
            "customer_id": customer,
            "order_id": "cdnow:" + customer + ":" + raw["date"] + ":" + nth,
            "product_id": PRODUCT_ID,
            "quantity": cds,
            "unit_price": (dollars / cds.where(cds > 0)).round(4).fillna(dollars),
            "ordered_at": pd.to_datetime(raw["date"], format="%Y%m%d", errors="coerce"),
            "_row": np.arange(1, len(raw) + 1),
        }
    )
    products = pd.DataFrame(
        {"product_id": [PRODUCT_ID], "title": ["CD"], "category": ["music"], "in_stock": [True]}
    )
    yield "products", [products], {"product_id", "title", "category", "in_stock"}
    yield (
        "orders",
        [orders],
        {"customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"},
    )
