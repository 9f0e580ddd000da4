"""One run of the pipeline: the table inventory, each table through the protocol, the ledger, a report.

DESIGN.md "A run, per table" is `ingestion.run.protocol`; this module is the run around it: discovery,
selection, the ledger's opening rows, `max_parallel_tables` at a time, the run's scratch cleanup.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from ingestion.config import LoadType, PipelineConfig
from ingestion.engines import Engine
from ingestion.inventory import select
from ingestion.lake import fs as lakefs
from ingestion.lake.fs import check_lake
from ingestion.lake.layout import lake_scratch, new_run_id, scratch_dir
from ingestion.observe.audit import Ledger, RunLedger
from ingestion.observe.faults import checkpoint
from ingestion.observe.logs import event
from ingestion.records import RunReport, TableOutcome
from ingestion.run.catalog_job import discover_catalog_tables
from ingestion.run.context import RunContext, state_store
from ingestion.run.csv_job import CsvJob
from ingestion.run.jdbc_job import discover_tables
from ingestion.run.protocol import TableJob, land_table


def table_jobs(
    cfg: PipelineConfig, names: Sequence[str] | None
) -> tuple[list[TableJob[Any]], list[TableOutcome]]:
    """The selected tables as jobs: configured CSV tables and today's discovered PostgreSQL and Glue
    catalog tables.

    A PostgreSQL or catalog source whose tables could not be listed (or a catalog table that could not be
    resolved) is a failed outcome, reported only when it may hold (or is) a chosen table.
    """
    jobs: list[TableJob[Any]] = [CsvJob(s, t) for s, t in cfg.csv_tables()]
    failed: list[TableOutcome] = []
    if cfg.jdbc_sources():
        found, failed = discover_tables(cfg)
        jobs += found
    if cfg.catalog_sources():
        listed, not_listed = discover_catalog_tables(cfg)
        jobs += listed
        failed += not_listed
    if not names:
        return jobs, failed

    def named(o: TableOutcome, n: str) -> bool:
        if o.table != "*":  # one table that could not be read (a Glue catalog table)
            return n in (o.table, f"{o.source}.{o.table}")
        return "." not in n or n.startswith(f"{o.source}.")

    failed = [o for o in failed if any(named(o, n) for n in names)]
    wanted = [n for n in names if not any(o.table != "*" and named(o, n) for o in failed)]
    chosen = (
        select(jobs, wanted, failed_sources=[o.source for o in failed if o.table == "*"]) if wanted else []
    )
    return chosen, failed


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
    ctx = RunContext(
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
    jobs, failed = table_jobs(cfg, tables)
    report = RunReport(run_id=ctx.run_id, engine=ctx.engine_name, lake_root=lake)
    report.tables += failed
    for outcome in failed:
        if on_table:
            on_table(outcome)
    event(
        "run started",
        run_id=ctx.run_id,
        pipeline=cfg.pipeline,
        env=cfg.env,
        engine=ctx.engine_name,
        lake=lake,
        tables=len(jobs),
        pause=pause or None,
        load_type=load_type,
    )
    if not dry_run:
        ctx.audit = RunLedger(
            Ledger(lake),
            run_id=ctx.run_id,
            pipeline=cfg.pipeline,
            env=cfg.env,
            engine=ctx.engine_name,
            started_at=now,
        )
        ctx.audit.start([(j.source, j.table) for j in jobs], ctx.store, ctx.ttl)
        for outcome in failed:  # a source whose tables could not be listed is recorded as failed
            ctx.audit.record(outcome)
    checkpoint("run_started")
    try:
        with ThreadPoolExecutor(max_workers=cfg.max_parallel_tables, thread_name_prefix="table") as pool:
            futures = [pool.submit(land_table, ctx, job) for job in jobs]
            for fut in futures:
                outcome = fut.result()
                report.tables.append(outcome)
                if on_table:
                    on_table(outcome)
    finally:
        if ctx.audit is not None:
            ctx.audit.finish()
        if engine is None and ctx.engine is not None:
            ctx.engine.close()
        shutil.rmtree(scratch_dir(lake, ctx.run_id), ignore_errors=True)
        if lakefs.is_remote(lake) and (ctx.engine is not None and ctx.engine.name == "spark"):
            lakefs.remove_tree(lake_scratch(lake, ctx.run_id))  # the Spark engine's staging on S3
        event(
            "run finished",
            run_id=ctx.run_id,
            ok=report.ok,
            failed={t.name: t.error or t.ledger_status for t in report.failed} or None,
        )
    checkpoint("run_finished")
    return report
