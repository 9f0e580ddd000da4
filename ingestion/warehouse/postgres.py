"""The PostgreSQL warehouse loader: landed Parquet from a local lake into raw tables with COPY FROM STDIN.

Each run is loaded in one transaction together with its rows in the load ledger
(`tidemark_meta.load_ledger`), under an advisory lock per table; raw tables are created, extended with
new columns and widened as the landed schema grows (the plan comes from `warehouse.plan`).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from ingestion.contract import PARTITION_COLUMN
from ingestion.errors import SourceError, WarehouseError
from ingestion.lake import fs as lakefs
from ingestion.sqltext import quote_ident
from ingestion.warehouse.plan import (
    LEDGER_SCHEMA,
    LEDGER_TABLE,
    RunLoad,
    TableLoadReport,
    batch_types,
    plan_columns,
)

log = logging.getLogger("tidemark")


def read_landed(path: str, partition_column: str | None = PARTITION_COLUMN) -> Any:
    """A local landed file as an Arrow table, with its hive partition value (`_ingest_date`) as a date column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    part = Path(path).parent.name
    if (
        partition_column
        and part.startswith(f"{partition_column}=")
        and partition_column not in table.column_names
    ):
        value = pa.scalar(part.split("=", 1)[1]).cast(pa.date32())
        table = table.append_column(partition_column, pa.array([value.as_py()] * table.num_rows, pa.date32()))
    return table


class PostgresLoader:
    """Raw tables in PostgreSQL, filled with `COPY … FROM STDIN (FORMAT csv)` through psycopg 3.

    Implements `loader.WarehouseLoader`; reads the landed files from a local lake.
    """

    def __init__(self, dsn: str = "") -> None:
        try:
            import psycopg
        except ImportError:
            raise WarehouseError(
                "load-warehouse needs psycopg 3", hint="pip install 'tidemark[postgres]'"
            ) from None
        try:
            # An empty DSN lets libpq take PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD from the env.
            self.conn = psycopg.connect(dsn, autocommit=False)
        except psycopg.OperationalError as exc:
            raise WarehouseError(
                f"cannot connect to PostgreSQL: {str(exc).strip().splitlines()[0]}",
                hint="pass --dsn 'host=… dbname=… user=…' or set PGHOST, PGDATABASE, PGUSER (PGPASSWORD)",
            ) from None
        with self.conn.transaction():
            self.conn.execute(f"create schema if not exists {quote_ident(LEDGER_SCHEMA)}")
            self.conn.execute(
                f"create table if not exists {quote_ident(LEDGER_SCHEMA)}.{quote_ident(LEDGER_TABLE)} ("
                " source text not null, table_name text not null, run_id text not null,"
                " file text not null, row_count bigint not null,"
                " loaded_at timestamptz not null default now(),"
                " primary key (source, table_name, run_id, file))"
            )
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def check_lake(self, lake: str) -> None:
        """Refuse a remote lake: this loader reads the landed files from a local folder."""
        if lakefs.is_remote(lake):
            raise SourceError(
                f"load-warehouse reads a local lake; {lake} is remote",
                hint="run it where the lake is mounted, or load Redshift with COPY from S3 (AWS loader)",
            )

    def loaded_runs(self, source: str, table: str) -> set[str]:
        rows = self.conn.execute(
            f"select distinct run_id from {quote_ident(LEDGER_SCHEMA)}.{quote_ident(LEDGER_TABLE)}"
            " where source = %s and table_name = %s",
            (source, table),
        ).fetchall()
        self.conn.commit()
        return {r[0] for r in rows}

    def _columns(self, schema: str, table: str) -> dict[str, str]:
        rows = self.conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
            " join pg_class c on a.attrelid = c.oid join pg_namespace n on c.relnamespace = n.oid"
            " where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped"
            " order by a.attnum",
            (schema, table),
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def _drop_dependent_views(self, schema: str, table: str) -> list[str]:
        """PostgreSQL won't change a column type a view reads: drop those views (dbt recreates them)."""
        rows = self.conn.execute(
            "select distinct dn.nspname, d.relname from pg_depend"
            " join pg_rewrite on pg_depend.objid = pg_rewrite.oid"
            " join pg_class d on pg_rewrite.ev_class = d.oid join pg_namespace dn on d.relnamespace = dn.oid"
            " join pg_class s on pg_depend.refobjid = s.oid join pg_namespace sn on s.relnamespace = sn.oid"
            " where sn.nspname = %s and s.relname = %s and d.oid <> s.oid",
            (schema, table),
        ).fetchall()
        for view_schema, view in rows:
            self.conn.execute(f"drop view if exists {quote_ident(view_schema)}.{quote_ident(view)} cascade")
        return [f"{s}.{v}" for s, v in rows]

    def load_run(self, load: RunLoad) -> TableLoadReport:
        report = TableLoadReport(load.source, load.table)
        ledger = f"{quote_ident(LEDGER_SCHEMA)}.{quote_ident(LEDGER_TABLE)}"
        target = f"{quote_ident(load.schema)}.{quote_ident(load.table)}"
        with self.conn.transaction():
            # One loader per table at a time; the ledger check below is then race-free.
            self.conn.execute(
                "select pg_advisory_xact_lock(hashtext(%s))", (f"tidemark:{load.source}.{load.table}",)
            )
            done = self.conn.execute(
                f"select 1 from {ledger} where source = %s and table_name = %s and run_id = %s limit 1",
                (load.source, load.table, load.run_id),
            ).fetchone()
            if done:
                return report
            tables = [(f, read_landed(f, load.partition_column)) for f in load.files]
            incoming = batch_types(t for _, t in tables)
            self.conn.execute(f"create schema if not exists {quote_ident(load.schema)}")
            existing = self._columns(load.schema, load.table)
            if not existing and incoming:
                cols = ", ".join(f"{quote_ident(n)} {t}" for n, t in incoming.items())
                self.conn.execute(f"create table {target} ({cols})")
                report.added = list(incoming)
            elif incoming:
                plan = plan_columns(existing, incoming)
                if plan.widen:
                    dropped = self._drop_dependent_views(load.schema, load.table)
                    if dropped:
                        log.warning(
                            "dropped views reading a widened raw table; dbt build recreates them",
                            extra={"fields": {"table": f"{load.schema}.{load.table}", "views": dropped}},
                        )
                for name, _old, new in plan.widen:
                    self.conn.execute(
                        f"alter table {target} alter column {quote_ident(name)} type {new} using {quote_ident(name)}::{new}"
                    )
                for name, typ in plan.add:
                    self.conn.execute(f"alter table {target} add column {quote_ident(name)} {typ}")
                report.added = [n for n, _ in plan.add]
                report.widened = [f"{n} {o} → {w}" for n, o, w in plan.widen]
            for path, table in tables:
                rows = self._copy(target, table)
                self.conn.execute(
                    f"insert into {ledger} (source, table_name, run_id, file, row_count)"
                    " values (%s, %s, %s, %s, %s)",
                    (load.source, load.table, load.run_id, Path(path).name, rows),
                )
                report.files += 1
                report.rows += rows
            if not tables:
                # A committed run that landed nothing for this table: remember it all the same.
                self.conn.execute(
                    f"insert into {ledger} (source, table_name, run_id, file, row_count) values (%s, %s, %s, '', 0)",
                    (load.source, load.table, load.run_id),
                )
        report.runs.append(load.run_id)
        return report

    def _copy(self, target: str, table: Any) -> int:
        import pyarrow.csv as pacsv

        if table.num_rows == 0:
            return 0
        buf = io.BytesIO()
        # Nulls are written as nothing and empty strings as "": COPY csv tells them apart.
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        cols = ", ".join(quote_ident(c) for c in table.column_names)
        with self.conn.cursor() as cur, cur.copy(f"copy {target} ({cols}) from stdin (format csv)") as copy:
            view = buf.getbuffer()
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
        return int(table.num_rows)
