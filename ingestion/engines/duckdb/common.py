"""What the DuckDB engine's CSV and PostgreSQL paths share: types, counts, the max cursor, staging, dedup."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import duckdb

from ingestion.contract import (
    INGESTED_AT,
    OP,
    PARTITION_COLUMN,
    RUN_ID,
    SOURCE_FILE,
    UPSERT,
    batch_dedup_order,
    render_window,
)
from ingestion.lake.layout import partition_value
from ingestion.lake.model import Watermark
from ingestion.plan.normalize import DECIMAL, DECIMAL_PRECISION, DECIMAL_SCALE, STRING
from ingestion.sqltext import quote_ident, sql_string

SQL_TYPES = {
    "boolean": "BOOLEAN",
    "bigint": "BIGINT",
    DECIMAL: f"DECIMAL({DECIMAL_PRECISION},{DECIMAL_SCALE})",
    "double": "DOUBLE",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMPTZ",
    STRING: "VARCHAR",
}


# Canonical max-cursor text per type; identical to the Spark engine's.
_CURSOR_TEXT = {
    "timestamp": "strftime(max({c}), '%Y-%m-%dT%H:%M:%S.%f')",
    "timestamptz": "strftime(max({c}), '%Y-%m-%dT%H:%M:%S.%f') || '+00:00'",
    "date": "strftime(max({c}), '%Y-%m-%d')",
}


def stage_parquet(
    con: duckdb.DuckDBPyConnection, table: str, staging: str, ingested_at: datetime, row_group_bytes: int = 0
) -> str:
    """Write `table` (a table or a parenthesized query) to `<staging>/_ingest_date=<run date>/part-0.parquet`;
    returns the file's path. `row_group_bytes` bounds a row group's size in memory (0: DuckDB's default).

    A batch has one partition (the run's date): a plain COPY into its folder writes what PARTITION_BY
    would (the partition column stays out of the file), in half the time.
    """
    folder = Path(staging) / f"{PARTITION_COLUMN}={partition_value(ingested_at)}"
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / "part-0.parquet")
    # A row group is built in memory, unspillable: under a small memory_limit it must be small too.
    size = f", ROW_GROUP_SIZE_BYTES {row_group_bytes}" if row_group_bytes else ""
    con.execute(f"COPY {table} TO {sql_string(path)} (FORMAT parquet{size})")
    return path


def count_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def dedup_window(primary_key: Sequence[str], cursor: str | None, columns: Sequence[str]) -> str:
    """The batch dedup window of the landing contract, in DuckDB SQL."""
    return render_window(primary_key, batch_dedup_order(primary_key, cursor, columns), quote_ident)


def max_cursor(
    con: duckdb.DuckDBPyConnection, table: str, cursor: str | None, ctype: str
) -> Watermark | None:
    if not cursor:
        return None
    expr = _CURSOR_TEXT.get(ctype, "CAST(max({c}) AS VARCHAR)").format(c=quote_ident(cursor))
    value = con.execute(f"SELECT {expr} FROM {table}").fetchone()[0]  # type: ignore[index]
    return None if value is None else Watermark(value=str(value), type=ctype)


def duck_type(ltype: str) -> str:
    """DuckDB SQL type of a landed type (`decimal(p,s)` passes through)."""
    return SQL_TYPES.get(ltype) or ltype.upper()


def metadata_select(run_id: str, ingested_at: datetime, *, source_file: bool, op: str = UPSERT) -> str:
    """The landing contract's metadata columns as DuckDB select items (`_source_file` from the rows or null)."""
    ingested = ingested_at.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    return (
        f"{sql_string(run_id)} AS {RUN_ID}, TIMESTAMPTZ {sql_string(ingested)} AS {INGESTED_AT}, "
        f"{SOURCE_FILE if source_file else f'CAST(NULL AS VARCHAR) AS {SOURCE_FILE}'}, {sql_string(op)} AS {OP}"
    )
