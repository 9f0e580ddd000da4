"""A run's PostgreSQL tables: discovery per run, then per table the same commit protocol as CSV.

lease → orphans → horizon facts → plan (pure) → land (engine) → tombstones → commit (capped watermark)
→ release. Every error text that leaves this module went through `redact()`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingestion.config import JdbcSourceConfig, PipelineConfig
from ingestion.engines.base import JdbcBatch
from ingestion.errors import LeaseHeld, TidemarkError
from ingestion.lake.layout import remove_orphans, remove_run_files, remove_stale_scratch, table_dir
from ingestion.lake.state import LeaseKeeper
from ingestion.observe.faults import checkpoint
from ingestion.observe.logs import event
from ingestion.plan.csv import next_state
from ingestion.plan.jdbc import (
    JdbcTable,
    cap_watermark,
    pg_ident,
    plan_jdbc_table,
    resolve_tables,
    safe_horizon,
    select_sql,
    where_clause,
)
from ingestion.redact import redact
from ingestion.sources.jdbc import (
    PgConnection,
    connect,
    connection_for,
    discover,
    horizon_facts,
    query,
    read_pk_registry,
)

if TYPE_CHECKING:
    from ingestion.run.pipeline import TableOutcome, _Run

log = logging.getLogger("tidemark")


@dataclass(frozen=True)
class JdbcTask:
    """One discovered table of a PostgreSQL source, ready to run."""

    source: JdbcSourceConfig
    table: JdbcTable
    connection: PgConnection

    @property
    def name(self) -> str:
        return self.table.name


def discover_tables(cfg: PipelineConfig) -> tuple[list[JdbcTask], list[TableOutcome]]:
    """Discover every PostgreSQL source's tables; a source that can't be read becomes a failed outcome."""
    from ingestion.run.pipeline import TableOutcome

    tasks: list[JdbcTask] = []
    failed: list[TableOutcome] = []
    for source in cfg.jdbc_sources():
        started = time.monotonic()
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
            tasks += [JdbcTask(source, t, conn) for t in tables]
        except Exception as exc:
            outcome = TableOutcome(source.name, "*", status="failed", error=_error_text(exc))
            outcome.seconds = round(time.monotonic() - started, 3)
            event("discovery failed", logging.ERROR, source=source.name, error=outcome.error)
            failed.append(outcome)
    return tasks, failed


def _error_text(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


def run_jdbc_table(run: _Run, task: JdbcTask) -> TableOutcome:
    """The commit protocol for one PostgreSQL table; every error ends up in the outcome, none escapes."""
    from ingestion.run.pipeline import TableOutcome, _log_outcome, _utcnow

    started = time.monotonic()
    table, source, conn = task.table, task.source, task.connection
    outcome = TableOutcome(source.name, table.name, status="up_to_date")
    target = table_dir(run.cfg.lake_root, source.name, table.name)
    keeper: LeaseKeeper | None = None
    committed = False
    try:
        if run.dry_run:
            state = run.store.read(source.name, table.name)
            plan = plan_jdbc_table(
                table, state if state and state.has_data else None, _utcnow(), load_type=run.load_type
            )
            outcome.status, outcome.load_type = "planned", plan.load_type
            outcome.watermark = state.watermark if state else None
            return outcome

        held = run.store.acquire(source.name, table.name, run.run_id, _utcnow(), run.ttl)
        keeper = LeaseKeeper(run.store, held, run.ttl, _utcnow)
        checkpoint("lease_acquired", table.name)
        orphans = remove_orphans(target, set(held.state.committed_runs))
        remove_stale_scratch(run.cfg.lake_root, source.name, table.name, run.run_id)
        outcome.orphans_removed = len(orphans)
        checkpoint("orphans_removed", table.name)
        state = keeper.held.state

        with connect(conn) as pg:
            # The horizon is read before the rows: everything below it had committed already.
            facts = horizon_facts(conn, pg)
            horizon = safe_horizon(facts.now, facts.oldest_xact_start)
            plan = plan_jdbc_table(table, state if state.has_data else None, horizon, load_type=run.load_type)
            where = where_clause(table, plan)
            bounds = _partition_bounds(conn, pg, table, where)
        event(
            "planned read",
            table=outcome.name,
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
                table=outcome.name,
                hidden_sessions=facts.hidden_backends,
                hint="GRANT pg_read_all_stats TO the ingestion role, or set a lookback",
            )
        outcome.load_type = plan.load_type
        batch = run.get_engine().land_jdbc(
            JdbcBatch(
                source=source.name,
                table=table.name,
                connection=conn,
                query=select_sql(table, where),
                columns=table.types,
                primary_key=table.primary_key,
                cursor=table.cursor,
                run_id=run.run_id,
                ingested_at=run.now,
                target=target,
                lake_root=run.cfg.lake_root,
                partition_column=table.partition_column if bounds else None,
                partition_bounds=bounds,
                partitions=table.num_partitions,
                fetchsize=table.fetchsize,
            )
        )
        checkpoint("batch_written", table.name)
        tombstones = 0
        if table.detect_deletes:
            from ingestion.engines.duckdb.tombstones import land_tombstones

            tombstones = land_tombstones(run, task, plan, state.has_data or bool(batch.files_written))
        outcome.files = len(batch.files_written) + (1 if tombstones else 0)
        outcome.rows_read, outcome.rows_landed = batch.rows_read, batch.rows_landed + tombstones
        outcome.rows_deduplicated = batch.rows_deduplicated
        if batch.files_written or tombstones:
            new = next_state(
                state,
                plan.table_plan(),
                batch,
                run.run_id,
                run.now,
                cursor_timezone=table.cursor_timezone,
                pause=run.pause,
            )
            keeper.commit(new if run.pause else cap_watermark(new, plan))
            committed = True
            checkpoint("state_committed", table.name)
            outcome.status = "landed"
        outcome.watermark = keeper.held.state.watermark
    except LeaseHeld as exc:
        outcome.status, outcome.error = "locked", redact(str(exc.message))
    except Exception as exc:  # even an engine bug must not stop the other tables
        outcome.status, outcome.error = "failed", _error_text(exc)
        if not isinstance(exc, TidemarkError):
            log.debug("traceback", exc_info=True)
        if not committed:
            remove_run_files(target, run.run_id)
    finally:
        if keeper is not None:
            try:
                keeper.release()
                checkpoint("lease_released", table.name)
            except TidemarkError as exc:
                event(
                    "could not release the lease; it expires by itself",
                    logging.WARNING,
                    table=outcome.name,
                    error=redact(str(exc)),
                )
        outcome.seconds = round(time.monotonic() - started, 3)
        _log_outcome(outcome)
    return outcome


def _partition_bounds(conn: PgConnection, pg, table: JdbcTable, where: str | None) -> tuple[int, int] | None:  # type: ignore[no-untyped-def]
    """min/max of the partition column over the rows to read (the same predicate), or None."""
    if table.num_partitions <= 1 or not table.partition_column:
        return None
    c = pg_ident(table.column(table.partition_column).source_name)
    sql = f"select min({c})::int8, max({c})::int8 from {table.relation}" + (
        f" where {where}" if where else ""
    )
    lo, hi = query(conn, pg, sql)[0]
    return None if lo is None else (int(lo), int(hi))


@dataclass(frozen=True)
class KnownTable:
    """A PostgreSQL table known without asking the database: listed in the config or holding state."""

    source: JdbcSourceConfig
    name: str


def known_tables(cfg: PipelineConfig) -> list[KnownTable]:
    """PostgreSQL tables `reset` and `--force-unlock` can name without a connection."""
    from ingestion.run.pipeline import state_store

    sources = cfg.jdbc_sources()
    if not sources:
        return []
    with_state: dict[str, set[str]] = {}
    for st in state_store(cfg).tables():
        with_state.setdefault(st.source, set()).add(st.table)
    out = []
    for s in sources:
        listed = {t.name for t in s.tables or ()}
        out += [KnownTable(s, n) for n in sorted(listed | with_state.get(s.name, set()))]
    return out
