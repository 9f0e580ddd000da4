"""Support for the dbt curation suites: landing files the way a run does, reading warehouses, PostgreSQL dbs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion.contract import PARTITION_COLUMN
from ingestion.lake.layout import new_run_id, partition_value, table_dir
from ingestion.lake.state import StateStore

from .pg_fixtures import scratch_database

PG = {"host": "127.0.0.1", "port": "5432", "user": "postgres"}


def land_rows(
    lake: Path,
    pipeline: str,
    source: str,
    table: str,
    data: pa.Table,
    *,
    columns: dict[str, str] | None = None,
) -> str:
    """Land `data` as one committed run of `source.table`: a run-id-named file, then the run id committed.

    Stands in for a typed source (JDBC) and its delete detection: `data` carries the metadata columns
    `_op` and `_source_file` itself; `_run_id` and `_ingested_at` are added here. `columns` (name → type)
    are merged into the table's committed column types, as a run would.
    """
    now = datetime.now(timezone.utc)
    run_id = new_run_id(now)
    n = data.num_rows
    data = data.append_column("_run_id", pa.array([run_id] * n, pa.string()))
    data = data.append_column("_ingested_at", pa.array([now] * n, pa.timestamp("us", tz="UTC")))
    folder = Path(table_dir(str(lake), source, table)) / f"{PARTITION_COLUMN}={partition_value(now)}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, folder / f"part-{run_id}-0.parquet")
    store = StateStore(str(lake), pipeline)
    held = store.acquire(source, table, run_id, now, timedelta(minutes=5))
    state = held.state
    held = store.commit(
        held,
        replace(
            state,
            committed_runs=(*state.committed_runs, run_id),
            columns={**state.columns, **(columns or {})},
            updated_at=now.isoformat(),
        ),
    )
    store.release(held)
    return run_id


def tombstones(key: str, values: list[int]) -> pa.Table:
    """Delete-detection rows: the key, `_op = 'd'`, nothing else (the row is gone from the source)."""
    return pa.table(
        {
            key: pa.array(values, pa.int64()),
            "_op": pa.array(["d"] * len(values), pa.string()),
            "_source_file": pa.array([None] * len(values), pa.string()),
        }
    )


def read_duckdb(warehouse: Path, relation: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rel = con.sql(f"select * from {relation}")
        return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
    finally:
        con.close()


def read_duckdb_types(warehouse: Path, relation: str) -> dict[str, str]:
    """Column name → DuckDB type (`DECIMAL(38,18)`, `TIMESTAMP WITH TIME ZONE`) of a relation."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {r[0]: r[1] for r in con.sql(f"describe {relation}").fetchall()}
    finally:
        con.close()


def read_postgres(dbname: str, relation: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dbname=dbname, **PG, row_factory=dict_row) as conn:
        return list(conn.execute(f"select * from {relation}").fetchall())


def column_types_postgres(dbname: str, schema: str, table: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(dbname=dbname, **PG) as conn:
        rows = conn.execute(
            "select column_name, data_type, character_maximum_length from information_schema.columns"
            " where table_schema = %s and table_name = %s",
            (schema, table),
        ).fetchall()
    return {r[0]: f"{r[1]}({r[2]})" if r[2] else r[1] for r in rows}


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database `tm_dbt_<uuid8>` on 127.0.0.1, dropped afterwards; skips without a server."""
    with scratch_database("tm_dbt") as name:
        yield name


def postgres_env(dbname: str) -> dict[str, str]:
    """What dbt's postgres target and load-warehouse read to reach the test database."""
    return {
        "DBT_TARGET": "postgres",
        "PGHOST": PG["host"],
        "PGPORT": PG["port"],
        "PGUSER": PG["user"],
        "PGDATABASE": dbname,
        "DBT_SCHEMA": "tidemark",
    }


def environ_with(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


class FastDbt:
    """dbt in this process with one parsed manifest (tests/helpers.InProcessDbt), with extra environment
    (the PostgreSQL target's) and optionally another project folder (a scaffolded copy)."""

    def __new__(  # type: ignore[no-untyped-def]
        cls,
        work: Path,
        lake: Path,
        warehouse: Path,
        env: dict[str, str] | None = None,
        project: Path | None = None,
    ):
        from .helpers import REPO, Dbt, InProcessDbt

        extra = dict(env or {})

        class _Dbt(InProcessDbt):
            def __init__(self) -> None:
                Dbt.__init__(self, work, lake, warehouse)
                self.env.update(extra)  # DBT_TARGET among them: the parse must see the target
                self.manifest = None
                self.manifest = self._invoke("parse").result

            def paths(self) -> list[str]:
                out = super().paths()
                if project is not None:
                    out[out.index(str(REPO))] = str(project)
                return out

            def _invoke(self, *args: str):  # type: ignore[no-untyped-def]
                saved = {k: os.environ.get(k) for k in extra}
                os.environ.update(extra)
                try:
                    return super()._invoke(*args)
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v

        return _Dbt()
