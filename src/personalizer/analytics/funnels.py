"""Flow funnels: of the customers queued for each step of a flow, how many were sent the email,
opened it, clicked and bought.

The journeys' send queue holds one row per planned email (`QUEUE_COLUMNS`); a step's email carries
the campaign id ``"<flow>.<step>"``, so a queue row meets its send, opens, clicks and attributed
orders through (`customer_id`, that campaign). A customer queued twice for one step counts once.
"Opened" means opened by the reader (machine opens do not count), "converted" an order attributed
to the step's email (`attribution`).
"""

from __future__ import annotations

import pandas as pd

from personalizer.analytics.emails import FLOW_SEPARATOR

QUEUE_COLUMNS = ["customer_id", "flow", "step", "template", "send_at", "decision_id"]
STAGES = ("queued", "sent", "opened", "clicked", "converted")
FUNNEL_COLUMNS = ["flow", "step", *STAGES, "revenue"]
_STAGE_FLAGS = {
    "sent": "sent",
    "opened": "human_open",
    "clicked": "clicked",
    "converted": "converted",
}


def check_queue(queue: pd.DataFrame) -> None:
    """Raise a ValueError naming the columns a send queue frame lacks."""
    missing = [c for c in ("customer_id", "flow", "step") if c not in queue.columns]
    if missing:
        raise ValueError(f"the send queue lacks column(s) {', '.join(missing)}")


def flow_funnel(queue: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Customers at each stage (`STAGES`) per flow and step, with the attributed revenue.

    Args:
        queue: The send queue (`QUEUE_COLUMNS`; `customer_id`, `flow`, `step` required).
        outcomes: `kpis.send_outcomes` output.

    Returns:
        `FUNNEL_COLUMNS`, one row per flow and step; steps in the order they are first scheduled
        (`send_at`) within their flow, else by name.
    """
    check_queue(queue)
    if queue.empty:
        return pd.DataFrame({c: [] for c in FUNNEL_COLUMNS}).astype(
            {"flow": "string", "step": "string", **dict.fromkeys(STAGES, "int64"), "revenue": float}
        )
    rows = pd.DataFrame(
        {
            "customer_id": queue["customer_id"].astype(str).to_numpy(),
            "flow": queue["flow"].astype(str).to_numpy(),
            "step": queue["step"].astype(str).to_numpy(),
            "send_at": pd.to_datetime(queue["send_at"]).to_numpy()
            if "send_at" in queue.columns
            else pd.NaT,
        }
    )
    order = rows.groupby(["flow", "step"], sort=False)["send_at"].min().rename("_first")
    rows = rows.drop_duplicates(["customer_id", "flow", "step"])
    rows["campaign_id"] = rows["flow"] + FLOW_SEPARATOR + rows["step"]
    flags = ["sent", "human_open", "clicked", "converted", "revenue"]
    found = outcomes[["customer_id", "campaign_id", *flags]].assign(
        customer_id=outcomes["customer_id"].astype(str),
        campaign_id=outcomes["campaign_id"].astype(str),
    )
    joined = rows.merge(found, on=["customer_id", "campaign_id"], how="left")
    for flag in flags[:-1]:
        joined[flag] = joined[flag].astype("boolean").fillna(False).astype(bool)
    joined["revenue"] = joined["revenue"].fillna(0.0).astype(float)
    joined["queued"] = True
    for stage, flag in _STAGE_FLAGS.items():
        joined[stage] = joined[flag] & joined["sent"]
    table = joined.groupby(["flow", "step"], sort=False)[[*STAGES, "revenue"]].sum()
    table = table.join(order).reset_index()
    table = table.sort_values(["flow", "_first", "step"], kind="stable", na_position="last")
    table = table.astype({"flow": "string", "step": "string", **dict.fromkeys(STAGES, "int64")})
    return table[FUNNEL_COLUMNS].reset_index(drop=True)


def flow_totals(funnel: pd.DataFrame) -> pd.DataFrame:
    """The funnel of each whole flow (its steps summed), indexed by flow."""
    return funnel.groupby("flow", sort=True)[[*STAGES, "revenue"]].sum()
