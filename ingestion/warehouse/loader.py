"""`load-warehouse`: copy newly committed landed Parquet files into a warehouse's raw tables.

Warehouses that can't read the lake (PostgreSQL; Redshift without Spectrum) get one raw table per landed
table, `<schema>.<table>` with `<schema>` = `landing_<source>` (env `TIDEMARK_SOURCE_SCHEMA_<SOURCE>`, the
same name the dbt sources use). A ledger table in the warehouse records every loaded run id and file:
a run is loaded in one transaction together with its ledger rows, so re-running loads nothing twice and
a crash loads nothing half. Raw tables are created, extended with new columns and widened (varchar
length, smallint → integer → bigint) as the landed schema grows.

This module is the one loop over tables and runs, for every target: `load_all` takes a `WarehouseLoader`
(`postgres.PostgresLoader`, `redshift.RedshiftLoader`); what to load and how columns change is decided in
`warehouse.plan`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ingestion.config import PipelineConfig
from ingestion.contract import PARTITION_COLUMN
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import run_id_of, table_dir
from ingestion.lake.state import StateStore
from ingestion.warehouse.plan import (
    AUDIT_SOURCE,
    AUDIT_TABLE,
    RunLoad,
    TableLoadReport,
    audit_schema,
    pending_runs,
    raw_schema,
)
from ingestion.warehouse.postgres import PostgresLoader


class WarehouseLoader(Protocol):
    """Loads landed runs into one warehouse's raw tables and remembers what it loaded."""

    def check_lake(self, lake: str) -> None:
        """Raise a TidemarkError, before anything loads, when this warehouse can't read the lake."""
        ...

    def loaded_runs(self, source: str, table: str) -> set[str]:
        """Run ids of the table already recorded in the warehouse's load ledger."""
        ...

    def load_run(self, load: RunLoad) -> TableLoadReport:
        """Load one run's files and record them in the ledger, all or nothing; skip a run loaded meanwhile."""
        ...

    def close(self) -> None: ...


LOADERS = {"postgres": PostgresLoader}


def landed_runs(folder: str) -> dict[str, list[str]]:
    """Run id → the Parquet files it landed under a table folder (local or `s3://`), one listing."""
    out: dict[str, list[str]] = {}
    for path in lakefs.glob(folder, f"{PARTITION_COLUMN}=*/part-*.parquet"):
        run_id = run_id_of(Path(path))
        if run_id is not None:
            out.setdefault(run_id, []).append(path)
    return out


def load_table(
    lake: str,
    loader: WarehouseLoader,
    source: str,
    table: str,
    committed: Sequence[str],
    run_files: Mapping[str, Sequence[str]] | None = None,
) -> TableLoadReport:
    """Load the table's committed runs not in the warehouse's ledger, one transaction per run, oldest first.

    `run_files`: the runs' files as their commits recorded them (relative to the table folder); when every
    pending run has them, `landing/` is not listed at all.
    """
    report = TableLoadReport(source, table)
    todo = pending_runs(committed, loader.loaded_runs(source, table))
    if not todo:
        return report
    folder = table_dir(lake, source, table)
    if run_files is not None and all(r in run_files for r in todo):
        files = {r: [lakefs.join(folder, f) for f in run_files[r]] for r in todo}
    else:
        files = landed_runs(folder)
    for run_id in todo:
        load = RunLoad(source, table, raw_schema(source), run_id, tuple(files.get(run_id, ())))
        report.merge(loader.load_run(load))
    return report


def load_audit_ledger(lake: str, loader: WarehouseLoader) -> TableLoadReport:
    """Copy new ingestion-ledger files (`<lake>/_audit/ingestion_runs/`) into `lake_audit.ingestion_runs`.

    The dbt audit models read the ledger as a source on every target; on warehouses that can't read the
    lake it is loaded like a landed table, each ledger file once (`run_date=…/<name>` stands for its run id).
    """
    from ingestion.observe.audit import LEDGER_DIR

    report = TableLoadReport(AUDIT_SOURCE, AUDIT_TABLE)
    loaded = loader.loaded_runs(AUDIT_SOURCE, AUDIT_TABLE)
    for path in lakefs.glob(lakefs.join(lake, LEDGER_DIR), "run_date=*/*.parquet"):
        key = f"{Path(path).parent.name}/{Path(path).stem}"
        if key in loaded:
            continue
        load = RunLoad(AUDIT_SOURCE, AUDIT_TABLE, audit_schema(), key, (path,), partition_column=None)
        report.merge(loader.load_run(load))
    return report


def load_all(
    cfg: PipelineConfig,
    loader: WarehouseLoader,
    tables: Sequence[tuple[str, str]] | None = None,
    *,
    audit: bool | None = None,
) -> list[TableLoadReport]:
    """Load every committed, not yet loaded run of the chosen tables into the loader's warehouse.

    `tables` are (source, table) pairs: the CLI passes the pipeline's inventory (`ingestion.inventory`),
    PostgreSQL tables included; without it, the configured CSV tables. `audit` (default: when no tables
    were chosen) loads the ingestion ledger too.
    """
    lake = cfg.lake_root
    loader.check_lake(lake)
    store = StateStore(lake, cfg.pipeline)
    chosen = tables if tables is not None else [(s.name, t.name) for s, t in cfg.csv_tables()]
    reports = []
    for source, table in chosen:
        state = store.read(source, table)
        if state is None:
            reports.append(TableLoadReport(source, table))
            continue
        reports.append(load_table(lake, loader, source, table, state.committed_runs, state.run_files))
    if audit if audit is not None else tables is None:
        reports.append(load_audit_ledger(lake, loader))
    return reports


# The name tests/test_dbt_cdc.py and tests/test_dbt_scaffold.py load with.
load_warehouse = load_all

__all__ = [
    "LOADERS",
    "PostgresLoader",
    "WarehouseLoader",
    "landed_runs",
    "load_all",
    "load_audit_ledger",
    "load_table",
    "load_warehouse",
]
