"""`dbt-sources` and `dbt-scaffold`: the dbt project's sources YAML and starting models, from the inventory."""

from __future__ import annotations

from typing import Annotated

import typer

from ingestion.cli.common import EXIT_FAILED, ConfigOpt, EnvOpt, ProjectOpt, err, load, out


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
    from ingestion.dbt_gen import generate_sources

    cfg = load(config, env)
    path, text, _ = generate_sources(cfg, project_dir or cfg.base_dir, use_state=not no_state)
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if check:
        if current != text:
            err.print(f"{path} is out of date with the config: run python -m ingestion dbt-sources")
            raise typer.Exit(EXIT_FAILED)
        out.print(f"{path} is up to date", highlight=False)
        return
    if current == text:
        out.print(f"unchanged {path}", highlight=False)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    out.print(f"written   {path}", highlight=False)


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
    from ingestion.dbt_gen import generate_sources, scaffold

    cfg = load(config, env)
    project = project_dir or cfg.base_dir
    path, text, specs = generate_sources(cfg, project)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        out.print(f"written    {path}", highlight=False)
    for table, file, status in scaffold(specs, text, project, tables):
        out.print(f"{status:10} {table}: {file}", highlight=False)
