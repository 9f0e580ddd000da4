"""`load-warehouse`: copy newly committed landed Parquet files into a warehouse's raw tables.

Warehouses that can't read the lake (PostgreSQL; Redshift without Spectrum) get one raw table per landed
table, `<schema>.<table>` with `<schema>` = `landing_<source>` (env `TIDEMARK_SOURCE_SCHEMA_<SOURCE>`, the
same name the dbt sources use). A ledger table in the warehouse records every loaded run id and file:
a run is loaded in one transaction together with its ledger rows, so re-running loads nothing twice and
a crash loads nothing half. Raw tables are created, extended with new columns and widened (varchar
length, smallint → integer → bigint) as the landed schema grows.

The pure part (which runs to load, which columns to add or widen) is separate from the loaders;
`WarehouseLoader` is the interface a Redshift loader (`COPY … FORMAT AS PARQUET`) implements too.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ingestion.config import PipelineConfig
from ingestion.contract import PARTITION_COLUMN
from ingestion.errors import SchemaError, SourceError, TidemarkError
from ingestion.lake.layout import run_files, table_dir
from ingestion.lake.state import StateStore

log = logging.getLogger("tidemark")

LEDGER_SCHEMA = "tidemark_meta"
LEDGER_TABLE = "load_ledger"
# Strings become varchar(n), n a power of two from 32 up to Redshift's limit, so loads behave like
# Redshift's (and the dbt widening path is exercised); longer text becomes unbounded.
MIN_VARCHAR = 32
MAX_VARCHAR = 65535
INT_RANK = {"smallint": 2, "integer": 4, "bigint": 8}
_VARCHAR = re.compile(r"^(?:varchar|character varying)\((\d+)\)$")


class WarehouseError(TidemarkError):
    """The warehouse could not be reached or refused a load."""


def raw_schema(source: str) -> str:
    """The warehouse schema of a source's raw tables: `landing_<source>` unless overridden by env."""
    return os.environ.get(f"TIDEMARK_SOURCE_SCHEMA_{source.upper()}", f"landing_{source}")


@dataclass(frozen=True)
class RunLoad:
    """One committed run's landed files of one table, to be loaded in one transaction."""

    source: str
    table: str
    schema: str
    run_id: str
    files: tuple[Path, ...]


@dataclass
class TableLoadReport:
    """What load-warehouse did for one table."""

    source: str
    table: str
    runs: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0
    added: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"


@dataclass(frozen=True)
class ColumnPlan:
    """Changes a raw table needs before a batch fits: new columns and wider types."""

    add: tuple[tuple[str, str], ...] = ()
    widen: tuple[tuple[str, str, str], ...] = ()  # (column, old type, new type)


def pending_runs(committed: Sequence[str], loaded: set[str]) -> list[str]:
    """Committed runs not loaded yet, oldest first (run ids sort by time)."""
    return sorted(r for r in set(committed) if r not in loaded)


def varchar_size(max_bytes: int) -> int | None:
    """The varchar length for strings up to `max_bytes` bytes; None means unbounded (text)."""
    size = MIN_VARCHAR
    while size < max_bytes:
        size *= 2
    if size > MAX_VARCHAR:
        return None if max_bytes > MAX_VARCHAR else MAX_VARCHAR
    return size


def postgres_type(arrow_type: Any, max_bytes: int = 0) -> str:
    """The PostgreSQL column type for an Arrow type (strings sized by their longest value in bytes)."""
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_boolean(arrow_type):
        return "boolean"
    if t.is_int8(arrow_type) or t.is_int16(arrow_type) or t.is_uint8(arrow_type):
        return "smallint"
    if t.is_int32(arrow_type) or t.is_uint16(arrow_type):
        return "integer"
    if t.is_int64(arrow_type) or t.is_uint32(arrow_type):
        return "bigint"
    if t.is_uint64(arrow_type):
        return "numeric(20,0)"
    if t.is_float16(arrow_type) or t.is_float32(arrow_type):
        return "real"
    if t.is_float64(arrow_type):
        return "double precision"
    if t.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        size = varchar_size(max_bytes)
        return f"varchar({size})" if size else "text"
    if t.is_date(arrow_type):
        return "date"
    if t.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if t.is_time(arrow_type):
        return "time"
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type):
        return "bytea"
    if arrow_type == pa.null():
        return f"varchar({MIN_VARCHAR})"
    raise SchemaError(
        f"landed type {arrow_type} has no PostgreSQL column type in tidemark",
        hint="cast the column to a scalar type in the source query, or open an issue",
    )


def _normal(sql_type: str) -> str:
    s = sql_type.strip().lower()
    return {
        "int": "integer",
        "int4": "integer",
        "int2": "smallint",
        "int8": "bigint",
        "character varying": "text",
        "varchar": "text",
        "timestamp with time zone": "timestamptz",
        "timestamp without time zone": "timestamp",
        "float8": "double precision",
        "float4": "real",
    }.get(s, s)


def wider_type(old: str, new: str) -> str | None:
    """The type to widen `old` to so it holds `new` values; None when `old` already holds them.

    Raises SchemaError when the types can't be reconciled by widening (e.g. bigint → varchar).
    """
    old, new = _normal(old), _normal(new)
    if old == new:
        return None
    if old in INT_RANK and new in INT_RANK:
        return new if INT_RANK[new] > INT_RANK[old] else None
    old_var, new_var = _VARCHAR.match(old), _VARCHAR.match(new)
    if old == "text" and (new_var or new == "text"):
        return None
    if old_var and (new_var or new == "text"):
        if new == "text":
            return "text"
        return new if int(new_var.group(1)) > int(old_var.group(1)) else None  # type: ignore[union-attr]
    if old == "double precision" and (new in INT_RANK or new == "real"):
        return None
    if old == "timestamptz" and new == "timestamp":
        return None
    raise SchemaError(
        f"cannot widen a {old} column to hold {new} values",
        hint="the landed type changed incompatibly: add a new column in the source, or reload the table",
    )


def plan_columns(existing: dict[str, str], incoming: dict[str, str]) -> ColumnPlan:
    """New columns to add and existing ones to widen so `incoming` rows fit a table with `existing` columns."""
    add, widen = [], []
    for name, typ in incoming.items():
        if name not in existing:
            add.append((name, typ))
            continue
        try:
            wider = wider_type(existing[name], typ)
        except SchemaError as exc:
            raise SchemaError(f"column {name}: {exc.message}", hint=exc.hint) from None
        if wider:
            widen.append((name, existing[name], wider))
    return ColumnPlan(tuple(add), tuple(widen))


def read_landed(path: Path) -> Any:
    """A landed file as an Arrow table, with its hive partition value (`_ingest_date`) as a date column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    part = path.parent.name
    if part.startswith(f"{PARTITION_COLUMN}=") and PARTITION_COLUMN not in table.column_names:
        value = pa.scalar(part.split("=", 1)[1]).cast(pa.date32())
        table = table.append_column(PARTITION_COLUMN, pa.array([value.as_py()] * table.num_rows, pa.date32()))
    return table


def batch_types(tables: Iterable[Any], type_of=postgres_type) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Column → warehouse type over a run's files (strings sized by their longest value)."""
    import pyarrow.compute as pc
    import pyarrow.types as t

    out: dict[str, str] = {}
    for table in tables:
        for name, column in zip(table.column_names, table.columns, strict=True):
            longest = 0
            if t.is_string(column.type) or t.is_large_string(column.type):
                longest = pc.max(pc.binary_length(column)).as_py() or 0
            typ = type_of(column.type, longest)
            out[name] = typ if name not in out else (wider_type(out[name], typ) or out[name])
    return out


class WarehouseLoader(Protocol):
    """Loads landed runs into one warehouse's raw tables and remembers what it loaded."""

    def loaded_runs(self, source: str, table: str) -> set[str]:
        """Run ids of the table already recorded in the warehouse's load ledger."""
        ...

    def load_run(self, load: RunLoad) -> TableLoadReport:
        """Load one run's files and record them in the ledger, all or nothing; skip a run loaded meanwhile."""
        ...

    def close(self) -> None: ...


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresLoader:
    """Raw tables in PostgreSQL, filled with `COPY … FROM STDIN (FORMAT csv)` through psycopg 3."""

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
            self.conn.execute(f"create schema if not exists {_q(LEDGER_SCHEMA)}")
            self.conn.execute(
                f"create table if not exists {_q(LEDGER_SCHEMA)}.{_q(LEDGER_TABLE)} ("
                " source text not null, table_name text not null, run_id text not null,"
                " file text not null, row_count bigint not null,"
                " loaded_at timestamptz not null default now(),"
                " primary key (source, table_name, run_id, file))"
            )
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def loaded_runs(self, source: str, table: str) -> set[str]:
        rows = self.conn.execute(
            f"select distinct run_id from {_q(LEDGER_SCHEMA)}.{_q(LEDGER_TABLE)}"
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
            self.conn.execute(f"drop view if exists {_q(view_schema)}.{_q(view)} cascade")
        return [f"{s}.{v}" for s, v in rows]

    def load_run(self, load: RunLoad) -> TableLoadReport:
        report = TableLoadReport(load.source, load.table)
        ledger = f"{_q(LEDGER_SCHEMA)}.{_q(LEDGER_TABLE)}"
        target = f"{_q(load.schema)}.{_q(load.table)}"
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
            tables = [(f, read_landed(f)) for f in load.files]
            incoming = batch_types(t for _, t in tables)
            self.conn.execute(f"create schema if not exists {_q(load.schema)}")
            existing = self._columns(load.schema, load.table)
            if not existing and incoming:
                cols = ", ".join(f"{_q(n)} {t}" for n, t in incoming.items())
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
                        f"alter table {target} alter column {_q(name)} type {new} using {_q(name)}::{new}"
                    )
                for name, typ in plan.add:
                    self.conn.execute(f"alter table {target} add column {_q(name)} {typ}")
                report.added = [n for n, _ in plan.add]
                report.widened = [f"{n} {o} → {w}" for n, o, w in plan.widen]
            for path, table in tables:
                rows = self._copy(target, table)
                self.conn.execute(
                    f"insert into {ledger} (source, table_name, run_id, file, row_count)"
                    " values (%s, %s, %s, %s, %s)",
                    (load.source, load.table, load.run_id, path.name, rows),
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
        cols = ", ".join(_q(c) for c in table.column_names)
        with self.conn.cursor() as cur, cur.copy(f"copy {target} ({cols}) from stdin (format csv)") as copy:
            view = buf.getbuffer()
            for start in range(0, len(view), 1 << 20):
                copy.write(view[start : start + (1 << 20)])
        return int(table.num_rows)


LOADERS = {"postgres": PostgresLoader}


def load_warehouse(
    cfg: PipelineConfig, loader: WarehouseLoader, tables: Sequence[tuple[str, str]] | None = None
) -> list[TableLoadReport]:
    """Load every committed, not yet loaded run of the chosen tables (default: all) into the warehouse."""
    lake = cfg.lake_root
    if "://" in lake:
        raise SourceError(
            f"load-warehouse reads a local lake; {lake} is remote",
            hint="run it where the lake is mounted, or load Redshift with COPY from S3 (AWS loader)",
        )
    store = StateStore(lake, cfg.pipeline)
    chosen = tables or [(s.name, t.name) for s, t in cfg.tables()]
    reports = []
    for source, table in chosen:
        state = store.read(source, table)
        report = TableLoadReport(source, table)
        reports.append(report)
        if state is None:
            continue
        folder = table_dir(lake, source, table)
        for run_id in pending_runs(state.committed_runs, loader.loaded_runs(source, table)):
            files = tuple(run_files(folder, run_id))
            done = loader.load_run(RunLoad(source, table, raw_schema(source), run_id, files))
            report.runs += done.runs
            report.files += done.files
            report.rows += done.rows
            report.added += [c for c in done.added if c not in report.added]
            report.widened += done.widened
    if tables is None:
        reports.append(load_audit_ledger(lake, loader))
    return reports


AUDIT_SOURCE, AUDIT_TABLE = "_audit", "ingestion_runs"


def load_audit_ledger(lake: str, loader: WarehouseLoader) -> TableLoadReport:
    """Copy new ingestion-ledger files (`<lake>/_audit/ingestion_runs/`) into `lake_audit.ingestion_runs`.

    The dbt audit models read the ledger as a source on every target; on warehouses that can't read the
    lake it is loaded like a landed table, each ledger file once (its name stands for the run id).
    """
    from ingestion.observe.audit import LEDGER_DIR

    schema = os.environ.get("TIDEMARK_SOURCE_SCHEMA_AUDIT", "lake_audit")
    report = TableLoadReport(AUDIT_SOURCE, AUDIT_TABLE)
    loaded = loader.loaded_runs(AUDIT_SOURCE, AUDIT_TABLE)
    for path in sorted(Path(lake, LEDGER_DIR).glob("run_date=*/*.parquet")):
        key = f"{path.parent.name}/{path.stem}"
        if key in loaded:
            continue
        done = loader.load_run(RunLoad(AUDIT_SOURCE, AUDIT_TABLE, schema, key, (path,)))
        report.runs += done.runs
        report.files += done.files
        report.rows += done.rows
        report.added += [c for c in done.added if c not in report.added]
    return report
