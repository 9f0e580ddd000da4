"""load-warehouse's pure part: which runs to load and how raw tables must change to take a batch."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ingestion.errors import SchemaError
from ingestion.warehouse.plan import (
    batch_types,
    pending_runs,
    plan_columns,
    postgres_type,
    varchar_size,
    wider_type,
)


def test_pending_runs_are_the_committed_ones_not_loaded_oldest_first() -> None:
    assert pending_runs(["20260102T0Z-b", "20260101T0Z-a", "20260103T0Z-c"], {"20260102T0Z-b"}) == [
        "20260101T0Z-a",
        "20260103T0Z-c",
    ]
    assert pending_runs(["r1"], {"r1"}) == []


def test_varchar_sizes_grow_by_powers_of_two_up_to_redshift_s_limit() -> None:
    assert [varchar_size(n) for n in (0, 32, 33, 1000, 65535)] == [32, 32, 64, 1024, 65535]
    assert varchar_size(70000) is None


def test_types_widen_never_narrow() -> None:
    assert wider_type("smallint", "integer") == "integer"
    assert wider_type("integer", "bigint") == "bigint"
    assert wider_type("bigint", "smallint") is None
    assert wider_type("character varying(32)", "varchar(64)") == "varchar(64)"
    assert wider_type("character varying(64)", "varchar(32)") is None
    assert wider_type("character varying(64)", "text") == "text"
    assert wider_type("timestamp with time zone", "timestamptz") is None
    with pytest.raises(SchemaError, match="cannot widen a bigint"):
        wider_type("bigint", "varchar(32)")
    # The lake's other widenings: room for the integer digits and the scale of both, never rounding.
    assert wider_type("bigint", "numeric(18,4)") == "numeric(23,4)"
    assert wider_type("numeric(12,2)", "numeric(18,4)") == "numeric(18,4)"
    assert wider_type("numeric(23,4)", "numeric(18,4)") is None
    assert wider_type("numeric(12,2)", "double precision") == "double precision"
    assert wider_type("date", "timestamp") == "timestamp"
    assert wider_type("timestamp without time zone", "timestamptz") == "timestamptz"


def test_plan_columns_adds_and_widens() -> None:
    plan = plan_columns(
        {"id": "bigint", "qty": "smallint", "note": "character varying(32)"},
        {"id": "bigint", "qty": "integer", "note": "varchar(32)", "segment": "varchar(32)"},
    )
    assert plan.add == (("segment", "varchar(32)"),)
    assert plan.widen == (("qty", "smallint", "integer"),)


def test_batch_types_size_strings_by_their_longest_value_over_all_files() -> None:
    a = pa.table({"id": pa.array([1], pa.int16()), "s": ["x" * 40]})
    b = pa.table({"id": pa.array([1], pa.int32()), "s": ["é" * 40], "t": pa.array([None], pa.string())})
    assert batch_types([a, b]) == {"id": "integer", "s": "varchar(128)", "t": "varchar(32)"}
    assert postgres_type(pa.timestamp("us", tz="UTC")) == "timestamptz"
    assert postgres_type(pa.decimal128(12, 2)) == "numeric(12,2)"
