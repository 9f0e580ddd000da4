"""The Glue Data Catalog steps the protocol calls: tables and partitions, file listing, plan, land.

discover (glue:GetTables, GetPartitions) → list each table's files → plan (pure: cursor bound, or the
file ledger for tables without a cursor) → land (CSV tables through the CSV flow with the SerDe's
options; Parquet and JSON-lines tables as typed data) → commit: the protocol is `ingestion.run.protocol`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from ingestion.config import GlueCatalogSourceConfig, JdbcSourceConfig, PipelineConfig
from ingestion.engines import CatalogBatch, CsvBatch
from ingestion.errors import SourceError
from ingestion.lake.layout import table_dir
from ingestion.lake.model import TableState
from ingestion.observe.faults import checkpoint
from ingestion.observe.logs import event
from ingestion.plan.catalog import (
    CatalogFile,
    CatalogPlan,
    CatalogSpec,
    GlueTable,
    jdbc_location,
    plan_catalog_table,
    resolve_table,
    retry_refused,
    select_tables,
)
from ingestion.plan.csv import next_state, settle_checksums
from ingestion.plan.jdbc import resolve_tables
from ingestion.plan.normalize import clean_header
from ingestion.records import TableOutcome
from ingestion.redact import error_text
from ingestion.run.context import RunContext, utcnow
from ingestion.run.jdbc_job import JdbcJob
from ingestion.run.protocol import Extracted, Look, warn_dropped_columns
from ingestion.sources.catalog import (
    catalog_tables,
    glue_client,
    glue_connection,
    list_table_files,
    with_partitions,
)
from ingestion.sources.csv import fingerprint
from ingestion.sources.jdbc import connect, discover, horizon_facts, read_pk_registry


@dataclass
class CatalogJob:
    """One table of a Glue Data Catalog database, ready to run."""

    config: GlueCatalogSourceConfig
    spec: CatalogSpec
    # The table's files, listed once per run: the look before the lease and the plan under it share it.
    listing: list[CatalogFile] | None = None

    @property
    def source(self) -> str:
        return self.config.name

    @property
    def table(self) -> str:
        return self.spec.name

    @property
    def name(self) -> str:
        return self.spec.name

    def _plan(self, ctx: RunContext, state: TableState | None) -> CatalogPlan:
        if self.listing is None:
            self.listing = list_table_files(self.spec)
        held = state if state is not None and state.has_data else None
        return plan_catalog_table(self.spec, held, self.listing, load_type=ctx.load_type)

    def look(self, ctx: RunContext, state: TableState | None) -> Look:
        """Work when a file is new or changed since the last commit (or on a full load)."""
        plan = self._plan(ctx, state)
        if self.spec.cursor is None:
            return Look(plan.load_type, len(plan.files), plan.has_work)
        # A cursor table reads every file, but unchanged files hold no row the last commit didn't see.
        # A file a run refused is read again every run (`retry_refused`) until it lands.
        held = retry_refused(state)
        ledger = held.files if held is not None and plan.load_type == "incremental" else {}
        changed = [
            f
            for f in plan.files
            if f.facts.relpath not in ledger
            or (
                ledger[f.facts.relpath].size,
                ledger[f.facts.relpath].etag or ledger[f.facts.relpath].mtime_ns,
            )
            != (f.facts.size, f.facts.etag or f.facts.mtime_ns)
        ]
        return Look(plan.load_type, len(plan.files), bool(changed))

    def plan(self, ctx: RunContext, state: TableState) -> CatalogPlan:
        plan = self._plan(ctx, state)
        if self.spec.cursor is None and plan.load_type == "incremental" and plan.has_work:
            # A rewritten object with the same ETag holds the same bytes: not landed again.
            tp = settle_checksums(plan.table_plan, fingerprint(plan.table_plan.files), retry_refused(state))
            keep = {f.relpath for f in tp.files}
            plan = replace(plan, files=tuple(f for f in plan.files if f.facts.relpath in keep), table_plan=tp)
        event(
            "planned read",
            table=f"{self.source}.{self.table}",
            format=self.spec.format,
            load_type=plan.load_type,
            files=len(plan.files),
            partitions=len(self.spec.partitions) if self.spec.partitioned else None,
            lower_bound=plan.lower_bound.value if plan.lower_bound else None,
            by="cursor" if self.spec.cursor else "new files",
        )
        return plan

    def extract(self, ctx: RunContext, state: TableState, plan: CatalogPlan) -> Extracted:
        out = Extracted(load_type=plan.load_type, files=len(plan.files))
        if not plan.has_work:
            return out
        spec, engine = self.spec, ctx.get_engine()
        target = table_dir(ctx.cfg.lake_root, self.source, self.table)
        committed = dict(state.columns) if plan.load_type == "incremental" else {}
        csv = None
        if spec.format == "csv":
            assert spec.csv is not None
            csv = CsvBatch(
                source=self.source,
                table=self.table,
                files=tuple(f.facts for f in plan.files),
                options=spec.csv,
                primary_key=spec.primary_key,
                cursor=spec.cursor,
                run_id=ctx.run_id,
                ingested_at=ctx.now,
                target=target,
                lake_root=ctx.cfg.lake_root,
                lower_bound=plan.lower_bound,
                committed=committed,
                column_names=spec.raw_columns,
                file_columns={f.facts.relpath: f.partition for f in plan.files if f.partition},
                max_rejected_fraction=spec.max_rejected_fraction,
                skip_lines=spec.skip_lines,
            )
        batch = engine.land_catalog(
            CatalogBatch(
                spec=spec,
                files=plan.files,
                committed=committed,
                lower_bound=plan.lower_bound,
                run_id=ctx.run_id,
                ingested_at=ctx.now,
                target=target,
                lake_root=ctx.cfg.lake_root,
                csv=csv,
            )
        )
        checkpoint("rows_landed", self.table)
        dropped = (
            warn_dropped_columns(f"{self.source}.{self.table}", state.columns, batch.columns)
            if batch.rows_landed
            else []
        )
        q = batch.quarantine
        if q is not None and q.refused and spec.cursor:
            # A refused file's rows are not landed: the watermark stays where it was (a full load keeps
            # none), so the run that lands the file, fixed or re-read, still takes every one of its rows.
            batch = replace(batch, max_cursor=None)
            event(
                "watermark held: files refused",
                logging.WARNING,
                table=f"{self.source}.{self.table}",
                files=sorted(q.refused),
            )
        new = next_state(
            state,
            plan.table_plan,
            batch,
            ctx.run_id,
            ctx.now,
            cursor_timezone=spec.cursor_timezone,
            pause=ctx.pause,
        )
        out.commit = replace(new, primary_key=tuple(spec.primary_key), cursor=spec.cursor)
        out.rows_read, out.rows_landed = batch.rows_read, batch.rows_landed
        out.rows_deduplicated, out.rows_filtered = batch.rows_deduplicated, batch.rows_filtered
        out.rows_rejected = batch.rows_rejected
        out.rejects = list(q.rejects) if q else []
        out.files_refused = q.refused if q else {}
        out.refused_to = "left where the catalog keeps it; read again next run"
        out.warnings = dropped
        return out

    def after_commit(
        self,
        ctx: RunContext,
        state: TableState,
        plan: CatalogPlan,
        extracted: Extracted | None,
    ) -> None:
        """Nothing to move: catalog data belongs to whoever writes it."""


def _failed(source: str, table: str, exc: Exception, started: float, started_at: object) -> TableOutcome:
    outcome = TableOutcome(
        source,
        table,
        status="failed",
        error=error_text(exc),
        error_class=type(exc).__name__,
        failed_step="look",
        started_at=started_at,  # type: ignore[arg-type]
    )
    outcome.seconds = round(time.monotonic() - started, 3)
    return outcome


def discover_catalog_tables(cfg: PipelineConfig) -> tuple[list[CatalogJob | JdbcJob], list[TableOutcome]]:
    """Every Glue catalog source's tables with their partitions (a table whose entry is a JDBC connection
    as a PostgreSQL table job); a source (or a table) that can't be read becomes a failed outcome and
    never stops the others."""
    jobs: list[CatalogJob | JdbcJob] = []
    failed: list[TableOutcome] = []
    for source in cfg.catalog_sources():
        started, started_at = time.monotonic(), utcnow()
        try:
            glue = glue_client(source)
            tables, connections = select_tables(source, catalog_tables(source, glue))
            registry = {}
            if source.pk_registry:
                where = cfg.resolve(source.pk_registry)
                if source.pk_registry.endswith("/") and not where.endswith("/"):
                    where += "/"  # a prefix: the latest CSV under it
                registry = read_pk_registry(where)
        except Exception as exc:
            outcome = _failed(source.name, "*", exc, started, started_at)
            event("discovery failed", logging.ERROR, source=source.name, error=outcome.error)
            failed.append(outcome)
            continue
        for t in connections:
            try:
                jobs.append(_jdbc_job(source, t, registry, glue))
            except Exception as exc:
                outcome = _failed(source.name, t.name, exc, started, started_at)
                event("table skipped", logging.ERROR, table=f"{source.name}.{t.name}", error=outcome.error)
                failed.append(outcome)
        found = []
        for t in tables:
            try:
                spec, warnings = resolve_table(source, with_partitions(source, t, glue), registry)
            except Exception as exc:
                outcome = _failed(source.name, t.name, exc, started, started_at)
                event("table skipped", logging.ERROR, table=f"{source.name}.{t.name}", error=outcome.error)
                failed.append(outcome)
                continue
            for w in warnings:
                event(w, logging.WARNING, source=source.name)
            found.append(CatalogJob(source, spec))
        event(
            "discovered tables",
            source=source.name,
            database=source.database,
            tables=[j.table for j in found],
        )
        jobs += found
    return jobs, failed


def _jdbc_job(
    source: GlueCatalogSourceConfig, table: GlueTable, registry: dict[str, tuple[str, ...]], glue: Any
) -> JdbcJob:
    """A catalog table whose entry is a JDBC connection, as a PostgreSQL table job: the connection's URL
    and credentials, the table where the catalog's location says, the catalog table's settings."""
    if not table.connection:
        raise SourceError(
            f"{source.name}.{table.name}: a JDBC catalog table without a connection name",
            hint="set connectionName in the table's parameters, or exclude the table",
        )
    where = jdbc_location(table)
    conn = glue_connection(source, table.connection, where.database, glue)
    settings = source.table_config(table.name)
    listed: dict[str, Any] = {"name": where.table}
    if settings is not None:
        listed.update(settings.model_dump(exclude={"name", "max_rejected_fraction"}, exclude_none=True))
    jdbc = JdbcSourceConfig.model_validate(
        {
            "name": source.name,
            "kind": "jdbc",
            "url": conn.jdbc_url,
            "user": conn.user,
            "password_env": None,
            "schema": where.schema,
            "tables": [listed],
            "cursor": source.cursor,
            "cursor_timezone": source.cursor_timezone,
            "lookback": source.lookback,
        }
    )
    with connect(conn) as pg:
        found = discover(conn, pg, where.schema)
        facts = horizon_facts(conn, pg)
    keys = {where.table: registry[table.name]} if table.name in registry else registry
    resolved, warnings = resolve_tables(jdbc, found, keys, facts.server_timezone)
    for w in warnings:
        event(w, logging.WARNING, source=source.name)
    landed = clean_header([table.name], file=f"{source.name}: table")[0]
    event(
        "catalog table read through its JDBC connection",
        table=f"{source.name}.{landed}",
        connection=table.connection,
        database=conn.where,
        relation=f"{where.schema}.{where.table}",
    )
    return JdbcJob(jdbc, replace(resolved[0], name=landed), conn)
