"""Redshift curation: COPY each committed run's Parquet from the S3 lake through the Redshift Data API.

`load-warehouse --target redshift` loads what the PostgreSQL loader loads (raw tables `landing_<source>.
<table>`, ledger `tidemark_meta.load_ledger`, one run at a time, oldest first) but Redshift reads the files
itself: per run, one Data API batch (= one transaction) that writes a manifest-driven `COPY … FORMAT AS
PARQUET` into a temporary table shaped like the files, inserts those rows into the raw table with the
partition value, and records the run in the ledger. A crash leaves the run unloaded; a rerun loads it once.

The SQL comes from pure functions (`copy_statements`, `plan_redshift_loads`): unit-tested without AWS.
`RedshiftLoader` implements `loader.WarehouseLoader` (the one loading loop is `loader.load_all`); the
statements run through `data_api.DataApi`. Spectrum instead of COPY: `external_schema_sql` gives the
external schema DDL over the Glue database.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from ingestion.contract import PARTITION_COLUMN
from ingestion.errors import SchemaError, SourceError, WarehouseError
from ingestion.lake.layout import run_id_of
from ingestion.lake.s3 import s3_client, split_s3
from ingestion.sqltext import quote_ident, sql_string
from ingestion.warehouse.data_api import DataApi, RedshiftSettings
from ingestion.warehouse.plan import (
    LEDGER_SCHEMA,
    LEDGER_TABLE,
    RunLoad,
    TableLoadReport,
    pending_runs,
    plan_columns,
    postgres_type,
    raw_schema,
    wider_type,
)

log = logging.getLogger("tidemark")

_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")
# The Data API's documented limits: at most 40 statements per BatchExecuteStatement (its `Sqls` list) and
# 100 KB of SQL text per statement. botocore checks neither; batches and statements are cut to fit.
MAX_BATCH_STATEMENTS = 40
MAX_SQL_BYTES = 100_000
# A footer is read with one ranged GET of this many trailing bytes (a second one if it is larger).
FOOTER_GUESS = 64 * 1024


@dataclass(frozen=True)
class S3File:
    """One landed Parquet file on S3: its URI, byte size (the manifest needs it) and partition folder."""

    uri: str
    size: int
    partition: str  # the `_ingest_date` value from the file's folder
    rows: int = 0  # from the file's Parquet footer


@dataclass(frozen=True)
class RunFiles:
    """A committed run's files of one table, with their column names and Redshift types in file order."""

    source: str
    table: str
    run_id: str
    files: tuple[S3File, ...]
    columns: tuple[tuple[str, str], ...]  # the Parquet columns (without the hive partition column)


def ident(name: str) -> str:
    """A validated, quoted Redshift identifier (Redshift folds names to lower case)."""
    if not _IDENT.match(name):
        raise SchemaError(
            f"{name!r} is not a usable Redshift identifier",
            hint="use lower-case letters, digits and _ (tidemark cleans landed column names that way)",
        )
    return quote_ident(name)


def literal(value: str) -> str:
    """A Redshift string literal (Redshift reads a backslash as an escape)."""
    return sql_string(value, backslash_escapes=True)


def redshift_type(arrow_type: Any, max_bytes: int = 0) -> str:
    """The Redshift column type for an Arrow type: PostgreSQL's, minus what Redshift lacks."""
    typ = postgres_type(arrow_type, max_bytes)
    # Redshift's `text` is varchar(256): unbounded strings get the maximum width instead.
    return {"text": "varchar(65535)", "bytea": "varbyte(1024000)"}.get(typ, typ)


def check_s3_lake(lake: str) -> str:
    """`lake` when it is on S3 (Redshift COPY reads the files itself), else a SourceError saying what to do."""
    if not lake.startswith("s3://"):
        raise SourceError(
            f"Redshift COPY reads the lake from S3; {lake} is not an s3:// location",
            hint="set lake.root (or TIDEMARK_LAKE) to s3://bucket/prefix, or load a local lake into PostgreSQL "
            "with --target postgres",
        )
    split_s3(lake)  # and names a bucket
    return lake


def table_prefix(lake: str, source: str, table: str) -> str:
    """`s3://…/landing/<source>/<table>/`: the folder a table's runs land in."""
    return f"{lake.rstrip('/')}/landing/{source}/{table}/"


def manifest_uri(lake: str, source: str, table: str, run_id: str, partition: str) -> str:
    """Where the manifest of a run's files in one partition is written (outside `landing/`)."""
    return (
        f"{lake.rstrip('/')}/_load/redshift/{source}/{table}/{run_id}/{PARTITION_COLUMN}={partition}.manifest"
    )


def manifest_body(files: Sequence[S3File]) -> str:
    """A COPY manifest naming exactly these files (Parquet needs `meta.content_length`)."""
    entries = [{"url": f.uri, "mandatory": True, "meta": {"content_length": f.size}} for f in files]
    return json.dumps({"entries": entries}, indent=1)


def ledger_ddl() -> list[str]:
    """The load ledger (same table as PostgreSQL's loader): one row per loaded file of a run."""
    return [
        f"create schema if not exists {ident(LEDGER_SCHEMA)}",
        f"create table if not exists {ident(LEDGER_SCHEMA)}.{ident(LEDGER_TABLE)} ("
        "source varchar(256) not null, table_name varchar(256) not null, run_id varchar(64) not null,"
        " file varchar(1024) not null, row_count bigint not null, loaded_at timestamp default getdate(),"
        " primary key (source, table_name, run_id, file))",
    ]


def table_ddl(
    schema: str, table: str, existing: dict[str, str], incoming: dict[str, str]
) -> tuple[list[str], list[str]]:
    """(varchar widenings, DDL) that make `schema.table` hold `incoming` columns.

    The DDL (create, add columns) runs inside the load's transaction. Varchar widenings are ALTER COLUMN
    TYPE, which Redshift can't run in a transaction block: they run before it, one by one; a widened
    column that then loads nothing is harmless. Other widenings (numbers, date → timestamp) are rebuilds:
    see `rebuild_column`; they are not in either list.
    """
    target = f"{ident(schema)}.{ident(table)}"
    if not existing:
        cols = ", ".join(f"{ident(n)} {t}" for n, t in incoming.items())
        return [], [
            f"create schema if not exists {ident(schema)}",
            f"create table if not exists {target} ({cols})",
        ]
    plan = plan_columns(existing, incoming)
    widen = [
        f"alter table {target} alter column {ident(name)} type {new}"
        for name, old, new in plan.widen
        if in_place(old, new)
    ]
    # Redshift adds one column per ALTER TABLE.
    return widen, [f"alter table {target} add column {ident(n)} {t}" for n, t in plan.add]


def in_place(old: str, new: str) -> bool:
    """Can Redshift widen `old` to `new` with ALTER COLUMN TYPE? Only varchar lengths."""
    return old.startswith(("varchar", "character varying")) and new.startswith("varchar")


@dataclass(frozen=True)
class View:
    """A view reading a raw table: rebuilt after a column rebuild dropped it (DROP COLUMN … CASCADE)."""

    schema: str
    name: str
    definition: str  # the SELECT, as pg_get_viewdef returns it


def rebuild_column(
    schema: str, table: str, column: str, new_type: str, views: Sequence[View] = ()
) -> list[str]:
    """One transaction that widens a column Redshift can't ALTER in place, the way dbt-redshift does.

    Add a column of the new type, copy the values over with a cast, drop the old column (CASCADE: views
    bound to it go too), rename the new one; then the views that read the table are created again from
    their saved definitions. The column moves to the end of the table: every insert names its columns.
    """
    target = f"{ident(schema)}.{ident(table)}"
    tmp = ident(f"{column}__tm_wide")
    stmts = [
        f"alter table {target} add column {tmp} {new_type}",
        f"update {target} set {tmp} = {ident(column)}::{new_type}",
        f"alter table {target} drop column {ident(column)} cascade",
        f"alter table {target} rename column {tmp} to {ident(column)}",
    ]
    for v in views:
        body = v.definition.strip().rstrip(";")
        stmts.append(f"create or replace view {ident(v.schema)}.{ident(v.name)} as {body}")
    return stmts


def dependent_views_sql(schema: str, table: str) -> str:
    """The views bound to a table (late-binding views are not: they need no rebuild), with definitions."""
    return (
        "select distinct vn.nspname, v.relname, pg_get_viewdef(v.oid) from pg_depend d"
        " join pg_rewrite r on r.oid = d.objid join pg_class v on v.oid = r.ev_class"
        " join pg_namespace vn on vn.oid = v.relnamespace"
        " join pg_class t on t.oid = d.refobjid join pg_namespace tn on tn.oid = t.relnamespace"
        f" where tn.nspname = {literal(schema)} and t.relname = {literal(table)} and v.oid <> t.oid"
    )


def values_inserts(head: str, rows: Sequence[str], limit: int = MAX_SQL_BYTES) -> list[str]:
    """`head values (…), (…)`: one multi-row insert, cut into several only when one would exceed `limit`."""
    out: list[str] = []
    chunk: list[str] = []
    size = len(head.encode()) + 8
    for row in rows:
        n = len(row.encode()) + 2
        if chunk and size + n > limit:
            out.append(f"{head} values {', '.join(chunk)}")
            chunk, size = [], len(head.encode()) + 8
        chunk.append(row)
        size += n
    if chunk:
        out.append(f"{head} values {', '.join(chunk)}")
    return out


def batches(stmts: Sequence[str], limit: int = MAX_BATCH_STATEMENTS) -> list[list[str]]:
    """Statements cut into Data API batches of at most `limit` (each batch is its own transaction)."""
    return [list(stmts[i : i + limit]) for i in range(0, len(stmts), limit)]


@dataclass(frozen=True)
class RunSql:
    """What loading one run takes: widenings first, then one transaction reading the manifests.

    `before` holds varchar widenings (a string: one statement outside any transaction), column rebuilds
    and DDL that did not fit the run's batch (a tuple: one batch, one transaction). `ledger_insert` is the
    index in `transaction` of the statement whose affected-row count says whether this batch loaded the run
    (0: another loader recorded it first).
    """

    run: RunFiles
    before: tuple[str | tuple[str, ...], ...]
    transaction: tuple[str, ...]
    manifests: dict[str, str]  # URI → body, written to S3 before the transaction runs
    ledger_insert: int = -1


def copy_statements(
    lake: str,
    run: RunFiles,
    schema: str,
    iam_role: str,
    existing: dict[str, str],
    partition_column: str | None = PARTITION_COLUMN,
    views: Sequence[View] = (),
) -> RunSql:
    """The statements that load one run, and the manifests (URI → body) its COPYs read.

    Per partition folder: COPY the run's files (by manifest) into a temporary table with the files'
    columns in file order (COPY from Parquet maps columns by position), and insert them into the raw table
    with the partition value (`partition_column`; None: no partition column). The ledger rows (one per
    file, rows from its footer) go into a temporary table with one multi-row insert, then into the ledger.

    Concurrency: the ledger is locked first, so concurrent loaders queue; every insert into the raw table
    and the ledger is conditional on the run not being in the ledger yet, so a loader that got the lock
    second changes nothing and its ledger insert reports 0 rows (`ledger_insert`): what Redshift returns
    for it (`ResultRows` of that sub-statement), not an error text, tells the loader it lost.

    Limits: a run's transaction must fit one Data API batch (40 statements, each ≤ 100 KB). A run lands in
    one `_ingest_date` partition (its UTC date), so it is about ten statements whatever its file count
    (the ledger rows are split into several inserts only past 100 KB); DDL for new columns moves into
    batches before the transaction when it would not fit.
    """
    target = f"{ident(schema)}.{ident(run.table)}"
    ledger = f"{ident(LEDGER_SCHEMA)}.{ident(LEDGER_TABLE)}"
    part = {partition_column: "date"} if partition_column else {}
    incoming = {**dict(run.columns), **part}
    before: list[str | tuple[str, ...]] = []
    widen, ddl = table_ddl(schema, run.table, existing, incoming) if run.files else ([], [])
    # ALTER COLUMN TYPE refuses a column that bound views read: with such views every widening is a rebuild.
    before += [] if views else widen
    if run.files and existing:
        for name, old, new in plan_columns(existing, incoming).widen:
            if views or not in_place(old, new):
                before.append(tuple(rebuild_column(schema, run.table, name, new, views)))
    manifests: dict[str, str] = {}
    names = ", ".join(ident(n) for n, _ in run.columns)
    by_partition: dict[str, list[S3File]] = {}
    for f in run.files:
        by_partition.setdefault(f.partition, []).append(f)
    stage = ident(f"tm_stage_{run.table}")
    staged_ledger = ident(f"tm_ledger_{run.table}")
    this_run = (
        f"source = {literal(run.source)} and table_name = {literal(run.table)}"
        f" and run_id = {literal(run.run_id)}"
    )
    fresh = f"not exists (select 1 from {ledger} where {this_run})"
    body = [f"create temp table {staged_ledger} (file varchar(1024), row_count bigint)"]
    rows = [f"({literal(f.uri.rsplit('/', 1)[1])}, {f.rows})" for f in run.files] or ["('', 0)"]
    body += values_inserts(f"insert into {staged_ledger} (file, row_count)", rows)
    if run.files:
        cols = ", ".join(f"{ident(n)} {t}" for n, t in run.columns)
        body.append(f"create temp table {stage} ({cols})")
    for partition, files in sorted(by_partition.items()):
        uri = manifest_uri(lake, run.source, run.table, run.run_id, partition)
        manifests[uri] = manifest_body(files)
        into, values = (
            (f"{names}, {ident(partition_column)}", f"{names}, {literal(partition)}::date")
            if partition_column
            else (names, names)
        )
        body += [
            f"copy {stage} from {literal(uri)} iam_role {literal(iam_role)} format as parquet manifest",
            f"insert into {target} ({into}) select {values} from {stage} where {fresh}",
            # Not TRUNCATE: on Redshift it commits the transaction.
            f"delete from {stage}",
        ]
    if run.files:
        body[-1] = f"drop table {stage}"
    body.append(
        f"insert into {ledger} (source, table_name, run_id, file, row_count)"
        f" select {literal(run.source)}, {literal(run.table)}, {literal(run.run_id)}, file, row_count"
        f" from {staged_ledger} where {fresh}"
    )
    body.append(f"drop table {staged_ledger}")
    head = [f"lock {ledger}"]
    if 1 + len(ddl) + len(body) > MAX_BATCH_STATEMENTS:
        before += [tuple(b) for b in batches(ddl)]  # new columns first, in their own transactions
        ddl = []
    stmts = [*head, *ddl, *body]
    if len(stmts) > MAX_BATCH_STATEMENTS:
        raise WarehouseError(
            f"{run.source}.{run.table} run {run.run_id} needs {len(stmts)} statements in one transaction; "
            f"the Data API runs at most {MAX_BATCH_STATEMENTS}",
            hint="the run spans too many partitions or files for one batch: load it with --target postgres, "
            "or open an issue with the run's file count",
        )
    return RunSql(run, tuple(before), tuple(stmts), manifests, ledger_insert=len(stmts) - 2)


def plan_redshift_loads(
    lake: str,
    runs: Sequence[RunFiles],
    loaded: set[str],
    schema: str,
    iam_role: str,
    existing: dict[str, str],
    partition_column: str | None = PARTITION_COLUMN,
) -> list[RunSql]:
    """The statements for the runs not in `loaded`, oldest first; each sees the columns the earlier ones add."""
    by_id = {r.run_id: r for r in runs}
    out = []
    columns = dict(existing)
    part = [(partition_column, "date")] if partition_column else []
    for run_id in pending_runs(list(by_id), loaded):
        run = by_id[run_id]
        out.append(copy_statements(lake, run, schema, iam_role, columns, partition_column))
        if run.files:
            for name, typ in [*run.columns, *part]:
                columns[name] = (
                    typ if name not in columns else (wider_type(columns[name], typ) or columns[name])
                )
    return out


def external_schema_sql(source: str, glue_database: str, iam_role: str, region: str | None = None) -> str:
    """Spectrum: the external schema `landing_<source>` over the Glue database the lake's tables are in."""
    schema = raw_schema(source)
    sql = (
        f"create external schema if not exists {ident(schema)}\n"
        f"from data catalog database {literal(glue_database)}\n"
        f"iam_role {literal(iam_role)}"
    )
    if region:
        sql += f"\nregion {literal(region)}"
    return sql + ";"


# ---- the I/O edge: S3 (the lake, manifests) and the Data API ------------------------------------------


def list_run_files(s3: Any, lake: str, source: str, table: str) -> dict[str, list[S3File]]:
    """Run id → the table's landed files on S3 (ListObjectsV2 under `landing/<source>/<table>/`)."""
    bucket, prefix = split_s3(table_prefix(lake, source, table))
    out: dict[str, list[S3File]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            path = PurePosixPath(obj["Key"])
            run_id = run_id_of(path)  # type: ignore[arg-type]
            part = path.parent.name
            if run_id is None or not part.startswith(f"{PARTITION_COLUMN}="):
                continue
            out.setdefault(run_id, []).append(
                S3File(f"s3://{bucket}/{obj['Key']}", int(obj["Size"]), part.split("=", 1)[1])
            )
    return out


def footer(s3: Any, uri: str, size: int = 0) -> tuple[Any, int]:
    """A Parquet file's footer (`pyarrow.parquet.FileMetaData`) and byte size, from ranged GETs of its tail.

    One GET of the last 64 KiB holds the footer of most files (and its Content-Range gives the object's
    size, which the manifest needs: no HEAD); a bigger footer takes a second GET of exactly its length.
    The data pages are never downloaded.
    """
    import pyarrow.parquet as pq

    bucket, key = split_s3(uri)

    def tail(n: int) -> tuple[bytes, int]:
        resp = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=-{n}")
        body = bytes(resp["Body"].read())
        total = str(resp.get("ContentRange") or "").rpartition("/")[2]
        return body, int(total) if total.isdigit() else len(body)

    end, total = tail(min(size, FOOTER_GUESS) if size else FOOTER_GUESS)
    if len(end) < 12 or end[-4:] != b"PAR1":
        raise SchemaError(f"{uri} is not a Parquet file (no PAR1 footer)", hint="remove it from landing/")
    length = int.from_bytes(end[-8:-4], "little") + 8
    if length > len(end):
        end, total = tail(length)
    # The footer alone, behind a leading magic: pyarrow reads metadata from the end and seeks no pages.
    return pq.read_metadata(io.BytesIO(b"PAR1" + end[-length:])), total


def max_bytes_bound(meta: Any, index: int) -> int:
    """An upper bound of the longest value's bytes in a column: its largest uncompressed column chunk.

    Parquet footers keep no maximum length (min/max statistics are lexicographic), but no value can be
    longer than the uncompressed chunk holding it (plain or dictionary pages). The bound is loose for big
    row groups, so wide text columns come out as varchar(65535), which Redshift stores compressed.
    """
    return max(
        (meta.row_group(g).column(index).total_uncompressed_size for g in range(meta.num_row_groups)),
        default=0,
    )


def parquet_columns(s3: Any, files: Sequence[S3File]) -> tuple[tuple[str, str], ...]:
    """The files' columns in file order with Redshift types, from their footers (see `run_footers`)."""
    return run_footers(s3, files)[0]


def run_footers(s3: Any, files: Sequence[S3File]) -> tuple[tuple[tuple[str, str], ...], tuple[S3File, ...]]:
    """(columns in file order with Redshift types, the files with their sizes and row counts), from footers.

    Types come from the footers' Arrow schemas; strings are sized by `max_bytes_bound`; files that bring
    wider types widen the column as the lake does.
    """
    import pyarrow.types as t

    out: dict[str, str] = {}
    order: list[str] = []
    counted = []
    for f in files:
        meta, size = footer(s3, f.uri, f.size)
        schema = meta.schema.to_arrow_schema()
        counted.append(S3File(f.uri, size, f.partition, int(meta.num_rows)))
        for i, field in enumerate(schema):
            longest = 0
            if t.is_string(field.type) or t.is_large_string(field.type):
                longest = max_bytes_bound(meta, i)  # landed schemas are flat: field i is leaf column i
            typ = redshift_type(field.type, longest)
            if field.name not in out:
                order.append(field.name)
                out[field.name] = typ
            else:
                out[field.name] = wider_type(out[field.name], typ) or out[field.name]
    return tuple((n, out[n]) for n in order), tuple(counted)


class RedshiftLoader:
    """Raw tables in Redshift, filled by `COPY … FORMAT AS PARQUET` from the S3 lake via the Data API.

    Implements `loader.WarehouseLoader`: `loader.load_all` hands it one committed run at a time.
    """

    def __init__(
        self, lake: str, settings: RedshiftSettings, api: DataApi | None = None, s3: Any = None
    ) -> None:
        check_s3_lake(lake)  # a local lake fails here, with what to do instead
        self.lake = lake.rstrip("/")
        self.settings = settings
        self.api = api or DataApi(settings)
        self.s3 = s3 or s3_client()
        self.api.run(ledger_ddl())

    @classmethod
    def from_env(cls, lake: str) -> RedshiftLoader:
        """A loader for an S3 lake with settings from `TIDEMARK_REDSHIFT_*` (the lake is checked first)."""
        check_s3_lake(lake)
        return cls(lake, RedshiftSettings.from_env())

    def close(self) -> None:
        return None

    def check_lake(self, lake: str) -> None:
        """Refuse a lake that is not on S3: Redshift reads the landed files itself."""
        check_s3_lake(lake)

    def loaded_runs(self, source: str, table: str) -> set[str]:
        rows = self.api.rows(
            f"select distinct run_id from {ident(LEDGER_SCHEMA)}.{ident(LEDGER_TABLE)}"
            f" where source = {literal(source)} and table_name = {literal(table)}"
        )
        return {r[0] for r in rows}

    def columns(self, schema: str, table: str) -> dict[str, str]:
        """The raw table's columns and types as Redshift reports them (empty when it doesn't exist)."""
        rows = self.api.rows(
            "select column_name, data_type, character_maximum_length, numeric_precision, numeric_scale"
            " from svv_columns"
            f" where table_schema = {literal(schema)} and table_name = {literal(table)} order by ordinal_position"
        )
        out = {}
        for name, typ, length, prec, scale in rows:
            if length:
                typ = f"varchar({length})"
            elif typ == "numeric" and prec:
                typ = f"numeric({prec},{scale or 0})"
            out[name] = {"timestamp with time zone": "timestamptz"}.get(typ, typ)
        return out

    def s3_file(self, uri: str) -> S3File:
        """A landed file's URI with its size (the manifest needs it) and its folder's partition value."""
        bucket, key = split_s3(uri)
        size = int(self.s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
        return S3File(uri, size, PurePosixPath(key).parent.name.split("=", 1)[-1])

    def dependent_views(self, schema: str, table: str) -> list[View]:
        """Views bound to the raw table: a column rebuild drops them (CASCADE) and creates them again."""
        return [View(s, n, d) for s, n, d in self.api.rows(dependent_views_sql(schema, table))]

    def load_run(self, load: RunLoad) -> TableLoadReport:
        """Write the run's manifests, widen columns, then COPY and record it in one Data API batch.

        Columns, types and row counts come from the files' footers (ranged GETs), never their data. A run
        recorded meanwhile by another loader changes nothing in its batch (see `copy_statements`) and is
        reported as not loaded here.
        """
        report = TableLoadReport(load.source, load.table)
        listed = tuple(S3File(f, 0, PurePosixPath(f).parent.name.split("=", 1)[-1]) for f in load.files)
        columns, files = run_footers(self.s3, listed)  # sizes from the footer GETs: no HEAD per file
        run = RunFiles(load.source, load.table, load.run_id, files, columns)
        existing = self.columns(load.schema, load.table)
        part = {load.partition_column: "date"} if load.partition_column else {}
        rebuilt = [
            f"{n} {o} → {w}"
            for n, o, w in (
                plan_columns(existing, {**dict(columns), **part}).widen if existing and files else ()
            )
        ]
        views = self.dependent_views(load.schema, load.table) if rebuilt else []
        planned = copy_statements(
            self.lake, run, load.schema, self.settings.iam_role, existing, load.partition_column, views
        )
        for uri, body in planned.manifests.items():
            bucket, key = split_s3(uri)
            self.s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
        for step in planned.before:
            self.api.run(step if isinstance(step, str) else list(step))
        done = self.api.run(list(planned.transaction))
        if not self.recorded(done, planned.ledger_insert):
            log.warning("run loaded meanwhile by another loader", extra={"fields": {"run": run.run_id}})
            return report
        report.runs.append(run.run_id)
        report.files += len(run.files)
        report.rows += sum(f.rows for f in run.files)
        report.widened = rebuilt
        if run.files:
            new = [n for n, _ in run.columns] + ([load.partition_column] if load.partition_column else [])
            report.added += [c for c in new if c not in existing]
        return report

    @staticmethod
    def recorded(description: dict[str, Any], index: int) -> bool:
        """Did the batch's ledger insert write rows? (`ResultRows` of that sub-statement; 0: it lost the race.)"""
        subs = description.get("SubStatements") or []
        if not subs:
            raise WarehouseError(
                "the Data API described the load's batch without its sub-statements",
                hint="describe-statement on a batch id returns SubStatements; check the redshift-data client",
            )
        return int(subs[index].get("ResultRows") or 0) > 0
