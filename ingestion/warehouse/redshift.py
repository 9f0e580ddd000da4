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
from ingestion.errors import SchemaError, SourceError, StatementFailed
from ingestion.lake.layout import run_id_of
from ingestion.lake.s3 import s3_client, split_s3
from ingestion.sqltext import quote_ident, sql_string
from ingestion.warehouse.data_api import DataApi, RedshiftSettings
from ingestion.warehouse.plan import (
    LEDGER_SCHEMA,
    LEDGER_TABLE,
    MIN_VARCHAR,
    RunLoad,
    TableLoadReport,
    batch_types,
    pending_runs,
    plan_columns,
    postgres_type,
    raw_schema,
    wider_type,
)

log = logging.getLogger("tidemark")

_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


@dataclass(frozen=True)
class S3File:
    """One landed Parquet file on S3: its URI, byte size (the manifest needs it) and partition folder."""

    uri: str
    size: int
    partition: str  # the `_ingest_date` value from the file's folder


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
    """(widenings, DDL) that make `schema.table` hold `incoming` columns.

    The DDL (create, add columns) runs inside the load's transaction. Widenings are varchar-only (Redshift
    alters no other type in place) and can't run in a transaction block: they run before it, one by one;
    a widened column that then loads nothing is harmless.
    """
    target = f"{ident(schema)}.{ident(table)}"
    if not existing:
        cols = ", ".join(f"{ident(n)} {t}" for n, t in incoming.items())
        return [], [
            f"create schema if not exists {ident(schema)}",
            f"create table if not exists {target} ({cols})",
        ]
    plan = plan_columns(existing, incoming)
    widen = []
    for name, old, new in plan.widen:
        if not new.startswith("varchar"):
            raise SchemaError(
                f"{schema}.{table}.{name} would need {old} → {new}; Redshift alters only varchar lengths",
                hint="recreate the raw table (drop it and delete its ledger rows) and load again",
            )
        widen.append(f"alter table {target} alter column {ident(name)} type {new}")
    # Redshift adds one column per ALTER TABLE.
    return widen, [f"alter table {target} add column {ident(n)} {t}" for n, t in plan.add]


@dataclass(frozen=True)
class RunSql:
    """What loading one run takes: widenings first, then one transaction reading the manifests."""

    run: RunFiles
    before: tuple[str, ...]
    transaction: tuple[str, ...]
    manifests: dict[str, str]  # URI → body, written to S3 before the transaction runs


def copy_statements(
    lake: str,
    run: RunFiles,
    schema: str,
    iam_role: str,
    existing: dict[str, str],
    partition_column: str | None = PARTITION_COLUMN,
) -> RunSql:
    """The statements that load one run, and the manifests (URI → body) its COPYs read.

    Per partition folder: COPY the run's files (by manifest) into a temporary table with the files'
    columns in file order (COPY from Parquet maps columns by position), insert them into the raw table
    with the partition value (`partition_column`; None: no partition column), and record the files in the
    ledger with the rows copied. The ledger is locked first so concurrent loaders queue, and a last
    statement divides by zero (rolling the transaction back) if the run was loaded meanwhile.
    """
    target = f"{ident(schema)}.{ident(run.table)}"
    ledger = f"{ident(LEDGER_SCHEMA)}.{ident(LEDGER_TABLE)}"
    part = {partition_column: "date"} if partition_column else {}
    before, ddl = (
        table_ddl(schema, run.table, existing, {**dict(run.columns), **part}) if run.files else ([], [])
    )
    stmts = [f"lock {ledger}", *ddl]
    manifests: dict[str, str] = {}
    names = ", ".join(ident(n) for n, _ in run.columns)
    by_partition: dict[str, list[S3File]] = {}
    for f in run.files:
        by_partition.setdefault(f.partition, []).append(f)
    stage = ident(f"tm_stage_{run.table}")
    key = f"{literal(run.source)}, {literal(run.table)}, {literal(run.run_id)}"
    record = f"insert into {ledger} (source, table_name, run_id, file, row_count) select {key}"
    if run.files:
        cols = ", ".join(f"{ident(n)} {t}" for n, t in run.columns)
        stmts.append(f"create temp table {stage} ({cols})")
    for partition, files in sorted(by_partition.items()):
        uri = manifest_uri(lake, run.source, run.table, run.run_id, partition)
        manifests[uri] = manifest_body(files)
        into, values = (
            (f"{names}, {ident(partition_column)}", f"{names}, {literal(partition)}::date")
            if partition_column
            else (names, names)
        )
        stmts += [
            f"copy {stage} from {literal(uri)} iam_role {literal(iam_role)} format as parquet manifest",
            f"insert into {target} ({into}) select {values} from {stage}",
        ]
        # Rows per file aren't known after a multi-file COPY: the partition's count goes on its first file.
        for n, f in enumerate(files):
            rows = f"count(*) from {stage}" if n == 0 else "0"
            stmts.append(f"{record}, {literal(f.uri.rsplit('/', 1)[1])}, {rows}")
        # Not TRUNCATE: on Redshift it commits the transaction.
        stmts.append(f"delete from {stage}")
    if run.files:
        stmts[-1] = f"drop table {stage}"
    else:
        # A committed run that landed nothing for this table: remembered all the same.
        stmts.append(f"{record}, '', 0")
    stmts.append(
        f"select 1 / (case when count(*) > {max(len(run.files), 1)} then 0 else 1 end) from {ledger}"
        f" where source = {literal(run.source)} and table_name = {literal(run.table)}"
        f" and run_id = {literal(run.run_id)}"
    )
    return RunSql(run, tuple(before), tuple(stmts), manifests)


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


def parquet_columns(s3: Any, files: Sequence[S3File]) -> tuple[tuple[str, str], ...]:
    """The files' columns in file order with Redshift types (strings sized by their longest value)."""
    import pyarrow.parquet as pq

    tables = []
    for f in files:
        bucket, key = split_s3(f.uri)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        tables.append(pq.read_table(io.BytesIO(body)))
    types = batch_types(tables, type_of=redshift_type)
    order = tables[0].column_names if tables else []
    return tuple((n, types.get(n, f"varchar({MIN_VARCHAR})")) for n in order)


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

    def load_run(self, load: RunLoad) -> TableLoadReport:
        """Write the run's manifests, widen columns, then COPY and record it in one Data API batch.

        A run recorded meanwhile by another loader rolls its batch back (see `copy_statements`) and is
        reported as not loaded here.
        """
        report = TableLoadReport(load.source, load.table)
        files = tuple(self.s3_file(f) for f in load.files)
        run = RunFiles(load.source, load.table, load.run_id, files, parquet_columns(self.s3, files))
        existing = self.columns(load.schema, load.table)
        planned = copy_statements(
            self.lake, run, load.schema, self.settings.iam_role, existing, load.partition_column
        )
        for uri, body in planned.manifests.items():
            bucket, key = split_s3(uri)
            self.s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
        for sql in planned.before:
            self.api.run(sql)
        try:
            self.api.run(list(planned.transaction))
        except StatementFailed as exc:
            if "division by zero" in exc.message.lower():
                log.warning("run loaded meanwhile by another loader", extra={"fields": {"run": run.run_id}})
                return report
            raise
        report.runs.append(run.run_id)
        report.files += len(run.files)
        counted = self.api.rows(
            f"select coalesce(sum(row_count), 0) from {ident(LEDGER_SCHEMA)}.{ident(LEDGER_TABLE)}"
            f" where source = {literal(load.source)} and table_name = {literal(load.table)}"
            f" and run_id = {literal(run.run_id)}"
        )
        report.rows += int(counted[0][0]) if counted else 0
        if run.files:
            new = [n for n, _ in run.columns] + ([load.partition_column] if load.partition_column else [])
            report.added += [c for c in new if c not in existing]
        return report
