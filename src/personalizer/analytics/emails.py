"""Email events folded into one row per send: what happened to each email a customer was sent.

A *send* is one campaign's email to one customer, keyed by (`customer_id`, `campaign_id`). Every
email event of that pair counts towards it: sent, delivered, bounced, opened (by the reader or by a
machine), clicked, unsubscribed. Counts are therefore *unique*: a customer opening one email five
times is one open.

- The campaign of an event is its `campaign_id`; an event without one takes the `utm_campaign` of
  the link in its properties (a click on a tagged link, see `render.environment.utm`).
- Machine opens (Apple Mail Privacy Protection's proxy prefetching every image; recognised by
  `features.engagement_times.machine_opens`) are kept apart from the reader's opens. A click proves
  a human open, so a clicked send counts as opened by its reader even without an open event.
- A flow's emails carry the campaign id ``"<flow>.<step>"`` (the journeys' send queue), so `flow`
  and `step` are read from it; an experiment's variant comes from the `experiment` and `variant`
  properties of the `email_sent` event.
- Only pairs with a send event (sent, delivered or bounced) are sends; opens or clicks of emails
  sent before the period looked at are left out of the rates (their clicks still attribute orders).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

from personalizer.features.engagement_times import machine_opens, naive_utc
from personalizer.schema import EMAIL_EVENT_TYPES, EventType

FLAG_COLUMNS = [
    "sent",
    "delivered",
    "bounced",
    "human_open",
    "machine_open",
    "clicked",
    "unsubscribed",
]
SEND_COLUMNS = [
    "customer_id",
    "campaign_id",
    "sent_at",
    *FLAG_COLUMNS,
    "flow",
    "step",
    "experiment",
    "variant",
]
EMAIL_TYPES = tuple(sorted(t.value for t in EMAIL_EVENT_TYPES))
FLOW_SEPARATOR = "."
_SEND_TYPES = (EventType.EMAIL_SENT.value, EventType.EMAIL_DELIVERED.value)


def parse_properties(value: Any) -> dict[str, Any]:
    """An event's `properties` as a dict: JSON text is parsed, anything unreadable is `{}`."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def utm_campaign(properties: Any) -> str | None:
    """The `utm_campaign` of an event: a property of that name, or a parameter of a link in it.

    Args:
        properties: The event's properties (dict or JSON text), e.g. ``{"url": "https://shop/p?
            utm_campaign=winback.1"}`` or ``{"utm_campaign": "winback.1"}``.

    Returns:
        The campaign, or None when no property or link carries one.
    """
    props = parse_properties(properties)
    direct = props.get("utm_campaign")
    if isinstance(direct, str) and direct.strip():
        return direct.strip()
    for value in props.values():
        if isinstance(value, str) and "utm_campaign=" in value:
            found = parse_qs(urlsplit(value.strip()).query).get("utm_campaign")
            if found and found[0].strip():
                return found[0].strip()
    return None


def event_campaigns(events: pd.DataFrame, prefer_utm: bool = False) -> pd.Series:
    """The campaign of each event: `campaign_id`, else the `utm_campaign` of its properties.

    Args:
        events: Canonical events (`campaign_id`, optional `properties`).
        prefer_utm: Take the link's `utm_campaign` first and `campaign_id` only without one (how a
            click credits a campaign for attribution).

    Returns:
        A string Series aligned with `events`, NA where neither is known.
    """
    index, events = events.index, events.reset_index(drop=True)  # positions: any index works
    ids = events["campaign_id"] if "campaign_id" in events.columns else None
    base = (
        pd.Series(pd.NA, index=events.index, dtype="string")
        if ids is None
        else ids.astype("string").str.strip().replace("", pd.NA)
    )
    if "properties" not in events.columns or events.empty:
        return base.set_axis(index)
    look = events["properties"] if prefer_utm else events["properties"][base.isna()]
    text = look.map(lambda p: json.dumps(p) if isinstance(p, dict) else p).astype("string")
    look = look[text.str.contains("utm_campaign", regex=False).fillna(False).to_numpy(bool)]
    utm = pd.Series([utm_campaign(p) for p in look], index=look.index, dtype="string")
    utm = utm.dropna()
    out = base.copy()
    out.loc[utm.index] = utm
    return out.set_axis(index)


def email_sends(events: pd.DataFrame, since: pd.Timestamp | None = None) -> pd.DataFrame:
    """One row per send (customer and campaign) with what happened to it (`SEND_COLUMNS`).

    Args:
        events: Canonical events (`customer_id`, `type`, `occurred_at`, `campaign_id`, optional
            `properties`); other event types are ignored.
        since: Keep only sends first sent at or after this (naive UTC).

    Returns:
        `SEND_COLUMNS`: `sent_at` is the first send event; the flags are booleans; `flow` and
        `step` are NA for campaigns that are not a flow's step, `experiment` and `variant` NA
        outside experiments. For a campaign without any `email_delivered` event (its sender
        reports no delivery receipts), every send that did not bounce counts as delivered.
    """
    if events.empty:
        return _empty_sends()
    events = events.reset_index(drop=True)
    kind = events["type"].astype("string")
    email = events[kind.isin(EMAIL_TYPES).fillna(False).to_numpy(bool)]
    campaign = event_campaigns(email)
    email = email[campaign.notna().to_numpy(bool)]
    if email.empty:
        return _empty_sends()
    kind = email["type"].astype(str).to_numpy()
    machine = machine_opens(email)
    frame = pd.DataFrame(
        {
            "customer_id": email["customer_id"].astype(str).to_numpy(),
            "campaign_id": campaign[campaign.notna()].astype(str).to_numpy(),
            "at": naive_utc(email["occurred_at"], "events.occurred_at")
            .astype("datetime64[us]")
            .to_numpy(),
            "sent": np.isin(kind, (*_SEND_TYPES, EventType.EMAIL_BOUNCED.value)),
            "delivered": kind == EventType.EMAIL_DELIVERED.value,
            "bounced": kind == EventType.EMAIL_BOUNCED.value,
            "human_open": (kind == EventType.EMAIL_OPEN.value) & ~machine,
            "machine_open": machine,
            "clicked": kind == EventType.EMAIL_CLICK.value,
            "unsubscribed": kind == EventType.UNSUBSCRIBE.value,
        }
    )
    frame["send_at"] = frame["at"].where(frame["sent"])
    sends = frame.groupby(["customer_id", "campaign_id"], sort=True).agg(
        sent_at=("send_at", "min"), **{f: (f, "max") for f in FLAG_COLUMNS}
    )
    sends = sends[sends["sent"]].reset_index()
    receipts = sends.groupby("campaign_id")["delivered"].transform("any").astype(bool)
    sends["delivered"] = sends["delivered"] | (~receipts & ~sends["bounced"])
    sends["human_open"] = sends["human_open"] | sends["clicked"]
    if since is not None:
        sends = sends[sends["sent_at"] >= pd.Timestamp(since)]
    sends = _with_flows(sends)
    sends = _with_variants(sends, email, campaign)
    return sends[SEND_COLUMNS].reset_index(drop=True)


def split_flow(campaigns: pd.Series) -> tuple[pd.Series, pd.Series]:
    """`flow` and `step` of campaign ids ``"<flow>.<step>"`` (NA for other campaigns)."""
    parts = campaigns.astype("string").str.split(FLOW_SEPARATOR, n=1, expand=True)
    if parts.shape[1] < 2:
        na = pd.Series(pd.NA, index=campaigns.index, dtype="string")
        return na, na.copy()
    flow, step = parts[0], parts[1]
    valid = flow.str.len().gt(0) & step.str.len().gt(0) & step.notna()
    return flow.where(valid), step.where(valid)


def _with_flows(sends: pd.DataFrame) -> pd.DataFrame:
    flow, step = split_flow(sends["campaign_id"])
    return sends.assign(flow=flow.to_numpy(), step=step.to_numpy())


def _with_variants(sends: pd.DataFrame, email: pd.DataFrame, campaign: pd.Series) -> pd.DataFrame:
    """`experiment` and `variant` from the properties of each send's `email_sent` event."""
    sends = sends.assign(
        experiment=pd.Series(pd.NA, index=sends.index, dtype="string"),
        variant=pd.Series(pd.NA, index=sends.index, dtype="string"),
    )
    if "properties" not in email.columns or sends.empty:
        return sends
    is_sent = (email["type"].astype(str) == EventType.EMAIL_SENT.value).to_numpy()
    props = email["properties"][is_sent]
    text = props.map(lambda p: json.dumps(p) if isinstance(p, dict) else p).astype("string")
    tagged = text.str.contains('"variant"', regex=False).fillna(False).to_numpy(bool)
    if not tagged.any():
        return sends
    rows = email[is_sent][tagged]
    parsed = [parse_properties(p) for p in rows["properties"]]
    found = pd.DataFrame(
        {
            "customer_id": rows["customer_id"].astype(str).to_numpy(),
            "campaign_id": campaign[rows.index].astype(str).to_numpy(),
            "experiment_": [_label(p.get("experiment")) for p in parsed],
            "variant_": [_label(p.get("variant")) for p in parsed],
        }
    ).drop_duplicates(["customer_id", "campaign_id"])
    merged = sends.merge(found, on=["customer_id", "campaign_id"], how="left")
    merged["experiment"] = merged["experiment_"].astype("string")
    merged["variant"] = merged["variant_"].astype("string")
    return merged.drop(columns=["experiment_", "variant_"])


def _label(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _empty_sends() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=bool) for c in SEND_COLUMNS})
    for column in ("customer_id", "campaign_id", "flow", "step", "experiment", "variant"):
        frame[column] = pd.Series(dtype="string")
    frame["sent_at"] = pd.Series(dtype="datetime64[us]")
    return frame[SEND_COLUMNS]
