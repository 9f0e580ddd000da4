"""The commit protocol on each engine: boundaries, orphans, failures, load types, batch dedup."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.config import CsvOptions, parse_config
from ingestion.engines import CsvBatch
from ingestion.engines.duckdb.engine import DuckDBEngine
from ingestion.lake.layout import new_run_id, table_dir
from ingestion.lake.state import StateStore
from ingestion.plan.csv import FileFacts
from ingestion.run.pipeline import run_pipeline

from .helpers import abandon_lease

HEADER = "id,name,updated_at\n"


@pytest.fixture(params=["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])])
def make_engine(request):
    """A factory for the engine under test (one shared Spark session)."""
    if request.param == "duckdb":
        return DuckDBEngine
    spark = request.getfixturevalue("spark")
    from ingestion.config import SparkConfig
    from ingestion.engines.spark.engine import SparkEngine

    return lambda: SparkEngine(SparkConfig(), spark=spark)


@pytest.fixture
def table(tmp_path, monkeypatch):
    """A one-table pipeline over tmp_path/in; `.run()` lands, `.rows()` reads what is landed."""
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()

    class Table:
        def __init__(self) -> None:
            self.lake = lake
            self.inbox = inbox

        def config(self, **table_options):
            return parse_config(
                {
                    "pipeline": "p",
                    "lake": {"root": str(lake)},
                    "sources": [
                        {
                            "name": "s",
                            "kind": "csv",
                            "path": str(inbox),
                            # These tests edit the inbox between runs: files stay where they are.
                            "archive": {"enabled": False},
                            "tables": [
                                {
                                    "name": "t",
                                    "primary_key": ["id"],
                                    "cursor": "updated_at",
                                    "cursor_timezone": "UTC",
                                    **table_options,
                                }
                            ],
                        }
                    ],
                }
            )

        def drop(self, name: str, rows: str) -> None:
            (inbox / name).write_text(HEADER + rows)

        def run(self, engine, **kw):
            options = kw.pop("table_options", {})
            report = run_pipeline(self.config(**options), engine=engine, **kw)
            return report.tables[0]

        def rows(self) -> list[tuple]:
            files = list((lake / "landing/s/t").glob("**/*.parquet"))
            if not files:
                return []
            return duckdb.sql(
                f"select id, name, cast(updated_at as varchar), _run_id from read_parquet({[str(f) for f in files]}) "
                "order by all"
            ).fetchall()

        def state_store(self) -> StateStore:
            return StateStore(str(lake), "p")

        def state(self):
            return self.state_store().read("s", "t")

    return Table()


def test_equal_timestamps_at_the_watermark_are_landed(table, make_engine):
    engine = make_engine()
    table.drop("t_1.csv", "1,a,2026-01-01 10:00:00\n2,b,2026-01-01 12:00:00\n")
    first = table.run(engine)
    assert first.watermark.value == "2026-01-01T12:00:00.000000+00:00"
    # The next drop: a new key stamped exactly at the watermark, key 2 re-delivered at the watermark,
    # a row older than the watermark (landed before: filtered), and a row without a cursor (kept).
    table.drop(
        "t_2.csv", "3,c,2026-01-01 12:00:00\n2,b,2026-01-01 12:00:00\n1,old,2026-01-01 09:00:00\n4,d,\n"
    )
    second = table.run(engine)
    assert (second.status, second.load_type) == ("landed", "incremental")
    assert (second.rows_read, second.rows_filtered, second.rows_landed) == (4, 1, 3)
    latest = {(i, n) for i, n, _, run in table.rows() if run == table.state().committed_runs[-1]}
    assert latest == {(3, "c"), (2, "b"), (4, "d")}
    assert table.state().watermark.value == "2026-01-01T12:00:00.000000+00:00"


def test_lookback_re_reads_the_overlap_window(table, make_engine):
    engine = make_engine()
    table.drop("t_1.csv", "1,a,2026-01-01 12:00:00\n")
    table.run(engine, table_options={"lookback": "2h"})
    table.drop("t_2.csv", "2,late,2026-01-01 10:30:00\n3,too-late,2026-01-01 09:00:00\n")
    out = table.run(engine, table_options={"lookback": "2h"})
    assert (out.rows_landed, out.rows_filtered) == (1, 1)
    assert ("late" in {n for _, n, _, _ in table.rows()}) and (
        "too-late" not in {n for _, n, _, _ in table.rows()}
    )


def test_orphans_of_a_crashed_run_are_removed_before_writing(table, make_engine):
    engine = make_engine()
    table.drop("t_1.csv", "1,a,2026-01-01 10:00:00\n")
    table.run(engine)
    kept = sorted(p.name for p in (table.lake / "landing/s/t").glob("**/*.parquet"))
    # A run that died after publishing: its lease is still in the state (lapsed) and its file is there.
    dead = new_run_id(datetime.now(timezone.utc))
    abandon_lease(table.state_store(), "s", "t", dead)
    orphan = next((table.lake / "landing/s/t").glob("_ingest_date=*")) / f"part-{dead}-0.parquet"
    orphan.write_bytes(b"half a file from a run that died")
    stray = (
        next((table.lake / "landing/s/t").glob("_ingest_date=*")) / "part-19990101T000000000000Z-x-0.parquet"
    )
    stray.write_bytes(b"no run of this table ever held the lease under this id")
    table.drop("t_2.csv", "2,b,2026-01-02 10:00:00\n")
    out = table.run(engine)
    assert (out.status, out.orphans_removed) == ("landed", 1)
    assert not orphan.exists() and table.state().abandoned_runs == ()
    # Orphans are known by name (the dead lease), never by listing: a file no run was known to write stays.
    assert stray.exists()
    assert set(kept) <= {p.name for p in (table.lake / "landing/s/t").glob("**/*.parquet")}


def test_a_failure_after_writing_commits_nothing_and_a_rerun_lands(table, make_engine, monkeypatch):
    engine = make_engine()
    table.drop("t_1.csv", "1,a,2026-01-01 10:00:00\n")
    monkeypatch.setenv("TIDEMARK_FAULTS", "batch_written=raise")
    out = table.run(engine)
    assert out.status == "failed" and "InjectedFault" in out.error
    assert table.rows() == [] and table.state().watermark is None and table.state().lease is None
    monkeypatch.delenv("TIDEMARK_FAULTS")
    assert table.run(engine).status == "landed"
    assert [r[:2] for r in table.rows()] == [(1, "a")]


def test_pause_lands_but_keeps_the_watermark_and_ledger(table, make_engine):
    engine = make_engine()
    table.drop("t_1.csv", "1,a,2026-01-01 10:00:00\n")
    table.run(engine)
    before = table.state()
    table.drop("t_2.csv", "2,b,2026-01-02 10:00:00\n")
    paused = table.run(engine, pause=True)
    assert paused.status == "landed"
    after = table.state()
    assert (after.watermark, after.files) == (before.watermark, before.files)
    assert len(after.committed_runs) == 2  # the paused run's files count: they are not orphans
    assert table.run(engine).status == "landed"  # the same range again
    assert [r[:2] for r in table.rows()].count((2, "b")) == 2


def test_full_relands_everything_and_resets_the_watermark(table, make_engine):
    engine = make_engine()
    table.drop("t_1.csv", "1,a,2026-01-01 10:00:00\n")
    table.drop("t_2.csv", "2,b,2026-01-05 10:00:00\n")
    table.run(engine)
    (table.inbox / "t_2.csv").unlink()
    out = table.run(engine, load_type="full")
    assert (out.load_type, out.files, out.rows_landed) == ("full", 1, 1)
    assert table.state().watermark.value == "2026-01-01T10:00:00.000000+00:00"


def test_incremental_without_state_fails_the_table(table, make_engine):
    table.drop("t_1.csv", "1,a,2026-01-01 10:00:00\n")
    out = table.run(make_engine(), load_type="incremental")
    assert out.status == "failed" and "no committed state" in out.error
    assert table.rows() == []


def test_a_file_whose_cursor_type_changed_is_refused_and_named(table, make_engine):
    # Issue 4: an incompatible type change refuses the file (to unprocessed/) with the file and column
    # named, instead of failing the whole table; the watermark stays where it was.
    engine = make_engine()
    table.drop("t_1.csv", "1,a,2026-01-01 10:00:00\n")
    first = table.run(engine)
    table.drop("t_2.csv", "2,b,yesterday\n")
    out = table.run(engine)
    assert out.status == "landed" and out.rows_landed == 0
    assert list(out.files_refused) == ["t_2.csv"]
    assert "column updated_at is timestamp in this table" in out.files_refused["t_2.csv"]
    assert out.watermark == first.watermark
    state = StateStore(str(table.lake), "p").read("s", "t")
    assert state.files["t_2.csv"].status == "rejected"


# --- batch dedup: the engines against a reference in plain Python -------------------------------------

rows_strategy = st.lists(
    st.tuples(
        st.integers(1, 4), st.one_of(st.none(), st.integers(0, 3)), st.sampled_from(["", "x", "y", "zz"])
    ),
    min_size=1,
    max_size=25,
)


def reference_dedup(rows: list[tuple[int, int | None, str]]) -> set[tuple]:
    """Latest cursor (nulls last), then the greatest other column (nulls last): one row per key."""
    best: dict[int, tuple] = {}
    for key, cur, val in rows:
        v = val or None
        rank = (cur is not None, cur or 0, v is not None, v or "")
        if key not in best or rank > best[key][0]:
            best[key] = (rank, (key, cur, v))
    return {r for _, r in best.values()}


def land_rows(engine, tmp: Path, rows) -> set[tuple]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "c", "v"])
    w.writerows((k, "" if c is None else c, v) for k, c, v in rows)
    src = tmp / "in.csv"
    src.write_text(buf.getvalue())
    target = tmp / "lake" / "landing" / "s" / "t"
    run_id = f"20260101T000000000000Z-{abs(hash(buf.getvalue())) % 16**6:06x}"
    out = engine.land_csv(
        CsvBatch(
            source="s",
            table="t",
            files=(FileFacts("in.csv", str(src), 1, 1),),
            options=CsvOptions(),
            primary_key=("id",),
            cursor="c",
            run_id=run_id,
            ingested_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
            target=str(target),
            lake_root=str(tmp / "lake"),
        )
    )
    landed = duckdb.sql(f"select * from read_parquet('{target}/**/part-{run_id}-*.parquet')")
    # A column with no value in the batch (all null) is not written (issue 15): it reads as null.
    got = [
        (r["id"], r.get("c"), r.get("v"))
        for r in (dict(zip(landed.columns, t, strict=True)) for t in landed.fetchall())
    ]
    assert out.rows_landed == len(got) and out.rows_read == len(rows)
    return set(got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy)
def test_duckdb_batch_dedup_matches_the_reference(tmp_path_factory, rows):
    engine = DuckDBEngine()
    try:
        assert land_rows(engine, tmp_path_factory.mktemp("dedup"), rows) == reference_dedup(rows)
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.spark
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy)
def test_spark_batch_dedup_matches_the_reference(tmp_path_factory, spark, rows):
    from ingestion.config import SparkConfig
    from ingestion.engines.spark.engine import SparkEngine

    engine = SparkEngine(SparkConfig(), spark=spark)
    assert land_rows(engine, tmp_path_factory.mktemp("dedup"), rows) == reference_dedup(rows)


def test_table_dir_layout():
    assert table_dir("/lake", "s", "t") == "/lake/landing/s/t"
