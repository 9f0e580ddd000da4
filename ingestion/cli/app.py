"""`python -m ingestion …`: the command line. Heavy imports (DuckDB, Spark) happen inside commands."""

from __future__ import annotations

import contextlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ingestion import __version__
from ingestion.errors import TidemarkError

LOAD_TYPES = ("auto", "full", "incremental")

app = typer.Typer(
    name="python -m ingestion",
    help="tidemark ingestion: land CSV files and PostgreSQL tables as a partitioned Parquet lake with per-table CDC state, "
    "ready for the dbt project in this repository.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
if not out.is_terminal:
    out.width = 160  # logs and CI captures: don't squeeze tables to 80 columns

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Pipeline config file. Default: $TIDEMARK_CONFIG, else ./ingestion.yml.",
        show_default=False,
    ),
]
EnvOpt = Annotated[
    str | None,
    typer.Option(
        "--env",
        "-e",
        help="Environment whose overrides (environments.<env> in the config) apply, e.g. dev or prod. "
        "Default: $TIDEMARK_ENV, else the config's `env`, else dev.",
        show_default=False,
    ),
]


def _fail(exc: TidemarkError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
    return typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        out.print(f"tidemark {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """tidemark ingestion: CSV → Parquet lake with CDC watermarks, for dbt to curate."""


@app.command()
def run(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="duckdb (embedded, no Java) or spark (Glue/EMR/local, needs Java 17/21). "
            "Default: the config's `engine`, else duckdb.",
            show_default=False,
        ),
    ] = None,
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            "-t",
            help="Land only this table (`table` or `source.table`); repeat for several. Default: all.",
            show_default=False,
        ),
    ] = None,
    load_type: Annotated[
        str | None,
        typer.Option(
            "--load-type",
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
    atomically with its watermark. Exit code 0 when every table landed or was up to date, 1 when any
    table failed or was locked by another run (the others still ran), 2 for a usage or config error.
    """
    from ingestion.config import load_config
    from ingestion.engines import ENGINES
    from ingestion.lake.layout import new_run_id
    from ingestion.observe.logs import setup_logging
    from ingestion.run.pipeline import run_pipeline, select_tables, state_store

    if engine is not None and engine not in ENGINES:
        raise _fail(TidemarkError(f"unknown engine {engine!r}", hint=f"use one of {', '.join(ENGINES)}"))
    if load_type is not None and load_type not in LOAD_TYPES:
        raise _fail(
            TidemarkError(f"unknown load type {load_type!r}", hint=f"use one of {', '.join(LOAD_TYPES)}")
        )
    log_path = None
    try:
        cfg = load_config(config, env=env)
        run_id = new_run_id(datetime.now(timezone.utc))
        log_path = None if dry_run else setup_logging(run_id, cfg.lake_root, verbose=verbose)
        if force_unlock:
            store = state_store(cfg)
            from ingestion.run.jdbc_job import known_tables

            for src, tbl in select_tables(cfg, force_unlock, known_tables(cfg)):
                lease = store.force_unlock(src.name, tbl.name)
                what = f"run {lease.run_id} (since {lease.acquired_at})" if lease else "nobody"
                out.print(f"unlocked {src.name}.{tbl.name}: was held by {what}", highlight=False)
        progress = None
        if out.is_terminal and not dry_run:  # off a terminal, the JSON log is the progress report
            from ingestion.cli.progress import TableProgress

            progress = TableProgress([f"{s.name}.{t.name}" for s, t in select_tables(cfg, table)], out)
        with progress or contextlib.nullcontext():
            report = run_pipeline(
                cfg,
                engine_name=engine,
                tables=table,
                dry_run=dry_run,
                run_id=run_id,
                load_type=load_type,
                pause=pause,  # type: ignore[arg-type]
                on_step=progress.step if progress else None,
            )
    except TidemarkError as exc:
        raise _fail(exc) from None
    finally:
        if log_path is not None:  # an S3 lake gets the run's JSON log when the run ends
            from ingestion.observe.logs import publish_log

            publish_log(cfg.lake_root, log_path)

    t = Table(title=f"run {report.run_id} · engine {report.engine} · lake {report.lake_root}")
    numbers = ("files", "rows read", "landed", "deduplicated", "filtered", "rejected")
    for col in ("table", "status", "load", *numbers, "watermark", "seconds"):
        t.add_column(col, justify="right" if col in numbers else "left")
    for o in report.tables:
        style = {"failed": "red", "locked": "red", "landed": "green"}.get(o.status, "")
        t.add_row(
            o.name,
            f"[{style}]{o.status}[/]" if style else o.status,
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
            err.print(f"[bold red]{o.name} {o.status}:[/] {o.error}", highlight=False)
        for name, why in o.files_refused.items():
            err.print(f"[bold red]{o.name} refused {name}[/] (moved to unprocessed/): {why}", highlight=False)
    if log_path:
        out.print(f"log: {log_path}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def reset(
    tables: Annotated[list[str], typer.Argument(help="Tables to forget: `table` or `source.table`.")],
    config: ConfigOpt = None,
    env: EnvOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Forget tables' watermark, file ledger and column types: their next run is a full load.

    Landed files stay in the lake (dbt dedups re-landed rows by key and cursor).
    """
    from ingestion.config import load_config
    from ingestion.run.pipeline import select_tables, state_store

    try:
        cfg = load_config(config, env=env)
        from ingestion.run.jdbc_job import known_tables

        chosen = select_tables(cfg, tables, known_tables(cfg))
        names = ", ".join(f"{s.name}.{t.name}" for s, t in chosen)
        if not yes:
            if not sys.stdin.isatty():
                raise TidemarkError(f"reset {names}: refusing without confirmation", hint="add --yes")
            typer.confirm(f"Forget the state of {names}? Their next run re-lands every file", abort=True)
        store = state_store(cfg)
        now = datetime.now(timezone.utc)
        for src, tbl in chosen:
            old = store.reset(src.name, tbl.name, now)
            wm = old.watermark.value if old and old.watermark else "none"
            out.print(f"reset {src.name}.{tbl.name} (watermark was {wm})", highlight=False)
    except TidemarkError as exc:
        raise _fail(exc) from None


@app.command()
def status(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    table: Annotated[
        list[str] | None,
        typer.Option(
            "--table",
            "-t",
            help="Only this table (`table` or `source.table`); repeatable.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for machines instead of a table.")
    ] = False,
) -> None:
    """Show each table's last run, status, rows, watermark, lag and last error, from the audit ledger.

    Exit code 0 when every table's last run worked (landed, up to date or still running), 1 when any
    table's last run failed, was locked by another run or was abandoned (usable as a cron or Airflow
    check), 2 for a usage or config error.
    """
    from ingestion.config import load_config
    from ingestion.observe.audit import Ledger
    from ingestion.observe.status import human_duration, table_statuses
    from ingestion.run.pipeline import select_tables, state_store

    try:
        cfg = load_config(config, env=env)
        chosen = [(s.name, t.name) for s, t in select_tables(cfg, table)]
        rows = [r for r in Ledger(cfg.lake_root).read() if r.pipeline == cfg.pipeline]
        states = {(st.source, st.table): st for st in state_store(cfg).tables()}
    except TidemarkError as exc:
        raise _fail(exc) from None
    now = datetime.now(timezone.utc)
    statuses = table_statuses(chosen, rows, states, now)
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
        for col in (
            "table",
            "last run",
            "status",
            "started (UTC)",
            "seconds",
            "rows read",
            "landed",
            "rejected",
        ):
            right = col in ("seconds", "rows read", "landed", "rejected")
            t.add_column(col, justify="right" if right else "left", overflow="fold")
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
                s.watermark or "",
                human_duration(s.lag_seconds),
                (f"{s.last_error} (run {s.last_error_run_id})" if s.last_error else ""),
            )
        out.print(t)
        for s in failing:
            err.print(
                f"[bold red]{s.name} {s.last_status}[/] in run {s.last_run_id}: {s.last_error}",
                highlight=False,
            )
    if failing:
        raise typer.Exit(1)


@app.command()
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
    from ingestion.config import load_config
    from ingestion.observe.audit import Ledger
    from ingestion.observe.report import render_html, write_report
    from ingestion.observe.status import table_statuses
    from ingestion.run.pipeline import state_store

    try:
        cfg = load_config(config, env=env)
        rows = [r for r in Ledger(cfg.lake_root).read() if r.pipeline == cfg.pipeline]
        states = {(st.source, st.table): st for st in state_store(cfg).tables()}
    except TidemarkError as exc:
        raise _fail(exc) from None
    now = datetime.now(timezone.utc)
    chosen = [(s.name, t.name) for s, t in cfg.tables()]
    page = render_html(
        rows,
        table_statuses(chosen, rows, states, now),
        pipeline=cfg.pipeline,
        lake=cfg.lake_root,
        generated_at=now,
    )
    if output is None:
        output = (
            Path("report.html") if "://" in cfg.lake_root else Path(cfg.lake_root) / "_audit" / "report.html"
        )
    path = write_report(output, page)
    out.print(f"report: {path}  ({len({r.run_id for r in rows})} runs)", highlight=False)


@app.command("demo-data")
def demo_data(
    day: Annotated[int, typer.Option("--day", min=1, max=2, help="Which day's drop to write: 1 or 2.")] = 1,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Inbox folder; CSV files go to <out>/billing/.")
    ] = Path("inbox"),
) -> None:
    """Write the deterministic demo billing data (accounts, customers, subscriptions, invoices).

    Day 1 is the initial extract; day 2 holds updates, inserts, a key updated twice and a new column.
    Files that already hold the same content are left untouched, so reruns land nothing new.
    """
    from ingestion.demo.billing import write_day

    for path, status in write_day(day, out_dir):
        out.print(f"{status:9} {path}", highlight=False)


@app.command("demo-check")
def demo_check(
    warehouse: Annotated[
        Path, typer.Option("--warehouse", envvar="DBT_DUCKDB_PATH", help="DuckDB warehouse dbt built.")
    ] = Path("warehouse.duckdb"),
    config: ConfigOpt = None,
) -> None:
    """Compare the curated tables in the warehouse with the demo data's truth; exit 1 on a mismatch."""
    from ingestion.config import load_config
    from ingestion.demo.billing import check_warehouse

    try:
        cfg = load_config(config)
    except TidemarkError as exc:
        raise _fail(exc) from None
    rows = check_warehouse(warehouse, cfg.lake_root)
    t = Table(title=f"lake {cfg.lake_root} · warehouse {warehouse.resolve()}")
    for col in ("table", "landed rows", "curated rows", "distinct keys in source", "check"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r.table,
            str(r.landed),
            str(r.curated),
            str(r.expected),
            "[green]ok[/]" if r.ok else "[red]MISMATCH[/]",
        )
    out.print(t)
    if not all(r.ok for r in rows):
        raise typer.Exit(1)


@app.command("demo-pg")
def demo_pg(
    day: Annotated[
        int | None,
        typer.Option("--day", min=1, max=2, help="Write day 1 (fresh database) or day 2 (changes)."),
    ] = None,
    probe: Annotated[
        bool,
        typer.Option("--probe", help="Exit 0 when the PostgreSQL server answers, else 1 with one line why."),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Compare the landed shop tables with the database; exit 1 on a mismatch."
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """The demo's optional PostgreSQL part: a `tidemark_demo` shop database on $PGHOST:$PGPORT as $PGUSER.

    `make demo` runs it when a server answers: --day 1, run, --day 2 (updates, inserts, deletes, a new
    column), run, --check. Land it with `python -m ingestion run --config ingestion-pg.yml`.
    """
    from ingestion.demo import shop_pg as d

    if probe:
        why = d.probe()
        if why:
            out.print(
                f"PostgreSQL demo skipped: no server at {d.where()} ({why}); set PGHOST/PGPORT/PGUSER to use one"
            )
            raise typer.Exit(1)
        out.print(f"PostgreSQL server at {d.where()} answers: running the PostgreSQL part of the demo")
        return
    if day:
        d.seed(day)
        out.print(f"wrote day {day} of the shop demo to database {d.DEMO_DB} on {d.where()}")
    if check:
        from ingestion.config import load_config

        try:
            cfg = load_config(config)
        except TidemarkError as exc:
            raise _fail(exc) from None
        problems = d.check(cfg.lake_root)
        for p in problems[:20]:
            err.print(f"[red]MISMATCH[/] {p}", highlight=False)
        if problems:
            raise typer.Exit(1)
        out.print("shop tables in the lake match the PostgreSQL source (deleted orders landed as tombstones)")


@app.command("load-warehouse")
def load_warehouse_cmd(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    table: Annotated[
        list[str] | None,
        typer.Option("--table", "-t", help="Load only this table (`table` or `source.table`); repeatable."),
    ] = None,
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="Warehouse kind: postgres (COPY FROM STDIN), or redshift (COPY from the S3 lake via the Data "
            "API; settings from TIDEMARK_REDSHIFT_*, see README).",
        ),
    ] = "postgres",
    dsn: Annotated[
        str,
        typer.Option(
            "--dsn",
            envvar="TIDEMARK_WAREHOUSE_DSN",
            help="libpq connection string. Default: PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD.",
            show_default=False,
        ),
    ] = "",
) -> None:
    """Copy newly committed landed files into the warehouse's raw tables (`landing_<source>.<table>`).

    For warehouses that can't read the lake (PostgreSQL). Each run id is loaded once, in one transaction
    with its entry in the warehouse's load ledger (tidemark_meta.load_ledger); new columns are added and
    types widened as the landed schema grows. Then: dbt build --target postgres.
    """
    from ingestion.config import load_config
    from ingestion.run.pipeline import select_tables
    from ingestion.warehouse.loader import LOADERS, load_all

    if target not in (*LOADERS, "redshift"):
        raise _fail(
            TidemarkError(f"unknown target {target!r}", hint=f"use one of {', '.join(LOADERS)}, redshift")
        )
    try:
        cfg = load_config(config, env=env)
        chosen = [(s.name, t.name) for s, t in select_tables(cfg, table)] if table else None
        if target == "redshift":
            from ingestion.warehouse.redshift import RedshiftLoader

            loader = RedshiftLoader.from_env(cfg.lake_root)
        else:
            loader = LOADERS[target](dsn)
        try:
            reports = load_all(cfg, loader, chosen)
        finally:
            loader.close()
    except TidemarkError as exc:
        raise _fail(exc) from None
    t = Table(title=f"load-warehouse · {target}")
    for col in ("table", "runs loaded", "files", "rows", "columns added", "widened"):
        t.add_column(col)
    for r in reports:
        t.add_row(
            r.name, str(len(r.runs)), str(r.files), str(r.rows), ", ".join(r.added), ", ".join(r.widened)
        )
    out.print(t)


@app.command("redshift-spectrum-ddl")
def redshift_spectrum_ddl(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    glue_database: Annotated[
        str,
        typer.Option(
            "--glue-database",
            help="Glue Data Catalog database holding a source's landed tables; {source} is replaced.",
        ),
    ] = "landing_{source}",
    iam_role: Annotated[
        str,
        typer.Option(
            "--iam-role",
            envvar="TIDEMARK_REDSHIFT_IAM_ROLE",
            help="Role Redshift assumes to read the catalog and the lake (needs glue:Get* and s3:GetObject).",
        ),
    ] = "",
    region: Annotated[
        str | None, typer.Option("--region", help="The catalog's region when it differs from the cluster's.")
    ] = None,
) -> None:
    """Print the Redshift Spectrum DDL: one external schema `landing_<source>` per configured source.

    Run it once in Redshift (any SQL client or `aws redshift-data execute-statement`); then `dbt build
    --target redshift` reads the lake in place through `source()`, without load-warehouse.
    """
    from ingestion.config import load_config
    from ingestion.warehouse.data_api import check_iam_role
    from ingestion.warehouse.redshift import external_schema_sql

    try:
        check_iam_role(iam_role, "--iam-role (or TIDEMARK_REDSHIFT_IAM_ROLE)")
        cfg = load_config(config, env=env)
        sources = sorted({s.name for s, _ in cfg.tables()})
        ddl = [external_schema_sql(s, glue_database.format(source=s), iam_role, region) for s in sources]
    except TidemarkError as exc:
        raise _fail(exc) from None
    print("\n\n".join(ddl))


ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        "--project-dir", help="The dbt project. Default: the folder of the config file.", show_default=False
    ),
]


@app.command("dbt-sources")
def dbt_sources(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    project_dir: ProjectOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when the file differs from the config.")
    ] = False,
    no_state: Annotated[
        bool,
        typer.Option("--no-state", help="Ignore the lake's committed state (columns from the file/config)."),
    ] = False,
) -> None:
    """Generate the dbt sources YAML (models/staging/_sources.yml) from ingestion.yml.

    Tables come from the config, columns from each table's committed state in the lake (else the file
    or the config's key and cursor). Descriptions, tests and other additions in the file are kept.
    """
    from ingestion.config import load_config
    from ingestion.dbt_gen import generate_sources

    try:
        cfg = load_config(config, env=env)
        path, text, _ = generate_sources(cfg, project_dir or cfg.base_dir, use_state=not no_state)
    except TidemarkError as exc:
        raise _fail(exc) from None
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if check:
        if current != text:
            err.print(f"{path} is out of date with the config: run python -m ingestion dbt-sources")
            raise typer.Exit(1)
        out.print(f"{path} is up to date", highlight=False)
        return
    if current == text:
        out.print(f"unchanged {path}", highlight=False)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    out.print(f"written   {path}", highlight=False)


@app.command("dbt-scaffold")
def dbt_scaffold(
    tables: Annotated[
        list[str] | None,
        typer.Argument(help="Tables (`table` or `source.table`). Default: all without models."),
    ] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Write staging model, CDC model and their YAML for configured tables that have none yet.

    Regenerates the sources YAML first (columns and descriptions come from it). Existing files are
    never overwritten. Then: dbt build --select +<table>.
    """
    from ingestion.config import load_config
    from ingestion.dbt_gen import generate_sources, scaffold

    try:
        cfg = load_config(config, env=env)
        project = project_dir or cfg.base_dir
        path, text, specs = generate_sources(cfg, project)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            out.print(f"written    {path}", highlight=False)
        for table, file, status in scaffold(specs, text, project, tables):
            out.print(f"{status:10} {table}: {file}", highlight=False)
    except TidemarkError as exc:
        raise _fail(exc) from None


def main() -> None:
    """Entry point of `python -m ingestion` and the `tidemark` script."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
