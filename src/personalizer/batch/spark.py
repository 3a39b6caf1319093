"""The Spark engine: the same `score_partition` as a PySpark job (`mapInPandas`).

The prepared customers become a Spark DataFrame repartitioned so that each `part` of a wave is
one Spark task (so the task slots get equal shares); each Spark task groups its rows by `part`
and calls `score_partition` with the model bundle, which is broadcast once
(`SparkContext.broadcast`: unpickled once per executor Python worker, which Spark reuses). Scores and
recommendations come back as one long table (`table` says which), kept on disk and written twice,
each with `partitionBy("part")` and dynamic partition overwrite, into the same folders as the local
engine. Partitions go in waves of a few per Spark task slot; a wave's partitions are recorded as
finished once both its writes have committed, so an interrupted job loses at most one wave.

Submitting to a cluster: `personalizer score all --engine spark --master yarn` (or `spark://...`,
`k8s://...`) with `personalizer` installed in the executors' Python (`PYSPARK_PYTHON`) and `--out`
on storage every executor can write (HDFS/S3 paths through Spark's own file systems are not
handled by the resumption bookkeeping, which reads the folder from the driver: use a shared mount).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from personalizer.batch.models import ScoringModels
from personalizer.batch.output import TABLES, partition_dir
from personalizer.batch.progress import progress_bar
from personalizer.batch.scoring import (
    INPUT_COLUMNS,
    RECOMMENDATION_COLUMNS,
    SCORE_COLUMNS,
    empty_recommendations,
    score_partition,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

WAVE_PER_SLOT = 2  # partitions per task slot in one Spark job


def spark_session(master: str = "local[2]", driver_memory: str = "2g") -> SparkSession:
    """A Spark session for batch scoring that needs no network (no UI, UTC, Arrow on)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName("personalizer-score-all")
    if master.startswith("local"):
        builder = builder.config("spark.driver.host", "127.0.0.1")  # no network needed
    session = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.sources.partitionOverwriteMode", "dynamic")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def run_spark(
    models: ScoringModels,
    customers: pd.DataFrame,
    parts: Sequence[int],
    out: Path,
    on_finished: Callable[[int], None],
    master: str = "local[2]",
    show_progress: bool = True,
    spark: SparkSession | None = None,
) -> None:
    """Score and write the partitions `parts` of `customers` with Spark (see the module docstring)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = spark or spark_session(master)
    broadcast = spark.sparkContext.broadcast(models)
    wave_size = max(1, WAVE_PER_SLOT * spark.sparkContext.defaultParallelism)
    waves = [list(parts[i : i + wave_size]) for i in range(0, len(parts), wave_size)]
    sizes = customers.groupby("part").size()
    out = Path(out).resolve()
    slot_keys: dict[int, list[int]] = {}  # by wave size

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = broadcast.value
        chunks = [b for b in batches if len(b)]
        if not chunks:  # hash repartitioning may leave a Spark partition empty
            return
        rows = pd.concat(chunks, ignore_index=True)
        for part, group in rows.groupby("part", sort=True):
            yield _long(score_partition(bundle, group), int(part))

    with progress_bar("scoring customers (spark)", int(sizes.sum()), show_progress) as advance:
        for wave in waves:
            rows = customers[customers["part"].isin(wave)]
            if len(wave) not in slot_keys:
                slot_keys[len(wave)] = _slot_keys(spark, len(wave))
            keys = slot_keys[len(wave)]
            slots = rows["part"].map({part: keys[i] for i, part in enumerate(wave)})
            frame = spark.createDataFrame(_input_rows(rows, slots), schema=_input_schema())
            frame = frame.repartition(len(wave), "slot").drop("slot")
            result = frame.mapInPandas(score, schema=_long_schema()).persist(StorageLevel.DISK_ONLY)
            for table, columns in (
                ("scores", SCORE_COLUMNS),
                ("recommendations", RECOMMENDATION_COLUMNS),
            ):
                chosen = result.filter(F.col("table") == table).select(
                    *(_typed(F, c) for c in columns), "part"
                )
                chosen.write.mode("overwrite").partitionBy("part").parquet(str(out / table))
            result.unpersist()
            for part in wave:
                _fill_empty(out, part)
                on_finished(part)
            advance(int(sizes.reindex(wave).fillna(0).sum()))


def _fill_empty(out: Path, part: int) -> None:
    """A partition with no rows in a table (no consenting customer) gets an empty file."""
    for table in TABLES:
        folder = partition_dir(out, table, part)
        if any(folder.glob("*.parquet")):
            continue
        if table == "scores":
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in SCORE_COLUMNS})
        else:
            empty = empty_recommendations()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".part-{part:05d}.parquet.tmp"
        empty.to_parquet(tmp, index=False)
        os.replace(tmp, folder / f"part-{part:05d}.parquet")


def _typed(F: Any, column: str) -> Any:
    """Integer columns travel as doubles (nullable in pandas) and are written as longs."""
    if column in ("rank", "send_hour_of_week"):
        return F.col(column).cast("long").alias(column)
    return F.col(column)


def _slot_keys(spark: SparkSession, tasks: int) -> list[int]:
    """`tasks` integers that `repartition(tasks, column)` sends to `tasks` different Spark tasks.

    Hashing the partition numbers themselves often puts two of a wave's partitions in one task
    and none in another, which leaves a task slot idle while the other scores twice as much.
    Spark's hash partitioning is `pmod(hash(column), tasks)`; the keys are found with it.
    """
    found: dict[int, int] = {}
    probe = spark.range(0, 64 * tasks).selectExpr(
        "cast(id as int) as key", f"pmod(hash(cast(id as int)), {tasks}) as task"
    )
    for row in probe.collect():
        found.setdefault(int(row["task"]), int(row["key"]))
    if len(found) < tasks:  # not expected: 64 tries per task
        return list(range(tasks))
    return [found[t] for t in range(tasks)]


def _input_rows(rows: pd.DataFrame, slots: pd.Series) -> pd.DataFrame:
    frame = rows.loc[:, [*INPUT_COLUMNS, "part"]].copy()
    frame["part"] = frame["part"].astype("int32")
    frame["slot"] = slots.astype("int32")
    frame["segments"] = [list(s) for s in frame["segments"]]
    frame["timezone"] = frame["timezone"].astype(object).where(frame["timezone"].notna(), None)
    return frame


def _long(tables: dict[str, pd.DataFrame], part: int) -> pd.DataFrame:
    scores = tables["scores"].assign(table="scores", part=part)
    scores["send_hour_of_week"] = scores["send_hour_of_week"].astype("float64")
    recs = tables["recommendations"].assign(table="recommendations", part=part)
    both = pd.concat([scores, recs], ignore_index=True)
    # pandas 3 strings are Arrow-backed (chunked), which Spark's Arrow writer does not take
    for column in ("table", "customer_id", "product_id", "strategy"):
        both[column] = both[column].astype(object).where(both[column].notna(), None)
    both["email_consent"] = (
        both["email_consent"].astype(object).where(both["email_consent"].notna(), None)
    )
    both["segments"] = both["segments"].astype(object).where(both["segments"].notna(), None)
    both["part"] = both["part"].astype("int32")
    return both


def _input_schema() -> StructType:
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField("customer_id", T.StringType()),
            T.StructField("email_consent", T.BooleanType()),
            T.StructField("timezone", T.StringType()),
            T.StructField("segments", T.ArrayType(T.StringType())),
            *(_double(c) for c in ("churn_probability", "p_alive", "expected_purchases")),
            _double("predicted_value"),
            T.StructField("next_order_date", T.TimestampNTZType()),
            T.StructField("part", T.IntegerType()),
            T.StructField("slot", T.IntegerType()),
        ]
    )


def _long_schema() -> StructType:
    from pyspark.sql import types as T

    return T.StructType(
        [
            T.StructField("table", T.StringType()),
            T.StructField("part", T.IntegerType()),
            T.StructField("customer_id", T.StringType()),
            T.StructField("email_consent", T.BooleanType()),
            T.StructField("segments", T.ArrayType(T.StringType())),
            *(_double(c) for c in ("churn_probability", "p_alive", "expected_purchases")),
            _double("predicted_value"),
            T.StructField("next_order_date", T.TimestampNTZType()),
            T.StructField("send_hour_of_week", T.DoubleType()),
            _double("send_confidence"),
            T.StructField("send_at", T.TimestampNTZType()),
            T.StructField("rank", T.DoubleType()),  # null on score rows; long when written
            T.StructField("product_id", T.StringType()),
            _double("score"),
            T.StructField("strategy", T.StringType()),
        ]
    )


def _double(name: str) -> Any:
    from pyspark.sql import types as T

    return T.StructField(name, T.DoubleType())
