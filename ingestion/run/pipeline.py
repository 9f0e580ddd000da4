"""One run of the pipeline: for each table, lease → state → orphans → plan → land → commit → release.

DESIGN.md "A run, per table" is this module. A crash before the commit leaves files of an uncommitted
run, which the next run removes before writing; a crash after it only leaves the lease, which expires
(or is taken over at once when its process is known to be dead).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ingestion.config import CsvSourceConfig, CsvTableConfig, LoadType, PipelineConfig
from ingestion.engines import CsvBatch, Engine, get_engine
from ingestion.errors import ConfigError, LeaseHeld, TidemarkError
from ingestion.lake.fs import check_lake
from ingestion.lake.layout import (
    new_run_id,
    remove_orphans,
    remove_run_files,
    remove_stale_scratch,
    scratch_dir,
    table_dir,
)
from ingestion.lake.state import LeaseKeeper, StateStore, TableState, Watermark
from ingestion.observe.audit import Ledger, RunLedger
from ingestion.observe.faults import checkpoint
from ingestion.observe.logs import event
from ingestion.plan.csv import TablePlan, next_state, plan_csv_table, settle_fetched
from ingestion.plan.rejects import remove_rejects, write_rejects
from ingestion.sources.csv import ARCHIVE_DIR, UNPROCESSED_DIR, Move, fetch, list_files, move_files
from ingestion.warehouse.glue_catalog import register_outcome

log = logging.getLogger("tidemark")


@dataclass
class TableOutcome:
    """What happened to one table in a run."""

    source: str
    table: str
    status: str  # landed | up_to_date | planned | locked | failed
    load_type: str = ""
    files: int = 0
    rows_read: int = 0
    rows_landed: int = 0
    rows_deduplicated: int = 0
    rows_filtered: int = 0
    rows_rejected: int = 0
    files_refused: dict[str, str] = field(default_factory=dict)  # file → why it went to unprocessed/
    orphans_removed: int = 0
    watermark: Watermark | None = None
    watermark_before: Watermark | None = None
    started_at: datetime | None = None
    seconds: float = 0.0
    error: str | None = None
    error_class: str | None = None

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"


@dataclass
class RunReport:
    """What a run did, table by table; `ok` is false when any table failed or was locked."""

    run_id: str
    engine: str
    lake_root: str
    tables: list[TableOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[TableOutcome]:
        """Tables that failed or were locked, and tables that refused a file (it needs a human)."""
        return [t for t in self.tables if t.status in ("failed", "locked") or t.files_refused]


@dataclass
class _Run:
    """What every table of a run shares."""

    cfg: PipelineConfig
    store: StateStore
    run_id: str
    now: datetime
    engine_name: str
    load_type: LoadType | None
    pause: bool
    dry_run: bool
    engine: Engine | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    audit: RunLedger | None = None
    on_step: Callable[[str, str], None] | None = None  # (source.table, checkpoint): progress bars

    def step(self, point: str, source: str, table: str) -> None:
        """Pass a table's checkpoint: injected faults (tests), then the progress observer."""
        checkpoint(point, table)
        if self.on_step is not None:
            self.on_step(f"{source}.{table}", point)

    def get_engine(self) -> Engine:
        with self.lock:  # tables start in parallel; only one engine (one JVM) is made
            if self.engine is None:
                self.engine = get_engine(self.engine_name, self.cfg)
            return self.engine

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.cfg.lease_ttl_seconds)


def select_tables(
    cfg: PipelineConfig,
    names: Sequence[str] | None,
    discovered: Sequence[Any] = (),
    failed: Sequence[str] = (),
) -> list[tuple[Any, Any]]:
    """The configured tables to run: all, or those named `table` or `source.table`.

    `discovered` adds PostgreSQL tables found at run time (`jdbc_run.JdbcTask`); names under a source
    whose discovery `failed` are not reported as unknown (that source's failure is).
    """
    everything: list[tuple[Any, Any]] = [*cfg.tables(), *((t.source, t) for t in discovered)]
    if not names:
        return everything
    chosen, unknown = [], []
    for name in names:
        hits = [(s, t) for s, t in everything if name in (t.name, f"{s.name}.{t.name}")]
        if hits:
            chosen += [h for h in hits if h not in chosen]
        elif not any(name.startswith(f"{f}.") for f in failed):
            unknown.append(name)
    if unknown:
        known = ", ".join(f"{s.name}.{t.name}" for s, t in everything)
        raise ConfigError(f"no table named {', '.join(unknown)} in the config", hint=f"known tables: {known}")
    return chosen


def state_store(cfg: PipelineConfig) -> StateStore:
    """The pipeline's state store, in the lake's `_state/` folder."""
    return StateStore(cfg.lake_root, cfg.pipeline)


def run_pipeline(
    cfg: PipelineConfig,
    *,
    engine_name: str | None = None,
    tables: Sequence[str] | None = None,
    load_type: LoadType | None = None,
    pause: bool = False,
    dry_run: bool = False,
    engine: Engine | None = None,
    run_id: str | None = None,
    on_table: Callable[[TableOutcome], None] | None = None,
    on_step: Callable[[str, str], None] | None = None,
) -> RunReport:
    """Land every selected table, `max_parallel_tables` at a time.

    One table's failure is recorded in its outcome and never stops, or rolls back, the others.
    `load_type` overrides every table's configured one; `pause` lands data but commits no watermark.
    """
    check_lake(cfg)  # before anything touches the lake
    now = datetime.now(timezone.utc)
    run = _Run(
        cfg=cfg,
        store=state_store(cfg),
        run_id=run_id or new_run_id(now),
        now=now,
        engine_name=engine.name if engine else (engine_name or cfg.engine),
        load_type=load_type,
        pause=pause,
        dry_run=dry_run,
        engine=engine,
        on_step=on_step,
    )
    lake = cfg.lake_root
    jdbc_tasks, jdbc_failed = [], []
    if cfg.jdbc_sources():
        from ingestion.run.jdbc_job import discover_tables

        jdbc_tasks, jdbc_failed = discover_tables(cfg)
        if tables:  # a source that failed to list its tables only matters when it may hold a chosen one
            jdbc_failed = [
                o for o in jdbc_failed if any("." not in n or n.startswith(f"{o.source}.") for n in tables)
            ]
    selected = select_tables(cfg, tables, jdbc_tasks, [o.source for o in jdbc_failed])
    report = RunReport(run_id=run.run_id, engine=run.engine_name, lake_root=lake)
    report.tables += jdbc_failed
    for failed in jdbc_failed:
        if on_table:
            on_table(failed)
    event(
        "run started",
        run_id=run.run_id,
        pipeline=cfg.pipeline,
        env=cfg.env,
        engine=run.engine_name,
        lake=lake,
        tables=len(selected),
        pause=pause or None,
        load_type=load_type,
    )
    if not dry_run:
        run.audit = RunLedger(
            Ledger(lake),
            run_id=run.run_id,
            pipeline=cfg.pipeline,
            env=cfg.env,
            engine=run.engine_name,
            started_at=now,
        )
        run.audit.start([(s.name, t.name) for s, t in selected], run.store, run.ttl)
        for failed in jdbc_failed:  # a source whose tables could not be listed is recorded as failed
            run.audit.record(failed)
    checkpoint("run_started")
    try:
        with ThreadPoolExecutor(max_workers=cfg.max_parallel_tables, thread_name_prefix="table") as pool:
            futures = [pool.submit(_land_table, run, s, t) for s, t in selected]
            for fut in futures:
                outcome = fut.result()
                report.tables.append(outcome)
                if on_table:
                    on_table(outcome)
    finally:
        if run.audit is not None:
            run.audit.finish()
        if engine is None and run.engine is not None:
            run.engine.close()
        shutil.rmtree(scratch_dir(lake, run.run_id), ignore_errors=True)
        event(
            "run finished",
            run_id=run.run_id,
            ok=report.ok,
            failed={t.name: t.error for t in report.failed} or None,
        )
    checkpoint("run_finished")
    return report


def _plan(run: _Run, source: CsvSourceConfig, table: CsvTableConfig, state: TableState | None) -> TablePlan:
    listing = list_files(run.cfg.resolve(source.path), table.glob)
    return plan_csv_table(
        source.name,
        table.name,
        state,
        listing,
        load_type=run.load_type or table.load_type,
        lookback=table.lookback,
        has_cursor=table.cursor is not None,
    )


def _run_table(run: _Run, source: CsvSourceConfig, table: CsvTableConfig) -> TableOutcome:
    """The commit protocol for one table; every error ends up in the outcome, none escapes."""
    started = time.monotonic()
    outcome = TableOutcome(source.name, table.name, status="up_to_date", started_at=_utcnow())
    if run.on_step is not None:
        run.on_step(outcome.name, "started")
    target = table_dir(run.cfg.lake_root, source.name, table.name)
    keeper: LeaseKeeper | None = None
    committed = False
    try:
        # Look before taking the lease: a table with nothing new costs no write, unless a dead run left
        # its lease (and maybe files) behind, which is tidied up now rather than when new data comes.
        state = run.store.read(source.name, table.name)
        plan = _plan(run, source, table, state)
        outcome.load_type = plan.load_type
        outcome.files = len(plan.files)
        outcome.watermark = outcome.watermark_before = state.watermark if state else None
        stale = (
            state is not None
            and state.lease is not None
            and (state.lease.expired(_utcnow()) or state.lease.holder_is_dead())
        )
        leftovers = bool(plan.leftovers) and source.archive.enabled
        if run.dry_run or not (plan.has_work or stale or leftovers):
            outcome.status = "planned" if run.dry_run else "up_to_date"
            return outcome

        # The lease's clock is now, not the run's start: a table may wait in the pool a long time.
        held = run.store.acquire(source.name, table.name, run.run_id, _utcnow(), run.ttl)
        keeper = LeaseKeeper(run.store, held, run.ttl, _utcnow)
        run.step("lease_acquired", source.name, table.name)
        orphans = remove_orphans(target, set(held.state.committed_runs))
        remove_rejects(run.cfg.lake_root, source.name, table.name, keep=set(held.state.committed_runs))
        remove_stale_scratch(run.cfg.lake_root, source.name, table.name, run.run_id)
        outcome.orphans_removed = len(orphans)
        if orphans:
            event(
                "removed files of runs that never committed",
                logging.WARNING,
                table=outcome.name,
                files=len(orphans),
            )
        run.step("orphans_removed", source.name, table.name)

        state = keeper.held.state  # it may have moved between our first look and the lease
        plan = _plan(run, source, table, state)
        if plan.has_work:
            # Checksums settle files whose size or mtime changed: same bytes are not landed again.
            fetched = fetch(plan.files, scratch_dir(run.cfg.lake_root, run.run_id))
            plan = settle_fetched(plan, fetched, state)
        outcome.load_type, outcome.files = plan.load_type, len(plan.files)
        if plan.changed:
            event(
                "files changed since they were landed; landing them again",
                logging.WARNING,
                table=outcome.name,
                files=list(plan.changed),
            )
        if plan.duplicates:
            event(
                "files hold the same bytes as files already landed; not landed again",
                logging.WARNING,
                table=outcome.name,
                files=dict(plan.duplicates),
            )
        if not table.cursor:
            event(
                "no cursor column: every new file is landed whole and no watermark is kept",
                logging.WARNING,
                table=outcome.name,
            )
        moves = [Move(f.relpath, f.source_path, _folder_of(state, f.relpath)) for f in plan.leftovers]
        if plan.has_work:
            batch = run.get_engine().land_csv(
                CsvBatch(
                    source=source.name,
                    table=table.name,
                    files=plan.files,
                    options=table.csv,
                    primary_key=table.primary_key,
                    cursor=table.cursor,
                    run_id=run.run_id,
                    ingested_at=run.now,
                    target=target,
                    lake_root=run.cfg.lake_root,
                    lower_bound=plan.lower_bound,
                    declared=dict(table.columns),
                    committed=dict(state.columns) if state and plan.load_type == "incremental" else {},
                    max_rejected_fraction=table.max_rejected_fraction,
                    double_as_decimal=table.double_as_decimal,
                    decimal_keys=table.decimal_keys,
                )
            )
            run.step("batch_written", source.name, table.name)
            q = batch.quarantine
            if q and q.rejects:
                write_rejects(q.rejects, run.cfg.lake_root, source.name, table.name, run.run_id, run.now)
            refused = q.refused if q else {}
            new = next_state(
                state,
                plan,
                batch,
                run.run_id,
                run.now,
                cursor_timezone=table.cursor_timezone,
                pause=run.pause,
            )
            keeper.commit(new)
            committed = True
            run.step("state_committed", source.name, table.name)
            outcome.status = "landed"
            outcome.rows_read, outcome.rows_landed = batch.rows_read, batch.rows_landed
            outcome.rows_deduplicated, outcome.rows_filtered = batch.rows_deduplicated, batch.rows_filtered
            outcome.rows_rejected, outcome.files_refused = batch.rows_rejected, refused
            if refused:
                event(
                    "files refused; moved to unprocessed/", logging.ERROR, table=outcome.name, files=refused
                )
            if not run.pause:
                moves += [
                    Move(f.relpath, f.source_path, UNPROCESSED_DIR if f.relpath in refused else ARCHIVE_DIR)
                    for f in plan.files
                ]
        if moves and source.archive.enabled and not run.pause:
            root = run.cfg.resolve(source.path)
            archive_root = run.cfg.resolve(source.archive.root) if source.archive.root else None
            done = move_files(root, moves, run.now, archive_root)
            run.step("files_archived", source.name, table.name)
            event("files moved out of the inbox", table=outcome.name, files=len(done))
        outcome.watermark = keeper.held.state.watermark
    except LeaseHeld as exc:
        outcome.status, outcome.error, outcome.error_class = "locked", str(exc.message), type(exc).__name__
    except Exception as exc:  # even an engine bug must not stop the other tables
        outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
        outcome.error_class = type(exc).__name__
        if not isinstance(exc, TidemarkError):
            log.debug("traceback", exc_info=True)
        if not committed:
            # This run's files never counted; remove them now rather than at the next run.
            remove_run_files(target, run.run_id)
            remove_rejects(run.cfg.lake_root, source.name, table.name, only={run.run_id})
    finally:
        if keeper is not None:
            try:
                keeper.release()
                run.step("lease_released", source.name, table.name)
            except TidemarkError as exc:
                event(
                    "could not release the lease; it expires by itself",
                    logging.WARNING,
                    table=outcome.name,
                    error=str(exc),
                )
        outcome.seconds = round(time.monotonic() - started, 3)
        _log_outcome(outcome)
    return outcome


def _land_table(run: _Run, source: Any, table: Any) -> TableOutcome:
    """One table through its source kind's protocol, then its ledger row and progress (CSV and JDBC alike)."""
    if isinstance(source, CsvSourceConfig):
        outcome = _run_table(run, source, table)
    else:
        from ingestion.run.jdbc_job import run_jdbc_table

        outcome = run_jdbc_table(run, table)
    if (
        not run.dry_run
    ):  # after the commit: registration never undoes it (see ingestion.warehouse.glue_catalog)
        register_outcome(run.cfg, outcome, run.run_id, run.pause)
    if run.audit is not None:
        run.audit.record(outcome)
    if run.on_step is not None:
        run.on_step(outcome.name, f"done:{outcome.status}")
    return outcome


def _folder_of(state: TableState | None, relpath: str) -> str:
    """Where a file the ledger already knows belongs: archive/ if it landed, unprocessed/ if refused."""
    entry = state.files.get(relpath) if state else None
    return UNPROCESSED_DIR if entry and entry.status == "rejected" else ARCHIVE_DIR


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _log_outcome(o: TableOutcome) -> None:
    level = {"failed": logging.ERROR, "locked": logging.ERROR}.get(o.status, logging.INFO)
    event(
        f"table {o.status}",
        level,
        table=o.name,
        load_type=o.load_type or None,
        files=o.files,
        rows_read=o.rows_read,
        rows_landed=o.rows_landed,
        rows_deduplicated=o.rows_deduplicated,
        rows_filtered=o.rows_filtered,
        rows_rejected=o.rows_rejected,
        files_refused=o.files_refused or None,
        orphans_removed=o.orphans_removed or None,
        watermark=o.watermark.value if o.watermark else None,
        seconds=o.seconds,
        error=o.error,
    )
