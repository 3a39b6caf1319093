"""Email KPIs for any cut of the sends: all of them, per campaign, flow, variant or segment.

Counts are unique per send (one customer, one campaign): `opens` counts emails opened at least once.
Rates are over deliveries, except click-to-open (over human opens), the machine-open share (over
opens) and revenue per send (over sends):

| KPI | definition |
| --- | --- |
| delivery_rate | deliveries / sends |
| open_rate | opened by anyone, machine opens included / deliveries (inflated by machine opens) |
| human_open_rate | opened by the reader (an open not made by a machine, or a click) / deliveries |
| machine_open_share | opened only by a machine (Apple MPP) / opens |
| ctr | clicked / deliveries |
| click_to_open | clicked / human opens |
| conversion_rate | sends with an attributed order / deliveries |
| revenue_per_send | attributed revenue / sends |
| unsubscribe_rate | unsubscribed / deliveries |

Attributed orders and revenue come from `attribution.conversions` (last click within the window).
Revenue credited to a campaign whose send lies outside the period looked at is kept (a row with no
send), so totals add up; it adds to revenue but not to the rates' denominators.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from personalizer.analytics.emails import SEND_COLUMNS, split_flow

OUTCOME_COLUMNS = [
    *SEND_COLUMNS,
    "opened",
    "machine_only_open",
    "converted",
    "orders",
    "revenue",
]
COUNT_COLUMNS = [
    "sends",
    "deliveries",
    "bounces",
    "opens",
    "human_opens",
    "machine_opens",
    "machine_only_opens",
    "clicks",
    "conversions",
    "orders",
    "revenue",
    "unsubscribes",
]
RATE_COLUMNS = [
    "delivery_rate",
    "open_rate",
    "human_open_rate",
    "machine_open_share",
    "ctr",
    "click_to_open",
    "conversion_rate",
    "revenue_per_send",
    "unsubscribe_rate",
]
KPI_COLUMNS = [*COUNT_COLUMNS, *RATE_COLUMNS, "first_sent_at"]
_SOURCES = {
    "sends": "sent",
    "deliveries": "delivered",
    "bounces": "bounced",
    "opens": "opened",
    "human_opens": "human_open",
    "machine_opens": "machine_open",
    "machine_only_opens": "machine_only_open",
    "clicks": "clicked",
    "conversions": "converted",
    "orders": "orders",
    "revenue": "revenue",
    "unsubscribes": "unsubscribed",
}
_RATES = {  # rate: (numerator, denominator)
    "delivery_rate": ("deliveries", "sends"),
    "open_rate": ("opens", "deliveries"),
    "human_open_rate": ("human_opens", "deliveries"),
    "machine_open_share": ("machine_only_opens", "opens"),
    "ctr": ("clicks", "deliveries"),
    "click_to_open": ("clicks", "human_opens"),
    "conversion_rate": ("conversions", "deliveries"),
    "revenue_per_send": ("revenue", "sends"),
    "unsubscribe_rate": ("unsubscribes", "deliveries"),
}


def send_outcomes(sends: pd.DataFrame, conversions: pd.DataFrame) -> pd.DataFrame:
    """Sends with their attributed orders and revenue (`OUTCOME_COLUMNS`).

    Args:
        sends: `emails.email_sends` output.
        conversions: `attribution.conversions` output (per customer and campaign).

    Returns:
        One row per send, plus one per (customer, campaign) credited with revenue but not sent in
        the period (`sent` False, every other flag False).
    """
    key = ["customer_id", "campaign_id"]
    left = sends.assign(customer_id=sends["customer_id"].astype(str))
    left["campaign_id"] = left["campaign_id"].astype(str)
    right = conversions.assign(
        customer_id=conversions["customer_id"].astype(str),
        campaign_id=conversions["campaign_id"].astype(str),
    )
    out = left.merge(right, on=key, how="outer", indicator=True)
    extra = (out["_merge"] == "right_only").to_numpy()
    for column in ("sent", "delivered", "bounced", "human_open", "machine_open", "clicked"):
        out[column] = out[column].astype("boolean").fillna(False).astype(bool)
    out["unsubscribed"] = out["unsubscribed"].astype("boolean").fillna(False).astype(bool)
    if extra.any():
        flow, step = split_flow(out["campaign_id"])
        out.loc[extra, "flow"] = flow[extra]
        out.loc[extra, "step"] = step[extra]
    out["orders"] = out["orders"].fillna(0).astype(np.int64)
    out["revenue"] = out["revenue"].fillna(0.0).astype(float)
    out["opened"] = out["human_open"] | out["machine_open"]
    out["machine_only_open"] = out["machine_open"] & ~out["human_open"]
    out["converted"] = out["orders"] > 0
    out = out.sort_values(key, kind="stable", ignore_index=True)
    return out[OUTCOME_COLUMNS]


def kpi_table(outcomes: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """The KPIs (`KPI_COLUMNS`) of `outcomes`, overall or per value of `by`.

    Args:
        outcomes: `send_outcomes` output (or `segment_outcomes`, for `by="segment"`).
        by: Column(s) to group by (e.g. "campaign_id", "flow", ["experiment", "variant"],
            "segment"); rows where one is NA are left out. None: one row, labelled "all".

    Returns:
        One row per group, indexed by `by`; rates are NaN where their denominator is 0.
    """
    frame = outcomes.assign(**{name: outcomes[src] for name, src in _SOURCES.items()})
    if by is None:
        frame = frame.assign(_all="all")
        by = "_all"
    if frame.empty:
        index = (
            pd.MultiIndex.from_tuples([], names=by)
            if isinstance(by, list)
            else pd.Index([], name=by, dtype="string")
        )
        table = pd.DataFrame(0, index=index, columns=COUNT_COLUMNS)
    else:
        table = frame.groupby(by, dropna=True, sort=True)[COUNT_COLUMNS].sum()
    table = table.astype({c: np.int64 for c in COUNT_COLUMNS if c != "revenue"})
    table["revenue"] = table["revenue"].astype(float)
    for rate, (num, den) in _RATES.items():
        denominator = table[den].astype(float)
        table[rate] = (table[num] / denominator.where(denominator > 0)).astype(float)
    first = frame.groupby(by, dropna=True, sort=True)["sent_at"].min()
    table["first_sent_at"] = first.reindex(table.index) if len(table) else pd.Series(dtype="M8[us]")
    if by == "_all":
        table.index.name = None
    return table[KPI_COLUMNS]


def headline(outcomes: pd.DataFrame) -> pd.Series:
    """The KPIs of all sends together (one `kpi_table` row)."""
    table = kpi_table(outcomes)
    if table.empty:
        empty = pd.Series(0.0, index=KPI_COLUMNS, dtype=object)
        for rate in RATE_COLUMNS:
            empty[rate] = float("nan")
        empty["first_sent_at"] = pd.NaT
        return empty
    return table.iloc[0]


def segment_outcomes(outcomes: pd.DataFrame, memberships: pd.DataFrame | None) -> pd.DataFrame:
    """`outcomes` with a `segment` column: one row per send and segment the customer was in.

    A send belongs to the segments its customer was a member of when it was sent
    (`entered_at <= sent_at < exited_at`). The membership history starts at the first segment
    evaluation; a send before it is counted in the segments the customer was in at that first
    evaluation (the closest thing known). Rows without a send time are left out.

    Args:
        outcomes: `send_outcomes` output.
        memberships: The membership history (`segments.store.load_history`), None if none yet.
    """
    if memberships is None or memberships.empty or outcomes.empty:
        return outcomes.iloc[0:0].assign(segment=pd.Series(dtype="string"))
    stays = memberships[["customer_id", "segment", "entered_at", "exited_at"]].assign(
        customer_id=memberships["customer_id"].astype(str)
    )
    start = pd.Timestamp(stays["entered_at"].min())
    timed = outcomes[outcomes["sent_at"].notna().to_numpy(bool)]
    at = timed["sent_at"].astype("datetime64[us]").clip(lower=start)
    joined = timed.assign(_at=at.to_numpy()).merge(stays, on="customer_id", how="inner")
    entered = joined["entered_at"].astype("datetime64[us]")
    exited = joined["exited_at"].astype("datetime64[us]")
    inside = (entered <= joined["_at"]) & (exited.isna() | (joined["_at"] < exited))
    kept = joined[inside.to_numpy(bool)]
    out = kept[OUTCOME_COLUMNS].assign(segment=kept["segment"].astype("string"))
    return out.reset_index(drop=True)
