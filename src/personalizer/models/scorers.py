"""What the scorers of the registered directory models share."""

from __future__ import annotations

import pandas as pd


def rows_of(scores: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a scorer's full table for the customers of `frame["customer_id"]` it knows."""
    wanted = scores["customer_id"].astype(str).isin(set(frame["customer_id"].astype(str)))
    return scores[wanted].reset_index(drop=True)
