"""Experiment results from the emails themselves: each variant's click, conversion and revenue
per customer, compared with the control by `personalizer.experiments.analyze`.

A send belongs to an experiment when its `email_sent` event names the `experiment` and `variant`
(`emails.email_sends`). The unit is the customer: over all their sends in the experiment, a
customer clicked (1/0), converted (1/0) and brought some attributed revenue. The control is the
variant named "control", else the first variant by name. The statistics (Wilson and Newcombe
intervals, z- and Welch tests) are the experiments package's; without that package installed,
or for an experiment with a single variant, there is nothing to show.
"""

from __future__ import annotations

import logging

import pandas as pd

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["experiment", "variant", "metric", "n", "value", "ci_low", "ci_high", "p_value"]
METRICS = ("clicked", "converted", "revenue")
CONTROL = "control"


def variant_results(outcomes: pd.DataFrame) -> pd.DataFrame | None:
    """Per experiment, metric and variant: the estimate, its interval and the p-value.

    Args:
        outcomes: `kpis.send_outcomes` output.

    Returns:
        `RESULT_COLUMNS` (the control first within each experiment and metric; its p-value NaN),
        or None when no send carries a variant or `personalizer.experiments` is not installed.
    """
    tagged = outcomes[(outcomes["experiment"].notna() & outcomes["variant"].notna()).to_numpy(bool)]
    tagged = tagged[tagged["sent"].to_numpy(bool)]
    if tagged.empty:
        return None
    try:
        from personalizer.experiments import analyze
    except ImportError:
        logger.info("personalizer.experiments is not installed: no experiment results")
        return None
    parts = []
    for experiment, sends in tagged.groupby("experiment", sort=True):
        customers = sends.groupby(["customer_id", "variant"], as_index=False).agg(
            clicked=("clicked", "max"), converted=("converted", "max"), revenue=("revenue", "sum")
        )
        customers = customers.astype({"clicked": int, "converted": int, "revenue": float})
        variants = sorted(customers["variant"].astype(str).unique())
        if len(variants) < 2:
            continue
        control = CONTROL if CONTROL in variants else variants[0]
        try:
            table = analyze(customers, "variant", control=control, outcomes=list(METRICS))
        except ValueError as exc:
            logger.warning("experiment %s cannot be analysed: %s", experiment, exc)
            continue
        parts.append(table.rename(columns={"mean": "value"}).assign(experiment=str(experiment)))
    if not parts:
        return None
    return pd.concat(parts, ignore_index=True)[RESULT_COLUMNS]
