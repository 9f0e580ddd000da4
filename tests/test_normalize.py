"""Column-name cleaning and type choice: the rules both engines share."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.errors import SchemaError
from ingestion.plan.normalize import (
    TYPE_RULES,
    ColumnStats,
    choose_cursor_type,
    choose_type,
    clean_column_name,
    clean_header,
    fit_rules,
    plan_types,
    union_columns,
)
from ingestion.plan.rejects import BAD_CURSOR, NULL_KEY, TYPE_MISMATCH, check_order, value_reject


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("First Name!", "first_name"),
        ("Account ID", "account_id"),
        ("  __E-mail__ ", "e_mail"),
        ("updated_at", "updated_at"),
        ("Amount (EUR)", "amount_eur"),
        ("ÄÖÜ", ""),
    ],
)
def test_clean_column_name(raw, clean):
    assert clean_column_name(raw) == clean


@given(st.text())
def test_cleaned_names_are_safe_and_stable(raw):
    name = clean_column_name(raw)
    assert re.fullmatch(r"([a-z0-9]+(_[a-z0-9]+)*)?", name)
    assert clean_column_name(name) == name


def test_clean_header_fills_empty_and_leading_digit_names():
    assert clean_header(["", "2nd Place", "ok"], file="f.csv") == ["column_1", "c2nd_place", "ok"]


def test_collisions_are_reported_not_merged():
    with pytest.raises(SchemaError) as e:
        clean_header(["First Name", "first_name", "x"], file="people.csv")
    assert "people.csv" in str(e.value)
    assert "'first_name'" in str(e.value)


def test_choose_type_follows_rule_order():
    everything = {r.name: True for r in TYPE_RULES}
    assert choose_type(everything, 3) == "boolean"
    assert choose_type({"bigint": True, "double": True}, 3) == "bigint"
    assert choose_type({"double": True}, 3) == "double"
    assert choose_type({}, 3) == "string"
    assert choose_type(everything, 0) == "string"  # all null: no evidence of any type


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        ("bigint", ["1", "-20", "+3"], ["1.0", "1e3", "9999999999999999999", " 1"]),
        ("double", ["1", "1.5", "-.5", "1e-3", "2."], ["nan", "1,5", "."]),
        ("date", ["2026-01-31"], ["2026-1-31", "31.01.2026"]),
        (
            "timestamp",
            ["2026-01-31 10:00:00", "2026-01-31T10:00", "2026-01-31 10:00:00.123456"],
            ["2026-01-31 10:00:00Z"],
        ),
        (
            "timestamptz",
            ["2026-01-31T10:00:00Z", "2026-01-31 10:00:00+02:00", "2026-01-31 10:00:00-0530"],
            ["2026-01-31 10:00:00"],
        ),
        ("boolean", ["true", "FALSE"], ["yes", "1"]),
    ],
)
def test_type_patterns(rule, good, bad):
    pattern = re.compile(next(r.pattern for r in TYPE_RULES if r.name == rule))
    assert all(pattern.fullmatch(v) for v in good)
    assert not any(pattern.fullmatch(v) for v in bad)


def test_union_columns_keeps_first_seen_order():
    assert union_columns([["a", "b"], ["b", "c"], ["a", "d"]]) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("value", ["02134", "00501", "007", "00.5", "-01", "0001e3"])
def test_leading_zeros_are_not_inferred_as_numbers(value):
    for rule in TYPE_RULES:
        if rule.name in ("bigint", "decimal", "double"):
            assert not re.fullmatch(rule.pattern, value), (rule.name, value)


@pytest.mark.parametrize("value", ["0", "-0", "0.5", "0.0", "10", "100.25", ".5"])
def test_zero_and_numbers_without_leading_zeros_stay_numbers(value):
    rule = next(r for r in TYPE_RULES if r.name == "double")
    assert re.fullmatch(rule.pattern, value)


def test_a_declared_numeric_column_takes_leading_zeros():
    declared = fit_rules(TYPE_RULES, declared=True)
    inferred = fit_rules(TYPE_RULES, declared=False)
    assert re.fullmatch(declared["bigint"].pattern, "007")
    assert not re.fullmatch(inferred["bigint"].pattern, "007")
    assert declared["date"] == inferred["date"]


def _stats(non_null: int, **ok: int) -> ColumnStats:
    return ColumnStats(non_null, {r.name: ok.get(r.name, 0) for r in TYPE_RULES})


def test_a_cursor_takes_the_type_most_of_its_values_have_and_the_rest_are_misfits():
    # 19 timestamps and one `yesterday`: timestamp, one misfit (rejected as bad_cursor), never string.
    stats = {"id": _stats(20, bigint=20, decimal=20, double=20), "at": _stats(20, timestamp=19)}
    plan = plan_types([("a.csv", stats)], committed={}, declared={}, cursor="at")
    assert plan.types["at"] == "timestamp"
    assert plan.misfits == {("a.csv", "at"): 1}
    # without the cursor rule the same column is text
    assert plan_types([("a.csv", stats)], committed={}, declared={}).types["at"] == "string"


def test_a_cursor_of_dates_and_timestamps_is_a_timestamp_and_numbers_tie_to_the_narrowest():
    assert choose_cursor_type(_stats(10, date=4, timestamp=6), decimal=True) == "timestamp"
    assert choose_cursor_type(_stats(10, bigint=10, decimal=10, double=10), decimal=True) == "bigint"
    assert choose_cursor_type(_stats(10, bigint=8, decimal=9, double=10), decimal=False) == "double"
    assert choose_cursor_type(_stats(3), decimal=True) is None


def test_a_text_cursor_committed_earlier_is_typed_again():
    stats = {"at": _stats(2, timestamp=2)}
    plan = plan_types([("a.csv", stats)], committed={"at": "string"}, declared={}, cursor="at")
    assert plan.types["at"] == "timestamp" and not plan.misfits


def test_a_column_with_no_values_has_no_type_yet():
    first = plan_types(
        [("a.csv", {"id": _stats(2, bigint=2), "score": _stats(0)})], committed={}, declared={}
    )
    assert first.untyped == {"score"} and first.types["score"] == "string"
    later = plan_types(
        [("b.csv", {"id": _stats(2, bigint=2), "score": _stats(2, bigint=2)})],
        committed={"id": "bigint"},
        declared={},
    )
    assert later.types["score"] == "bigint" and not later.untyped


def test_a_null_or_empty_key_is_its_own_reason_checked_before_the_cursor():
    assert value_reject("id", None, "bigint", keys=["id"], cursor="at")[0] == NULL_KEY
    assert value_reject("id", "", "string", keys=["id"], cursor="at")[0] == NULL_KEY
    assert value_reject("at", "yesterday", "timestamp", keys=["id"], cursor="at")[0] == BAD_CURSOR
    assert value_reject("qty", "x", "bigint", keys=["id"], cursor="at")[0] == TYPE_MISMATCH
    assert check_order(["a", "at", "id"], ["id"], "at") == ["id", "at", "a"]
