"""Empty reads and emptied tables on both engines: a read of zero rows is `up_to_date`, never a failure,
and emptying a table (with or without a cursor) tombstones every key it had."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from ingestion.run.pipeline import run_pipeline
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc
from tests.test_jdbc_oracle import _engine

pytestmark = pytest.mark.slow


def _live_keys(lake: Path, table: str) -> set[int]:
    """Keys whose latest landed row (by `_ingested_at`, `_run_id`) is not a tombstone."""
    files = list((lake / "landing" / "pg" / table).rglob("*.parquet"))
    if not files:
        return set()
    rows = duckdb.sql(
        "select id from read_parquet($files, union_by_name = true) "
        "qualify row_number() over (partition by id order by _ingested_at desc, _run_id desc, _op) = 1 "
        "and _op <> 'd'",
        params={"files": [str(f) for f in files]},
    ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def test_empty_reads_are_up_to_date_and_emptied_tables_tombstone_every_key(
    engine: str, pg_db: PgDb, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    db = pg_db
    # No cursor (landed whole each run), a cursor, and a table empty from the start.
    db.con.execute("create table plain (id int primary key, v text)")
    db.con.execute("create table stamped (id int primary key, v text, updated_at timestamptz default now())")
    db.con.execute("create table nothing (id int primary key, v text, updated_at timestamptz default now())")
    db.con.execute("insert into plain select g, 'p' || g from generate_series(1, 3) g")
    db.con.execute("insert into stamped (id, v) select g, 's' || g from generate_series(1, 3) g")
    lake = tmp_path / "lake"
    cfg = write_config(pipeline_doc(lake, jdbc_source(db, detect_deletes=True), engine))
    eng = _engine(request, engine, cfg)

    def run() -> dict[str, Any]:
        report = run_pipeline(cfg, engine=eng)
        assert report.ok, [(t.name, t.status, t.error) for t in report.tables]
        return {t.table: t for t in report.tables}

    first = run()
    assert first["nothing"].status == "up_to_date", first["nothing"]
    assert _live_keys(lake, "plain") == {1, 2, 3}
    assert _live_keys(lake, "stamped") == {1, 2, 3}

    # Nothing changed: the empty table still reads nothing (rows at the watermark are re-read: ties).
    assert run()["nothing"].status == "up_to_date"

    # Emptied at the source: every key is tombstoned, on the table without a cursor too.
    db.con.execute("delete from plain")
    db.con.execute("delete from stamped")
    run()
    assert _live_keys(lake, "plain") == set()
    assert _live_keys(lake, "stamped") == set()

    # A later quiescent run reads zero rows and lands nothing new: the keys stay deleted.
    last = run()
    assert all(t.status == "up_to_date" for t in last.values()), last
    assert _live_keys(lake, "plain") == set() and _live_keys(lake, "stamped") == set()
