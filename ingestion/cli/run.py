"""`run` and `reset`: land new data; forget a table's state."""

from __future__ import annotations

import contextlib
import sys
from datetime import datetime, timezone
from functools import partial
from typing import Annotated

import typer
from rich.table import Table

from ingestion.cli.common import (
    EXIT_FAILED,
    EXIT_LOCKED,
    ConfigOpt,
    EnvOpt,
    TablesOpt,
    err,
    load,
    out,
)
from ingestion.errors import ConfigError, TidemarkError

LOAD_TYPES = ("auto", "full", "incremental")


def run(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            metavar="duckdb|spark",
            help="duckdb (embedded, no Java) or spark (Glue/EMR/local, needs Java 17/21). "
            "Default: the config's `engine`, else duckdb.",
            show_default=False,
        ),
    ] = None,
    table: TablesOpt = None,
    load_type: Annotated[
        str | None,
        typer.Option(
            "--load-type",
            metavar="auto|full|incremental",
            help="auto: full without committed state, incremental with it. full: re-land every file and "
            "reset the watermark. incremental: fail tables that have no state. Default: each table's "
            "`load_type` in the config, else auto.",
            show_default=False,
        ),
    ] = None,
    pause: Annotated[
        bool,
        typer.Option(
            "--pause",
            help="Land data but commit no watermark and no file ledger (like a paused Glue bookmark): "
            "the next run reads the same range again.",
        ),
    ] = False,
    force_unlock: Annotated[
        list[str] | None,
        typer.Option(
            "--force-unlock",
            metavar="SOURCE.TABLE",
            help="Break the lease on this table (`source.table`) before running, e.g. after a run died on "
            "another machine. Repeat for several.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan only: list what would be landed, write nothing.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
) -> None:
    """Land new source data into the lake and commit each table's watermark and file ledger.

    Each table is leased, cleaned of files from runs that never committed, landed, and committed
    atomically with its watermark. One table's failure never stops the others.

    Exit codes: 0 every table landed or was up to date; 1 a table failed or refused a file; 2 usage,
    config or lake error; 3 tables locked by another run (nothing else wrong).
    """
    from ingestion.engines import ENGINES
    from ingestion.inventory import inventory, select
    from ingestion.lake.fs import reach_lake
    from ingestion.lake.layout import new_run_id
    from ingestion.observe.logs import publish_log, setup_logging
    from ingestion.run.context import state_store
    from ingestion.run.pipeline import run_pipeline

    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}", hint=f"use one of {', '.join(ENGINES)}")
    if load_type is not None and load_type not in LOAD_TYPES:
        raise ConfigError(f"unknown load type {load_type!r}", hint=f"use one of {', '.join(LOAD_TYPES)}")
    cfg = load(config, env)
    reach_lake(cfg.lake_root, write=not dry_run)  # before the run's log file is opened in it
    run_id = new_run_id(datetime.now(timezone.utc))
    log_path = None if dry_run else setup_logging(run_id, cfg.lake_root, verbose=verbose)
    try:
        store = state_store(cfg)
        known = inventory(cfg, store) if (force_unlock or out.is_terminal) else []
        for ref in select(known, force_unlock):
            lease = store.force_unlock(ref.source, ref.table)
            what = f"run {lease.run_id} (since {lease.acquired_at})" if lease else "nobody"
            out.print(f"unlocked {ref.name}: was held by {what}", highlight=False)
        progress = None
        if out.is_terminal and not dry_run:  # off a terminal, the JSON log is the progress report
            from ingestion.cli.progress import TableProgress

            names = [r.name for r in known if not table or r.table in table or r.name in table]
            progress = TableProgress(names, out)
        with progress or contextlib.nullcontext():
            report = run_pipeline(
                cfg,
                engine_name=engine,
                tables=table,
                dry_run=dry_run,
                run_id=run_id,
                load_type=load_type,  # type: ignore[arg-type]
                pause=pause,
                on_step=progress.step if progress else None,
            )
    finally:
        if log_path is not None:  # an S3 lake gets the run's JSON log when the run ends
            publish_log(cfg.lake_root, log_path)

    t = Table(title=f"run {report.run_id} · engine {report.engine} · lake {report.lake_root}")
    numbers = ("files", "rows read", "landed", "deduplicated", "filtered", "rejected")
    for col in ("table", "status", "load", *numbers, "watermark", "seconds"):
        t.add_column(col, justify="right" if col in numbers else "left")
    for o in report.tables:
        shown = o.ledger_status
        style = "red" if o.needs_attention else {"landed": "green"}.get(shown, "")
        t.add_row(
            o.name,
            f"[{style}]{shown}[/]" if style else shown,
            o.load_type,
            str(o.files),
            str(o.rows_read),
            str(o.rows_landed),
            str(o.rows_deduplicated),
            str(o.rows_filtered),
            str(o.rows_rejected),
            o.watermark.value if o.watermark else "",
            f"{o.seconds:.2f}",
        )
    out.print(t)
    for o in report.failed:
        if o.error:
            step = f" (step {o.failed_step})" if o.failed_step and o.status == "failed" else ""
            err.print(f"[bold red]{o.name} {o.status}{step}:[/] {o.error}", highlight=False)
        for name, why in o.files_refused.items():
            err.print(f"[bold red]{o.name} refused {name}[/] ({o.refused_to}): {why}", highlight=False)
    if log_path:
        out.print(f"log: {log_path}", highlight=False)
    if report.locked_only:
        raise typer.Exit(EXIT_LOCKED)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def reset(
    tables: Annotated[list[str], typer.Argument(help="Tables to forget: `table` or `source.table`.")],
    config: ConfigOpt = None,
    env: EnvOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Forget tables' watermark, file ledger and column types: their next run is a full load.

    Landed files stay in the lake (dbt dedups re-landed rows by key and cursor). Works on a corrupted
    state document too: it is replaced.
    """
    from ingestion.inventory import inventory, select
    from ingestion.lake.layout import landed_run_ids, table_dir
    from ingestion.run.context import state_store

    cfg = load(config, env)
    store = state_store(cfg)
    chosen = select(inventory(cfg, store), tables)
    names = ", ".join(r.name for r in chosen)
    if not yes:
        if not sys.stdin.isatty():
            raise TidemarkError(f"reset {names}: refusing without confirmation", hint="add --yes")
        typer.confirm(f"Forget the state of {names}? Their next run re-lands every file", abort=True)
    now = datetime.now(timezone.utc)
    for ref in chosen:
        target = table_dir(cfg.lake_root, ref.source, ref.table)
        old = store.reset(ref.source, ref.table, now, partial(landed_run_ids, target))
        wm = old.watermark.value if old and old.watermark else "none"
        out.print(f"reset {ref.name} (watermark was {wm})", highlight=False)
