"""What the Spark engine's CSV and PostgreSQL paths share: types, URIs, the dedup window, the observed
write (count and max cursor in the write's own job) and the check that the files are where the lake looks.

pyspark is imported inside functions: the Spark engine is loaded only when a run asks for it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ingestion.contract import (
    INGESTED_AT,
    OP,
    PARTITION_COLUMN,
    RUN_ID,
    SOURCE_FILE,
    UPSERT,
    batch_dedup_order,
)
from ingestion.lake.model import Watermark
from ingestion.plan.normalize import DECIMAL, DECIMAL_PRECISION, DECIMAL_SCALE, STRING
from ingestion.sqltext import quote_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
SQL_TYPES = {
    "boolean": "boolean",
    "bigint": "bigint",
    DECIMAL: f"decimal({DECIMAL_PRECISION},{DECIMAL_SCALE})",
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


def spark_uri(path: str) -> str:
    """A lake or inbox path as the URI Spark's executors open: `s3://…` as is (EMRFS on Glue/EMR, S3A
    elsewhere: see `engines.spark.engine.use_s3a`), a local path as `file:///abs/path`, so that a cluster
    whose default filesystem is HDFS or viewfs never resolves it somewhere else."""
    if "://" in path:
        return path
    return "file://" + os.path.abspath(path)


def observation_name(what: str) -> str:
    """A name no other query of the session uses: tables landing in parallel each observe their own."""
    import uuid

    return f"tidemark_{what}_{uuid.uuid4().hex[:12]}"


def write_observed(
    out: DataFrame, uri: str, cursor: str | None, ctype: str, name: str
) -> tuple[int, Watermark | None]:
    """Write `out` as Parquet partitioned by `_ingest_date` under `uri`, counting the rows written and
    taking the max cursor (canonical text) in the same job: no second read of what was written."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observed = Observation(observation_name(name))
    aggs = [F.count(F.lit(1)).alias("rows")]
    if cursor:
        agg = F.max(F.col(quote_spark(cursor)))
        top = F.date_format(agg, _CURSOR_FORMAT[ctype]) if ctype in _CURSOR_FORMAT else agg.cast("string")
        aggs.append(top.alias("top"))
    out.observe(observed, *aggs).write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(uri)
    got = observed.get
    value = got.get("top")
    return int(got["rows"]), None if value is None else Watermark(value=str(value), type=ctype)


def staged_files(staging: str, rows: int, what: str) -> list[str]:
    """The Parquet files a Spark write left under `staging`, listed through the lake's own file
    operations. Rows written but no file found means Spark wrote somewhere the lake cannot see (another
    default filesystem, a mis-mapped scheme): that fails loudly instead of committing nothing."""
    from ingestion.errors import EngineError
    from ingestion.lake import fs as lakefs

    files = lakefs.files_under(staging, ".parquet")
    if rows and not files:
        raise EngineError(
            f"{what}: Spark reports {rows} rows written to {spark_uri(staging)}, but no Parquet file is "
            "there: the write went to another filesystem than the lake's",
            hint="give lake.root as an absolute local path on a filesystem every executor mounts, or as "
            "s3://bucket/prefix; check fs.defaultFS and fs.s3.impl in the cluster's Hadoop settings",
        )
    return files


def spark_type(ltype: str) -> str:
    """Spark SQL type of a landed type (`decimal(p,s)` passes through)."""
    return SQL_TYPES.get(ltype) or ltype


def dedup_window(
    primary_key: Sequence[str], cursor: str | None, columns: Sequence[str], *, first: str | None = None
) -> Any:
    """The batch dedup window of the landing contract as a Spark `WindowSpec` (`first`: a column that
    orders before the contract's terms, descending)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    terms = batch_dedup_order(primary_key, cursor, columns)
    order = [F.col(t).desc_nulls_last() for t in [*([first] if first else []), *(t.column for t in terms)]]
    return Window.partitionBy(*primary_key).orderBy(*order)


def metadata_columns(run_id: str, ingested_at: datetime, *, source_file: bool, op: str = UPSERT) -> list[Any]:
    """The landing contract's metadata columns as Spark columns (`_source_file` from the rows or null)."""
    from pyspark.sql import functions as F

    return [
        F.lit(run_id).alias(RUN_ID),
        F.lit(ingested_at.strftime("%Y-%m-%d %H:%M:%S.%f")).cast("timestamp").alias(INGESTED_AT),
        F.col(SOURCE_FILE) if source_file else F.lit(None).cast("string").alias(SOURCE_FILE),
        F.lit(op).alias(OP),
    ]
