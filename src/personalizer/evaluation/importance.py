"""Which inputs a model leans on: LightGBM gain importance, as a table for MLflow and reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def gain_importance(boosters: Mapping[str, Any], top: int = 20) -> pd.DataFrame:
    """The `top` features of each LightGBM booster by total split gain, with their share.

    Args:
        boosters: name → `lightgbm.Booster` (e.g. one per target or per learner role).
        top: features kept per booster.

    Returns:
        Columns `model`, `feature`, `gain`, `share` (of the booster's total gain), best first.
    """
    parts = []
    for name, booster in boosters.items():
        gain = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
        total = gain.sum()
        frame = pd.DataFrame(
            {
                "model": name,
                "feature": booster.feature_name(),
                "gain": gain,
                "share": gain / total if total > 0 else 0.0,
            }
        )
        parts.append(frame.sort_values("gain", ascending=False, kind="stable").head(top))
    columns = ["model", "feature", "gain", "share"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
