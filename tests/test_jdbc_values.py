"""PostgreSQL values with no exact equivalent in the lake (±infinity and BC timestamps and dates, NaN in a
decimal column) are rejected row by row with a reason, never landed as NULL or as another value, and never
fail the table; every other row lands exactly. Both engines agree."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ingestion.run.pipeline import run_pipeline
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc
from tests.test_jdbc_oracle import _engine

pytestmark = pytest.mark.slow

ROWS = """
insert into odd (id, at, at_utc, day, amount) values
    (1, '2026-01-01 10:00:00.123456', '2026-01-01 10:00:00.5+00', '2026-01-01', 1.25),
    (2, 'infinity', '2026-01-01 10:00:00+00', '2026-01-01', 2),
    (3, '2026-01-01 10:00:00', '-infinity', '2026-01-01', 3),
    (4, '2026-01-01 10:00:00', '2026-01-01 10:00:00+00', '0044-03-15 BC', 4),
    (5, '2026-01-01 10:00:00', '2026-01-01 10:00:00+00', '2026-01-01', 'NaN'),
    (6, null, null, null, null)
"""


@pytest.mark.parametrize("engine", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def test_values_without_an_exact_equivalent_are_rejected_with_a_reason(
    engine: str, pg_db: PgDb, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    pg_db.con.execute(
        "create table odd (id int primary key, at timestamp, at_utc timestamptz, day date, amount numeric(10,2))"
    )
    pg_db.con.execute(ROWS)
    lake = tmp_path / "lake"
    cfg = write_config(pipeline_doc(lake, jdbc_source(pg_db), engine))
    eng = _engine(request, engine, cfg)
    for _ in range(2):  # never a table that fails every run
        report = run_pipeline(cfg, engine=eng)
        assert report.ok, [(t.name, t.error) for t in report.tables]
        (outcome,) = report.tables
        assert outcome.rows_rejected == 4 and outcome.rows_read == 6, outcome
    files = sorted((lake / "landing" / "pg" / "odd").rglob("*.parquet"))
    landed = {r["id"]: r for r in pq.ParquetDataset([str(f) for f in files]).read().to_pylist()}
    assert set(landed) == {1, 6}
    one = landed[1]
    assert one["at"] == datetime(2026, 1, 1, 10, 0, 0, 123456)
    assert one["at_utc"] == datetime(2026, 1, 1, 10, 0, 0, 500000, tzinfo=timezone.utc)
    assert (one["day"], one["amount"]) == (date(2026, 1, 1), Decimal("1.25"))
    rejected = pq.ParquetDataset([str(f) for f in (lake / "_rejected").rglob("*.parquet")]).read().to_pylist()
    reasons = {(r["_column"], r["_reason_code"]) for r in rejected}
    assert reasons == {
        ("at", "unrepresentable_value"),
        ("at_utc", "unrepresentable_value"),
        ("day", "unrepresentable_value"),
        ("amount", "unrepresentable_value"),
    }
    texts = " ".join(r["_reason"] for r in rejected)
    assert "'infinity'" in texts and "'-infinity'" in texts and "BC" in texts and "'NaN'" in texts
    assert all('"id"' in r["_raw"] for r in rejected)  # the whole source row, as JSON
