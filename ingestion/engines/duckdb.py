"""The embedded default engine: DuckDB, in process, no Java."""

from __future__ import annotations

import itertools
from pathlib import Path

import duckdb

from ingestion.engines.base import CsvBatch, JdbcBatch, check_bound_type, require_columns, sql_string
from ingestion.errors import EngineError, SourceError
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

SQL_TYPES = {
    "boolean": "BOOLEAN",
    "bigint": "BIGINT",
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
_batch_ids = itertools.count()


def q(name: str) -> str:
    """Quote a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


class DuckDBEngine:
    """Lands batches in process; each batch gets its own connection, so tables can land in parallel."""

    name = "duckdb"

    def __init__(self) -> None:
        self.db = duckdb.connect(":memory:")

    def close(self) -> None:
        self.db.close()

    def land_csv(self, batch: CsvBatch) -> LandedBatch:
        """Land `batch.files` as one deduplicated set of Parquet files under `batch.target`."""
        con = self.db.cursor()  # a connection of its own: temp tables and settings stay per batch
        n = next(_batch_ids)
        raw, kept, landed = f"raw_{n}", f"kept_{n}", f"landed_{n}"
        try:
            con.execute("SET TimeZone = 'UTC'")
            selects, headers = [], []
            for f in batch.files:
                sql, cleaned = _read_file_sql(con, f.path, f.relpath, batch)
                selects.append(sql)
                headers.append(cleaned)
            columns = union_columns(headers)
            require_columns(batch, columns)
            con.execute(f"CREATE TEMP TABLE {raw} AS " + "\nUNION ALL BY NAME\n".join(selects))
            rows_read = _count(con, raw)
            types = _infer(con, raw, columns)
            check_bound_type(batch, types)

            typed = ", ".join(f"CAST({q(c)} AS {SQL_TYPES[types[c]]}) AS {q(c)}" for c in columns)
            ingested = batch.ingested_at.strftime("%Y-%m-%d %H:%M:%S.%f+00")
            select = (
                f"SELECT {typed}, {sql_string(batch.run_id)} AS {RUN_ID}, "
                f"TIMESTAMPTZ {sql_string(ingested)} AS {INGESTED_AT}, {SOURCE_FILE}, 'u' AS {OP} FROM {raw}"
            )
            # Filter and dedup see the typed columns: in the SELECT above they would see the raw text.
            select = f"SELECT * FROM ({select}) AS typed"
            if batch.lower_bound and batch.cursor:
                bound = f"CAST({sql_string(batch.lower_bound.value)} AS {SQL_TYPES[types[batch.cursor]]})"
                select += f" WHERE {q(batch.cursor)} IS NULL OR {q(batch.cursor)} >= {bound}"
            con.execute(f"CREATE TEMP VIEW {kept} AS {select}")
            rows_kept = _count(con, kept)
            dedup = f"SELECT * FROM {kept}"
            if batch.primary_key:
                dedup += f" QUALIFY row_number() OVER ({_dedup_window(batch, columns)}) = 1"
            con.execute(f"CREATE TEMP TABLE {landed} AS {dedup}")
            rows_landed = _count(con, landed)
            max_cursor = _max_cursor(con, landed, batch.cursor, types)
            # Write to the run's scratch folder, then rename into landing/: a crash mid-write never leaves
            # a truncated file where dbt reads.
            Path(batch.staging).mkdir(parents=True, exist_ok=True)
            con.execute(
                f"COPY (SELECT *, {sql_string(partition_value(batch.ingested_at))} AS {PARTITION_COLUMN} "
                f"FROM {landed}) TO {sql_string(batch.staging)} (FORMAT parquet, PARTITION_BY ({PARTITION_COLUMN}), "
                f"FILENAME_PATTERN 'part-{{i}}', OVERWRITE_OR_IGNORE true)"
            )
            files = publish_staged(batch.staging, batch.target, batch.run_id)
        except duckdb.Error as exc:
            raise EngineError(f"{batch.source}.{batch.table}: DuckDB failed: {exc}") from exc
        finally:
            con.close()
        return LandedBatch(
            rows_read=rows_read,
            rows_landed=rows_landed,
            rows_filtered=rows_read - rows_kept,
            max_cursor=max_cursor,
            columns=types,
            files_written=tuple(files),
        )

    def land_jdbc(self, batch: JdbcBatch) -> LandedBatch:
        """Land a PostgreSQL batch (read through connectorx as Arrow); see `engines.duckdb_jdbc`."""
        from ingestion.engines.duckdb_jdbc import land_jdbc

        return land_jdbc(self, batch, next(_batch_ids))


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def _read_file_sql(
    con: duckdb.DuckDBPyConnection, path: str, relpath: str, batch: CsvBatch
) -> tuple[str, list[str]]:
    """A SELECT reading one file as text with cleaned column names, null tokens mapped, source file added."""
    o = batch.options
    reader = (
        f"read_csv({sql_string(path)}, all_varchar = true, header = {str(o.header).lower()}, "
        f"delim = {sql_string(o.delimiter)}, quote = {sql_string(o.quote)}, "
        f"escape = {sql_string(o.escape)}, encoding = {sql_string(o.encoding.replace('-sig', ''))})"
    )
    try:
        raw = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()]
    except duckdb.Error as exc:
        raise SourceError(f"{relpath}: cannot read the CSV file: {exc}") from None
    cleaned = clean_header(raw, file=relpath)
    nulls = [sql_string(v) for v in o.null_values]
    cols = []
    for r, c in zip(raw, cleaned, strict=True):
        expr = q(r)
        if nulls:
            expr = f"CASE WHEN {expr} IN ({', '.join(nulls)}) THEN NULL ELSE {expr} END"
        cols.append(f"{expr} AS {q(c)}")
    return f"SELECT {', '.join(cols)}, {sql_string(relpath)} AS {SOURCE_FILE} FROM {reader}", cleaned


def _infer(con: duckdb.DuckDBPyConnection, raw: str, columns: list[str]) -> dict[str, str]:
    """One scan: for each column and rule, do all non-null values match and cast?"""
    checks = []
    for c in columns:
        checks.append(f"count({q(c)})")
        for rule in TYPE_RULES:
            # FILTER, not a null-tolerant AND: for a null value `NULL AND false` is false.
            checks.append(
                f"coalesce(bool_and(regexp_full_match({q(c)}, {sql_string(rule.pattern)}) "
                f"AND TRY_CAST({q(c)} AS {SQL_TYPES[rule.name]}) IS NOT NULL) "
                f"FILTER (WHERE {q(c)} IS NOT NULL), true)"
            )
    row = con.execute(f"SELECT {', '.join(checks)} FROM {raw}").fetchone()
    assert row is not None
    types, width = {}, len(TYPE_RULES) + 1
    for i, c in enumerate(columns):
        chunk = row[i * width : (i + 1) * width]
        types[c] = choose_type(
            {rule.name: bool(ok) for rule, ok in zip(TYPE_RULES, chunk[1:], strict=True)}, int(chunk[0])
        )
    return types


def _dedup_window(batch: CsvBatch, columns: list[str]) -> str:
    """Latest cursor wins, then the later file, then the greatest row: deterministic on any engine."""
    order = [f"{q(batch.cursor)} DESC NULLS LAST"] if batch.cursor else []
    order.append(f"{SOURCE_FILE} DESC")
    order += [f"{q(c)} DESC NULLS LAST" for c in columns if c not in batch.primary_key]
    return f"PARTITION BY {', '.join(q(k) for k in batch.primary_key)} ORDER BY {', '.join(order)}"


def _max_cursor(
    con: duckdb.DuckDBPyConnection, table: str, cursor: str | None, types: dict[str, str]
) -> Watermark | None:
    if not cursor:
        return None
    ctype = types[cursor]
    expr = _CURSOR_TEXT.get(ctype, "CAST(max({c}) AS VARCHAR)").format(c=q(cursor))
    value = con.execute(f"SELECT {expr} FROM {table}").fetchone()[0]  # type: ignore[index]
    return None if value is None else Watermark(value=str(value), type=ctype)
