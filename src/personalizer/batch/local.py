"""The local engine: partitions scored one after another in this process, each written whole."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from personalizer.batch.models import ScoringModels
from personalizer.batch.output import write_partition
from personalizer.batch.progress import progress_bar
from personalizer.batch.scoring import score_partition

log = logging.getLogger(__name__)


def run_local(
    models: ScoringModels,
    customers: pd.DataFrame,
    parts: Sequence[int],
    out: Path,
    on_finished: Callable[[int], None],
    show_progress: bool = True,
) -> None:
    """Score and write the partitions `parts` of `customers` (which carries a `part` column).

    `on_finished(k)` is called once partition k's files are in place (the manifest records it).
    """
    groups = dict(tuple(customers.groupby("part", sort=True)))
    total = sum(len(groups[k]) for k in parts if k in groups)
    with progress_bar("scoring customers (local)", total, show_progress) as advance:
        for part in parts:
            rows = groups.get(part, customers.iloc[:0])
            write_partition(out, part, score_partition(models, rows))
            on_finished(part)
            log.debug("partition %d: %d customers", part, len(rows))
            advance(len(rows))
