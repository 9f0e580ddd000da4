"""Import the Glue seeds' watermark files as tables' initial watermarks (`python -m ingestion import-watermarks`).

Reads the files (local or `s3://`, through `ingestion.lake.fs`), learns each table's cursor and its type
(CSV tables from the config and their committed columns; PostgreSQL tables by discovery, as a run does),
lets `ingestion.plan.seeds` decide, and commits each new watermark through the state store: lease, a
conditional write of the table's document, release. A table's next run is then incremental from it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ingestion.config import PipelineConfig
from ingestion.errors import ConfigError, LeaseHeld, SourceError, StateConflict
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import new_run_id
from ingestion.lake.state import StateStore
from ingestion.plan.seeds import (
    Decision,
    Layout,
    SeedValue,
    Target,
    decide,
    single_timestamp,
    table_timestamps,
)

if TYPE_CHECKING:
    from ingestion.run.jdbc_job import JdbcJob


@dataclass(frozen=True)
class ImportResult:
    """The decisions of an import and whether they were written."""

    decisions: list[Decision]
    dry_run: bool
    layout: str


def _seed_file(name: str) -> bool:
    """Data files of a seed folder: CSV files and Spark's `part-…` outputs, not `_SUCCESS` or `.crc`."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(("_", ".")) and (base.endswith(".csv") or base.startswith("part-"))


def list_seed(path: str) -> tuple[bool, list[str]]:
    """(is the path one file, the seed files it stands for); a ConfigError when nothing is there."""
    if lakefs.is_remote(path):
        import pyarrow.fs as pafs

        fs, key = lakefs.filesystem(path)
        info = fs.get_file_info(key)
        if info.type == pafs.FileType.File:
            return True, [path]
        files = lakefs.files_under(path) if info.type == pafs.FileType.Directory else []
    elif os.path.isfile(path):
        return True, [path]
    else:
        files = lakefs.files_under(path) if os.path.isdir(path) else []
    files = [f for f in files if _seed_file(f)]
    if not files:
        raise ConfigError(
            f"{path}: no watermark file there",
            hint="give the seed's max_timestamps.csv, last_load_timestamp.csv or its CDC tracker folder",
        )
    return False, files


def read_text(path: str) -> str:
    with lakefs.open_input(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: not a UTF-8 text file", hint="give the seed's CSV watermark file"
        ) from None


def _relative(root: str, path: str) -> str:
    return path[len(root.rstrip("/")) + 1 :].replace(os.sep, "/")


def read_seed(path: str, layout: Layout = "auto") -> tuple[str, list[SeedValue]]:
    """The seed entries a path holds and the layout they were read as.

    auto: a folder whose files are not all Spark `part-…` files of one output is per-table tracker files
    (`<prefix>/<table>.csv`, `<prefix>/<table>/….csv`); a file (or one Spark output folder) with a table
    column is `max_timestamps.csv`; any other file is one timestamp for every table.
    """
    one_file, files = list_seed(path)
    spark_output = (
        not one_file
        and all("/" not in _relative(path, f) for f in files)
        and all(f.rsplit("/", 1)[-1].startswith("part-") for f in files)
    )
    if layout == "per-table" or (layout == "auto" and not one_file and not spark_output):
        if one_file:
            raise ConfigError(f"{path} is one file; per-table tracker files live under a folder or prefix")
        values = []
        for f in files:
            rel = _relative(path, f)
            table = rel.split("/", 1)[0] if "/" in rel else rel.rsplit(".", 1)[0]
            values += single_timestamp(read_text(f), f, table)
        return "per-table", values
    texts = [(f, read_text(f)) for f in files]
    if layout == "single":
        return "single", [v for f, t in texts for v in single_timestamp(t, f)]
    if layout == "max-timestamps":
        return "max-timestamps", [v for f, t in texts for v in table_timestamps(t, f)]
    try:
        return "max-timestamps", [v for f, t in texts for v in table_timestamps(t, f)]
    except ConfigError as as_table:
        try:
            return "single", [v for f, t in texts for v in single_timestamp(t, f)]
        except ConfigError as as_single:
            raise ConfigError(
                f"{as_table.message}; nor is it one column of timestamps ({as_single.message})",
                hint=as_table.hint,
            ) from None


def targets(cfg: PipelineConfig, store: StateStore) -> tuple[list[Target], dict[str, str]]:
    """The tables that can take a watermark, and the cursor types their committed columns give.

    PostgreSQL tables are discovered (a connection per source, as a run's first step) for their cursor's
    type; a source that cannot be reached is an error: its tables' watermarks would be guessed otherwise.
    """
    out: list[Target] = []
    types: dict[str, str] = {}
    for s, t in cfg.csv_tables():
        ctype = t.columns.get(t.cursor) if t.cursor else None
        if ctype == "timestamp" and t.csv.timezone:
            ctype = "timestamptz"
        out.append(Target(s.name, t.name, t.cursor, ctype, t.cursor_timezone, t.primary_key, t.csv.timezone))
    for st in store.tables():
        target = next((x for x in out if x.name == st.name), None)
        if target and target.cursor and target.cursor in st.columns:
            types[st.name] = st.columns[target.cursor]
    if cfg.jdbc_sources():
        from ingestion.run.jdbc_job import discover_tables

        jobs, failed = discover_tables(cfg)
        if failed:
            raise SourceError(
                f"source {failed[0].source}: could not discover its tables: {failed[0].error}",
                hint="the import needs each PostgreSQL table's cursor type; check the source can be reached",
            )
        out += [_jdbc_target(job) for job in jobs]
    if cfg.catalog_sources():
        from ingestion.run.catalog_job import CatalogJob, discover_catalog_tables

        found, lost = discover_catalog_tables(cfg)
        if lost:
            raise SourceError(
                f"source {lost[0].source}: could not read table {lost[0].table} of its catalog: {lost[0].error}",
                hint="the import needs each catalog table's cursor and its type; check the database is readable",
            )
        for cj in found:
            if isinstance(cj, CatalogJob):
                spec = cj.spec
                # A CSV table's cursor is typed from its values on its first run, like a configured CSV table.
                ctype = None if spec.format == "csv" else spec.cursor_type
                out.append(
                    Target(spec.source, spec.name, spec.cursor, ctype, spec.cursor_timezone, spec.primary_key)
                )
            else:
                out.append(_jdbc_target(cj))
    return out, types


def _jdbc_target(job: JdbcJob) -> Target:
    """A PostgreSQL table (a `jdbc` source's, or a catalog entry's connection) as an import target."""
    jt = job.jdbc_table
    return Target(jt.source, jt.name, jt.cursor, jt.cursor_type, jt.cursor_timezone, jt.primary_key)


def import_watermarks(
    cfg: PipelineConfig,
    paths: Sequence[str],
    *,
    layout: Layout = "auto",
    tables: Sequence[str] = (),
    source: str | None = None,
    zone: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    store: StateStore | None = None,
    now: datetime | None = None,
) -> ImportResult:
    """Read the seed files at `paths`, decide per table, and (unless `dry_run`) commit the watermarks."""
    from ingestion.run.context import state_store

    if source is not None and source not in {s.name for s in cfg.sources}:
        raise ConfigError(
            f"--source {source}: no such source", hint=f"use one of {[s.name for s in cfg.sources]}"
        )
    store = store or state_store(cfg)
    known, types = targets(cfg, store)
    values: list[SeedValue] = []
    used = []
    for path in paths:
        what, read = read_seed(path, layout)
        used.append(what)
        values += read
    states = {t.name: store.read(t.source, t.table) for t in known}
    decisions = decide(
        values, known, states, source=source, tables=tables, zone=zone, force=force, types=types
    )
    if not dry_run:
        now = now or datetime.now(timezone.utc)
        decisions = [commit(store, d, now, cfg, force) if d.writes else d for d in decisions]
    return ImportResult(decisions, dry_run, ", ".join(dict.fromkeys(used)))


def commit(store: StateStore, d: Decision, now: datetime, cfg: PipelineConfig, force: bool) -> Decision:
    """Write one table's imported watermark under its lease; a run holding the table makes it `locked`.

    The watermark is checked again under the lease: a run that committed one since the decision keeps it.
    """
    assert d.target is not None and d.new is not None
    t = d.target
    run_id = new_run_id(now) + "-import"
    try:
        held = store.acquire(t.source, t.table, run_id, now, timedelta(seconds=cfg.lease_ttl_seconds))
    except LeaseHeld as exc:
        return replace(d, action="locked", note=exc.message)
    try:
        state = held.state
        if state.watermark is not None and not force:
            return replace(
                d, action="kept", current=state.watermark, note="a run committed a watermark meanwhile"
            )
        new = replace(
            state,
            watermark=d.new,
            updated_at=now.isoformat(),
            cursor=t.cursor,
            primary_key=state.primary_key or t.primary_key,
        )
        held = store.commit(held, new)
    except StateConflict as exc:
        return replace(d, action="locked", note=exc.message)
    finally:
        store.release(held)
    return d
