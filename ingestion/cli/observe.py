"""`status` and `report`: what operators see, from the ledger and the state store (no source connection)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ingestion.cli.common import EXIT_FAILED, ConfigOpt, EnvOpt, TablesOpt, err, load, out

if TYPE_CHECKING:
    from ingestion.config import PipelineConfig
    from ingestion.observe.audit import LedgerRow
    from ingestion.observe.status import TableStatus


def _statuses(
    cfg: PipelineConfig, names: list[str] | None
) -> tuple[list[LedgerRow], list[TableStatus], datetime]:
    """The ledger rows of the pipeline and one status per table of the inventory (or those named)."""
    from datetime import timedelta

    from ingestion.inventory import inventory, select
    from ingestion.lake.fs import reach_lake
    from ingestion.observe.audit import Ledger
    from ingestion.observe.status import table_statuses
    from ingestion.run.context import state_store

    reach_lake(cfg.lake_root, write=False)
    store = state_store(cfg)
    chosen = [(r.source, r.table) for r in select(inventory(cfg, store), names)]
    states = {(st.source, st.table): st for st in store.tables()}
    rows = [r for r in Ledger(cfg.lake_root).read() if r.pipeline == cfg.pipeline]
    now = datetime.now(timezone.utc)
    unreadable = {k: f"{e.message} (hint: {e.hint})" for k, e in store.unreadable.items()}
    ttl = timedelta(seconds=cfg.lease_ttl_seconds)
    return rows, table_statuses(chosen, rows, states, now, ttl=ttl, unreadable=unreadable), now


def status(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    table: TablesOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for machines instead of a table.")
    ] = False,
) -> None:
    """Show each table's last run, status, rows, watermark, lag and last error, from the audit ledger.

    Every table of the pipeline is listed: configured CSV tables and PostgreSQL tables known from the
    lake's state (no database connection). A run that died shows as `abandoned`; a table that landed but
    refused a file shows as `refused`.

    Exit codes: 0 every table's last run worked (landed, up to date or still running); 1 any table's
    last run failed, refused a file, was locked by another run or was abandoned, or its state cannot be
    read (usable as a cron or Airflow check); 2 usage or config error.
    """
    from ingestion.observe.status import human_duration

    cfg = load(config, env)
    _, statuses, now = _statuses(cfg, table)
    failing = [s for s in statuses if s.failing]
    if as_json:
        doc = {
            "pipeline": cfg.pipeline,
            "env": cfg.env,
            "lake": cfg.lake_root,
            "generated_at": now.isoformat(),
            "ok": not failing,
            "tables": [s.to_json() for s in statuses],
        }
        typer.echo(json.dumps(doc, indent=2))
    else:
        t = Table(title=f"pipeline {cfg.pipeline} · env {cfg.env} · lake {cfg.lake_root}")
        refused = any(s.files_refused for s in statuses)
        numbers = ("seconds", "read", "landed", "rejected", *(("refused files",) if refused else ()))
        for col in ("table", "last run", "status", "started (UTC)", *numbers):
            # Names, statuses and numbers never wrap; run ids, times, watermarks and errors fold.
            fold = col in ("last run", "started (UTC)")
            t.add_column(
                col, justify="right" if col in numbers else "left", no_wrap=not fold, overflow="fold"
            )
        t.add_column("watermark", overflow="fold")
        t.add_column("lag", justify="right", no_wrap=True)
        t.add_column("last error", overflow="fold", max_width=60)
        for s in statuses:
            style = "red" if s.failing else {"landed": "green", "never_run": "yellow"}.get(s.last_status, "")
            t.add_row(
                s.name,
                s.last_run_id or "",
                f"[{style}]{s.last_status}[/]" if style else s.last_status,
                f"{s.last_started_at:%Y-%m-%d %H:%M:%S}" if s.last_started_at else "",
                "" if s.last_seconds is None else f"{s.last_seconds:.2f}",
                str(s.rows_read),
                str(s.rows_landed),
                str(s.rows_rejected),
                *((str(s.files_refused),) if refused else ()),
                (s.watermark or "").replace(".000000", ""),  # whole seconds read better without zeros
                human_duration(s.lag_seconds),
                s.state_error or (f"{s.last_error} (run {s.last_error_run_id})" if s.last_error else ""),
            )
        out.print(t)
        if not statuses:
            err.print("no tables: the config lists none and no run has discovered any yet", highlight=False)
        for s in failing:
            why = s.state_error or s.last_error
            err.print(f"[bold red]{s.name} {s.last_status}[/] in run {s.last_run_id}: {why}", highlight=False)
    if failing:
        raise typer.Exit(EXIT_FAILED)


def report(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="HTML file to write. Default: <lake>/_audit/report.html (./report.html when the lake is on S3).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a static HTML run report: status per table, rows, duration and lag over time, failures.

    One self-contained file (inline SVG charts, no scripts, no network at view time): open it in a
    browser, mail it, or publish it next to the lake.
    """
    from ingestion.observe.report import render_html, write_report

    cfg = load(config, env)
    rows, statuses, now = _statuses(cfg, None)
    page = render_html(rows, statuses, pipeline=cfg.pipeline, lake=cfg.lake_root, generated_at=now)
    if output is None:
        output = (
            Path("report.html") if "://" in cfg.lake_root else Path(cfg.lake_root) / "_audit" / "report.html"
        )
    path = write_report(output, page)
    out.print(f"report: {path}  ({len({r.run_id for r in rows})} runs)", highlight=False)
