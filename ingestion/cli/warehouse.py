"""`load-warehouse` and `redshift-spectrum-ddl`: after landing, the optional warehouse targets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ingestion.cli.common import ConfigOpt, EnvOpt, TablesOpt, load, out
from ingestion.config import PipelineConfig
from ingestion.errors import ConfigError


def _tables(cfg: PipelineConfig, names: list[str] | None) -> list[tuple[str, str]]:
    """(source, table) of the inventory's tables (CSV configured, PostgreSQL known from state), or those named."""
    from ingestion.inventory import inventory, select
    from ingestion.run.context import state_store

    return [(r.source, r.table) for r in select(inventory(cfg, state_store(cfg)), names)]


def load_warehouse_cmd(
    config: ConfigOpt = None,
    env: EnvOpt = None,
    table: TablesOpt = None,
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
    from ingestion.warehouse.loader import LOADERS, WarehouseLoader, load_all

    if target not in (*LOADERS, "redshift"):
        raise ConfigError(f"unknown target {target!r}", hint=f"use one of {', '.join(LOADERS)}, redshift")
    cfg = load(config, env)
    chosen = _tables(cfg, table)
    loader: WarehouseLoader
    if target == "redshift":
        from ingestion.warehouse.redshift import RedshiftLoader

        loader = RedshiftLoader.from_env(cfg.lake_root)
    else:
        loader = LOADERS[target](dsn)
    try:
        reports = load_all(cfg, loader, chosen, audit=not table)
    finally:
        loader.close()
    t = Table(title=f"load-warehouse · {target}")
    for col in ("table", "runs loaded", "files", "rows", "columns added", "widened"):
        t.add_column(col)
    for r in reports:
        t.add_row(
            r.name, str(len(r.runs)), str(r.files), str(r.rows), ", ".join(r.added), ", ".join(r.widened)
        )
    out.print(t)


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
    """Print the Redshift Spectrum DDL: one external schema `landing_<source>` per source of the pipeline.

    Run it once in Redshift (any SQL client or `aws redshift-data execute-statement`); then `dbt build
    --target redshift` reads the lake in place through `source()`, without load-warehouse.
    """
    from ingestion.warehouse.data_api import check_iam_role
    from ingestion.warehouse.redshift import external_schema_sql

    check_iam_role(iam_role, "--iam-role (or TIDEMARK_REDSHIFT_IAM_ROLE)")
    cfg = load(config, env)
    sources = sorted({s.name for s in cfg.sources})
    ddl = [external_schema_sql(s, glue_database.format(source=s), iam_role, region) for s in sources]
    print("\n\n".join(ddl))
