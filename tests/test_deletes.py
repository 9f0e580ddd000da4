"""Delete detection's live-keys snapshot, and the Spark engine landing the same tombstones as DuckDB.

A run reads the newest committed snapshot plus the files of later runs, never the whole history: the
first run's files are made unreadable and every later answer is still right (delete → re-insert →
delete, a crash between the snapshot and the commit, a full reload), checked against an oracle that
reads the whole history and against the source's key set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.engines import TombstoneBatch
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import new_run_id, table_dir
from ingestion.lake.state import StateStore
from ingestion.plan.deletes import plan_key_reads
from ingestion.plan.jdbc import plan_jdbc_table
from ingestion.run.jdbc_job import discover_tables
from ingestion.run.pipeline import run_pipeline
from tests.conftest import REPO
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc
from tests.test_jdbc_oracle import _engine

# ---------------------------------------------------------------- which snapshot, which runs (pure)


def test_no_snapshot_reads_every_committed_run_and_this_one() -> None:
    reads = plan_key_reads(("r1", "r2"), set(), "r3")
    assert reads == type(reads)(None, frozenset({"r1", "r2", "r3"}), ())


def test_the_latest_committed_snapshot_is_trusted_in_commit_order_not_run_id_order() -> None:
    # r0 started first but committed last (it waited for the lease): its snapshot is the newest.
    reads = plan_key_reads(("r1", "r2", "r0", "r4"), {"r1", "r0", "r2"}, "r5")
    assert reads.snapshot == "r0"
    assert reads.runs == {"r4", "r5"}
    assert reads.stale == ("r1", "r2")


def test_a_crashed_runs_snapshot_is_ignored_and_removed() -> None:
    reads = plan_key_reads(("r1", "r2"), {"r1", "r3"}, "r4")  # r3 wrote one, never committed
    assert reads.snapshot == "r1" and reads.runs == {"r2", "r4"} and reads.stale == ("r3",)
    assert plan_key_reads((), {"r3"}, "r4") == type(reads)(None, frozenset({"r4"}), ("r3",))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),  # the run commits (else it crashes before its commit)
            st.booleans(),  # it writes a snapshot
            st.dictionaries(st.integers(0, 5), st.integers(0, 50), max_size=4),  # key → version it lands
        ),
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_snapshot_plus_later_runs_equals_the_whole_history(runs: list[Any], rnd: Any) -> None:
    """Latest version per key over what `plan_key_reads` picks == over every committed run and this one."""
    names = [f"r{i:02d}" for i in range(len(runs))]
    rnd.shuffle(names)  # run ids need not sort in commit order
    committed: list[str] = []
    landed: dict[str, dict[int, int]] = {}
    snapshots: dict[str, dict[int, int]] = {}
    for name, (commits, writes, rows) in zip(names, runs, strict=True):
        landed[name] = rows
        reads = plan_key_reads(tuple(committed), set(snapshots), name)
        seen = dict(snapshots[reads.snapshot]) if reads.snapshot else {}
        truth: dict[int, int] = {}
        for files, out in (
            ([landed[r] for r in reads.runs], seen),
            ([landed[r] for r in [*committed, name]], truth),
        ):
            for f in files:
                for k, v in f.items():
                    out[k] = max(out.get(k, v), v)
        assert seen == truth
        for stale in reads.stale:
            del snapshots[stale]
        if writes:
            snapshots[name] = seen
        if commits:
            committed.append(name)


# ---------------------------------------------------------------- the snapshot through real runs


def _files(lake: Path, table: str) -> list[Path]:
    return sorted((lake / "landing" / "pg" / table).rglob("*.parquet"))


def _live_keys(files: list[Path], key: str = "id") -> set[Any]:
    """The oracle: keys whose latest landed version over the given files is not a tombstone."""
    rows = duckdb.sql(
        f"select {key} from read_parquet($files, union_by_name = true) qualify row_number() over "
        f"(partition by {key} order by updated_at desc nulls last, _ingested_at desc, _run_id desc) = 1 "
        "and _op <> 'd'",
        params={"files": [str(f) for f in files]},
    ).fetchall()
    return {r[0] for r in rows}


def _tombstones(files: list[Path]) -> list[tuple[Any, str]]:
    rows = duckdb.sql(
        "select id, _run_id from read_parquet($files, union_by_name = true) where _op = 'd' order by all",
        params={"files": [str(f) for f in files]},
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _snapshots(lake: Path, table: str) -> set[str]:
    return {p.name for p in (lake / "_keys" / "pg" / table).glob("*") if p.is_dir()}


@pytest.mark.slow
def test_later_runs_read_only_the_snapshot_and_newer_runs_and_stay_right(
    pg_db: PgDb, tmp_path: Path, write_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = pg_db
    db.con.execute("create table t (id int primary key, v text, updated_at timestamptz not null)")
    db.con.execute("insert into t select g, 'v' || g, clock_timestamp() from generate_series(1, 4) g")
    lake = tmp_path / "lake"
    cfg = write_config(pipeline_doc(lake, jdbc_source(db, detect_deletes=True)))
    read: list[list[str]] = []
    real_read = lakefs.read_parquet_columns

    def recording_read(paths: list[str], columns: list[str]) -> Any:
        read.append(list(paths))
        return real_read(paths, columns)

    monkeypatch.setattr(lakefs, "read_parquet_columns", recording_read)
    history = tmp_path / "history"  # the real bytes of the files made unreadable in the lake

    def run(**kw: Any) -> Any:
        report = run_pipeline(cfg, **kw)
        assert report.ok, [(t.name, t.status, t.error) for t in report.tables]
        return report

    def everything() -> list[Path]:
        """Every landed file, the unreadable ones' real bytes instead of them."""
        in_lake = [f for f in _files(lake, "t") if not (history / f.name).exists()]
        return [*in_lake, *history.glob("*.parquet")]

    def tombstones() -> list[tuple[Any, str]]:
        return _tombstones(everything())

    def check() -> None:
        assert _live_keys(everything()) == {r[0] for r in db.rows("select id from t")}

    first = run()
    assert _snapshots(lake, "t") == {first.run_id}
    db.con.execute("delete from t where id = 2")
    second = run()
    assert tombstones() == [(2, second.run_id)]
    check()

    # The first run's files become unreadable: reading the whole history would fail from now on.
    history.mkdir()
    for f in _files(lake, "t"):
        if f.name.startswith(f"part-{first.run_id}-"):
            shutil.copy(f, history / f.name)
            f.write_bytes(b"not parquet any more")
    assert list(history.glob("*.parquet"))

    read.clear()
    run()  # nothing changed: no new tombstone
    assert tombstones() == [(2, second.run_id)]
    assert any(f"/_keys/pg/t/{second.run_id}/" in p for p in read[-1]), read
    assert first.run_id not in _snapshots(lake, "t")  # superseded by the second's, removed
    check()

    # Re-inserted, then deleted again: a second tombstone for the same key.
    db.con.execute("insert into t values (2, 'back', clock_timestamp())")
    run()
    check()
    db.con.execute("delete from t where id = 2")
    again = run()
    assert tombstones() == sorted([(2, second.run_id), (2, again.run_id)])
    check()

    # A run that fails before its commit removes its snapshot with its files.
    db.con.execute("delete from t where id = 3")
    before = _snapshots(lake, "t")
    monkeypatch.setenv("TIDEMARK_FAULTS", "batch_written@t=raise")
    failed = run_pipeline(cfg)
    monkeypatch.delenv("TIDEMARK_FAULTS")
    assert failed.tables[0].status == "failed" and failed.tables[0].failed_step == "extract"
    assert failed.run_id not in _snapshots(lake, "t") and again.run_id in _snapshots(lake, "t")

    # A process killed between writing the snapshot and the commit leaves it behind; that snapshot says
    # 3 is deleted, but its run never committed, so the next run must not trust it and tombstones 3.
    killed = subprocess.run(
        [sys.executable, "-m", "ingestion", "run", "--config", str(tmp_path / "ingestion.yml")],
        cwd=REPO,
        env={**os.environ, "TIDEMARK_FAULTS": "batch_written@t=kill"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode != 0
    (crashed,) = _snapshots(lake, "t") - before
    after_crash = run()
    assert crashed not in _snapshots(lake, "t")
    assert (3, after_crash.run_id) in tombstones()
    assert not any(r == crashed for _, r in tombstones())
    check()

    # A full reload re-lands what the source has; re-inserted 3 is live again, then 1 goes.
    db.con.execute("insert into t values (3, 'three', clock_timestamp())")
    run(load_type="full")
    check()
    db.con.execute("delete from t where id = 1")
    last = run()
    assert (1, last.run_id) in tombstones()
    check()
    assert all(not any(p.endswith(h.name) for h in history.glob("*")) for paths in read for p in paths)


@pytest.mark.slow
def test_a_snapshot_without_the_current_key_or_cursor_columns_is_not_trusted(
    pg_db: PgDb, tmp_path: Path, write_config
) -> None:
    db = pg_db
    db.con.execute("create table t (id int primary key, v text, updated_at timestamptz not null)")
    db.con.execute("insert into t select g, 'v' || g, clock_timestamp() from generate_series(1, 3) g")
    lake = tmp_path / "lake"
    cfg = write_config(pipeline_doc(lake, jdbc_source(db, detect_deletes=True)))
    first = run_pipeline(cfg)
    assert first.ok
    # As if written under another config (no `updated_at` cursor), and claiming every key deleted.
    (snap,) = (lake / "_keys" / "pg" / "t" / first.run_id).glob("*.parquet")
    old = pq.read_table(snap)
    pq.write_table(
        old.drop_columns(["updated_at"]).set_column(1, "_op", pa.array(["d"] * old.num_rows)), snap
    )
    db.con.execute("delete from t where id = 1")
    second = run_pipeline(cfg)
    assert second.ok, [t.error for t in second.tables]
    assert _tombstones(_files(lake, "t")) == [(1, second.run_id)]
    assert _snapshots(lake, "t") == {second.run_id}


# ---------------------------------------------------------------- Spark lands DuckDB's tombstones


@pytest.mark.slow
@pytest.mark.spark
def test_spark_engine_lands_the_same_tombstones_and_snapshot_as_duckdb(
    pg_db: PgDb, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    db = pg_db
    # Every landed type, a timestamptz cursor; and a composite key with a zoned naive-timestamp cursor.
    db.con.execute(
        "create table wide (id bigint primary key, name text, amount numeric(12,2), ratio float8, "
        "born date, flag boolean, seen timestamp, updated_at timestamptz not null)"
    )
    db.con.execute(
        "insert into wide select g, 'n' || g, g * 1.25, g / 3.0, date '2020-01-01' + g, g % 2 = 0, "
        "timestamp '2025-06-01 12:00' + g * interval '1 hour', "
        "case when g % 2 = 0 then timestamptz '2026-03-01 10:00:00.123456+00' "
        "else timestamptz '2026-01-01 10:00:00+00' end from generate_series(1, 8) g"
    )
    db.con.execute(
        "create table pairs (a int, b text, v int, updated_at timestamp not null, primary key (a, b))"
    )
    db.con.execute(
        "insert into pairs select g % 3, 'k' || g, g, timestamp '2026-01-01 08:00' + g * interval '20 days' "
        "from generate_series(1, 6) g"
    )
    lake = tmp_path / "duck"
    source = jdbc_source(
        db,
        detect_deletes=True,
        tables=[{"name": "wide"}, {"name": "pairs", "cursor_timezone": "Europe/Paris"}],
    )
    cfg = write_config(pipeline_doc(lake, source))
    first = run_pipeline(cfg)
    assert first.ok, [(t.name, t.error) for t in first.tables]
    db.con.execute("delete from wide where id in (2, 3, 7)")
    db.con.execute("delete from pairs where v in (1, 5)")
    spark_lake = tmp_path / "spark"
    shutil.copytree(lake, spark_lake)  # the same landed files and the DuckDB-written snapshot

    engine = _engine(request, "spark", cfg)
    from ingestion.engines.duckdb.tombstones import land_tombstones

    jobs, failed = discover_tables(cfg)
    assert not failed
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    run_id = new_run_id(now)
    # A horizon between the rows' cursors: the tombstone cursor is the row's where it is later.
    horizon = datetime(2026, 2, 1, tzinfo=UTC)
    store = StateStore(str(lake), cfg.pipeline)
    for job in sorted(jobs, key=lambda j: j.table):
        state = store.read(job.source, job.table)
        assert state is not None
        batch = TombstoneBatch(
            table=job.jdbc_table,
            connection=job.connection,
            plan=plan_jdbc_table(job.jdbc_table, state, horizon),
            run_id=run_id,
            ingested_at=now,
            target=table_dir(str(lake), job.source, job.table),
            lake_root=str(lake),
            has_landed=True,
            committed_runs=state.committed_runs,
        )
        other = replace(
            batch, target=table_dir(str(spark_lake), job.source, job.table), lake_root=str(spark_lake)
        )
        want = {"wide": 3, "pairs": 2}[job.table]
        assert land_tombstones(batch) == want
        assert engine.land_tombstones(other) == want

        name = f"_ingest_date=2026-11-30/part-{run_id}-900000.parquet"
        duck = pq.read_table(Path(batch.target, name))
        spark = pq.read_table(Path(other.target, name))
        # Names and types (nullability aside, as in test_parity: Spark marks some columns required).
        assert [(f.name, f.type) for f in spark.schema] == [(f.name, f.type) for f in duck.schema]
        keys = [(k, "ascending") for k in job.jdbc_table.primary_key]
        assert spark.sort_by(keys).to_pylist() == duck.sort_by(keys).to_pylist()
        if job.table == "wide":
            rows = {r["id"]: r for r in duck.to_pylist()}
            assert set(rows) == {2, 3, 7} and rows[2]["name"] is None and rows[2]["_op"] == "d"
            assert rows[2]["updated_at"] == datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)  # row's own
            assert rows[3]["updated_at"] == horizon  # the horizon: later than the row's
        else:
            # v=1's row (01-21) is older than the horizon, 2026-02-01T00:00Z = 01:00 wall-clock in Paris;
            # v=5's (04-11) is later.
            assert {r["updated_at"] for r in duck.to_pylist()} == {
                datetime(2026, 2, 1, 1),
                datetime(2026, 4, 11, 8),
            }

        snap = f"_keys/pg/{job.table}/{run_id}"
        d = pq.read_table(lakefs.glob(str(lake / snap), "*.parquet"))
        s = pq.read_table(lakefs.glob(str(spark_lake / snap), "*.parquet"))
        assert s.sort_by(keys).to_pylist() == d.sort_by(keys).to_pylist()
        assert [(f.name, f.type) for f in s.schema] == [(f.name, f.type) for f in d.schema]
