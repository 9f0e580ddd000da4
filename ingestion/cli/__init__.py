"""`python -m ingestion …`: the command line, split by command group, with one error handler.

Every expected error is a `TidemarkError`: the group prints its message and hint and exits 2 (a table
locked by another run is exit 3), never a traceback. Commands hold no rules: they parse options, call
the package and print.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from ingestion import __version__
from ingestion.cli import dbt, demo, migrate, observe, run, warehouse
from ingestion.cli.common import EXIT_CODES_HELP, EXIT_LOCKED, EXIT_USAGE, err, out
from ingestion.errors import LeaseHeld, TidemarkError


def report_error(exc: TidemarkError) -> int:
    """Print an expected error as `error:` + `hint:` lines; return its exit code."""
    err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
    if exc.hint:
        err.print(f"[yellow]hint:[/] {exc.hint}", highlight=False)
    return EXIT_LOCKED if isinstance(exc, LeaseHeld) else EXIT_USAGE


class _Group(TyperGroup):
    """The one error handler: a `TidemarkError` from any command becomes its message and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click.Context
        try:
            return super().invoke(ctx)
        except TidemarkError as exc:
            raise typer.Exit(report_error(exc)) from None
        except OSError as exc:  # a read-only or unreachable lake, a full disk: say what, not a traceback
            from ingestion.redact import error_text

            err.print(f"[bold red]error:[/] {error_text(exc)}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None


app = typer.Typer(
    name="python -m ingestion",
    cls=_Group,
    help="tidemark ingestion: land CSV files and PostgreSQL tables as a partitioned Parquet lake with "
    "per-table CDC state, ready for the dbt project in this repository.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: flags show as flags (`--dry-run`), not `--dry-run <bool>`.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        out.print(f"tidemark {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """tidemark ingestion: CSV and PostgreSQL → Parquet lake with CDC watermarks, for dbt to curate."""


app.command()(run.run)
app.command()(run.reset)
app.command("import-watermarks")(migrate.import_watermarks)
app.command()(observe.status)
app.command()(observe.report)
app.command("demo-data")(demo.demo_data)
app.command("demo-check")(demo.demo_check)
app.command("demo-pg")(demo.demo_pg)
app.command("load-warehouse")(warehouse.load_warehouse_cmd)
app.command("redshift-spectrum-ddl")(warehouse.redshift_spectrum_ddl)
app.command("dbt-sources")(dbt.dbt_sources)
app.command("dbt-scaffold")(dbt.dbt_scaffold)


def main() -> None:
    """Entry point of `python -m ingestion` and the `tidemark` script."""
    code: Any = 0
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        code = 130
    except SystemExit as exc:
        code = exc.code
    _exit(code)


def _exit(code: Any) -> None:
    """Exit with `code` after every exit handler has run, skipping the interpreter's native teardown.

    With pyarrow's S3 filesystem used, the C++ runtime's teardown at interpreter exit intermittently aborts
    (SIGABRT, "terminate called without an active exception", exit -6) after the command's work and output
    are done. The handlers (pyarrow's S3 finalization, logging, temporary files) still run here.
    """
    import atexit
    import os

    if code is None:
        code = 0
    elif not isinstance(code, int):
        err.print(str(code))
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
