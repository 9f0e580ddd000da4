"""`dbt-sources` and `dbt-scaffold`: the dbt project's sources YAML and starting models, from the inventory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ingestion.cli.common import EXIT_FAILED, ConfigOpt, EnvOpt, ProjectOpt, err, load, out

if TYPE_CHECKING:
    from ingestion.dbt_gen import DbtFile, TableSpec


def dbt_sources(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    project_dir: ProjectOpt = None,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when a file differs from the config.")
    ] = False,
    no_state: Annotated[
        bool,
        typer.Option("--no-state", help="Ignore the lake's committed state (columns from the file/config)."),
    ] = False,
) -> None:
    """Generate the dbt sources YAML (models/staging/<source>/_<source>__sources.yml) from the pipeline.

    Tables come from the pipeline's inventory (configured CSV tables, PostgreSQL tables listed in the
    config or landed before), columns from each table's committed state in the lake (else the file or
    the config's key and cursor). Descriptions, tests and other additions in the files are kept. A landed
    column the tables' model and snapshot YAML don't list yet is added there too, with its description.
    """
    from ingestion.dbt_gen import generate_source_files

    cfg = load(config, env)
    project = project_dir or cfg.base_dir
    files, specs = generate_source_files(cfg, project, use_state=not no_state)
    if not files:
        err.print(
            "no tables to describe: the config lists none and no run has landed any yet", highlight=False
        )
    files += _column_updates(files, specs, project)
    stale = []
    for f in files:
        current = f.path.read_text(encoding="utf-8") if f.path.exists() else None
        if current == f.text:
            out.print(f"{'up to date' if check else 'unchanged'} {f.path}", highlight=False)
        elif check:
            stale.append(f.path)
            err.print(f"{f.path} is out of date with the config: run python -m ingestion dbt-sources")
        else:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            f.path.write_text(f.text, encoding="utf-8")
            out.print(f"written   {f.path}", highlight=False)
    if stale:
        raise typer.Exit(EXIT_FAILED)


def dbt_scaffold(
    tables: Annotated[
        list[str] | None,
        typer.Argument(help="Tables (`table` or `source.table`). Default: all without models."),
    ] = None,
    config: ConfigOpt = None,
    env: EnvOpt = None,
    project_dir: ProjectOpt = None,
) -> None:
    """Write staging model, CDC model, consumer view and their YAML for tables that have none yet.

    Regenerates the sources YAML first (columns and descriptions come from it). Existing files are
    never overwritten. Then: dbt build --select +<table>.
    """
    import yaml

    from ingestion.dbt_gen import generate_source_files, scaffold

    cfg = load(config, env)
    project = project_dir or cfg.base_dir
    files, specs = generate_source_files(cfg, project)
    sources: list[object] = []
    for f in files:
        sources += (yaml.safe_load(f.text) or {}).get("sources") or []
    # New columns of tables that have models reach those models' and snapshots' YAML too.
    for f in [*files, *_column_updates(files, specs, project)]:
        if not f.path.exists() or f.path.read_text(encoding="utf-8") != f.text:
            f.path.parent.mkdir(parents=True, exist_ok=True)
            f.path.write_text(f.text, encoding="utf-8")
            out.print(f"written    {f.path}", highlight=False)
    for table, file, status in scaffold(specs, yaml.safe_dump({"sources": sources}), project, tables):
        out.print(f"{status:10} {table}: {file}", highlight=False)


def _column_updates(files: list[DbtFile], specs: list[TableSpec], project: Path) -> list[DbtFile]:
    """The model and snapshot YAML files that gain entries for landed columns (warnings to stderr)."""
    import yaml

    from ingestion.dbt_gen import column_updates

    sources: list[object] = []
    for f in files:
        sources += (yaml.safe_load(f.text) or {}).get("sources") or []
    updates, warnings = column_updates(specs, yaml.safe_dump({"sources": sources}), project)
    for warning in warnings:
        err.print(warning, highlight=False)
    return updates
