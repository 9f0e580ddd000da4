"""The Spark engine: AWS Glue 5 (Spark 3.5), EMR, any cluster, or local mode with Java 17/21.

Only Spark 3.5 APIs are used. Regexes go through the Column API (`rlike`), never through SQL text,
because Spark SQL string literals treat backslashes as escapes.
"""

from __future__ import annotations

import os
import shutil
from functools import reduce
from typing import TYPE_CHECKING, Any

from ingestion.config import SparkConfig
from ingestion.engines.base import CsvBatch, JdbcBatch, check_bound_type, require_columns
from ingestion.errors import EngineError
from ingestion.landing import partition_value, publish_staged
from ingestion.normalize import (
    INGESTED_AT,
    OP,
    PARTITION_COLUMN,
    RUN_ID,
    SOURCE_FILE,
    STRING,
    TYPE_RULES,
    choose_type,
    clean_header,
    union_columns,
)
from ingestion.plan import LandedBatch
from ingestion.state import Watermark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SQL_TYPES = {
    "boolean": "boolean",
    "bigint": "bigint",
    "double": "double",
    "date": "date",
    "timestamp": "timestamp_ntz",
    "timestamptz": "timestamp",
    STRING: "string",
}
_CURSOR_FORMAT = {
    "timestamp": "yyyy-MM-dd'T'HH:mm:ss.SSSSSS",
    "timestamptz": "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'+00:00'",
    "date": "yyyy-MM-dd",
}
# Settings that make local Spark land exactly what the DuckDB engine lands.
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.ansi.enabled": "false",
}


def bq(name: str) -> str:
    """Quote a Spark SQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def java_available() -> bool:
    """Is there a Java runtime Spark can start (JAVA_HOME or `java` on PATH)?"""
    home = os.environ.get("JAVA_HOME")
    return (
        bool(home and os.path.exists(os.path.join(home, "bin", "java"))) or shutil.which("java") is not None
    )


def get_spark(cfg: SparkConfig) -> SparkSession:
    """The active Spark session (Glue/EMR) or a new local one configured for tidemark."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise EngineError(
            "the spark engine needs pyspark, which is not installed",
            hint="pip install 'tidemark[spark]' (or `make demo ENGINE=spark`), or use --engine duckdb",
        ) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if not java_available():
        raise EngineError(
            "the spark engine needs Java 17 or 21, and none was found (JAVA_HOME unset, no `java` on PATH)",
            hint="apt-get install -y openjdk-17-jre-headless (Debian/Ubuntu), brew install openjdk@17 (macOS), "
            "or use --engine duckdb, which needs no Java",
        )
    from ingestion.config import DEFAULT_DRIVER_JAR
    from ingestion.engines.spark_jdbc import driver_conf

    builder = SparkSession.builder.master(cfg.master).appName(cfg.app_name)
    # The PostgreSQL driver is put on the classpath whenever it is installed: jars can't be added later.
    for key, value in {**BASE_CONF, **driver_conf(DEFAULT_DRIVER_JAR), **cfg.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class SparkEngine:
    """Lands batches with Spark DataFrames; files are staged, then renamed to the run-id layout."""

    name = "spark"

    def __init__(self, cfg: SparkConfig, spark: SparkSession | None = None) -> None:
        self.spark = spark or get_spark(cfg)
        # Whatever session we were handed, timestamps must be read and written in UTC.
        for key in ("spark.sql.session.timeZone", "spark.sql.parquet.outputTimestampType"):
            self.spark.conf.set(key, BASE_CONF[key])

    def close(self) -> None:
        # The session is shared (tests, Glue); stopping it is the caller's business.
        pass

    def _read_file(self, path: str, relpath: str, batch: CsvBatch) -> tuple[DataFrame, list[str]]:
        from pyspark.sql import functions as F

        o = batch.options
        df = (
            self.spark.read.option("header", o.header)
            .option("sep", o.delimiter)
            .option("quote", o.quote)
            .option("escape", o.escape)
            .option("encoding", o.encoding.replace("-sig", ""))
            .option("mode", "FAILFAST")
            .option("inferSchema", False)
            .csv(path)
        )
        raw = df.columns
        if not o.header:
            # Spark names them _c0, _c1…; DuckDB column0, column1…: agree on DuckDB's.
            raw = [f"column{i}" for i in range(len(raw))]
            df = df.toDF(*raw)
        cleaned = clean_header(raw, file=relpath)
        cols = []
        for r, c in zip(raw, cleaned, strict=True):
            col = F.col(bq(r))
            if o.null_values:
                col = F.when(col.isin(list(o.null_values)), F.lit(None).cast("string")).otherwise(col)
            cols.append(col.alias(c))
        return df.select(*cols, F.lit(relpath).alias(SOURCE_FILE)), cleaned

    def land_csv(self, batch: CsvBatch) -> LandedBatch:
        """Land `batch.files` as one deduplicated set of Parquet files under `batch.target`."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        frames, headers = [], []
        for f in batch.files:
            df, cleaned = self._read_file(f.path, f.relpath, batch)
            frames.append(df)
            headers.append(cleaned)
        columns = union_columns(headers)
        require_columns(batch, columns)
        raw = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
        raw = raw.select(*columns, SOURCE_FILE).persist()
        staging = batch.staging
        try:
            rows_read, types = self._infer(raw, columns)
            check_bound_type(batch, types)
            typed = raw.select(
                *[F.expr(f"CAST({bq(c)} AS {SQL_TYPES[types[c]]})").alias(c) for c in columns],
                F.lit(batch.run_id).alias(RUN_ID),
                F.lit(batch.ingested_at.strftime("%Y-%m-%d %H:%M:%S.%f"))
                .cast("timestamp")
                .alias(INGESTED_AT),
                F.col(SOURCE_FILE),
                F.lit("u").alias(OP),
            )
            if batch.lower_bound and batch.cursor:
                bound = F.lit(batch.lower_bound.value).cast(SQL_TYPES[types[batch.cursor]])
                typed = typed.where(F.col(batch.cursor).isNull() | (F.col(batch.cursor) >= bound))
                rows_kept = typed.count()
            else:
                rows_kept = rows_read
            if batch.primary_key:
                order = [F.col(batch.cursor).desc_nulls_last()] if batch.cursor else []
                order.append(F.col(SOURCE_FILE).desc())
                order += [F.col(c).desc_nulls_last() for c in columns if c not in batch.primary_key]
                w = Window.partitionBy(*batch.primary_key).orderBy(*order)
                typed = typed.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")
            out = typed.withColumn(PARTITION_COLUMN, F.lit(partition_value(batch.ingested_at)))
            out.write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(staging)
            landed = self.spark.read.parquet(staging)
            rows_landed, max_cursor = self._count_and_max(landed, batch.cursor, types)
            files = publish_staged(staging, batch.target, batch.run_id)
        except EngineError:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("pyspark", "py4j")):
                raise EngineError(f"{batch.source}.{batch.table}: Spark failed: {exc}") from exc
            raise
        finally:
            raw.unpersist()
            shutil.rmtree(staging, ignore_errors=True)
        return LandedBatch(
            rows_read=rows_read,
            rows_landed=rows_landed,
            rows_filtered=rows_read - rows_kept,
            max_cursor=max_cursor,
            columns=types,
            files_written=tuple(files),
        )

    def land_jdbc(self, batch: JdbcBatch) -> LandedBatch:
        """Land a PostgreSQL batch through Spark's JDBC reader; see `engines.spark_jdbc`."""
        from ingestion.engines.spark_jdbc import land_jdbc

        return land_jdbc(self, batch)

    @staticmethod
    def _infer(raw: DataFrame, columns: list[str]) -> tuple[int, dict[str, str]]:
        """One scan: the row count, and for each column and rule, do all non-null values match and cast?"""
        from pyspark.sql import functions as F

        aggs: list[Any] = [F.count(F.lit(1))]
        for c in columns:
            col = F.col(bq(c))
            aggs.append(F.count(col))
            for rule in TYPE_RULES:
                ok = (
                    col.rlike(f"^(?:{rule.pattern})$")
                    & F.expr(f"try_cast({bq(c)} AS {SQL_TYPES[rule.name]})").isNotNull()
                )
                # min over booleans of the non-null values; null (no values) counts as "all matched".
                aggs.append(F.coalesce(F.min(F.when(col.isNotNull(), ok)), F.lit(True)))
        first = raw.agg(*aggs).first()
        assert first is not None
        rows, row = int(first[0]), first[1:]
        types, width = {}, len(TYPE_RULES) + 1
        for i, c in enumerate(columns):
            chunk = row[i * width : (i + 1) * width]
            types[c] = choose_type(
                {rule.name: bool(ok) for rule, ok in zip(TYPE_RULES, chunk[1:], strict=True)}, int(chunk[0])
            )
        return rows, types

    @staticmethod
    def _count_and_max(
        landed: DataFrame, cursor: str | None, types: dict[str, str]
    ) -> tuple[int, Watermark | None]:
        """One scan of what was written: its row count and the max cursor in canonical text."""
        from pyspark.sql import functions as F

        if not cursor:
            return landed.count(), None
        ctype = types[cursor]
        agg = F.max(F.col(bq(cursor)))
        expr = F.date_format(agg, _CURSOR_FORMAT[ctype]) if ctype in _CURSOR_FORMAT else agg.cast("string")
        count, value = landed.agg(F.count(F.lit(1)), expr).first()  # type: ignore[misc]
        return int(count), None if value is None else Watermark(value=str(value), type=ctype)
