"""One run of the pipeline: for each table, plan → extract/normalize/dedup/write → commit."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ingestion.config import CsvSourceConfig, CsvTableConfig, PipelineConfig
from ingestion.engines import CsvBatch, Engine, get_engine
from ingestion.errors import ConfigError, TidemarkError
from ingestion.landing import new_run_id, remove_run_files, scratch_dir, table_dir
from ingestion.logs import event
from ingestion.plan import LandedBatch, TablePlan, next_state, plan_csv_table
from ingestion.sources.csv import list_files
from ingestion.state import LocalStateStore, Watermark


@dataclass
class TableOutcome:
    """What happened to one table in a run."""

    source: str
    table: str
    status: str  # landed | up_to_date | failed | planned
    files: int = 0
    rows_read: int = 0
    rows_landed: int = 0
    rows_deduplicated: int = 0
    watermark: Watermark | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"


@dataclass
class RunReport:
    """What a run did, table by table; `ok` is false when any table failed."""

    run_id: str
    engine: str
    lake_root: str
    tables: list[TableOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.status != "failed" for t in self.tables)

    @property
    def failed(self) -> list[TableOutcome]:
        return [t for t in self.tables if t.status == "failed"]


def select_tables(
    cfg: PipelineConfig, names: Sequence[str] | None
) -> list[tuple[CsvSourceConfig, CsvTableConfig]]:
    """The configured tables to run: all, or those named `table` or `source.table`."""
    everything = cfg.tables()
    if not names:
        return everything
    chosen, unknown = [], []
    for name in names:
        hits = [(s, t) for s, t in everything if name in (t.name, f"{s.name}.{t.name}")]
        if hits:
            chosen += [h for h in hits if h not in chosen]
        else:
            unknown.append(name)
    if unknown:
        known = ", ".join(f"{s.name}.{t.name}" for s, t in everything)
        raise ConfigError(f"no table named {', '.join(unknown)} in the config", hint=f"known tables: {known}")
    return chosen


def run_pipeline(
    cfg: PipelineConfig,
    *,
    engine_name: str | None = None,
    tables: Sequence[str] | None = None,
    dry_run: bool = False,
    engine: Engine | None = None,
    run_id: str | None = None,
    on_table: Callable[[TableOutcome], None] | None = None,
) -> RunReport:
    """Land every selected table; one table's failure is recorded and never stops the others."""
    now = datetime.now(timezone.utc)
    run_id = run_id or new_run_id(now)
    engine_name = engine.name if engine else (engine_name or cfg.engine)
    lake = cfg.lake_root
    if "://" in lake:
        raise ConfigError(
            f"lake root {lake}: only local folders are supported by this version",
            hint="set lake.root (or TIDEMARK_LAKE) to a local folder",
        )
    selected = select_tables(cfg, tables)
    store = LocalStateStore(lake, cfg.pipeline)
    report = RunReport(run_id=run_id, engine=engine_name, lake_root=lake)
    owned = engine is None
    event("run started", run_id=run_id, pipeline=cfg.pipeline, env=cfg.env, engine=engine_name, lake=lake)

    def get() -> Engine:
        nonlocal engine
        engine = engine or get_engine(engine_name, cfg)
        return engine

    try:
        for source, table in selected:
            outcome = _run_table(cfg, store, source, table, run_id, now, dry_run, get)
            report.tables.append(outcome)
            if on_table:
                on_table(outcome)
    finally:
        if owned and engine is not None:
            engine.close()
        shutil.rmtree(scratch_dir(lake, run_id), ignore_errors=True)
    event("run finished", run_id=run_id, ok=report.ok, failed=[t.name for t in report.failed])
    return report


def _run_table(
    cfg: PipelineConfig,
    store: LocalStateStore,
    source: CsvSourceConfig,
    table: CsvTableConfig,
    run_id: str,
    now: datetime,
    dry_run: bool,
    engine: Callable[[], Engine],
) -> TableOutcome:
    """Plan, land and commit one table; errors end up in the outcome, never in the caller."""
    started = time.monotonic()
    outcome = TableOutcome(source.name, table.name, status="up_to_date")
    lake = cfg.lake_root
    try:
        state = store.read(source.name, table.name)
        listing = list_files(cfg.resolve(source.path), table.glob)
        plan = plan_csv_table(source.name, table.name, state, listing)
        outcome.files = len(plan.files)
        outcome.watermark = state.watermark if state else None
        if plan.changed:
            event(
                "files changed since they were landed; landing them again",
                logging.WARNING,
                table=outcome.name,
                files=list(plan.changed),
            )
        if dry_run:
            outcome.status = "planned"
        elif plan.has_work:
            batch = _land(engine(), plan, table, run_id, now, lake)
            new_state = next_state(cfg.pipeline, state, plan, batch, run_id, now)
            store.commit(new_state, expected_version=state.version if state else 0)
            outcome.status = "landed"
            outcome.rows_read = batch.rows_read
            outcome.rows_landed = batch.rows_landed
            outcome.rows_deduplicated = batch.rows_deduplicated
            outcome.watermark = new_state.watermark
    except Exception as exc:  # even an engine bug must not stop the other tables
        _fail(outcome, exc, lake, run_id)
        if not isinstance(exc, TidemarkError):
            logging.getLogger("tidemark").debug("traceback", exc_info=True)
    outcome.seconds = round(time.monotonic() - started, 3)
    event(
        f"table {outcome.status}",
        logging.ERROR if outcome.status == "failed" else logging.INFO,
        table=outcome.name,
        files=outcome.files,
        rows_read=outcome.rows_read,
        rows_landed=outcome.rows_landed,
        rows_deduplicated=outcome.rows_deduplicated,
        watermark=outcome.watermark.value if outcome.watermark else None,
        seconds=outcome.seconds,
        error=outcome.error,
    )
    return outcome


def _land(
    engine: Engine, plan: TablePlan, table: CsvTableConfig, run_id: str, now: datetime, lake: str
) -> LandedBatch:
    batch = CsvBatch(
        source=plan.source,
        table=plan.table,
        files=plan.files,
        options=table.csv,
        primary_key=table.primary_key,
        cursor=table.cursor,
        run_id=run_id,
        ingested_at=now,
        target=table_dir(lake, plan.source, plan.table),
        lake_root=lake,
    )
    if not table.cursor:
        event(
            "table has no cursor column: every changed file is landed whole",
            logging.WARNING,
            table=f"{plan.source}.{plan.table}",
        )
    return engine.land_csv(batch)


def _fail(outcome: TableOutcome, exc: BaseException, lake: str, run_id: str) -> None:
    outcome.status = "failed"
    outcome.error = f"{type(exc).__name__}: {exc}"
    # What this run wrote for the table is not committed: remove it so readers never see it.
    remove_run_files(table_dir(lake, outcome.source, outcome.table), run_id)
