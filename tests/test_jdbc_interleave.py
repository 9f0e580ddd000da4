"""Source changes interleaved with a run's reads: between the row read and the key-set read of delete
detection (checkpoint `rows_landed`) the source deletes rows the run just read, updates and inserts others.
After a quiescent run the curated tables equal the source by key and every column, on both engines, for
a table with a cursor and one landed whole (no cursor)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.run.pipeline import run_pipeline
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc
from tests.test_jdbc_oracle import TinyDbt, _check, _engine

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def test_keys_deleted_while_a_run_reads_them_end_deleted(
    engine: str,
    pg_db: PgDb,
    tmp_path: Path,
    write_config,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """A property: hypothesis draws which rows the run reads, which of them the source deletes under it,
    which others it updates and which key it inserts (and shrinks a failing draw to a small one)."""
    examples = iter(range(1000))

    @settings(
        max_examples=4 if engine == "duckdb" else 2,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.randoms(use_true_random=False))
    def check(rng: random.Random) -> None:
        interleaved_run(
            rng, engine, pg_db, tmp_path / f"example-{next(examples)}", write_config, monkeypatch, request
        )

    check()


def interleaved_run(
    rng: random.Random,
    engine: str,
    pg_db: PgDb,
    tmp_path: Path,
    write_config,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    tmp_path.mkdir(parents=True)
    for table in ("orders", "events"):
        pg_db.con.execute(f"drop table if exists {table}")
    db = pg_db
    for table in ("orders", "events"):
        db.con.execute(
            f"create table {table} (id int primary key, v text, updated_at timestamptz not null default now())"
        )
        db.con.execute(f"insert into {table} (id, v) select g, 'v' || g from generate_series(1, 12) g")
    lake = tmp_path / "lake"
    source = jdbc_source(
        db, detect_deletes=True, tables=[{"name": "orders"}, {"name": "events", "full_load": True}]
    )
    cfg = write_config(pipeline_doc(lake, source, engine))
    eng = _engine(request, engine, cfg)
    dbt = TinyDbt(tmp_path, lake)
    armed: dict[str, list[str]] = {}

    def hook(point: str, table: str | None = None) -> None:
        """At the checkpoint, the source changes under the run: its own connection, committed at once."""
        if point != "rows_landed" or table not in armed:
            return
        con = db.connect(autocommit=True)
        try:
            for sql in armed.pop(table):
                con.execute(sql)
        finally:
            con.close()

    monkeypatch.setattr("ingestion.run.jdbc_job.checkpoint", hook)

    def run() -> None:
        report = run_pipeline(cfg, engine=eng)
        assert report.ok, [(t.name, t.error) for t in report.tables]

    run()
    # Rows the next run reads (orders: changed since the watermark; events: all of them).
    touched = rng.sample(range(1, 13), 6)
    db.con.execute(
        f"update orders set v = 'read', updated_at = now() where id in ({', '.join(map(str, touched))})"
    )
    deleted: dict[str, set[int]] = {}
    for table, candidates in (("orders", touched), ("events", list(range(1, 13)))):
        gone = set(rng.sample(candidates, 3))
        others = [k for k in range(1, 13) if k not in gone]
        changed = rng.sample(others, 2)
        new = 100 + rng.randrange(50)
        armed[table] = [
            f"delete from {table} where id in ({', '.join(map(str, sorted(gone)))})",
            f"update {table} set v = 'later', updated_at = now() where id in ({', '.join(map(str, changed))})",
            f"insert into {table} (id, v) values ({new}, 'inserted')",
        ]
        deleted[table] = gone
    run()
    assert not armed, "the checkpoint was not reached"
    run()  # quiescent: nothing changes at the source any more
    dbt.build()
    _check(db, dbt, deleted)
