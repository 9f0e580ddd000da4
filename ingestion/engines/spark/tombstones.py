"""Delete detection for PostgreSQL tables on the Spark engine: the key anti-join runs on the executors.

The same rule and the same rows as the DuckDB engine (`engines.duckdb.tombstones`): the latest version per
key over the newest committed live-keys snapshot plus the landed files of later runs and this run
(`engines.deletes`), read with `spark.read.parquet` over the lake's Hadoop URIs; the source's key set
read by Spark's JDBC reader (a keys-only query); a left-anti join; tombstones with the key, cursor =
greatest(live cursor, horizon), every other column null and `_op = 'd'`. They are written by the
executors under `<lake>/_tmp/<run_id>/` and moved into `landing/` as `part-<run_id>-900000.parquet`;
the next snapshot is written by the executors too. Only the count reaches the driver.

pyspark is imported inside functions: the Spark engine is loaded only when a run asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ingestion.contract import INGESTED_AT, OP, RUN_ID, TOMBSTONE, latest_version_order
from ingestion.engines.base import TombstoneBatch
from ingestion.engines.deletes import key_inputs, snapshot_columns, tombstone_path
from ingestion.engines.spark.common import metadata_columns, observation_name, spark_type, spark_uri
from ingestion.engines.spark.jdbc import jdbc_reader
from ingestion.errors import EngineError
from ingestion.lake import fs as lakefs
from ingestion.observe.logs import event
from ingestion.plan.jdbc import TIME_CURSORS, JdbcPlan, JdbcTable, select_sql
from ingestion.redact import redact
from ingestion.sqltext import quote_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def _horizon(table: JdbcTable, plan: JdbcPlan) -> Any:
    """The run's horizon as a Spark column in the cursor column's own terms (None: no time cursor)."""
    from pyspark.sql import functions as F

    if plan.horizon is None or table.cursor_type not in TIME_CURSORS:
        return None
    instant = F.lit(plan.horizon.value).cast("timestamp")
    if table.cursor_type == "timestamptz":
        return instant
    # The UTC instant as wall-clock time in the column's zone (the session zone is UTC).
    return F.from_utc_timestamp(instant, table.cursor_timezone or "UTC").cast("timestamp_ntz")


def _typed(df: DataFrame, table: JdbcTable, columns: list[str]) -> DataFrame:
    """The snapshot columns of landed or snapshot files, cast to the table's types."""
    from pyspark.sql import functions as F

    meta = {OP: "string", INGESTED_AT: "timestamp", RUN_ID: "string"}
    return df.select(
        *[F.col(quote_spark(c)).cast(meta.get(c) or spark_type(table.types[c])).alias(c) for c in columns]
    )


def _source_keys(spark: SparkSession, batch: TombstoneBatch) -> DataFrame:
    """The source's key set through Spark's JDBC reader (the keys-only query PostgreSQL answers from its index)."""
    from pyspark.sql import functions as F

    table = batch.table
    reader = jdbc_reader(spark, batch.connection, select_sql(table, None, table.primary_key), table.fetchsize)
    return reader.load().select(
        *[F.col(quote_spark(k)).cast(spark_type(table.types[k])).alias(k) for k in table.primary_key]
    )


def land_tombstones(spark: SparkSession, batch: TombstoneBatch) -> int:
    """Write this run's tombstones for keys deleted at the source; returns how many were written."""
    table = batch.table
    if not batch.has_landed or not table.primary_key:
        return 0
    inputs = key_inputs(batch)
    if not inputs.files:
        return 0
    staging = lakefs.join(batch.lake_root, "_tmp", batch.run_id, table.source, table.name, "tombstones")
    latest = None
    try:
        gone, latest = _detect(spark, batch, inputs.snapshot, inputs.landed, staging)
        published = _publish_tombstones(staging, batch) if gone else []
        if gone or inputs.own_files:
            # The run will commit: the next run starts from this snapshot.
            _write_snapshot(spark, batch, latest, inputs.snapshot_dir, published)
    except Exception as exc:
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            first = redact(str(exc)).strip().splitlines()[:3]
            raise EngineError(
                f"{table.source}.{table.name}: delete detection failed: {' '.join(first)}"
            ) from None
        raise
    finally:
        if latest is not None:
            latest.unpersist()
        lakefs.remove_tree(staging)
    if gone:
        event(
            "keys deleted at the source: tombstones landed", table=f"{table.source}.{table.name}", keys=gone
        )
    return gone


def _detect(
    spark: SparkSession, batch: TombstoneBatch, snapshot: list[str], landed: list[str], staging: str
) -> tuple[int, DataFrame]:
    """Write the tombstones under the staging folder; returns their count and the latest versions (cached)."""
    from pyspark import StorageLevel
    from pyspark.sql import Observation, Window
    from pyspark.sql import functions as F

    table, plan = batch.table, batch.plan
    columns = snapshot_columns(table)
    frames = [
        _typed(spark.read.parquet(*[spark_uri(f) for f in files]), table, columns)
        for files in (snapshot, landed)
        if files
    ]
    union = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    order = [F.col(quote_spark(t.column)).desc_nulls_last() for t in latest_version_order(table.cursor)]
    w = Window.partitionBy(*[F.col(quote_spark(k)) for k in table.primary_key]).orderBy(*order)
    # Cached: the tombstones and the next snapshot both start from it (one scan of the inputs).
    latest = (
        union.withColumn("_rn", F.row_number().over(w))
        .where("_rn = 1")
        .drop("_rn")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    gone = latest.join(_source_keys(spark, batch), list(table.primary_key), "left_anti").where(
        F.col(OP) != TOMBSTONE
    )
    horizon = _horizon(table, plan)
    cols = []
    for c, t in table.types.items():
        if c in table.primary_key:
            cols.append(F.col(quote_spark(c)).alias(c))
        elif c == table.cursor:
            expr = F.col(quote_spark(c)) if horizon is None else F.greatest(F.col(quote_spark(c)), horizon)
            cols.append(expr.cast(spark_type(t)).alias(c))
        else:
            cols.append(F.lit(None).cast(spark_type(t)).alias(c))
    tomb = gone.select(
        *cols, *metadata_columns(batch.run_id, batch.ingested_at, source_file=False, op=TOMBSTONE)
    )
    # Counted during the write itself: the source's key set is read once, by the executors.
    observed = Observation(observation_name("tombstones"))
    tomb.observe(observed, F.count(F.lit(1)).alias("rows")).coalesce(1).write.mode("overwrite").parquet(
        spark_uri(staging)
    )
    return int(observed.get["rows"]), latest


def _publish_tombstones(staging: str, batch: TombstoneBatch) -> list[str]:
    """Move the staged tombstone file(s) into the run's landing partition (a rename, or an S3 server-side copy)."""
    files = lakefs.glob(staging, "*.parquet")
    if not files:
        raise EngineError(
            f"{batch.table.source}.{batch.table.name}: Spark reported tombstones but wrote no file under {staging}"
        )
    published = []
    for n, f in enumerate(files):
        published.append(tombstone_path(batch, n))
        lakefs.move(f, published[-1])
    return published


def _write_snapshot(
    spark: SparkSession, batch: TombstoneBatch, latest: DataFrame, dest: str, tombstones: list[str]
) -> None:
    """Write the next live-keys snapshot: each key's latest version, the tombstones just landed included."""
    table = batch.table
    columns = snapshot_columns(table)
    snapshot = latest
    if tombstones:
        tomb = _typed(spark.read.parquet(*[spark_uri(f) for f in tombstones]), table, columns)
        snapshot = latest.join(
            tomb.select(*table.primary_key), list(table.primary_key), "left_anti"
        ).unionByName(tomb)
    snapshot.select(*columns).write.mode("overwrite").parquet(spark_uri(dest))
