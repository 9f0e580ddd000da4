"""The Spark engine's Glue catalog path: the executors read a table's files where they are (Hadoop
paths: `s3://` through EMRFS or S3A, `file://`), the driver sees only schemas, counts and rejects.

Parquet and JSON-lines files are read one partition at a time (its key values become columns), each
partition's columns widen into one type per column with the lake's rules (`plan.catalog.fold_types`,
the same fold as the DuckDB engine), rows whose key has a null are rejected, the rest are filtered by
the lower bound, deduplicated by key and written like a PostgreSQL batch. CSV tables go through the
shared CSV flow, with the partition values added to each file's rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial, reduce
from typing import TYPE_CHECKING, Any

from ingestion.contract import PARTITION_COLUMN, SOURCE_FILE
from ingestion.engines.base import CatalogBatch, CsvBatch, FileRead
from ingestion.engines.spark.common import (
    dedup_window,
    metadata_columns,
    spark_type,
    spark_uri,
    staged_files,
    write_observed,
)
from ingestion.engines.spark.csv import _SparkCsv, land_csv_ops
from ingestion.errors import EngineError, SchemaError
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import partition_value, publish_staged
from ingestion.plan.catalog import CatalogFile, fold_types
from ingestion.plan.csv import FileFacts, LandedBatch
from ingestion.plan.normalize import clean_header
from ingestion.plan.rejects import NULL_KEY, FileCounts, Quarantine, Reject, refuse_files
from ingestion.sqltext import quote_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Rows of a file with a null key are rejected and reach the driver; past this many the run fails
# rather than pull an unbounded number of rows onto it.
MAX_NULL_KEY_REJECTS = 100_000
LINE = "_line"
REJECT_COLUMNS = ("_reject_code", "_reject_reason", "_reject_column", "_reject_raw")


class _CatalogCsv(_SparkCsv):
    """The CSV steps of a catalog table: a file's rows also take its partition's key values."""

    def read_files(self, files: list[tuple[FileFacts, list[str], list[str]]]) -> dict[str, FileRead]:
        from pyspark.sql import functions as F

        reads = super().read_files(files)
        for f, _, names in files:
            extra = self.batch.file_columns.get(f.relpath, ())
            for key, value in extra:
                self.frames[f.relpath] = self.frames[f.relpath].withColumn(key, F.lit(value))
            self.names[f.relpath] = [*names, *(k for k, _ in extra)]
        return reads


def land_catalog_csv(spark: SparkSession, batch: CsvBatch) -> LandedBatch:
    """A catalog CSV table through the shared CSV flow (as `SparkEngine.land_csv`, with partition values)."""
    return land_csv_ops(batch, _CatalogCsv(spark, batch))


def lake_type(t: Any, where: str) -> str:
    """The landed type of a Spark type read from a file (the same mapping as the DuckDB engine's)."""
    from pyspark.sql import types as T

    if isinstance(t, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return "bigint"
    if isinstance(t, (T.FloatType, T.DoubleType)):
        return "double"
    if isinstance(t, T.DecimalType):
        return f"decimal({t.precision},{t.scale})"
    if isinstance(t, T.BooleanType):
        return "boolean"
    if isinstance(t, T.DateType):
        return "date"
    if isinstance(t, T.TimestampNTZType):
        return "timestamp"
    if isinstance(t, T.TimestampType):
        return "timestamptz"
    if isinstance(t, (T.StringType, T.NullType)):
        return "string"
    raise SchemaError(
        f"{where}: Spark type {t.simpleString()} has no landed equivalent",
        hint="exclude the table, or store the column as a string, number or time",
    )


def _file_path(uri_column: Any) -> Any:
    """`input_file_name()` as the listing spells the file: `s3://bucket/key` or a local path."""
    from pyspark.sql import functions as F

    s3 = F.regexp_replace(uri_column, r"^s3[an]?://", "s3://")
    return F.regexp_replace(s3, r"^file:(//)?", "")


def _json_frame(spark: SparkSession, batch: CatalogBatch, files: list[CatalogFile]) -> DataFrame:
    """JSON-lines files parsed line by line on the executors: each file whole in one task (`binaryFiles`),
    so every row knows its physical line; bad lines stay in the frame with their reason."""
    from pyspark import cloudpickle

    from ingestion.plan import json_lines

    # Shipped by value: the executors need no tidemark install for it (stdlib only).
    cloudpickle.register_pickle_by_value(json_lines)
    spec = batch.spec
    sc = spark.sparkContext
    fields = [
        (raw, name, spec.columns[name]) for raw, name in zip(spec.raw_columns, spec.columns, strict=False)
    ]
    rdds = [
        sc.binaryFiles(spark_uri(f.facts.path)).flatMap(
            partial(json_lines.file_rows, fields, f.facts.relpath)
        )
        for f in files
    ]
    schema = ", ".join(
        [f"{quote_spark(raw)} {spark_type(t)}" for raw, _, t in fields]
        + [f"{SOURCE_FILE} string", f"{LINE} bigint"]
        + [f"{c} string" for c in REJECT_COLUMNS]
    )
    return spark.createDataFrame(sc.union(rdds), schema=schema, verifySchema=False)


def _partition_frame(spark: SparkSession, batch: CatalogBatch, files: list[CatalogFile]) -> DataFrame:
    """One partition's files as a DataFrame: cleaned names, partition values, `_source_file`, `_line`
    (JSON: the physical line; Parquet: the 1-based row number in its file), and for JSON the reject
    columns of lines that did not parse or fit. Nested Parquet columns as their JSON text."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    spec = batch.spec
    if spec.format == "parquet":
        df = spark.read.option("mergeSchema", "true").parquet(*[spark_uri(f.facts.path) for f in files])
        nested = (T.StructType, T.ArrayType, T.MapType)
        data = [
            (
                F.to_json(F.col(quote_spark(c.name)), {"ignoreNullFields": "false"})
                if isinstance(c.dataType, nested)
                else F.col(quote_spark(c.name))
            ).alias(c.name)
            for c in df.schema.fields
        ]
        df = df.select(
            *data,
            _file_path(F.input_file_name()).alias(SOURCE_FILE),
            (F.col("_metadata.row_index") + 1).alias(LINE),
        )
    else:
        df = _json_frame(spark, batch, files)
    extra = [c for c in df.columns if c in (SOURCE_FILE, LINE, *REJECT_COLUMNS)]
    data_cols = [c for c in df.columns if c not in extra]
    cleaned = clean_header(data_cols, file=f"{batch.name} ({files[0].facts.relpath})")
    df = df.toDF(*cleaned, *extra)
    for key, value in files[0].partition:
        df = df.drop(key).withColumn(key, F.lit(value).cast(spark_type(spec.columns[key])))
    return df


def _conform(df: DataFrame, types: Mapping[str, str]) -> DataFrame:
    from pyspark.sql import functions as F

    cols = [
        (F.col(quote_spark(c)) if c in df.columns else F.lit(None)).cast(spark_type(t)).alias(c)
        for c, t in types.items()
    ]
    return df.select(*cols, F.col(SOURCE_FILE), F.col(LINE))


def _parse_rejects(q: Quarantine, frames: list[tuple[str, DataFrame]]) -> None:
    """Bring the JSON lines that did not parse or fit to the driver (capped) and count them per file."""
    from pyspark.sql import functions as F

    cols = [SOURCE_FILE, LINE, *REJECT_COLUMNS]
    bad_frames = [df.where(F.col(REJECT_COLUMNS[0]).isNotNull()).select(*cols) for _, df in frames]
    bad = reduce(lambda a, b: a.unionByName(b), bad_frames).limit(MAX_NULL_KEY_REJECTS + 1).collect()
    if len(bad) > MAX_NULL_KEY_REJECTS:
        raise EngineError(
            f"more than {MAX_NULL_KEY_REJECTS} lines are not valid JSON or do not fit the catalog's types",
            hint="check the files and the table's columns in the catalog",
        )
    for path, line, code, reason, column, raw in bad:
        q.rejects.append(Reject(path, line - 1, code, reason, column, raw, line))
        counts = q.files.setdefault(path, FileCounts(path))
        counts.read += 1
        counts.rejected += 1


def land_catalog(spark: SparkSession, batch: CatalogBatch) -> LandedBatch:
    """Land a catalog table's files with the reads on the executors (see the module docstring)."""
    if batch.csv is not None:
        return land_catalog_csv(spark, batch.csv)
    from pyspark.sql import functions as F

    spec = batch.spec
    staging = batch.lake_staging
    groups: dict[tuple[tuple[str, str], ...], list[CatalogFile]] = {}
    for f in batch.files:
        groups.setdefault(f.partition, []).append(f)
    try:
        frames = [
            (files[0].facts.relpath, _partition_frame(spark, batch, files)) for files in groups.values()
        ]
        q = Quarantine()
        parsed: list[DataFrame] = []
        if spec.format == "json":
            # Parsed once: the rejects are collected from the same rows that land.
            parsed = [df.cache() for _, df in frames]
            frames = [(path, df) for (path, _), df in zip(frames, parsed, strict=True)]
            _parse_rejects(q, frames)
            frames = [
                (path, df.where(F.col(REJECT_COLUMNS[0]).isNull()).drop(*REJECT_COLUMNS))
                for path, df in frames
            ]
        found = [
            (
                path,
                {
                    c.name: lake_type(c.dataType, f"{path}: column {c.name}")
                    for c in df.schema.fields
                    if c.name not in (SOURCE_FILE, LINE)
                },
            )
            for path, df in frames
        ]
        types = fold_types(batch.name, batch.committed, found)
        for c in (*spec.primary_key, *([spec.cursor] if spec.cursor else [])):
            types.setdefault(c, spec.columns[c])
        rows = reduce(lambda a, b: a.unionByName(b), [_conform(df, types) for _, df in frames]).cache()
        for path, n in rows.groupBy(SOURCE_FILE).count().collect():
            counts = q.files.setdefault(path, FileCounts(path))
            counts.read += int(n)
            counts.accepted += int(n)
            counts.landable += int(n)
        if spec.primary_key:
            null_key = reduce(lambda a, b: a | b, [F.col(quote_spark(k)).isNull() for k in spec.primary_key])
            bad = rows.where(null_key).limit(MAX_NULL_KEY_REJECTS + 1).collect()
            if len(bad) > MAX_NULL_KEY_REJECTS:
                raise EngineError(
                    f"{batch.name}: more than {MAX_NULL_KEY_REJECTS} rows have a null primary key",
                    hint="check primary_key for this table (config, table parameters or pk_registry)",
                )
            for row in bad:
                d = row.asDict()
                path, line = d.pop(SOURCE_FILE), d.pop(LINE)
                column = next(k for k in spec.primary_key if d.get(k) is None)
                raw = json.dumps(d, default=str)
                q.rejects.append(
                    Reject(
                        path, line - 1, NULL_KEY, f"primary key column {column} is null", column, raw, line
                    )
                )
                q.files[path].rejected += 1
                q.files[path].landable -= 1
            rows = rows.where(~null_key)
        # A file with too large a share of rejected rows lands none of them (its rejects are kept).
        refused = refuse_files(q, spec.max_rejected_fraction)
        if refused:
            rows = rows.where(~F.col(SOURCE_FILE).isin(sorted(refused)))
        columns = list(types)
        typed = rows.select(*columns, *metadata_columns(batch.run_id, batch.ingested_at, source_file=True))
        rows_kept = sum(c.landable for c in q.files.values() if not c.error)
        if batch.lower_bound and spec.cursor:
            bound = F.lit(batch.lower_bound.value).cast(spark_type(types[spec.cursor]))
            cursor = F.col(quote_spark(spec.cursor))
            typed = typed.where(cursor.isNull() | (cursor >= bound))
            rows_kept = typed.count()
        if spec.primary_key:
            w = dedup_window(spec.primary_key, spec.cursor, columns)
            typed = typed.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")
        out = typed.withColumn(PARTITION_COLUMN, F.lit(partition_value(batch.ingested_at)))
        ctype = types.get(spec.cursor, "") if spec.cursor else ""
        rows_landed, max_cursor = write_observed(out, spark_uri(staging), spec.cursor, ctype, "written")
        rows.unpersist()
        for df in parsed:
            df.unpersist()
        staged_files(staging, rows_landed, batch.name)
        files = publish_staged(staging, batch.target, batch.run_id) if rows_landed else []
    except Exception as exc:
        if type(exc).__module__.startswith(("pyspark", "py4j")):
            first = str(exc).strip().splitlines()[:3]
            raise EngineError(f"{batch.name}: Spark failed: {' '.join(first)}") from None
        raise
    finally:
        lakefs.remove_tree(staging)
    rows_read = sum(c.read for c in q.files.values() if not c.error)
    return LandedBatch(
        rows_read=rows_read,
        rows_landed=rows_landed,
        max_cursor=max_cursor,
        columns=types,
        files_written=tuple(files),
        rows_filtered=rows_read - q.rows_rejected - rows_kept,
        rows_rejected=q.rows_rejected,
        quarantine=q,
    )
