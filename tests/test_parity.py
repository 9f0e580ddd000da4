"""Parity: the DuckDB and Spark engines land the same rows, columns and types from the same input."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from ingestion.demo.billing import write_day
from ingestion.engines.duckdb.engine import DuckDBEngine
from ingestion.lake.state import StateStore
from ingestion.run.pipeline import run_pipeline

from .conftest import DEMO_TABLES, demo_config_doc

pytestmark = [pytest.mark.slow, pytest.mark.spark]

# Edge cases both engines must read alike: quoted commas, empty quoted strings, exponents, booleans in
# any case, time zones, an invalid date (→ string), an all-null column, a key twice with the same cursor.
EDGE = (
    '"Order ID",Amount,Is Paid,Placed On,Placed At,Placed At (TZ),Note,Empty,Mixed\n'
    '1,10,true,2026-01-01,2026-01-01 10:00:00,2026-01-01T10:00:00Z,"hello, world",,1\n'
    '2,1e3,FALSE,2026-01-02,2026-01-01T11:30:00.250,2026-01-01 12:00:00+02:00,"",,2.5\n'
    "2,7.25,true,2026-01-03,2026-01-01T11:30:00.250,2026-01-01 12:00:00+02:00,tie,,3\n"
    "3,,false,2026-02-30,2026-01-03 00:00:00,,multi word,,x\n"
    "4,-.5,True,,2026-01-04 00:00:00,2026-01-04T00:00:00-05:30,NULL,,\n"
)


def file_schema(lake: Path, table: str) -> dict[str, str]:
    """Column → Parquet type over all files of a table (nullability aside: Spark marks some required)."""
    out: dict[str, str] = {}
    for f in sorted((lake / "landing").glob(f"*/{table}/**/*.parquet")):
        for field in pq.read_schema(f):
            out.setdefault(field.name, str(field.type))
            assert out[field.name] == str(field.type), f"{f}: {field.name} changed type"
    return out


def rows(lake: Path, table: str) -> list[tuple]:
    rel = duckdb.sql(
        f"select * exclude (_run_id, _ingested_at) from read_parquet('{lake}/landing/*/{table}/**/*.parquet', "
        "union_by_name = true, hive_partitioning = false) order by all"
    )
    return [tuple(rel.columns), *rel.fetchall()]


def land_both(tmp_path: Path, doc_for, spark) -> tuple[Path, Path]:
    from ingestion.engines.spark.engine import SparkEngine

    lakes = {"duckdb": tmp_path / "lake_duckdb", "spark": tmp_path / "lake_spark"}
    for name, lake in lakes.items():
        from ingestion.config import parse_config

        doc = doc_for(lake)
        for src in doc["sources"]:
            src["archive"] = {"enabled": False}  # both engines read the same inbox
        cfg = parse_config(doc)
        engine = DuckDBEngine() if name == "duckdb" else SparkEngine(cfg.spark, spark=spark)
        report = run_pipeline(cfg, engine=engine)
        assert report.ok, [t.error for t in report.failed]
        scratch = lake / "_tmp"
        assert not scratch.exists() or not any(scratch.iterdir()), "staged files left behind"
    return lakes["duckdb"], lakes["spark"]


def test_demo_data_lands_identically(tmp_path, demo_inbox, spark, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    list(write_day(2, demo_inbox))
    duck, spk = land_both(tmp_path, lambda lake: demo_config_doc(demo_inbox, lake), spark)
    for table in DEMO_TABLES:
        assert file_schema(duck, table) == file_schema(spk, table), table
        assert rows(duck, table) == rows(spk, table), table
    for table in DEMO_TABLES:
        a = StateStore(str(duck), "billing_demo").read("billing", table)
        b = StateStore(str(spk), "billing_demo").read("billing", table)
        assert (a.watermark, a.columns) == (b.watermark, b.columns)


def test_edge_cases_land_identically(tmp_path, spark, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox = tmp_path / "edge"
    inbox.mkdir()
    (inbox / "orders_1.csv").write_text(EDGE)

    def doc(lake: Path) -> dict:
        return {
            "pipeline": "edge",
            "lake": {"root": str(lake)},
            "sources": [
                {
                    "name": "shop",
                    "kind": "csv",
                    "path": str(inbox),
                    "tables": [
                        {
                            "name": "orders",
                            "primary_key": ["order_id"],
                            "cursor": "placed_at",
                            "cursor_timezone": "UTC",
                            "csv": {"null_values": ["", "NULL"]},
                        }
                    ],
                }
            ],
        }

    duck, spk = land_both(tmp_path, doc, spark)
    schema = file_schema(duck, "orders")
    assert schema == file_schema(spk, "orders")
    assert schema == {
        "order_id": "int64",
        "amount": "double",
        "is_paid": "bool",
        "placed_on": "string",
        "placed_at": "timestamp[us]",
        "placed_at_tz": "timestamp[us, tz=UTC]",
        "note": "string",
        "mixed": "string",
        "_run_id": "string",
        "_ingested_at": "timestamp[us, tz=UTC]",
        "_source_file": "string",
        "_op": "string",
    }
    # `empty` has no value yet, so it has no type yet and is not written (it comes with its first values).
    assert "empty" not in schema
    got = rows(duck, "orders")
    assert got == rows(spk, "orders")
    header, *data = got
    by_key = {r[header.index("order_id")]: dict(zip(header, r, strict=True)) for r in data}
    assert sorted(by_key) == [1, 2, 3, 4]
    # the tie on (key, cursor) is broken by the greater row: amount 1000.0 beats 7.25
    # a quoted "" is an empty string, not NULL, as PostgreSQL's COPY … CSV reads it (issue 15)
    assert by_key[2]["amount"] == 1000.0 and by_key[2]["note"] == ""
    assert by_key[1]["note"] == "hello, world"
    assert by_key[4]["note"] is None  # a configured null token
    assert str(by_key[4]["placed_at_tz"]).startswith("2026-01-04 05:30:00")
    a = StateStore(str(duck), "edge").read("shop", "orders")
    b = StateStore(str(spk), "edge").read("shop", "orders")
    assert a.watermark == b.watermark
    assert a.watermark.value == "2026-01-04T00:00:00.000000+00:00"
