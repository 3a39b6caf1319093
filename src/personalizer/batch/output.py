"""The output folder of a batch scoring run: partition files, the manifest, and reading it back.

Layout under `DIR`:

```
DIR/manifest.json                               what was scored with what, and what is finished
DIR/scores/part=<k>/part-<k>.parquet            one row per customer of partition k
DIR/recommendations/part=<k>/part-<k>.parquet   `n` rows per consenting customer of partition k
```

A partition's files are written under a temporary name and renamed into place, and the partition is
added to the manifest's `finished` list only after both files are in place, so an interrupted run
leaves whole partitions only. A partition counts as finished when the manifest lists it *and* its
files exist (a deleted file is scored again). The Spark engine writes the same folders with Spark's
own file names (`part-*.parquet` inside each `part=<k>` folder); `read_output` reads either.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from personalizer.batch.scoring import RECOMMENDATION_COLUMNS, SCORE_COLUMNS

TABLES = ("scores", "recommendations")
MANIFEST = "manifest.json"
FORMAT = 1


class ManifestMismatch(ValueError):
    """The folder holds (part of) a run made with other models or options."""


@dataclass
class Manifest:
    """What a run scored and with what: compared on resume, extended as partitions finish."""

    models: dict[str, str | None]
    as_of: str
    partitions: int
    n: int
    exclude_purchased: bool
    engine: str
    customers: int = 0
    finished: list[int] = field(default_factory=list)
    completed_at: str | None = None
    format: int = FORMAT

    def key(self) -> dict[str, Any]:
        """What must match for a re-run to reuse finished partitions (not the engine)."""
        return {
            "models": self.models,
            "as_of": self.as_of,
            "partitions": self.partitions,
            "n": self.n,
            "exclude_purchased": self.exclude_purchased,
            "format": self.format,
        }


def read_manifest(out: Path) -> Manifest | None:
    """The manifest of `out`, or None when there is none."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Manifest(**{k: v for k, v in raw.items() if k in Manifest.__dataclass_fields__})


def write_manifest(out: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically (temporary file, then rename)."""
    path = Path(out) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest.finished = sorted(set(manifest.finished))
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(asdict(manifest), indent=1, sort_keys=True))
    os.replace(tmp, path)


def partition_dir(out: Path, table: str, part: int) -> Path:
    """The folder of one partition of one table."""
    return Path(out) / table / f"part={part}"


def is_written(out: Path, part: int) -> bool:
    """Both tables of partition `part` have at least one Parquet file."""
    return all(any(partition_dir(out, t, part).glob("*.parquet")) for t in TABLES)


def finished_partitions(out: Path, manifest: Manifest) -> set[int]:
    """Partitions listed as finished whose files are still there."""
    return {k for k in manifest.finished if is_written(out, k)}


def clear(out: Path, parts: Iterable[int] | None = None) -> None:
    """Remove the given partitions' folders (None: every table folder and the manifest)."""
    out = Path(out)
    if parts is None:
        for table in TABLES:
            shutil.rmtree(out / table, ignore_errors=True)
        (out / MANIFEST).unlink(missing_ok=True)
        return
    for part in parts:
        for table in TABLES:
            shutil.rmtree(partition_dir(out, table, part), ignore_errors=True)


def write_partition(out: Path, part: int, tables: dict[str, pd.DataFrame]) -> None:
    """Write one partition's tables, each under a temporary name renamed into place."""
    for table in TABLES:
        folder = partition_dir(out, table, part)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        final = folder / f"part-{part:05d}.parquet"
        tmp = folder / f".part-{part:05d}.parquet.tmp"  # hidden: readers skip it
        tables[table].to_parquet(tmp, index=False)
        os.replace(tmp, final)


def read_output(out: Path, table: str = "scores") -> pd.DataFrame:
    """One table of a finished run as one frame, sorted, with stable dtypes.

    Works on the folders of either engine. `scores` is sorted by `customer_id`,
    `recommendations` by `customer_id, rank`; the `part` column is kept.
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, got {table!r}")
    folder = Path(out) / table
    files = sorted(p for p in folder.glob("part=*/*.parquet") if not p.name.startswith("."))
    columns = list(SCORE_COLUMNS if table == "scores" else RECOMMENDATION_COLUMNS)
    frames = []
    for path in files:
        frame = pd.read_parquet(path)
        frame["part"] = int(path.parent.name.split("=", 1)[1])
        frames.append(frame[[*columns, "part"]])
    if not frames:
        raise FileNotFoundError(f"no {table} files under {folder}")
    frame = pd.concat(frames, ignore_index=True)
    keys = ["customer_id"] if table == "scores" else ["customer_id", "rank"]
    return normalise(frame.sort_values(keys, ignore_index=True), table)


def normalise(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """The documented dtypes, whatever wrote the file (pandas or Spark)."""
    if table == "scores":
        segments = frame["segments"].map(lambda v: [] if v is None else [str(s) for s in v])
        return frame.assign(
            customer_id=frame["customer_id"].astype(str),
            email_consent=frame["email_consent"].astype(bool),
            segments=segments,
            send_hour_of_week=frame["send_hour_of_week"].astype("Int64"),
            next_order_date=pd.to_datetime(frame["next_order_date"]).astype("datetime64[us]"),
            send_at=pd.to_datetime(frame["send_at"]).astype("datetime64[us]"),
            **{c: frame[c].astype(float) for c in _FLOATS},
        )
    return frame.assign(
        customer_id=frame["customer_id"].astype(str),
        rank=frame["rank"].astype("int64"),
        product_id=frame["product_id"].astype(str),
        score=frame["score"].astype(float),
        strategy=frame["strategy"].astype(str),
    )


_FLOATS = (
    "churn_probability",
    "p_alive",
    "expected_purchases",
    "predicted_value",
    "send_confidence",
)
