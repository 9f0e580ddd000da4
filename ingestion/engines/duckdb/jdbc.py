"""The DuckDB engine's typed paths: connectorx reads PostgreSQL as Arrow (in parallel partitions), and any
typed Arrow data (PostgreSQL rows, a Glue catalog table's Parquet/JSON files) lands the same way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb

from ingestion.contract import SOURCE_FILE
from ingestion.engines.base import JdbcBatch
from ingestion.engines.duckdb.common import (
    count_rows,
    dedup_window,
    duck_type,
    max_cursor,
    metadata_select,
    stage_parquet,
)
from ingestion.errors import EngineError
from ingestion.lake.layout import publish_staged
from ingestion.lake.model import Watermark
from ingestion.plan.csv import LandedBatch
from ingestion.plan.jdbc import partition_queries, partition_ranges
from ingestion.redact import redact
from ingestion.sources.jdbc import read_arrow
from ingestion.sqltext import quote_ident, sql_string

if TYPE_CHECKING:
    import pyarrow as pa


def batch_queries(batch: JdbcBatch) -> list[str]:
    """The statements PostgreSQL runs for a batch: one, or one per key range."""
    if batch.partitions > 1 and batch.partition_bounds and batch.partition_column:
        ranges = partition_ranges(*batch.partition_bounds, batch.partitions)
        return partition_queries(batch.query, batch.partition_column, ranges)
    return [batch.query]


@dataclass(frozen=True)
class ArrowLanding:
    """Where and how typed Arrow rows land: column types, key, cursor, bound, run and folders."""

    name: str  # source.table, for errors
    columns: dict[str, str]
    primary_key: tuple[str, ...]
    cursor: str | None
    run_id: str
    ingested_at: datetime
    staging: str
    target: str
    lower_bound: Watermark | None = None  # keep rows with cursor >= this (or a null cursor)


def land_jdbc(con: duckdb.DuckDBPyConnection, batch: JdbcBatch, n: int) -> LandedBatch:
    """Read the batch's rows as Arrow, cast to the landed types, dedup by key, write Parquet, publish.

    `con` is a connection of the batch's own (closed here): temp tables stay per batch.
    """
    try:
        arrow = read_arrow(batch.connection, batch_queries(batch))
    except BaseException:
        con.close()
        raise
    landing = ArrowLanding(
        f"{batch.source}.{batch.table}",
        dict(batch.columns),
        batch.primary_key,
        batch.cursor,
        batch.run_id,
        batch.ingested_at,
        batch.staging,
        batch.target,
    )
    return land_arrow(con, arrow, landing, n)


def land_arrow(con: duckdb.DuckDBPyConnection, arrow: pa.Table, landing: ArrowLanding, n: int) -> LandedBatch:
    """Cast typed Arrow rows to the landed types, keep rows at or above the bound, dedup by key, write
    Parquet, publish. `_source_file` comes from the rows when they carry it. Closes `con`."""
    raw, landed = f"pg_raw_{n}", f"pg_landed_{n}"
    columns = list(landing.columns)
    rows_kept = arrow.num_rows
    try:
        con.execute("SET TimeZone = 'UTC'")  # UTC text from PostgreSQL casts to the same instant
        con.register(raw, arrow)
        typed = ", ".join(
            f"CAST({quote_ident(c)} AS {duck_type(landing.columns[c])}) AS {quote_ident(c)}" for c in columns
        )
        has_file = SOURCE_FILE in arrow.column_names
        select = f"SELECT {typed}, {metadata_select(landing.run_id, landing.ingested_at, source_file=has_file)} FROM {raw}"
        if landing.lower_bound and landing.cursor:
            c = quote_ident(landing.cursor)
            bound = f"CAST({sql_string(landing.lower_bound.value)} AS {duck_type(landing.columns[landing.cursor])})"
            select = f"SELECT * FROM ({select}) AS typed WHERE {c} IS NULL OR {c} >= {bound}"
            con.execute(f"CREATE TEMP VIEW kept_{n} AS {select}")
            rows_kept = count_rows(con, f"kept_{n}")
            select = f"SELECT * FROM kept_{n}"
        if landing.primary_key:
            window = dedup_window(landing.primary_key, landing.cursor, columns)
            select = f"SELECT * FROM ({select}) AS typed QUALIFY row_number() OVER ({window}) = 1"
        con.execute(f"CREATE TEMP TABLE {landed} AS {select}")
        rows_landed = count_rows(con, landed)
        ctype = landing.columns.get(landing.cursor, "") if landing.cursor else ""
        top = max_cursor(con, landed, landing.cursor, ctype)
        files: list[str] = []
        if rows_landed:
            stage_parquet(con, landed, landing.staging, landing.ingested_at)
            files = publish_staged(landing.staging, landing.target, landing.run_id)
    except duckdb.Error as exc:
        raise EngineError(f"{landing.name}: DuckDB failed: {redact(str(exc))}") from None
    finally:
        con.close()
    return LandedBatch(
        rows_read=arrow.num_rows,
        rows_landed=rows_landed,
        max_cursor=top,
        columns=dict(landing.columns),
        files_written=tuple(files),
        rows_filtered=arrow.num_rows - rows_kept,
    )
