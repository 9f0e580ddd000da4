"""Column-name cleaning and type choice: the rules both engines share."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.errors import SchemaError
from ingestion.plan.normalize import TYPE_RULES, choose_type, clean_column_name, clean_header, union_columns


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
