"""`import-watermarks`: take over the Glue seeds' watermark files, so the first run is incremental."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ingestion.cli.common import EXIT_FAILED, ConfigOpt, EnvOpt, TablesOpt, load, out
from ingestion.errors import ConfigError


def import_watermarks(
    paths: Annotated[
        list[str],
        typer.Argument(
            metavar="PATH",
            help="The seeds' watermark files, local or s3://: max_timestamps.csv (a table and a timestamp "
            "column), last_load_timestamp.csv (one timestamp), or the folder/prefix of per-table CDC tracker "
            "files (<prefix>/<table>.csv or <prefix>/<table>/part-….csv).",
            show_default=False,
        ),
    ],
    config: ConfigOpt = None,
    env: EnvOpt = None,
    table: TablesOpt = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            "-s",
            metavar="SOURCE",
            help="The source the seed's bare table names belong to (when several sources have the name).",
            show_default=False,
        ),
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            metavar="auto|max-timestamps|per-table|single",
            help="How the files are laid out. auto: a folder of several files is per-table trackers; a file "
            "with a table column is max-timestamps; any other file is one timestamp for every table "
            "(or the --table ones).",
        ),
    ] = "auto",
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone",
            metavar="ZONE",
            help="IANA zone of seed timestamps written without an offset. Default: the table's "
            "cursor_timezone, else UTC.",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite watermarks that runs have already committed.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what would be set (current and new watermark), write nothing."),
    ] = False,
) -> None:
    """Import the Glue seeds' watermark files as tables' initial watermarks.

    Each value becomes the table's committed watermark (typed like its cursor, in UTC, as a run writes
    it), through the state store's lease and conditional write. The table's next run is incremental
    from it: rows with cursor >= watermark - lookback. A table that already has a watermark is kept
    unless --force; a seed table that matches no table of the config is reported.

    Exit codes: 0 every entry imported (or, with --dry-run, importable) or kept; 1 an entry matched no
    table, had no cursor, or its table was locked by a run; 2 usage, config or file error.
    """
    from ingestion.config import CsvTableConfig
    from ingestion.plan.seeds import LAYOUTS
    from ingestion.run.seeds import import_watermarks as run_import

    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}", hint=f"use one of {', '.join(LAYOUTS)}")
    if timezone is not None:
        try:
            CsvTableConfig._zone(timezone)
        except ValueError as exc:
            raise ConfigError(f"--timezone: {exc}") from None
    cfg = load(config, env)
    result = run_import(
        cfg,
        paths,
        layout=layout,  # type: ignore[arg-type]
        tables=table or (),
        source=source,
        zone=timezone,
        force=force,
        dry_run=dry_run,
    )
    verb = "would set" if dry_run else "set"
    t = Table(title=f"import-watermarks ({result.layout}){' · dry run: nothing written' if dry_run else ''}")
    for col in ("table", "action", "current watermark", "new watermark", "note"):
        t.add_column(col)
    shown = {"set": verb, "overwrite": f"{verb} (--force)"}
    for d in result.decisions:
        t.add_row(
            d.name,
            shown.get(d.action, d.action),
            d.current.value if d.current else "",
            d.new.value if d.new and d.action != "kept" else "",
            d.note,
        )
    out.print(t)
    if any(d.action in ("unknown", "no cursor", "locked") for d in result.decisions):
        raise typer.Exit(EXIT_FAILED)
