"""Offline evaluation: temporal splits, ranking metrics, and model comparison tables."""

from personalizer.evaluation.compare import best, compare, render_table, to_markdown
from personalizer.evaluation.metrics import coverage, evaluate, evaluate_split, per_customer
from personalizer.evaluation.split import MODES, Split, default_cutoff, temporal_split

__all__ = [
    "MODES",
    "Split",
    "best",
    "compare",
    "coverage",
    "default_cutoff",
    "evaluate",
    "evaluate_split",
    "per_customer",
    "render_table",
    "temporal_split",
    "to_markdown",
]
