"""Glue Data Catalog registration after each commit, against moto's server (S3 lake)."""

from __future__ import annotations

import uuid

import boto3
import pyarrow as pa
import pytest

from ingestion.config import parse_config
from ingestion.run.pipeline import run_pipeline
from ingestion.warehouse.glue_catalog import hive_type, merge_columns, partition_values

DAY1 = "id,name,amount,updated_at\n1,a,1.5,2026-01-01 10:00:00\n2,b,2.25,2026-01-02 10:00:00\n"
DAY2 = "id,name,amount,updated_at,segment\n3,c,3.5,2026-01-03 10:00:00,smb\n"


def doc(bucket: str, source: str = "billing", **catalog: str) -> dict:
    return {
        "pipeline": "p",
        "lake": {"root": f"s3://{bucket}/lake"},
        "catalog": catalog,
        "sources": [
            {
                "name": source,
                "kind": "csv",
                "path": f"s3://{bucket}/drops",
                "tables": [
                    {
                        "name": "accounts",
                        "primary_key": ["id"],
                        "cursor": "updated_at",
                        "cursor_timezone": "UTC",
                    }
                ],
            }
        ],
    }


@pytest.fixture
def glue(s3_bucket, moto_endpoint, monkeypatch, tmp_path):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    monkeypatch.setenv("TIDEMARK_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", moto_endpoint)
    return boto3.client("glue")


def columns(glue, database: str, table: str) -> list[tuple[str, str]]:
    t = glue.get_table(DatabaseName=database, Name=table)["Table"]
    return [(c["Name"], c["Type"]) for c in t["StorageDescriptor"]["Columns"]]


def partitions(glue, database: str, table: str) -> dict[str, str]:
    parts = glue.get_partitions(DatabaseName=database, TableName=table)["Partitions"]
    return {p["Values"][0]: p["StorageDescriptor"]["Location"] for p in parts}


def test_registers_the_table_then_a_new_partition_and_a_new_column(glue, s3_bucket, monkeypatch):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="drops/accounts_1.csv", Body=DAY1.encode())
    cfg = parse_config(doc(s3_bucket, glue_database="landing_{source}"))
    monkeypatch.setattr("ingestion.lake.layout.partition_value", lambda _: "2026-01-01", raising=True)
    for mod in ("ingestion.engines.duckdb.common",):
        monkeypatch.setattr(f"{mod}.partition_value", lambda _: "2026-01-01")
    first = run_pipeline(cfg)
    assert first.ok and first.tables[0].error is None

    table = glue.get_table(DatabaseName="landing_billing", Name="accounts")["Table"]
    assert table["TableType"] == "EXTERNAL_TABLE"
    assert table["PartitionKeys"] == [{"Name": "_ingest_date", "Type": "string"}]
    assert table["StorageDescriptor"]["Location"] == f"s3://{s3_bucket}/lake/landing/billing/accounts/"
    assert columns(glue, "landing_billing", "accounts") == [
        ("id", "bigint"),
        ("name", "string"),
        ("amount", "decimal(38,18)"),
        ("updated_at", "timestamp"),
        ("_run_id", "string"),
        ("_ingested_at", "timestamp"),
        ("_source_file", "string"),
        ("_op", "string"),
    ]
    assert partitions(glue, "landing_billing", "accounts") == {
        "2026-01-01": f"s3://{s3_bucket}/lake/landing/billing/accounts/_ingest_date=2026-01-01/"
    }

    # day 2: a new partition and a new column (appended, the others kept in place)
    s3.put_object(Bucket=s3_bucket, Key="drops/accounts_2.csv", Body=DAY2.encode())
    monkeypatch.setattr("ingestion.engines.duckdb.common.partition_value", lambda _: "2026-01-02")
    second = run_pipeline(cfg)
    assert second.ok and second.tables[0].rows_landed == 1 and second.tables[0].error is None
    cols = columns(glue, "landing_billing", "accounts")
    assert cols[:4] == [
        ("id", "bigint"),
        ("name", "string"),
        ("amount", "decimal(38,18)"),
        ("updated_at", "timestamp"),
    ]
    assert ("segment", "string") in cols and len(cols) == 9
    assert set(partitions(glue, "landing_billing", "accounts")) == {"2026-01-01", "2026-01-02"}

    # nothing new: the catalog is left as it is
    assert run_pipeline(cfg).tables[0].status == "up_to_date"
    assert columns(glue, "landing_billing", "accounts") == cols


def test_catalog_failure_is_recorded_but_the_commit_stands(glue, s3_bucket, monkeypatch):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="drops/accounts_1.csv", Body=DAY1.encode())
    from botocore.config import Config

    # Glue unreachable (nothing listens on port 9): a real botocore failure, after the commit.
    dead = boto3.client("glue", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1}))
    monkeypatch.setattr("ingestion.warehouse.glue_catalog.glue_client", lambda: dead)
    cfg = parse_config(doc(s3_bucket, glue_database="landing_{source}"))
    report = run_pipeline(cfg)
    out = report.tables[0]
    assert out.status == "landed" and out.rows_landed == 2
    assert out.error_class == "CatalogError" and "landing_billing.accounts" in out.error
    from ingestion.lake.state import StateStore
    from ingestion.observe.audit import Ledger

    assert StateStore(f"s3://{s3_bucket}/lake", "p").read("billing", "accounts").committed_runs
    rows = [r for r in Ledger(f"s3://{s3_bucket}/lake").read() if r.status == "landed"]
    assert rows and rows[-1].error_class == "CatalogError"
    assert run_pipeline(cfg).tables[0].status == "up_to_date"  # nothing landed twice


def test_catalog_is_off_by_default(glue, s3_bucket):
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="drops/accounts_1.csv", Body=DAY1.encode())
    source = f"off_{uuid.uuid4().hex[:8]}"  # moto's catalog is shared by the session's tests
    assert run_pipeline(parse_config(doc(s3_bucket, source))).ok
    assert all(d["Name"] != f"landing_{source}" for d in glue.get_databases()["DatabaseList"])
    enabled = run_pipeline(
        parse_config(
            doc(s3_bucket, source, glue_database="landing_{source}"),
        )
    )
    assert enabled.tables[0].status == "up_to_date"  # nothing landed: nothing to register


def test_type_mapping_and_column_merge():
    assert [
        hive_type(t) for t in (pa.int64(), pa.int32(), pa.string(), pa.float64(), pa.bool_(), pa.date32())
    ] == ["bigint", "bigint", "string", "double", "boolean", "date"]
    assert hive_type(pa.decimal128(38, 18)) == "decimal(38,18)"
    assert hive_type(pa.timestamp("us", tz="UTC")) == hive_type(pa.timestamp("us")) == "timestamp"
    # widened in place, new appended, a column missing from this run kept (older files hold it)
    assert merge_columns([("a", "bigint"), ("b", "string")], [("a", "double"), ("c", "date")]) == [
        ("a", "double"),
        ("b", "string"),
        ("c", "date"),
    ]
    assert partition_values(
        ["s3://b/l/_ingest_date=2026-01-02/part-x-0.parquet", "/l/_ingest_date=2026-01-01/p"]
    ) == ["2026-01-01", "2026-01-02"]


def test_widened_columns_keep_older_partitions_on_their_own_types(glue, s3_bucket) -> None:
    """Issue 19, "show which": per-partition schemas. The table takes the widened type (bigint → decimal →
    double, date → timestamp); each partition keeps the types of the files it holds, so a reader that
    resolves a partition by its own storage descriptor never reads an old file as the new type."""
    import io
    from datetime import date, datetime, timezone
    from decimal import Decimal

    import pyarrow.parquet as pq

    from ingestion.warehouse.glue_catalog import register_run

    db = f"widen_{uuid.uuid4().hex[:8]}"  # moto's catalog lives as long as the test session
    cfg = parse_config(doc(s3_bucket, glue_database=db))
    target = f"s3://{s3_bucket}/lake/landing/billing/accounts"
    s3 = boto3.client("s3")
    d, ts = date(2026, 1, 1), datetime(2026, 1, 3, tzinfo=timezone.utc)
    days = [
        ("2026-01-01", pa.array([1], pa.int64()), pa.array([d], pa.date32())),
        ("2026-01-02", pa.array([Decimal("1.5")], pa.decimal128(38, 18)), pa.array([d], pa.date32())),
        ("2026-01-03", pa.array([1.5], pa.float64()), pa.array([ts], pa.timestamp("us", tz="UTC"))),
    ]
    for n, (day, amount, when) in enumerate(days):
        buf = io.BytesIO()
        pq.write_table(pa.table({"amount": amount, "when": when}), buf)
        run_id = f"2026010{n + 1}T000000000000Z-aaaaaa"
        key = f"lake/landing/billing/accounts/_ingest_date={day}/part-{run_id}-0.parquet"
        s3.put_object(Bucket=s3_bucket, Key=key, Body=buf.getvalue())
        register_run(cfg.catalog, target, "billing", "accounts", run_id, client=glue, partition=day)

    assert columns(glue, db, "accounts") == [("amount", "double"), ("when", "timestamp")]
    parts = glue.get_partitions(DatabaseName=db, TableName="accounts")["Partitions"]
    by_day = {
        p["Values"][0]: dict((c["Name"], c["Type"]) for c in p["StorageDescriptor"]["Columns"]) for p in parts
    }
    assert by_day == {
        "2026-01-01": {"amount": "bigint", "when": "date"},
        "2026-01-02": {"amount": "decimal(38,18)", "when": "date"},
        "2026-01-03": {"amount": "double", "when": "timestamp"},
    }
