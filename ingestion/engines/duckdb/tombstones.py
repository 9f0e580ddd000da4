"""Delete detection for PostgreSQL tables (`detect_deletes: true`) on the DuckDB engine: land `_op='d'` rows.

The source's key set (a keys-only projection, pushed down: PostgreSQL can answer it from the primary
key index) is compared with the keys live in the lake (latest version per key by cursor, then
`_ingested_at`, then `_run_id`, not a tombstone). Keys live in the lake but gone from the source get a
tombstone: key columns set, cursor = max(the live row's cursor, the run's horizon) so that it sorts
after the row it deletes in dbt's CDC merge, every other column null.

The lake's side is read through its file operations (a local folder or `s3://`, via pyarrow): the newest
committed live-keys snapshot plus the files of the runs committed after it and this run's own (see
`engines.deletes`), so a run reads O(keys + new rows), not the whole history. Cost per run: one scan of
the key column(s) in PostgreSQL, the keys sent over the wire, that read, and the next snapshot written
when the run lands anything. The Spark engine does the same on its executors (`engines.spark.tombstones`)
and lands the same rows.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ingestion.contract import (
    INGESTED_AT,
    OP,
    RUN_ID,
    TOMBSTONE,
    latest_version_order,
    render_window,
)
from ingestion.engines.base import TombstoneBatch
from ingestion.engines.deletes import key_inputs, snapshot_columns, tombstone_path
from ingestion.engines.duckdb.common import duck_type, metadata_select
from ingestion.errors import EngineError
from ingestion.lake import fs as lakefs
from ingestion.observe.logs import event
from ingestion.plan.jdbc import TIME_CURSORS, JdbcPlan, JdbcTable, select_sql
from ingestion.redact import redact
from ingestion.sources.jdbc import read_arrow
from ingestion.sqltext import quote_ident, sql_string


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
    table, plan, run_id, ingested_at = batch.table, batch.plan, batch.run_id, batch.ingested_at
    if not batch.has_landed or not table.primary_key:
        return 0
    inputs = key_inputs(batch)
    if not inputs.files:
        return 0
    columns = snapshot_columns(table)
    landed = lakefs.read_parquet_columns(inputs.files, columns)
    source_keys = read_arrow(batch.connection, [select_sql(table, None, table.primary_key)])
    keys = ", ".join(quote_ident(k) for k in table.primary_key)
    cursor = table.cursor
    window = render_window(table.primary_key, latest_version_order(cursor), quote_ident)
    typed = ", ".join(
        f"CAST({quote_ident(c)} AS {duck_type(table.types[c])}) AS {quote_ident(c)}"
        for c in columns
        if c in table.types
    )
    meta = f"CAST({OP} AS VARCHAR) AS {OP}, CAST({INGESTED_AT} AS TIMESTAMPTZ) AS {INGESTED_AT}, "
    meta += f"CAST({RUN_ID} AS VARCHAR) AS {RUN_ID}"
    snap_cols = ", ".join(quote_ident(c) for c in columns)
    scratch = Path(batch.scratch, f"{table.source}-{table.name}-tombstones")
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("landed_raw", landed)
        con.register("source_keys_raw", source_keys)
        typed_keys = ", ".join(
            f"CAST({quote_ident(k)} AS {duck_type(table.types[k])}) AS {quote_ident(k)}"
            for k in table.primary_key
        )
        con.execute(
            f"""
            CREATE TEMP TABLE latest AS
            WITH typed AS (SELECT {typed}, {meta} FROM landed_raw)
            SELECT * FROM typed QUALIFY row_number() OVER ({window}) = 1
            """
        )
        con.execute(
            f"""
            CREATE TEMP TABLE gone AS
            WITH src AS (SELECT {typed_keys} FROM source_keys_raw)
            SELECT latest.* FROM latest ANTI JOIN src USING ({keys}) WHERE latest.{OP} <> 'd'
            """
        )
        gone = int(con.execute("SELECT count(*) FROM gone").fetchone()[0])  # type: ignore[index]
        if gone:
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
            tomb_meta = metadata_select(run_id, ingested_at, source_file=False, op=TOMBSTONE)
            con.execute(f"CREATE TEMP TABLE tomb AS SELECT {', '.join(cols)}, {tomb_meta} FROM gone")
            # Written outside landing/, then renamed (local) or PUT whole (S3): dbt never sees half a file.
            _publish(con, "SELECT * FROM tomb", scratch / "tombstones.parquet", tombstone_path(batch))
        if gone or inputs.own_files:
            # The run will commit: the next run starts from this snapshot (each key's latest version,
            # the tombstones just written included).
            after = f"SELECT {snap_cols} FROM latest"
            if gone:
                kept = ", ".join(f"latest.{quote_ident(c)}" for c in columns)
                after = f"SELECT {kept} FROM latest ANTI JOIN tomb USING ({keys}) "
                after += f"UNION ALL SELECT {snap_cols} FROM tomb"
            _publish(con, after, scratch / "keys.parquet", lakefs.join(inputs.snapshot_dir, "part-0.parquet"))
    except duckdb.Error as exc:
        raise EngineError(
            f"{table.source}.{table.name}: delete detection failed: {redact(str(exc))}"
        ) from None
    finally:
        con.close()
    if gone:
        event(
            "keys deleted at the source: tombstones landed", table=f"{table.source}.{table.name}", keys=gone
        )
    return gone


def _publish(con: duckdb.DuckDBPyConnection, select: str, staged: Path, dest: str) -> None:
    """Write a query's rows to a local Parquet file, then move it to its lake path."""
    staged.parent.mkdir(parents=True, exist_ok=True)
    con.execute(f"COPY ({select}) TO {sql_string(str(staged))} (FORMAT parquet)")
    lakefs.place(str(staged), dest)
