"""The PostgreSQL steps the protocol calls: discovery per run, horizon + plan, land, tombstones, capped commit.

lease → orphans → horizon facts → plan (pure) → land (engine) → tombstones → commit (capped watermark)
→ release: the protocol is `ingestion.run.protocol`; this module is only what is PostgreSQL's own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from ingestion.config import JdbcSourceConfig, PipelineConfig
from ingestion.engines import JdbcBatch, TombstoneBatch
from ingestion.lake.layout import table_dir
from ingestion.lake.model import TableState
from ingestion.observe.faults import checkpoint
from ingestion.observe.logs import event
from ingestion.plan.csv import next_state
from ingestion.plan.jdbc import (
    UNREPRESENTABLE,
    JdbcPlan,
    JdbcTable,
    cap_watermark,
    landable_where,
    plan_jdbc_table,
    rejects_sql,
    resolve_tables,
    safe_horizon,
    select_sql,
    where_clause,
)
from ingestion.plan.rejects import Reject
from ingestion.records import TableOutcome
from ingestion.redact import error_text
from ingestion.run.context import RunContext, utcnow
from ingestion.run.protocol import Extracted, Look, warn_dropped_columns
from ingestion.sources.jdbc import (
    PgConnection,
    connect,
    connection_for,
    discover,
    horizon_facts,
    query,
    read_pk_registry,
)
from ingestion.sqltext import quote_ident


@dataclass(frozen=True)
class JdbcPlanned:
    """A PostgreSQL table's plan under the lease: the pure plan, its predicate and partition bounds."""

    plan: JdbcPlan
    where: str | None
    bounds: tuple[int, int] | None


@dataclass(frozen=True)
class JdbcJob:
    """One discovered table of a PostgreSQL source, ready to run."""

    config: JdbcSourceConfig
    jdbc_table: JdbcTable
    connection: PgConnection

    @property
    def source(self) -> str:
        return self.config.name

    @property
    def table(self) -> str:
        return self.jdbc_table.name

    # kept for `select_tables`, which matches jobs by `.name`
    @property
    def name(self) -> str:
        return self.jdbc_table.name

    def look(self, ctx: RunContext, state: TableState | None) -> Look:
        """Only the database can say whether there is anything new: always work (except in a dry run)."""
        plan = plan_jdbc_table(
            self.jdbc_table, state if state and state.has_data else None, utcnow(), load_type=ctx.load_type
        )
        return Look(plan.load_type)

    def plan(self, ctx: RunContext, state: TableState) -> JdbcPlanned:
        table, conn = self.jdbc_table, self.connection
        name = f"{self.source}.{self.table}"
        with connect(conn) as pg:
            # The horizon is read before the rows: everything below it had committed already.
            facts = horizon_facts(conn, pg)
            horizon = safe_horizon(facts.now, facts.oldest_xact_start)
            plan = plan_jdbc_table(table, state if state.has_data else None, horizon, load_type=ctx.load_type)
            where = where_clause(table, plan)
            bounds = _partition_bounds(conn, pg, table, where)
        event(
            "planned read",
            table=name,
            load_type=plan.load_type,
            lower_bound=plan.lower_bound.value if plan.lower_bound else None,
            upper_bound=plan.upper_bound.value if plan.upper_bound else None,
            horizon_held_by_open_transaction=horizon < facts.now or None,
            open_transactions=facts.open_transactions or None,
            writing_transactions=facts.writing_transactions or None,
            partitions=table.num_partitions if bounds else None,
        )
        if facts.hidden_backends:
            event(
                "some sessions' transactions are invisible to this role, so the horizon can't wait for them",
                logging.WARNING,
                table=name,
                hidden_sessions=facts.hidden_backends,
                hint="GRANT pg_read_all_stats TO the ingestion role, or set a lookback",
            )
        return JdbcPlanned(plan, where, bounds)

    def extract(self, ctx: RunContext, state: TableState, planned: JdbcPlanned) -> Extracted:
        table, plan, bounds = self.jdbc_table, planned.plan, planned.bounds
        target = table_dir(ctx.cfg.lake_root, self.source, self.table)
        batch = ctx.get_engine().land_jdbc(
            JdbcBatch(
                source=self.source,
                table=self.table,
                connection=self.connection,
                query=select_sql(table, landable_where(table, planned.where)),
                columns=table.types,
                primary_key=table.primary_key,
                cursor=table.cursor,
                run_id=ctx.run_id,
                ingested_at=ctx.now,
                target=target,
                lake_root=ctx.cfg.lake_root,
                partition_column=table.partition_column if bounds else None,
                partition_bounds=bounds,
                partitions=table.num_partitions,
                fetchsize=table.fetchsize,
            )
        )
        checkpoint("rows_landed", self.table)
        dropped = (
            warn_dropped_columns(f"{self.source}.{self.table}", state.columns, batch.columns)
            if batch.rows_landed
            else []
        )
        tombstones = 0
        if table.detect_deletes:
            tombstones = ctx.get_engine().land_tombstones(
                TombstoneBatch(
                    table=table,
                    connection=self.connection,
                    plan=plan,
                    run_id=ctx.run_id,
                    ingested_at=ctx.now,
                    target=target,
                    lake_root=ctx.cfg.lake_root,
                    # Committed runs, not a watermark or file ledger: a table without a cursor keeps
                    # neither, and emptying it must still tombstone every key.
                    has_landed=bool(state.committed_runs) or bool(batch.files_written),
                    committed_runs=state.committed_runs,
                )
            )
        rejects = self._rejects(planned.where)
        out = Extracted(
            load_type=plan.load_type,
            files=len(batch.files_written) + (1 if tombstones else 0),
            rows_read=batch.rows_read + len(rejects),
            rows_landed=batch.rows_landed + tombstones,
            rows_deduplicated=batch.rows_deduplicated,
            rows_rejected=len(rejects),
            rejects=rejects,
            warnings=dropped,
        )
        if batch.files_written or tombstones or rejects:
            new = next_state(
                state,
                plan.table_plan(),
                batch,
                ctx.run_id,
                ctx.now,
                cursor_timezone=table.cursor_timezone,
                pause=ctx.pause,
            )
            new = replace(new, primary_key=tuple(table.primary_key), cursor=table.cursor)
            out.commit = new if ctx.pause else cap_watermark(new, plan)
        return out

    def _rejects(self, where: str | None) -> list[Reject]:
        """Rows holding a value the lake can't hold exactly (±infinity, BC dates, NaN numerics): rejected
        row by row with the column, the original text and the row as JSON, never landed changed."""
        sql = rejects_sql(self.jdbc_table, where)
        if sql is None:
            return []
        with connect(self.connection) as pg:
            rows = query(self.connection, pg, sql)
        out = []
        for i, (found, raw) in enumerate(rows):
            column, what, text = found
            reason = f"{column} holds {text!r}, {what}: no landed type holds it exactly"
            out.append(Reject(self.jdbc_table.relation, i, UNREPRESENTABLE, reason, column=column, raw=raw))
        if out:
            event(
                "rows rejected: values with no exact equivalent in the lake",
                logging.WARNING,
                table=f"{self.source}.{self.table}",
                rows=len(out),
                first=out[0].reason,
            )
        return out

    def after_commit(
        self,
        ctx: RunContext,
        state: TableState,
        plan: JdbcPlanned,
        extracted: Extracted | None,
    ) -> None:
        """Nothing to move: a database table has no inbox."""


def discover_tables(cfg: PipelineConfig) -> tuple[list[JdbcJob], list[TableOutcome]]:
    """Discover every PostgreSQL source's tables; a source that can't be read becomes a failed outcome."""
    jobs: list[JdbcJob] = []
    failed: list[TableOutcome] = []
    for source in cfg.jdbc_sources():
        started = time.monotonic()
        started_at = utcnow()
        try:
            conn = connection_for(source)
            with connect(conn) as pg:
                catalog = discover(conn, pg, source.schema)
                facts = horizon_facts(conn, pg)
            registry = read_pk_registry(cfg.resolve(source.pk_registry)) if source.pk_registry else {}
            tables, warnings = resolve_tables(source, catalog, registry, facts.server_timezone)
            for w in warnings:
                event(w, logging.WARNING, source=source.name)
            event(
                "discovered tables",
                source=source.name,
                database=conn.where,
                schema=source.schema,
                tables=[t.name for t in tables],
            )
            jobs += [JdbcJob(source, t, conn) for t in tables]
        except Exception as exc:
            outcome = TableOutcome(
                source.name,
                "*",
                status="failed",
                error=error_text(exc),
                error_class=type(exc).__name__,
                failed_step="look",
                started_at=started_at,
            )
            outcome.seconds = round(time.monotonic() - started, 3)
            event("discovery failed", logging.ERROR, source=source.name, error=outcome.error)
            failed.append(outcome)
    return jobs, failed


def _partition_bounds(
    conn: PgConnection, pg: Any, table: JdbcTable, where: str | None
) -> tuple[int, int] | None:
    """min/max of the partition column over the rows to read (the same predicate), or None."""
    if table.num_partitions <= 1 or not table.partition_column:
        return None
    c = quote_ident(table.column(table.partition_column).source_name)
    sql = f"select min({c})::int8, max({c})::int8 from {table.relation}" + (
        f" where {where}" if where else ""
    )
    lo, hi = query(conn, pg, sql)[0]
    return None if lo is None else (int(lo), int(hi))
