"""Segment membership history on disk, and one batch run over the warehouse that updates it.

The history lives in the data home, under `segments/`:

- `memberships.parquet`: one row per stay of a customer in a segment (`MEMBERSHIP_COLUMNS` of
  `segments.batch`; `exited_at` empty while the stay is open);
- `changes.parquet`: every enter/exit record of every run so far (`CHANGE_COLUMNS`), appended.

Files are written to a temporary name and renamed, so a reader sees either the old or the new file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from personalizer.config import Settings
from personalizer.data.warehouse import Warehouse
from personalizer.segments.batch import (
    CHANGE_COLUMNS,
    evaluable,
    evaluate_warehouse,
    update_memberships,
)
from personalizer.segments.definitions import SegmentDefinition

MEMBERSHIPS_FILE = "memberships.parquet"
CHANGES_FILE = "changes.parquet"


@dataclass(frozen=True)
class SegmentRun:
    """The outcome of one batch evaluation: members, sizes, skipped segments and changes."""

    as_of: pd.Timestamp
    members: pd.DataFrame
    sizes: pd.Series
    skipped: dict[str, str] = field(default_factory=dict)
    changes: pd.DataFrame | None = None


def segments_dir(settings: Settings) -> Path:
    """Where the membership history of this data home lives."""
    return settings.home / "segments"


def load_history(directory: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The stored memberships and changes, None for a file not written yet."""
    memberships, changes = directory / MEMBERSHIPS_FILE, directory / CHANGES_FILE
    return (
        pd.read_parquet(memberships) if memberships.exists() else None,
        pd.read_parquet(changes) if changes.exists() else None,
    )


def record_evaluation(
    directory: Path,
    current: pd.DataFrame,
    as_of: pd.Timestamp,
    segments: list[str],
) -> pd.DataFrame:
    """Fold one evaluation into the stored history; return the changes it brought.

    Args:
        directory: the history folder (`segments_dir`), created if missing.
        current: `evaluate_segments` output as of `as_of`.
        as_of: the moment of `current`; not before the latest change stored.
        segments: the segments that were evaluated (others keep their open memberships).

    Raises:
        ValueError: `as_of` is before the latest change of the stored history.
    """
    previous, history = load_history(directory)
    memberships, changes = update_memberships(previous, current, as_of, segments)
    changes = changes.astype({"at": "datetime64[us]"})
    if history is not None and len(history):
        all_changes = pd.concat([history[CHANGE_COLUMNS], changes], ignore_index=True)
    else:
        all_changes = changes
    directory.mkdir(parents=True, exist_ok=True)
    _replace(memberships, directory / MEMBERSHIPS_FILE)
    _replace(all_changes, directory / CHANGES_FILE)
    return changes


def run_segments(
    settings: Settings,
    definitions: list[SegmentDefinition],
    as_of: pd.Timestamp,
    *,
    predictions: pd.DataFrame | None = None,
    record: bool = True,
) -> SegmentRun:
    """Evaluate `definitions` over the warehouse as of `as_of` and (by default) record history.

    `predictions` (`read_predictions`) feed the predicted segments; without them those are
    skipped and their open memberships stay as they were.
    """
    ready, skipped = evaluable(definitions, predictions)
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        members = evaluate_warehouse(wh, ready, as_of, predictions)
    names = [d.name for d in ready]
    sizes = members["segment"].value_counts().reindex(names, fill_value=0).astype(int)
    changes = None
    if record:
        changes = record_evaluation(segments_dir(settings), members, as_of, names)
    return SegmentRun(as_of, members, sizes, skipped, changes)


def read_predictions(paths: list[Path]) -> pd.DataFrame | None:
    """Prediction files (Parquet, CSV) joined on `customer_id`; None for no file.

    Raises:
        ValueError: naming the file, when it has no `customer_id` or repeats a column of another.
    """
    table: pd.DataFrame | None = None
    owner: dict[str, Path] = {}
    for path in paths:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
        if "customer_id" not in frame.columns:
            raise ValueError(f"{path}: predictions need a customer_id column")
        frame = frame.assign(customer_id=frame["customer_id"].astype(str))
        frame = frame.drop_duplicates("customer_id", keep="last").set_index("customer_id")
        for column in frame.columns:
            if column in owner:
                raise ValueError(f"{path}: column {column!r} is also in {owner[column]}")
            owner[column] = path
        table = frame if table is None else table.join(frame, how="outer")
    return None if table is None else table.reset_index()


def _replace(frame: pd.DataFrame, path: Path) -> None:
    partial = path.with_suffix(".parquet.tmp")
    frame.to_parquet(partial, index=False)
    partial.replace(path)
