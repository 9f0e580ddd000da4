"""A discovered PostgreSQL table, scaffolded once, follows its source through schema changes and deletes
with no edit of any model: a new column, a dropped one, an emptied table; curated table and view are
compared with the source by key and every column (the oracle pattern)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from ingestion.dbt_gen import generate_source_files, scaffold
from ingestion.run.pipeline import run_pipeline

from .dbt_support import FastDbt, pg_database, postgres_env, read_duckdb, read_postgres
from .helpers import DBT
from .pg_fixtures import PgDb, jdbc_source, pipeline_doc
from .test_dbt_scaffold import copy_project

pytestmark = pytest.mark.slow
__all__ = ["pg_database"]


def _source(db: PgDb) -> dict[int, dict[str, Any]]:
    cur = db.con.execute("select * from orders")
    names = [d.name for d in cur.description]
    return {r[names.index("id")]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_a_discovered_postgres_table_is_scaffolded_and_follows_schema_changes_and_deletes(
    kind: str, pg_db: PgDb, tmp_path: Path, write_config, monkeypatch, caplog, request: pytest.FixtureRequest
) -> None:
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    dbname = request.getfixturevalue("pg_database") if kind == "postgres" else None
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    db = pg_db
    # The key is not the first column: generated models keep the source's column order.
    db.con.execute(
        "create table orders (note text, id int primary key, amount numeric(12,2), "
        "updated_at timestamptz not null default now())"
    )
    db.con.execute(
        "insert into orders (note, id, amount) select 'n' || g, g, g * 1.25 from generate_series(1, 3) g"
    )
    lake = tmp_path / "lake"
    cfg = write_config(pipeline_doc(lake, jdbc_source(db, detect_deletes=True)))  # tables: "*" (discovered)

    def run() -> None:
        report = run_pipeline(cfg)
        assert report.ok, [(t.name, t.error) for t in report.tables]

    run()
    project = copy_project(tmp_path / "project")
    files, specs = generate_source_files(cfg, project)
    for f in files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        f.path.write_text(f.text)
    sources_text = next(f.text for f in files if f.path.name == "_pg__sources.yml")
    db.con.execute("create table keyless (v text)")  # discovered too: no key, no CDC model
    run()
    files, specs = generate_source_files(cfg, project)
    assert {s.table for s in specs} == {"orders", "keyless"}
    written = scaffold(specs, sources_text, project)
    assert {s for t, p, s in written if t == "pg.orders"} == {"written"}, written
    assert [s for t, p, s in written if t == "pg.keyless"] == ["no primary key"]
    staging = (project / "models/staging/pg/stg_pg__orders.sql").read_text()
    order = [staging.index(f"                '{c}',\n") for c in ("note", "id", "amount", "updated_at")]
    assert order == sorted(order), staging
    env = postgres_env(dbname) if dbname else None
    dbt = FastDbt(tmp_path, lake, tmp_path / "wh.duckdb", env, project=project)

    def rows(relation: str) -> list[dict[str, Any]]:
        if dbname:
            return read_postgres(dbname, f"tidemark.{relation}")
        return read_duckdb(tmp_path / "wh.duckdb", f"main.{relation}")

    def load() -> None:
        if not dbname:
            return  # DuckDB reads the lake directly
        from ingestion.warehouse.loader import PostgresLoader, load_warehouse

        loader = PostgresLoader(f"host=127.0.0.1 user=postgres dbname={dbname}")
        try:
            load_warehouse(cfg, loader, [("pg", "orders")])
        finally:
            loader.close()

    def check(gone: set[int], dropped: dict[str, set[int]] | None = None) -> None:
        """Curated = source by key and every column; `gone` keys deleted; dropped columns NULL for keys
        whose current version landed after the drop."""
        load()
        dbt("build", "--select", "stg_pg__orders+")
        truth = _source(db)
        got = {r["id"]: r for r in rows("orders")}
        assert {k for k, r in got.items() if not r["_is_deleted"]} == set(truth)
        assert {k for k, r in got.items() if r["_is_deleted"]} == gone
        for key, row in truth.items():
            for col, want in row.items():
                assert got[key][col] == want, (key, col, got[key][col], want)
        for col, keys in (dropped or {}).items():
            assert all(got[k][col] is None for k in keys), (col, keys)
        view = {r["id"]: r for r in rows("vw_orders")}
        assert set(view) == set(truth)
        for key, row in truth.items():
            assert {c: view[key][c] for c in row} == row, key

    check(set())

    # A new column, an update, a delete: no model is edited.
    db.con.execute("alter table orders add column channel text")
    db.con.execute("update orders set channel = 'web', updated_at = now() where id = 1")
    db.con.execute("delete from orders where id = 2")
    run()
    check({2})

    # A column dropped at the source stays in the curated table, NULL in versions landed after the drop.
    db.con.execute("alter table orders drop column note")
    db.con.execute("update orders set amount = 9.99, updated_at = now() where id = 3")
    caplog.clear()
    run()
    assert any("columns gone from the source" in r.getMessage() for r in caplog.records), caplog.text
    check({2}, {"note": {3}})

    # A renamed column is a drop and an add: the old name keeps its history, NULL in versions landed
    # after the rename; the new name arrives with its values. Still no model edit.
    db.con.execute("alter table orders rename column channel to sales_channel")
    db.con.execute("update orders set updated_at = now() where id = 1")
    run()
    check({2}, {"note": {1, 3}, "channel": {1}})

    # Emptied at the source: every key is deleted in the curated table, the view is empty.
    db.con.execute("delete from orders")
    run()
    check({1, 2, 3})
