"""Issue 19: the Redshift COPY loader at real scale, against a Data API double that enforces Redshift's
documented limits (40 statements per batch, 100 KB per statement, statement states, sub-statement
ResultRows) and runs the SQL on PostgreSQL: big runs, the ledger, the concurrency guard, footers read
with ranged GETs, and widening each type step the lake takes with views reading the raw table."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion.warehouse.data_api import DataApi, RedshiftSettings
from ingestion.warehouse.loader import load_table
from ingestion.warehouse.plan import RunLoad
from ingestion.warehouse.redshift import (
    MAX_BATCH_STATEMENTS,
    RedshiftLoader,
    RunFiles,
    S3File,
    copy_statements,
    run_footers,
)

from .redshift_data_api import CountingS3, PostgresRedshiftData

ROLE = "arn:aws:iam::123456789012:role/tidemark-redshift"
SETTINGS = RedshiftSettings(iam_role=ROLE, database="dev", workgroup_name="tidemark")


@pytest.fixture
def redshift(s3_bucket: str, scratch_db: str) -> Iterator[tuple[str, Any, PostgresRedshiftData, DataApi]]:
    """(lake, counted S3 client, the Data API double, a DataApi over it) on a fresh PostgreSQL database."""
    psycopg = pytest.importorskip("psycopg")
    from .redshift_harness import install_shims

    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=scratch_db, autocommit=True) as conn:
        install_shims(conn)
        conn.execute(
            "create view svv_columns as select table_schema, table_name, column_name, data_type,"
            " character_maximum_length, numeric_precision, numeric_scale, ordinal_position"
            " from information_schema.columns"
        )
    s3 = boto3.client("s3")
    client = PostgresRedshiftData(scratch_db, s3)
    try:
        yield (
            f"s3://{s3_bucket}/lake",
            CountingS3(s3),
            client,
            DataApi(SETTINGS, client=client, sleep=lambda s: None),
        )
    finally:
        client.close()


def put_run(s3: Any, lake: str, run_id: str, tables: list[pa.Table], table: str = "accounts") -> list[str]:
    """Land `tables` as the run's files on S3; returns their URIs."""
    bucket, prefix = lake[5:].split("/", 1)
    uris = []
    for n, data in enumerate(tables):
        buf = io.BytesIO()
        pq.write_table(data, buf)
        key = f"{prefix}/landing/billing/{table}/_ingest_date=2026-01-01/part-{run_id}-{n}.parquet"
        s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
        uris.append(f"s3://{bucket}/{key}")
    return uris


def accounts(first: int, n: int) -> pa.Table:
    return pa.table(
        {
            "account_id": pa.array(range(first, first + n), pa.int64()),
            "account_name": [f"account {i}" for i in range(first, first + n)],
            "_run_id": ["r"] * n,
        }
    )


def test_a_50_file_run_loads_in_one_batch_within_the_data_api_limits(redshift) -> None:
    lake, s3, client, api = redshift
    run_id = "20260101T000000000000Z-aaaaaa"
    put_run(s3.client, lake, run_id, [accounts(i * 10, 10) for i in range(50)])
    loader = RedshiftLoader(lake, SETTINGS, api=api, s3=s3)

    report = load_table(lake, loader, "billing", "accounts", [run_id])

    assert report.runs == [run_id] and report.files == 50 and report.rows == 500
    assert api.rows("select count(*), count(distinct account_id) from landing_billing.accounts") == [
        [500, 500]
    ]
    ledger = api.rows(
        "select count(*), sum(row_count)::bigint, min(row_count) from tidemark_meta.load_ledger where run_id = "
        f"'{run_id}'"
    )
    assert ledger == [[50, 500, 10]]  # one row per file, with that file's rows (from its footer)
    (load_batch,) = [b for b in client.batches if any(s.startswith("copy ") for s in b)]
    assert len(load_batch) <= MAX_BATCH_STATEMENTS
    # The ledger rows are one multi-row insert, not one statement per file.
    assert sum(s.startswith('insert into "tm_ledger_accounts"') for s in load_batch) == 1
    # Footers only: every GET of a landed file is a ranged GET of its tail.
    gets = [(key, rng) for op, key, rng in s3.calls if op == "get_object"]
    assert len(gets) == 50 and all(rng and rng.startswith("bytes=-") for _, rng in gets)
    assert not [c for c in s3.calls if c[0] == "head_object"]  # sizes come from the same GETs
    # Loaded once: a second load sends no batch.
    n = len(client.batches)
    assert load_table(lake, loader, "billing", "accounts", [run_id]).runs == []
    assert len(client.batches) == n


def test_the_loader_reads_recorded_run_files_instead_of_listing_landing(redshift, monkeypatch) -> None:
    lake, s3, _client, api = redshift
    run_id = "20260101T000000000000Z-cccccc"
    uris = put_run(s3.client, lake, run_id, [accounts(0, 3), accounts(3, 3)])
    loader = RedshiftLoader(lake, SETTINGS, api=api, s3=s3)

    def no_listing(folder: str) -> dict:
        raise AssertionError(f"listed {folder}")

    monkeypatch.setattr("ingestion.warehouse.loader.landed_runs", no_listing)
    recorded = {run_id: tuple(u.split("/accounts/", 1)[1] for u in uris)}
    report = load_table(lake, loader, "billing", "accounts", [run_id], recorded)
    assert report.runs == [run_id] and report.files == 2 and report.rows == 6
    assert not [c for c in s3.calls if c[0] in ("list_objects_v2", "get_paginator")]


def test_ledger_rows_past_the_statement_size_limit_split_into_a_few_inserts_of_one_batch() -> None:
    uri = "s3://lake-bucket/tidemark/landing/billing/accounts/_ingest_date=2026-01-01/part-{}-{}.parquet"
    run_id = "20260101T000000000000Z-" + "a" * 6
    files = tuple(S3File(uri.format(run_id, n), 1000, "2026-01-01", 7) for n in range(5000))
    planned = copy_statements(
        "s3://lake-bucket/tidemark",
        RunFiles("billing", "accounts", run_id, files, (("account_id", "bigint"),)),
        "landing_billing",
        ROLE,
        {},
    )
    staged = [s for s in planned.transaction if s.startswith('insert into "tm_ledger_accounts"')]
    assert 1 < len(staged) < 10 and all(len(s.encode()) <= 100_000 for s in staged)
    assert sum(s.count("(") - 1 for s in staged) == 5000  # every file, once (one "(file, rows)" each)
    assert len(planned.transaction) <= MAX_BATCH_STATEMENTS


def test_many_new_columns_move_to_batches_before_the_run_transaction() -> None:
    cols = tuple((f"c{i}", "bigint") for i in range(100))
    run = RunFiles("billing", "wide", "r-1", (S3File("s3://b/l/x.parquet", 10, "2026-01-01", 1),), cols)
    planned = copy_statements(
        "s3://b/l", run, "landing_billing", ROLE, {"c0": "bigint", "_ingest_date": "date"}
    )
    assert len(planned.transaction) <= MAX_BATCH_STATEMENTS
    ddl = [s for step in planned.before for s in step]
    assert len(ddl) == 99 and all(len(step) <= MAX_BATCH_STATEMENTS for step in planned.before)


def test_a_second_loader_of_the_same_run_changes_nothing_and_is_told_by_result_rows(redshift) -> None:
    lake, s3, _client, api = redshift
    run_id = "20260101T000000000000Z-bbbbbb"
    uris = put_run(s3.client, lake, run_id, [accounts(0, 5), accounts(5, 5)])
    loader = RedshiftLoader(lake, SETTINGS, api=api, s3=s3)
    # The second loader planned its batch before the first one committed: same SQL, sent after it.
    sized = tuple(loader.s3_file(u) for u in uris)
    columns, files = run_footers(s3, sized)
    first = loader.load_run(RunLoad("billing", "accounts", "landing_billing", run_id, tuple(uris)))
    assert first.runs == [run_id] and first.rows == 10
    stale = copy_statements(
        lake,
        RunFiles("billing", "accounts", run_id, files, columns),
        "landing_billing",
        ROLE,
        loader.columns("landing_billing", "accounts"),
    )
    assert not any("/ (case" in s for s in stale.transaction)  # no division-by-zero guard
    done = api.run(list(stale.transaction))  # no error: nothing to match on
    assert not RedshiftLoader.recorded(done, stale.ledger_insert)
    assert api.rows("select count(*) from landing_billing.accounts") == [[10]]
    assert api.rows("select count(*) from tidemark_meta.load_ledger") == [[2]]


UTC = timezone.utc
STEPS = {
    "smallint → integer": (pa.int16(), 7, pa.int32(), 70_000, "integer"),
    "integer → bigint": (pa.int32(), 7, pa.int64(), 2**40, "bigint"),
    "bigint → decimal": (pa.int64(), 2**40, pa.decimal128(38, 18), Decimal("1.5"), "numeric"),
    "decimal → double": (pa.decimal128(38, 18), Decimal("1.5"), pa.float64(), 1e300, "double precision"),
    "date → timestamp": (
        pa.date32(),
        date(2026, 1, 1),
        pa.timestamp("us", tz="UTC"),
        datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        "timestamp with time zone",
    ),
    "varchar → longer varchar": (pa.string(), "short", pa.string(), "x" * 500, "character varying"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_each_widening_step_of_the_lake_is_applied_in_redshift_with_views_rebuilt(redshift, step) -> None:
    lake, s3, _client, api = redshift
    old_type, old_value, new_type, new_value, sql_type = STEPS[step]
    loader = RedshiftLoader(lake, SETTINGS, api=api, s3=s3)

    def run(run_id: str, typ: pa.DataType, value: Any) -> None:
        data = pa.table({"account_id": pa.array([int(run_id[-1])], pa.int64()), "v": pa.array([value], typ)})
        put_run(s3.client, lake, run_id, [data])
        assert load_table(lake, loader, "billing", "accounts", [run_id]).runs == [run_id]

    run("20260101T000000000000Z-aaaaa1", old_type, old_value)
    api.run("create view landing_billing.v_all as select * from landing_billing.accounts")
    api.run("create view landing_billing.v_ids as select account_id from landing_billing.accounts")
    api.run(
        "create view landing_billing.v_big as select account_id, v from landing_billing.accounts where v is not null"
    )
    run("20260102T000000000000Z-aaaaa2", new_type, new_value)

    typ = api.rows(
        "select data_type from information_schema.columns where table_schema = 'landing_billing'"
        " and table_name = 'accounts' and column_name = 'v'"
    )
    assert typ == [[sql_type]]
    # The old value survived the rebuild, the new one landed, and every view reads both.
    got = api.rows("select account_id, v::text from landing_billing.accounts order by account_id")
    assert [r[0] for r in got] == [1, 2] and None not in [r[1] for r in got]
    for view in ("v_all", "v_ids", "v_big"):
        assert api.rows(f"select count(*) from landing_billing.{view}") == [[2]], view
