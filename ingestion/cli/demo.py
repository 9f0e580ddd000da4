"""`demo-data`, `demo-check`, `demo-pg`: the demo's data and its checks (make demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ingestion.cli.common import EXIT_FAILED, ConfigOpt, err, load, out


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


def demo_check(
    warehouse: Annotated[
        Path, typer.Option("--warehouse", envvar="DBT_DUCKDB_PATH", help="DuckDB warehouse dbt built.")
    ] = Path("warehouse.duckdb"),
    config: ConfigOpt = None,
) -> None:
    """Compare the curated tables in the warehouse with the demo data's truth; exit 1 on a mismatch."""
    from ingestion.demo.billing import check_warehouse

    cfg = load(config)
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
        raise typer.Exit(EXIT_FAILED)


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
            raise typer.Exit(EXIT_FAILED)
        out.print(f"PostgreSQL server at {d.where()} answers: running the PostgreSQL part of the demo")
        return
    if day:
        d.seed(day)
        out.print(f"wrote day {day} of the shop demo to database {d.DEMO_DB} on {d.where()}")
    if check:
        cfg = load(config)
        problems = d.check(cfg.lake_root)
        for p in problems[:20]:
            err.print(f"[red]MISMATCH[/] {p}", highlight=False)
        if problems:
            raise typer.Exit(EXIT_FAILED)
        out.print("shop tables in the lake match the PostgreSQL source (deleted orders landed as tombstones)")
