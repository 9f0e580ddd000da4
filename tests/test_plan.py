"""Planning and the next state: pure functions, no engine."""

from __future__ import annotations

from datetime import datetime, timezone

from hypothesis import given
from hypothesis import strategies as st

from ingestion.plan import LandedBatch, max_watermark, next_state, plan_csv_table
from ingestion.sources.csv import FileFacts
from ingestion.state import FileEntry, TableState, Watermark

NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)


def f(rel: str, size: int = 10, mtime: int = 1) -> FileFacts:
    return FileFacts(rel, f"/in/{rel}", size, mtime)


def test_first_run_is_full_and_lands_everything():
    plan = plan_csv_table("s", "t", None, [f("a.csv"), f("b.csv")])
    assert plan.load_type == "full"
    assert [x.relpath for x in plan.files] == ["a.csv", "b.csv"]


def test_only_new_or_changed_files_are_landed():
    state = TableState(
        "p", "s", "t", version=1, files={"a.csv": FileEntry(10, 1, "r1"), "b.csv": FileEntry(10, 1, "r1")}
    )
    plan = plan_csv_table("s", "t", state, [f("a.csv"), f("b.csv", size=11), f("c.csv")])
    assert plan.load_type == "incremental"
    assert [x.relpath for x in plan.files] == ["b.csv", "c.csv"]
    assert plan.already_landed == ("a.csv",)
    assert plan.changed == ("b.csv",)


def test_next_state_advances_watermark_ledger_and_version():
    state = TableState(
        "p",
        "s",
        "t",
        version=3,
        watermark=Watermark("2026-01-01T00:00:00.000000", "timestamp"),
        committed_runs=("r1",),
        files={"a.csv": FileEntry(10, 1, "r1")},
        columns={"id": "bigint"},
    )
    plan = plan_csv_table("s", "t", state, [f("a.csv"), f("b.csv")])
    batch = LandedBatch(
        5,
        4,
        Watermark("2026-01-02T00:00:00.000000", "timestamp"),
        {"id": "bigint", "x": "string"},
        ("part.parquet",),
    )
    new = next_state("p", state, plan, batch, "r2", NOW)
    assert new.version == 4
    assert new.watermark == Watermark("2026-01-02T00:00:00.000000", "timestamp")
    assert new.committed_runs == ("r1", "r2")
    assert new.files["b.csv"] == FileEntry(10, 1, "r2") and new.files["a.csv"].run_id == "r1"
    assert new.columns == {"id": "bigint", "x": "string"}
    assert batch.rows_deduplicated == 1
    assert TableState.from_json(new.to_json()) == new


def test_an_older_batch_never_moves_the_watermark_back():
    old = Watermark("2026-01-05T00:00:00.000000", "timestamp")
    assert max_watermark(old, Watermark("2026-01-01T00:00:00.000000", "timestamp")) == old
    assert max_watermark(old, None) == old
    assert max_watermark(Watermark("9", "bigint"), Watermark("10", "bigint")).value == "10"


@given(st.lists(st.integers(min_value=-(10**12), max_value=10**12), min_size=1))
def test_max_watermark_is_the_max_in_any_order(values):
    wm = None
    for v in values:
        wm = max_watermark(wm, Watermark(str(v), "bigint"))
    assert wm == Watermark(str(max(values)), "bigint")
