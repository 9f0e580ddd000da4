"""Planning and the next state: pure functions, no engine."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.errors import ConfigError
from ingestion.lake.model import FileEntry, TableState, Watermark
from ingestion.plan.csv import (
    FileFacts,
    LandedBatch,
    NoState,
    canonical_watermark,
    lower_bound,
    max_watermark,
    next_state,
    parse_lookback,
    plan_csv_table,
)

NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)
WM = Watermark("2026-01-01T10:00:00.000000+00:00", "timestamp", "UTC")


def f(rel: str, size: int = 10, mtime: int = 1) -> FileFacts:
    return FileFacts(rel, f"/in/{rel}", size, mtime)


def landed_state(**kw) -> TableState:
    base = dict(
        version=3,
        watermark=WM,
        committed_runs=("r1",),
        files={"a.csv": FileEntry(10, 1, "r1")},
        columns={"id": "bigint"},
    )
    return TableState("p", "s", "t", **{**base, **kw})


def test_first_run_is_full_and_lands_everything():
    plan = plan_csv_table("s", "t", None, [f("a.csv"), f("b.csv")])
    assert plan.load_type == "full" and plan.lower_bound is None
    assert [x.relpath for x in plan.files] == ["a.csv", "b.csv"]


def test_a_document_holding_only_a_lease_is_no_state():
    assert plan_csv_table("s", "t", TableState("p", "s", "t", version=2), [f("a.csv")]).load_type == "full"


def test_incremental_lands_new_and_changed_files_from_the_watermark():
    state = landed_state(files={"a.csv": FileEntry(10, 1, "r1"), "b.csv": FileEntry(10, 1, "r1")})
    plan = plan_csv_table("s", "t", state, [f("a.csv"), f("b.csv", size=11), f("c.csv")])
    assert plan.load_type == "incremental"
    assert [x.relpath for x in plan.files] == ["b.csv", "c.csv"]
    assert plan.already_landed == ("a.csv",)
    assert plan.changed == ("b.csv",)
    assert plan.lower_bound == Watermark("2026-01-01T10:00:00.000000", "timestamp", "UTC")


def test_full_relands_every_file_without_a_bound():
    plan = plan_csv_table("s", "t", landed_state(), [f("a.csv")], load_type="full")
    assert plan.load_type == "full" and [x.relpath for x in plan.files] == ["a.csv"]
    assert plan.lower_bound is None


def test_incremental_without_state_fails_clearly():
    with pytest.raises(NoState, match=r"s\.t has no committed state") as e:
        plan_csv_table("s", "t", None, [f("a.csv")], load_type="incremental")
    assert "--load-type" in e.value.hint


def test_no_cursor_means_no_bound():
    assert plan_csv_table("s", "t", landed_state(), [f("z.csv")], has_cursor=False).lower_bound is None


@pytest.mark.parametrize(
    ("wm", "lookback", "bound"),
    [
        (Watermark("100", "bigint"), 0, "100"),
        (Watermark("100", "bigint"), 5, "95"),
        (Watermark("2.5", "double"), 0.5, "2.0"),
        (Watermark("2026-01-10", "date"), "36h", "2026-01-08"),
        (
            Watermark("2026-01-01T10:00:00.000000+00:00", "timestamptz"),
            "90m",
            "2026-01-01T08:30:00.000000+00:00",
        ),
        # a naive cursor is compared in its own zone: 10:00 UTC is 11:00 in Berlin in winter
        (
            Watermark("2026-01-01T10:00:00.000000+00:00", "timestamp", "Europe/Berlin"),
            0,
            "2026-01-01T11:00:00.000000",
        ),
        (
            Watermark("2026-07-01T10:00:00.000000+00:00", "timestamp", "Europe/Berlin"),
            "1h",
            "2026-07-01T11:00:00.000000",
        ),
        (Watermark("k-10", "string"), 0, "k-10"),
    ],
)
def test_lower_bound(wm, lookback, bound):
    assert lower_bound(wm, lookback).value == bound


def test_lookback_units_must_fit_the_cursor():
    assert parse_lookback("2h", "timestamp") == timedelta(hours=2)
    assert parse_lookback(30, "timestamptz") == timedelta(seconds=30)
    assert parse_lookback(7, "bigint") == 7.0
    with pytest.raises(ConfigError, match="duration"):
        parse_lookback("2h", "bigint")


def test_naive_cursor_watermarks_are_stored_in_utc():
    raw = Watermark("2026-01-01T11:00:00.000000", "timestamp")
    assert canonical_watermark(raw, "Europe/Berlin", "s.t") == Watermark(
        "2026-01-01T10:00:00.000000+00:00", "timestamp", "Europe/Berlin"
    )
    # 02:30 on 2026-10-25 happens twice in Berlin; the watermark takes the earlier instant
    ambiguous = Watermark("2026-10-25T02:30:00.000000", "timestamp")
    assert canonical_watermark(ambiguous, "Europe/Berlin", "s.t").value == "2026-10-25T00:30:00.000000+00:00"
    with pytest.raises(ConfigError, match="cursor_timezone"):
        canonical_watermark(raw, None, "s.t")


def test_next_state_advances_watermark_ledger_and_runs():
    state = landed_state()
    plan = plan_csv_table("s", "t", state, [f("a.csv"), f("b.csv")])
    batch = LandedBatch(
        6,
        4,
        Watermark("2026-01-02T00:00:00.000000", "timestamp"),
        {"id": "bigint", "x": "string"},
        ("part.parquet",),
        rows_filtered=1,
    )
    new = next_state(state, plan, batch, "r2", NOW, cursor_timezone="UTC")
    assert new.watermark == Watermark("2026-01-02T00:00:00.000000+00:00", "timestamp", "UTC")
    assert new.committed_runs == ("r1", "r2")
    assert new.files["b.csv"] == FileEntry(10, 1, "r2") and new.files["a.csv"].run_id == "r1"
    assert new.columns == {"id": "bigint", "x": "string"}
    assert batch.rows_deduplicated == 1
    assert TableState.from_json(new.to_json()) == new


def test_pause_commits_the_run_but_not_the_watermark_or_ledger():
    state = landed_state()
    plan = plan_csv_table("s", "t", state, [f("b.csv")])
    batch = LandedBatch(1, 1, Watermark("2026-01-09T00:00:00.000000", "timestamp"), {}, ())
    new = next_state(state, plan, batch, "r2", NOW, cursor_timezone="UTC", pause=True)
    assert new.committed_runs == ("r1", "r2")
    assert (new.watermark, new.files) == (state.watermark, state.files)


def test_full_load_resets_the_watermark_to_what_it_landed():
    state = landed_state(watermark=Watermark("2030-01-01T00:00:00.000000+00:00", "timestamp", "UTC"))
    plan = plan_csv_table("s", "t", state, [f("a.csv")], load_type="full")
    batch = LandedBatch(1, 1, Watermark("2026-01-01T00:00:00.000000", "timestamp"), {}, ())
    new = next_state(state, plan, batch, "r2", NOW, cursor_timezone="UTC")
    assert new.watermark.value == "2026-01-01T00:00:00.000000+00:00"


def test_an_older_batch_never_moves_the_watermark_back():
    assert max_watermark(WM, Watermark("2026-01-01T09:00:00.000000+00:00", "timestamp", "UTC")) == WM
    assert max_watermark(WM, None) == WM
    assert max_watermark(Watermark("9", "bigint"), Watermark("10", "bigint")).value == "10"


@given(st.lists(st.integers(min_value=-(10**12), max_value=10**12), min_size=1))
def test_max_watermark_is_the_max_in_any_order(values):
    wm = None
    for v in values:
        wm = max_watermark(wm, Watermark(str(v), "bigint"))
    assert wm == Watermark(str(max(values)), "bigint")


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
    ),
    st.integers(min_value=0, max_value=10**7),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
)
def test_rows_at_or_after_the_watermark_always_pass_the_bound(instant, back_seconds, zone):
    """Inclusive, in any zone: a row stamped exactly at the watermark is never dropped."""
    from zoneinfo import ZoneInfo

    local = instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)
    raw = Watermark(local.strftime("%Y-%m-%dT%H:%M:%S.%f"), "timestamp")
    wm = canonical_watermark(raw, zone, "s.t")
    bound = lower_bound(wm, back_seconds)
    assert bound.value <= raw.value  # same fixed-width text format: text order is time order


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(0, 3), st.integers(0, 3)), max_size=12))
def test_planned_files_are_exactly_those_the_ledger_has_not_seen(files):
    listing = sorted({name: f(f"{name}.csv", size, mtime) for name, size, mtime in files}.values())
    ledger = {x.relpath: FileEntry(x.size, x.mtime_ns, "r1") for x in listing[::2]}
    state = landed_state(files=ledger)
    plan = plan_csv_table("s", "t", state, listing)
    assert {x.relpath for x in plan.files} == {x.relpath for x in listing} - set(ledger)
    assert set(plan.already_landed) == set(ledger)
