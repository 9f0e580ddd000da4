"""The DuckDB engine's PostgreSQL path: connectorx reads Arrow (in parallel partitions), DuckDB lands it."""

from __future__ import annotations

import duckdb

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
from ingestion.plan.csv import LandedBatch
from ingestion.plan.jdbc import partition_queries, partition_ranges
from ingestion.redact import redact
from ingestion.sources.jdbc import read_arrow
from ingestion.sqltext import quote_ident


def batch_queries(batch: JdbcBatch) -> list[str]:
    """The statements PostgreSQL runs for a batch: one, or one per key range."""
    if batch.partitions > 1 and batch.partition_bounds and batch.partition_column:
        ranges = partition_ranges(*batch.partition_bounds, batch.partitions)
        return partition_queries(batch.query, batch.partition_column, ranges)
    return [batch.query]


def land_jdbc(con: duckdb.DuckDBPyConnection, batch: JdbcBatch, n: int) -> LandedBatch:
    """Read the batch's rows as Arrow, cast to the landed types, dedup by key, write Parquet, publish.

    `con` is a connection of the batch's own (closed here): temp tables stay per batch.
    """
    try:
        arrow = read_arrow(batch.connection, batch_queries(batch))
    except BaseException:
        con.close()
        raise
    raw, landed = f"pg_raw_{n}", f"pg_landed_{n}"
    columns = list(batch.columns)
    try:
        con.execute("SET TimeZone = 'UTC'")  # UTC text from PostgreSQL casts to the same instant
        con.register(raw, arrow)
        typed = ", ".join(
            f"CAST({quote_ident(c)} AS {duck_type(batch.columns[c])}) AS {quote_ident(c)}" for c in columns
        )
        select = f"SELECT {typed}, {metadata_select(batch.run_id, batch.ingested_at, source_file=False)} FROM {raw}"
        if batch.primary_key:
            window = dedup_window(batch.primary_key, batch.cursor, columns)
            select = f"SELECT * FROM ({select}) AS typed QUALIFY row_number() OVER ({window}) = 1"
        con.execute(f"CREATE TEMP TABLE {landed} AS {select}")
        rows_landed = count_rows(con, landed)
        top = max_cursor(
            con, landed, batch.cursor, batch.columns.get(batch.cursor, "") if batch.cursor else ""
        )
        files: list[str] = []
        if rows_landed:
            stage_parquet(con, landed, batch.staging, batch.ingested_at)
            files = publish_staged(batch.staging, batch.target, batch.run_id)
    except duckdb.Error as exc:
        raise EngineError(f"{batch.source}.{batch.table}: DuckDB failed: {redact(str(exc))}") from None
    finally:
        con.close()
    return LandedBatch(
        rows_read=arrow.num_rows,
        rows_landed=rows_landed,
        max_cursor=top,
        columns=dict(batch.columns),
        files_written=tuple(files),
    )
