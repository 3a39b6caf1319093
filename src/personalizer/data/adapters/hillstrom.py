"""Kevin Hillstrom's MineThatData e-mail challenge: 64,000 customers, one randomised campaign.

Customers were split at random into Mens E-Mail, Womens E-Mail and No E-Mail; outcomes (visit,
conversion, spend) were observed over the two weeks after. Each customer becomes a customer with their
history in `attributes` (including the arm, `hillstrom_segment`); the treated get an `email_sent`
event of campaign `hillstrom:mens` or `hillstrom:womens`; a visit is a `page_view`, a conversion a
`purchase` event and one order line of `hillstrom:merchandise` worth the spend. The dataset gives no
dates: the campaign is placed on its nominal date, 2008-03-03 09:00 UTC, and outcomes at seeded
times within the two weeks after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

SEND_AT = pd.Timestamp("2008-03-03 09:00:00")
WINDOW = pd.Timedelta(days=14)
PRODUCT_ID = "hillstrom:merchandise"
ARMS = {"Mens E-Mail": "hillstrom:mens", "Womens E-Mail": "hillstrom:womens"}
HISTORY = [
    "recency",
    "history_segment",
    "history",
    "mens",
    "womens",
    "zip_code",
    "newbie",
    "channel",
]
COLUMNS = {*HISTORY, "segment", "visit", "conversion", "spend"}
TARGETS = ("visit", "conversion")


def recognises(names: set[str]) -> bool:
    """True for the Hillstrom column set."""
    return names >= COLUMNS


def read(
    path: Path, batch_rows: int, seed: int = 20080303
) -> Iterator[tuple[str, list[pd.DataFrame], set[str]]]:
    """Customers, the campaign's sends, visits, purchases and orders."""
    raw = pd.read_csv(path)
    raw.columns = [c.strip().lower() for c in raw.columns]
    n = len(raw)
    ids = pd.Series([f"hillstrom:{i:05d}" for i in range(1, n + 1)], dtype=object)
    attributes = [
        json.dumps(
            {
                **{k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()},
                "hillstrom_segment": seg,
            },
            separators=(",", ":"),
        )
        for rec, seg in zip(raw[HISTORY].to_dict(orient="records"), raw["segment"], strict=True)
    ]
    customers = pd.DataFrame(
        {"customer_id": ids, "country": "US", "email_consent": True, "attributes": attributes}
    )
    yield "customers", [customers], {"customer_id", "country", "email_consent", "attributes"}
    yield (
        "products",
        [pd.DataFrame({"product_id": [PRODUCT_ID], "title": ["Merchandise"], "in_stock": [True]})],
        {"product_id", "title", "in_stock"},
    )

    rng = np.random.default_rng(seed)
    visit_at = SEND_AT + pd.to_timedelta(
        rng.uniform(0.0, WINDOW.total_seconds() - 3600, n), unit="s"
    ).round("s")
    bought_at = visit_at + pd.Timedelta(minutes=10)
    campaign = raw["segment"].map(ARMS)
    treated = campaign.notna().to_numpy()
    visited = raw["visit"].to_numpy() == 1
    converted = raw["conversion"].to_numpy() == 1
    spend = raw["spend"].astype(float)
    orders = pd.DataFrame(
        {
            "customer_id": ids[converted].to_numpy(),
            "order_id": ("hillstrom:order:" + ids[converted]).to_numpy(),
            "product_id": PRODUCT_ID,
            "quantity": 1.0,
            "unit_price": spend[converted].to_numpy(),
            "ordered_at": bought_at[converted],
        }
    )
    yield (
        "orders",
        [orders],
        {"customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"},
    )

    def events(
        mask: np.ndarray, kind: str, when: pd.Series | pd.DatetimeIndex, properties: list[str] | str
    ) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "event_id": (f"hillstrom:{kind}:" + ids[mask]).to_numpy(),
                "customer_id": ids[mask].to_numpy(),
                "type": kind,
                "occurred_at": np.asarray(when)[mask]
                if not isinstance(when, pd.Timestamp)
                else when,
                "product_id": PRODUCT_ID if kind == "purchase" else None,
                "campaign_id": campaign[mask].to_numpy(),
                "properties": properties,
            }
        )

    purchase_props = [
        f'{{"order_id":"hillstrom:order:{i}","value":{v:g}}}'
        for i, v in zip(ids[converted], spend[converted], strict=True)
    ]
    frames = [
        events(treated, "email_sent", SEND_AT, '{"source":"hillstrom"}'),
        events(visited, "page_view", visit_at, '{"source":"hillstrom"}'),
        events(converted, "purchase", bought_at, purchase_props),
    ]
    yield (
        "events",
        [pd.concat(frames, ignore_index=True)],
        {
            "event_id",
            "customer_id",
            "type",
            "occurred_at",
            "product_id",
            "campaign_id",
            "properties",
        },
    )


def read_campaign(path: Path, treatment: str, control: str, target: str) -> pd.DataFrame:
    """The rows of the `treatment` and `control` arms (file order), with a 0/1 `treatment`.

    Raises:
        ValueError: On missing columns, an unknown arm or target, or an arm without customers.
    """
    if target not in TARGETS:
        raise ValueError(f"--target must be one of {TARGETS}, got {target!r}")
    if treatment == control:
        raise ValueError(f"the treatment and the control are the same arm ({treatment!r})")
    raw = pd.read_csv(path)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = sorted({*HISTORY, "segment", target} - set(raw.columns))
    if missing:
        raise ValueError(f"{path}: not a Hillstrom-format file, missing column(s) {missing}")
    arms = set(raw["segment"].astype(str).unique())
    for role, arm in (("treatment", treatment), ("control", control)):
        if arm not in arms:
            raise ValueError(
                f"{path}: no customer in the {role} arm {arm!r} (arms: {sorted(arms)})"
            )
    kept = raw[raw["segment"].isin([treatment, control])]
    return kept.assign(treatment=(kept["segment"] == treatment).astype(int))
