"""The Spark engine's PostgreSQL path: Spark's JDBC reader with the same query, partitions and types."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ingestion.config import DEFAULT_DRIVER_JAR, PipelineConfig, SparkConfig
from ingestion.contract import PARTITION_COLUMN
from ingestion.engines.base import JdbcBatch
from ingestion.engines.spark.common import (
    dedup_window,
    metadata_columns,
    observation_name,
    spark_type,
    spark_uri,
    staged_files,
    write_observed,
)
from ingestion.errors import EngineError
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import partition_value, publish_staged
from ingestion.plan.csv import LandedBatch
from ingestion.redact import redact
from ingestion.sources.jdbc import DRIVER_CLASS, PgConnection
from ingestion.sqltext import quote_spark

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def driver_conf(jar: str | None, packages: str | None = None) -> dict[str, str]:
    """Spark settings that put the PostgreSQL JDBC driver on the classpath (a local jar, or Maven)."""
    conf = {}
    if jar and os.path.isfile(jar):
        conf["spark.jars"] = jar
    if packages:
        conf["spark.jars.packages"] = packages
    return conf


def with_jdbc_driver(config: PipelineConfig) -> SparkConfig:
    """The pipeline's Spark settings plus the JDBC driver its PostgreSQL sources name (a Glue catalog
    source's JDBC tables use the default jar's driver)."""
    extra: dict[str, str] = {}
    drivers = [(s.driver_jar, s.driver_packages) for s in config.jdbc_sources()]
    if config.catalog_sources():
        drivers.append((DEFAULT_DRIVER_JAR, None))
    for jar, packages in dict.fromkeys(drivers):
        for key, value in driver_conf(jar, packages).items():
            extra[key] = ",".join(filter(None, [extra.get(key), value]))
    if not extra:
        return config.spark
    return config.spark.model_copy(update={"conf": {**extra, **config.spark.conf}})


def jdbc_reader(spark: SparkSession, conn: PgConnection, query: str, fetchsize: int) -> Any:
    """Spark's JDBC reader for `query` on a PostgreSQL connection (driver, user, password, time-outs)."""
    reader = (
        spark.read.format("jdbc")
        .option("url", conn.jdbc_url)
        .option("driver", DRIVER_CLASS)
        .option("user", conn.user)
        .option("dbtable", f"({query}) as t")
        .option("fetchsize", str(fetchsize))
        .option("connectTimeout", str(conn.connect_timeout))
    )
    if conn.password:
        reader = reader.option("password", conn.password)
    return reader


def land_jdbc(spark: SparkSession, batch: JdbcBatch) -> LandedBatch:
    """Read with `spark.read.format('jdbc')`, cast, dedup by key, write Parquet, publish."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    reader = jdbc_reader(spark, batch.connection, batch.query, batch.fetchsize)
    if batch.partitions > 1 and batch.partition_bounds and batch.partition_column:
        lo, hi = batch.partition_bounds
        reader = (
            reader.option("partitionColumn", batch.partition_column)
            .option("lowerBound", str(lo))
            .option("upperBound", str(hi + 1))
            .option("numPartitions", str(batch.partitions))
        )
    columns = list(batch.columns)
    staging = batch.lake_staging  # on the lake's filesystem: every executor writes there
    try:
        # Count what PostgreSQL returned during the write itself: a second JDBC read could see other rows.
        observed = Observation(observation_name("rows_read"))
        df = reader.load().observe(observed, F.count(F.lit(1)).alias("rows"))
        typed = df.select(
            *[F.expr(f"CAST({quote_spark(c)} AS {spark_type(batch.columns[c])})").alias(c) for c in columns],
            *metadata_columns(batch.run_id, batch.ingested_at, source_file=False),
        )
        if batch.primary_key:
            w = dedup_window(batch.primary_key, batch.cursor, columns)
            typed = typed.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")
        out = typed.withColumn(PARTITION_COLUMN, F.lit(partition_value(batch.ingested_at)))
        ctype = batch.columns.get(batch.cursor, "") if batch.cursor else ""
        rows_landed, max_cursor = write_observed(out, spark_uri(staging), batch.cursor, ctype, "written")
        rows_read = int(observed.get["rows"])
        staged_files(staging, rows_landed, f"{batch.source}.{batch.table}")
        files = publish_staged(staging, batch.target, batch.run_id) if rows_landed else []
    except Exception as exc:
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            # Py4J texts carry the JDBC options' stack; mask secrets and drop the chained Java error.
            first = redact(str(exc)).strip().splitlines()[:3]
            raise EngineError(f"{batch.source}.{batch.table}: Spark JDBC failed: {' '.join(first)}") from None
        raise
    finally:
        lakefs.remove_tree(staging)
    return LandedBatch(
        rows_read=rows_read,
        rows_landed=rows_landed,
        max_cursor=max_cursor,
        columns=dict(batch.columns),
        files_written=tuple(files),
    )
