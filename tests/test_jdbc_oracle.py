"""PostgreSQL end to end on both engines: an oracle over inserts, updates, deletes, ties, a late commit,
a new column and widened types, curated by dbt; and parity of what the two engines land."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from ingestion.config import DEFAULT_DRIVER_JAR
from ingestion.run.pipeline import run_pipeline
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc

REPO = Path(__file__).resolve().parent.parent
DBT = Path(sys.executable).parent / "dbt"
TABLES = {"orders": "id", "events": "id"}

pytestmark = pytest.mark.slow


def _engine(request: pytest.FixtureRequest, name: str, cfg: Any) -> Any:
    """The engine object for a run: DuckDB fresh, Spark on the test session's shared SparkSession."""
    if name == "duckdb":
        return None
    if not os.path.isfile(DEFAULT_DRIVER_JAR):
        pytest.skip(f"the PostgreSQL JDBC driver is not installed at {DEFAULT_DRIVER_JAR}")
    session = request.getfixturevalue("spark")
    from ingestion.engines.spark.engine import SparkEngine

    return SparkEngine(cfg.spark, spark=session)


class TinyDbt:
    """A throwaway dbt project: the repository's macros, staging views and CDC models for the test tables."""

    def __init__(self, work: Path, lake: Path) -> None:
        self.project = work / "dbt"
        self.warehouse = work / "warehouse.duckdb"
        shutil.copytree(REPO / "macros", self.project / "macros")
        (self.project / "models" / "staging").mkdir(parents=True)
        (self.project / "models" / "cdc").mkdir(parents=True)
        (self.project / "dbt_project.yml").write_text(
            # named tidemark: the CDC macros call their siblings as tidemark.<macro>
            "name: tidemark\nversion: '1.0'\nconfig-version: 2\nprofile: tm_jdbc_oracle\n"
            "model-paths: [models]\nmacro-paths: [macros]\nvars: {cdc_lookback_hours: 3}\n"
            "models:\n  tidemark:\n    staging: {+materialized: view}\n"
            "    cdc: {+materialized: incremental, +incremental_strategy: cdc, "
            "+on_schema_change: append_new_columns}\n"
        )
        (self.project / "profiles.yml").write_text(
            "tm_jdbc_oracle:\n  target: local\n  outputs:\n    local:\n      type: duckdb\n"
            f"      path: '{self.warehouse}'\n      schema: main\n      threads: 1\n"
        )
        tables = "\n".join(f"      - name: {t}" for t in TABLES)
        (self.project / "models" / "staging" / "_pg__sources.yml").write_text(
            "version: 2\nsources:\n  - name: pg\n    meta:\n      external_location: "
            f"\"read_parquet('{lake}/landing/pg/{{name}}/**/*.parquet', hive_partitioning = true, "
            f'union_by_name = true)"\n    tables:\n{tables}\n'
        )
        for t, key in TABLES.items():
            (self.project / "models" / "staging" / f"stg_pg__{t}.sql").write_text(
                f"select * from {{{{ source('pg', '{t}') }}}}\n"
            )
            (self.project / "models" / "cdc" / f"{t}.sql").write_text(
                f"{{{{ config(unique_key=['{key}']) }}}}\n\n"
                f"{{{{ cdc_current_state(ref('stg_pg__{t}'), cursor='updated_at') }}}}\n"
            )

    def build(self) -> None:
        proc = subprocess.run(
            [str(DBT), "build", "--project-dir", str(self.project), "--profiles-dir", str(self.project)],
            cwd=self.project,
            env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    def curated(self, table: str) -> dict[Any, dict[str, Any]]:
        con = duckdb.connect(str(self.warehouse), read_only=True)
        try:
            rel = con.sql(f"select * from main.{table}")
            rows = [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]
        finally:
            con.close()
        return {r[TABLES[table]]: r for r in rows}


def _source_rows(db: PgDb, table: str) -> dict[Any, dict[str, Any]]:
    cur = db.con.execute(f"select * from {table}")
    names = [d.name for d in cur.description]
    return {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def _check(
    db: PgDb, dbt: TinyDbt, deleted: dict[str, set[int]], held: dict[str, set[int]] | None = None
) -> None:
    """Curated = source by key and every column; deleted keys' current rows carry `_is_deleted`.

    `held` keys are rows the safe horizon keeps for the next run (stamped after an open transaction
    began): they must not be compared yet.
    """
    held = held or {}
    for table in TABLES:
        truth, got = _source_rows(db, table), dbt.curated(table)
        live = {k for k, r in got.items() if not r["_is_deleted"]}
        assert live - held.get(table, set()) == set(truth) - held.get(table, set()), table
        for key, row in truth.items():
            if key in held.get(table, set()):
                continue
            for col, want in row.items():
                assert got[key][col] == want, (table, key, col, got[key][col], want)
        for key in deleted.get(table, set()):
            assert got[key]["_is_deleted"] and got[key]["_deleted_at"], (table, key, "not marked deleted")


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def test_oracle_inserts_updates_deletes_ties_late_commit_schema_changes(
    engine: str, pg_db: PgDb, pg_admin: Any, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    db = pg_db
    # Writers' now() land in naive columns as New York wall clock; tidemark runs in UTC.
    pg_admin.execute(f"alter database {db.name} set timezone = 'America/New_York'")
    db.con.close()
    db.con = db.connect(autocommit=True)
    db.con.execute(
        "create table orders (id int primary key, amount numeric(12,2), note varchar(10), "
        "updated_at timestamptz not null default now())"
    )
    db.con.execute(
        "create table events (id bigint primary key, payload text, updated_at timestamp not null default localtimestamp)"
    )
    # One transaction: five rows with the same cursor value.
    db.con.execute(
        "insert into orders (id, amount, note) select g, g * 1.25, 'n' || g from generate_series(1, 5) g"
    )
    db.con.execute("insert into events (id, payload) select g, 'e' || g from generate_series(1, 3) g")
    lake = tmp_path / "lake"
    cfg = write_config(pipeline_doc(lake, jdbc_source(db, detect_deletes=True, num_partitions=2), engine))
    eng = _engine(request, engine, cfg)
    dbt = TinyDbt(tmp_path, lake)

    def run() -> None:
        report = run_pipeline(cfg, engine=eng)
        assert report.ok, [(t.name, t.error) for t in report.tables]

    # 1. initial load
    run()
    dbt.build()
    _check(db, dbt, {})

    # 2. update, delete, a row stamped exactly at the committed watermark (a tie), then a transaction
    #    that stays open across the run while a later one commits.
    watermark = db.rows("select max(updated_at) from orders")[0][0]
    db.con.execute("update orders set note = 'upd', updated_at = now() where id = 2")
    db.con.execute("delete from orders where id = 3")
    db.con.execute(
        "insert into orders (id, amount, note, updated_at) values (6, 6.5, 'tie', %s)", (watermark,)
    )
    db.con.execute("insert into events (id, payload) values (4, 'e4')")
    late = db.connect()
    try:
        late.execute("insert into orders (id, amount, note) values (7, 7.75, 'late')")
        db.con.execute("insert into orders (id, amount, note) values (8, 8, 'after')")
        db.con.execute("update events set payload = 'e1 changed', updated_at = localtimestamp where id = 1")
        run()
        dbt.build()
        _check(db, dbt, {"orders": {3}}, held={"orders": {8}, "events": {1}})
        assert 8 not in dbt.curated("orders"), "a row stamped after the open transaction began was read"
        late.commit()
    finally:
        late.close()

    # 3. the late row, a new column, widened types, more deletes
    db.con.execute("alter table orders add column channel text")
    db.con.execute(
        "alter table orders alter column id type bigint, alter column note type varchar(50), "
        "alter column amount type numeric(18,4)"
    )
    db.con.execute(
        "update orders set note = 'a note longer than ten characters', channel = 'web', updated_at = now() "
        "where id = 2"
    )
    # A widened numeric: the curated column widens too, never rounds 12.3456 to 12.35.
    db.con.execute("update orders set amount = 12.3456, updated_at = now() where id = 4")
    db.con.execute("delete from orders where id = 1")
    db.con.execute("delete from events where id = 2")
    run()
    dbt.build()
    _check(db, dbt, {"orders": {1, 3}, "events": {2}})


TYPES_DDL = """
create table typed (
    id int primary key, small smallint, big bigint, price numeric(10,3), ratio double precision,
    flag boolean, day date, at_local timestamp, at_utc timestamptz, name varchar(20), body text,
    uid uuid, doc jsonb, free numeric, updated_at timestamptz not null default now()
)
"""
TYPES_ROWS = """
insert into typed
select g, (g % 100)::smallint, g * 1000000000::bigint, g / 7.0, g / 3.0, g % 2 = 0,
       date '2026-01-01' + g, timestamp '2026-03-29 01:30:00.000001' + g * interval '1 hour 1 microsecond',
       timestamptz '2026-10-25 00:59:59.999999+00' + g * interval '17 minutes',
       'n' || g, repeat('x', g % 5), md5(g::text)::uuid, jsonb_build_object('g', g), g * 1.000001,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'
from generate_series(1, 500) g
"""


@pytest.mark.spark
def test_parity_same_rows_columns_and_types_on_both_engines(
    pg_db: PgDb, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    pg_db.con.execute(TYPES_DDL)
    pg_db.con.execute(TYPES_ROWS)
    pg_db.con.execute("insert into typed (id) values (1000)")  # nulls everywhere but the key
    landed = {}
    for engine in ("duckdb", "spark"):
        lake = tmp_path / engine
        cfg = write_config(
            pipeline_doc(lake, jdbc_source(pg_db, num_partitions=3), engine), name=f"{engine}.yml"
        )
        report = run_pipeline(cfg, engine=_engine(request, engine, cfg))
        assert report.ok and report.tables[0].rows_landed == 501, report.tables
        files = sorted((lake / "landing" / "pg" / "typed").rglob("*.parquet"))
        schema = pq.read_schema(files[0])
        table = pq.ParquetDataset([str(f) for f in files]).read()
        rows = sorted(
            table.drop_columns(["_run_id", "_ingested_at", "_ingest_date"]).to_pylist(), key=lambda r: r["id"]
        )
        landed[engine] = (schema.remove(schema.get_field_index("_run_id")), rows)
    (duck_schema, duck_rows), (spark_schema, spark_rows) = landed["duckdb"], landed["spark"]
    assert [(f.name, str(f.type)) for f in duck_schema] == [(f.name, str(f.type)) for f in spark_schema]
    assert duck_rows == spark_rows
    # Spot checks against the source: microseconds and instants kept, exact decimals.
    src = pg_db.rows("select at_local, at_utc, price from typed where id = 7")[0]
    row = next(r for r in duck_rows if r["id"] == 7)
    assert (row["at_local"], row["at_utc"], row["price"]) == src
