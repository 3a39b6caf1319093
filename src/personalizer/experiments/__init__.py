"""Experiments: deterministic assignment and holdouts, fixed-horizon and sequential analysis of
A/B tests, sample sizes. The Hillstrom case study (`experiments.hillstrom`) and the CLI
(`experiments.cli`) are imported on their own, since they pull in the models and Typer.
"""

from personalizer.experiments.analysis import (
    Comparison,
    analyze,
    block_uplift,
    compare_means,
    compare_proportions,
    wilson_interval,
)
from personalizer.experiments.assignment import (
    HOLDOUT,
    SRM_ALPHA,
    Experiment,
    SRMResult,
    assign_variant,
    bucket,
    in_holdout,
    srm_check,
    validate_weights,
)
from personalizer.experiments.sample_size import (
    SampleSize,
    minimum_detectable_effect,
    sample_size,
)
from personalizer.experiments.sequential import (
    SequentialResult,
    analyze_sequential,
    mixture_sprt,
    proportion_looks,
    running,
)

__all__ = [
    "HOLDOUT",
    "SRM_ALPHA",
    "Comparison",
    "Experiment",
    "SRMResult",
    "SampleSize",
    "SequentialResult",
    "analyze",
    "analyze_sequential",
    "assign_variant",
    "block_uplift",
    "bucket",
    "compare_means",
    "compare_proportions",
    "in_holdout",
    "minimum_detectable_effect",
    "mixture_sprt",
    "proportion_looks",
    "running",
    "sample_size",
    "srm_check",
    "validate_weights",
    "wilson_interval",
]
