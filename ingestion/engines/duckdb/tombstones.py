"""Delete detection for PostgreSQL tables (`detect_deletes: true`): land `_op='d'` tombstones.

The source's key set (a keys-only projection, pushed down: PostgreSQL can answer it from the primary
key index) is compared with the keys live in the landed data (latest row per key by cursor, then
`_ingested_at`, then `_run_id`, not a tombstone). Keys live in the lake but gone from the source get a
tombstone: key columns set, cursor = max(the live row's cursor, the run's horizon) so that it sorts
after the row it deletes in dbt's CDC merge, every other column null.

Cost per run: one scan of the key column(s) in PostgreSQL, the key columns sent over the wire, and a
read of the key, cursor and metadata columns of every landed file of the table. Both engines use this
module (DuckDB over the local lake), so tombstones are identical whichever engine landed the rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from ingestion.contract import (
    INGESTED_AT,
    OP,
    PARTITION_COLUMN,
    RUN_ID,
    TOMBSTONE,
    latest_version_order,
    render_window,
)
from ingestion.engines.base import TombstoneBatch
from ingestion.engines.duckdb.common import duck_type, metadata_select
from ingestion.errors import EngineError
from ingestion.lake.layout import partition_value
from ingestion.observe.logs import event
from ingestion.plan.jdbc import TIME_CURSORS, JdbcPlan, JdbcTable, select_sql
from ingestion.redact import redact
from ingestion.sources.jdbc import read_arrow
from ingestion.sqltext import quote_ident, sql_string

# Tombstone files take numbers far above an engine's data files of the same run.
TOMBSTONE_FILE_NUMBER = 900000


def _horizon_literal(table: JdbcTable, plan: JdbcPlan) -> str | None:
    """The run's horizon as a DuckDB literal in the cursor column's own terms."""
    if plan.horizon is None or table.cursor_type not in TIME_CURSORS:
        return None
    if table.cursor_type == "timestamptz":
        return f"TIMESTAMPTZ {sql_string(plan.horizon.value)}"
    zone = table.cursor_timezone or "UTC"
    # The UTC instant as wall-clock time in the column's zone (the session zone is UTC).
    return f"timezone({sql_string(zone)}, TIMESTAMPTZ {sql_string(plan.horizon.value)})"


def land_tombstones(batch: TombstoneBatch) -> int:
    """Write this run's tombstones for keys deleted at the source; returns how many were written."""
    table, connection, plan = batch.table, batch.connection, batch.plan
    target, scratch, run_id, ingested_at = batch.target, batch.scratch, batch.run_id, batch.ingested_at
    has_landed = batch.has_landed
    files = sorted(str(p) for p in Path(target).glob(f"{PARTITION_COLUMN}=*/*.parquet"))
    if not has_landed or not files or not table.primary_key:
        return 0
    source_keys = read_arrow(connection, [select_sql(table, None, table.primary_key)])
    keys = ", ".join(quote_ident(k) for k in table.primary_key)
    cursor = table.cursor
    window = render_window(table.primary_key, latest_version_order(cursor), quote_ident)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("source_keys_raw", source_keys)
        typed_keys = ", ".join(
            f"CAST({quote_ident(k)} AS {duck_type(table.types[k])}) AS {quote_ident(k)}"
            for k in table.primary_key
        )
        cursor_col = f", {quote_ident(cursor)}" if cursor else ""
        con.execute(
            f"""
            CREATE TEMP TABLE gone AS
            WITH landed AS (
                SELECT {keys}{cursor_col}, {OP}, {INGESTED_AT}, {RUN_ID}
                FROM read_parquet({_list(files)}, union_by_name = true)
            ),
            live AS (
                SELECT * FROM landed
                QUALIFY row_number() OVER ({window}) = 1
            ),
            src AS (SELECT {typed_keys} FROM source_keys_raw)
            SELECT live.* FROM live ANTI JOIN src USING ({keys}) WHERE live.{OP} <> 'd'
            """
        )
        gone = int(con.execute("SELECT count(*) FROM gone").fetchone()[0])  # type: ignore[index]
        if not gone:
            return 0
        horizon = _horizon_literal(table, plan)
        cols = []
        for c, t in table.types.items():
            if c in table.primary_key:
                cols.append(quote_ident(c))
            elif c == cursor:
                expr = quote_ident(c) if horizon is None else f"greatest({quote_ident(c)}, {horizon})"
                cols.append(f"CAST({expr} AS {duck_type(t)}) AS {quote_ident(c)}")
            else:
                cols.append(f"CAST(NULL AS {duck_type(t)}) AS {quote_ident(c)}")
        meta = metadata_select(run_id, ingested_at, source_file=False, op=TOMBSTONE)
        select = f"SELECT {', '.join(cols)}, {meta} FROM gone"
        # Stage outside landing/, then rename: dbt never sees a half-written file.
        name = f"part-{run_id}-{TOMBSTONE_FILE_NUMBER}.parquet"
        staged = Path(scratch, f"{table.source}-{table.name}-tombstones", name)
        staged.parent.mkdir(parents=True, exist_ok=True)
        con.execute(f"COPY ({select}) TO {sql_string(str(staged))} (FORMAT parquet)")
        dest = Path(target, f"{PARTITION_COLUMN}={partition_value(ingested_at)}", name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)
    except duckdb.Error as exc:
        raise EngineError(
            f"{table.source}.{table.name}: delete detection failed: {redact(str(exc))}"
        ) from None
    finally:
        con.close()
    event("keys deleted at the source: tombstones landed", table=f"{table.source}.{table.name}", keys=gone)
    return gone


def _list(files: list[str]) -> str:
    return "[" + ", ".join(sql_string(f) for f in files) + "]"
