"""Redshift COPY loading: the generated SQL for committed runs (pure), S3 discovery of a run's files
(moto's S3 server), and the Data API edge (moto's redshift-data for submit/poll/cancel; botocore's Stubber
for what moto does not mock: batch_execute_statement, FINISHED/FAILED statuses, throttling)."""

from __future__ import annotations

import json
from datetime import datetime

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.stub import Stubber

from ingestion.errors import ConfigError, SchemaError, SourceError, StatementFailed
from ingestion.warehouse.data_api import DataApi, RedshiftSettings
from ingestion.warehouse.loader import load_all, load_audit_ledger, load_table
from ingestion.warehouse.redshift import (
    RedshiftLoader,
    RunFiles,
    S3File,
    copy_statements,
    external_schema_sql,
    list_run_files,
    parquet_columns,
    plan_redshift_loads,
    table_ddl,
)

LAKE = "s3://lake-bucket/tidemark"
ROLE = "arn:aws:iam::123456789012:role/tidemark-redshift"
SETTINGS = RedshiftSettings(iam_role=ROLE, database="dev", workgroup_name="tidemark")
COLS = (("account_id", "bigint"), ("account_name", "varchar(32)"), ("_run_id", "varchar(32)"))


def run(run_id: str, n_files: int = 1, columns=COLS, partition: str = "2026-01-01") -> RunFiles:
    files = tuple(
        S3File(
            f"{LAKE}/landing/billing/accounts/_ingest_date={partition}/part-{run_id}-{n}.parquet",
            100 + n,
            partition,
        )
        for n in range(n_files)
    )
    return RunFiles("billing", "accounts", run_id, files, columns)


def test_copy_statements_of_a_new_table_create_copy_insert_and_record_in_one_batch() -> None:
    planned = copy_statements(LAKE, run("20260101T000000000000Z-aaaaaa", 2), "landing_billing", ROLE, {})
    stmts, manifests = list(planned.transaction), planned.manifests
    assert planned.before == ()
    text = "\n".join(stmts)
    assert stmts[0] == 'lock "tidemark_meta"."load_ledger"'
    assert 'create table if not exists "landing_billing"."accounts" (' in text
    assert '"_ingest_date" date' in text
    (uri, body) = next(iter(manifests.items()))
    assert (
        uri
        == f"{LAKE}/_load/redshift/billing/accounts/20260101T000000000000Z-aaaaaa/_ingest_date=2026-01-01.manifest"
    )
    copy = [s for s in stmts if s.startswith("copy ")]
    assert copy == [f"copy \"tm_stage_accounts\" from '{uri}' iam_role '{ROLE}' format as parquet manifest"]
    entries = json.loads(body)["entries"]
    assert [e["url"].rsplit("/", 1)[1] for e in entries] == [
        "part-20260101T000000000000Z-aaaaaa-0.parquet",
        "part-20260101T000000000000Z-aaaaaa-1.parquet",
    ]
    assert all(e["mandatory"] and e["meta"]["content_length"] >= 100 for e in entries)
    insert = next(s for s in stmts if s.startswith('insert into "landing_billing"'))
    assert (
        "'2026-01-01'::date" in insert and '"account_id", "account_name", "_run_id", "_ingest_date"' in insert
    )
    # Issue 19: the files' ledger rows are one multi-row insert (into a temp table), then one insert into
    # the ledger that, like the raw table's insert, does nothing when another loader recorded the run first.
    staged = [s for s in stmts if s.startswith('insert into "tm_ledger_accounts"')]
    assert len(staged) == 1 and staged[0].count("), (") == 1
    ledger = [s for s in stmts if s.startswith('insert into "tidemark_meta"')]
    assert len(ledger) == 1 and "20260101T000000000000Z-aaaaaa" in ledger[0]
    assert planned.ledger_insert == stmts.index(ledger[0])
    assert "not exists (select 1 from" in insert and "not exists (select 1 from" in ledger[0]


def test_a_second_load_of_the_same_state_emits_nothing_for_loaded_runs() -> None:
    runs = [run("20260102T000000000000Z-bbbbbb"), run("20260101T000000000000Z-aaaaaa")]
    first = plan_redshift_loads(LAKE, runs, set(), "landing_billing", ROLE, {})
    assert [p.run.run_id for p in first] == ["20260101T000000000000Z-aaaaaa", "20260102T000000000000Z-bbbbbb"]
    # The second run sees the table the first one creates: no second create.
    assert any(s.startswith("create table") for s in first[0].transaction)
    assert not any(s.startswith("create table") for s in first[1].transaction)
    loaded = {p.run.run_id for p in first}
    assert plan_redshift_loads(LAKE, runs, loaded, "landing_billing", ROLE, {}) == []
    partly = plan_redshift_loads(LAKE, runs, {"20260101T000000000000Z-aaaaaa"}, "landing_billing", ROLE, {})
    assert [p.run.run_id for p in partly] == ["20260102T000000000000Z-bbbbbb"]


def test_new_columns_are_added_and_varchars_widened_other_widening_is_refused() -> None:
    existing = {"account_id": "bigint", "account_name": "varchar(32)", "_ingest_date": "date"}
    ddl = table_ddl(
        "landing_billing",
        "accounts",
        existing,
        {
            "account_id": "bigint",
            "account_name": "varchar(128)",
            "segment": "varchar(32)",
            "_ingest_date": "date",
        },
    )
    assert ddl == (
        ['alter table "landing_billing"."accounts" alter column "account_name" type varchar(128)'],
        ['alter table "landing_billing"."accounts" add column "segment" varchar(32)'],
    )
    # Widening runs before the load's transaction (Redshift won't alter a type inside one).
    wider = run("r-2", columns=(("account_id", "bigint"), ("account_name", "varchar(128)")))
    planned = copy_statements(LAKE, wider, "landing_billing", ROLE, existing)
    assert planned.before == (ddl[0][0],) and ddl[0][0] not in planned.transaction
    # Issue 19: other widenings are no longer refused; they are column rebuilds (not in table_ddl's lists).
    assert table_ddl("landing_billing", "accounts", {"qty": "smallint"}, {"qty": "bigint"}) == ([], [])
    with pytest.raises(SchemaError, match="identifier"):
        copy_statements(LAKE, run("r-1", columns=(('bad"name', "bigint"),)), "landing_billing", ROLE, {})


def test_a_committed_run_that_landed_nothing_is_recorded_without_copy() -> None:
    planned = copy_statements(LAKE, run("r-1", 0), "landing_billing", ROLE, {"account_id": "bigint"})
    stmts, manifests = planned.transaction, planned.manifests
    # Issue 19: the temp ledger table is created; no copy, no raw table created or altered.
    raw = ("copy", "create table", "create schema", "alter")
    assert manifests == {} and not any(s.startswith(raw) for s in stmts)
    assert any(s.startswith('insert into "tm_ledger_accounts"') and "'', 0" in s for s in stmts)


def test_local_lakes_and_bad_settings_get_clear_errors() -> None:
    with pytest.raises(SourceError, match="not an s3:// location") as exc:
        RedshiftLoader.from_env("/data/lake")
    assert "--target postgres" in str(exc.value.hint)
    with pytest.raises(ConfigError, match="TIDEMARK_REDSHIFT_IAM_ROLE"):
        RedshiftSettings.from_env({"TIDEMARK_REDSHIFT_DATABASE": "dev"})
    with pytest.raises(ConfigError, match="exactly one"):
        RedshiftSettings.from_env({"TIDEMARK_REDSHIFT_IAM_ROLE": ROLE, "TIDEMARK_REDSHIFT_DATABASE": "dev"})
    s = RedshiftSettings.from_env(
        {
            "TIDEMARK_REDSHIFT_IAM_ROLE": ROLE,
            "TIDEMARK_REDSHIFT_DATABASE": "dev",
            "TIDEMARK_REDSHIFT_CLUSTER": "c1",
            "TIDEMARK_REDSHIFT_DB_USER": "loader",
        }
    )
    assert s.target() == {"Database": "dev", "ClusterIdentifier": "c1", "DbUser": "loader"}


def test_external_schema_ddl_for_spectrum(monkeypatch) -> None:
    monkeypatch.delenv("TIDEMARK_SOURCE_SCHEMA_BILLING", raising=False)
    assert external_schema_sql("billing", "tidemark_landing", ROLE) == (
        'create external schema if not exists "landing_billing"\n'
        "from data catalog database 'tidemark_landing'\n"
        f"iam_role '{ROLE}';"
    )


def test_run_files_and_their_columns_are_read_from_the_s3_lake(s3_bucket: str, tmp_path) -> None:
    s3 = boto3.client("s3")
    lake = f"s3://{s3_bucket}/lake"
    data = pa.table({"account_id": pa.array([1, 2], pa.int64()), "name": ["a" * 40, None]})
    local = tmp_path / "f.parquet"
    pq.write_table(data, local)
    keys = [
        "lake/landing/billing/accounts/_ingest_date=2026-01-01/part-20260101T000000000000Z-aaaaaa-0.parquet",
        "lake/landing/billing/accounts/_ingest_date=2026-01-02/part-20260102T000000000000Z-bbbbbb-0.parquet",
        "lake/landing/billing/accounts/_ingest_date=2026-01-02/notes.txt",
        "lake/landing/billing/accounts_old/_ingest_date=2026-01-02/part-20260102T000000000000Z-cccccc-0.parquet",
    ]
    for key in keys:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=local.read_bytes())
    files = list_run_files(s3, lake, "billing", "accounts")
    assert set(files) == {"20260101T000000000000Z-aaaaaa", "20260102T000000000000Z-bbbbbb"}
    (f,) = files["20260102T000000000000Z-bbbbbb"]
    assert f.partition == "2026-01-02" and f.size == local.stat().st_size
    # Issue 19: sized from the footer (the column chunk bounds the longest value), not from the data.
    assert parquet_columns(s3, [f]) == (("account_id", "bigint"), ("name", "varchar(256)"))


def test_polling_a_statement_that_never_finishes_cancels_it_on_moto(moto_endpoint: str, monkeypatch) -> None:
    # moto's redshift-data keeps statements STARTED: the loop must give up, cancel, and say so.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("redshift-data", region_name="us-east-1", endpoint_url=moto_endpoint)
    slept: list[float] = []
    api = DataApi(SETTINGS, client=client, sleep=slept.append, timeout_s=30)
    with pytest.raises(StatementFailed, match=r"still STARTED after 3[0-9]s; cancelled") as exc:
        api.run("select 1")
    assert slept[:4] == [0.25, 0.5, 1.0, 2.0] and max(slept) == 10.0
    statement_id = exc.value.message.split()[2]
    assert client.describe_statement(Id=statement_id)["Status"] == "ABORTED"


def _described(statement_id: str, status: str, **extra) -> dict:
    return {"Id": statement_id, "Status": status, "CreatedAt": datetime(2026, 1, 1), **extra}


def test_batches_are_polled_until_finished_and_failures_raise_with_the_error_text() -> None:
    client = boto3.client("redshift-data", region_name="us-east-1")
    slept: list[float] = []
    api = DataApi(SETTINGS, client=client, sleep=slept.append)
    with Stubber(client) as stub:
        stub.add_response(
            "batch_execute_statement",
            {"Id": "b1", "CreatedAt": datetime(2026, 1, 1)},
            {"Sqls": ["lock x", "copy y"], "Database": "dev", "WorkgroupName": "tidemark"},
        )
        for status in ("SUBMITTED", "PICKED", "STARTED"):
            stub.add_response("describe_statement", _described("b1", status), {"Id": "b1"})
        stub.add_response("describe_statement", _described("b1", "FINISHED"), {"Id": "b1"})
        assert api.run(["lock x", "copy y"])["Status"] == "FINISHED"
        assert slept == [0.25, 0.5, 1.0]

        stub.add_response("execute_statement", {"Id": "s2", "CreatedAt": datetime(2026, 1, 1)})
        stub.add_response(
            "describe_statement", _described("s2", "FAILED", Error="ERROR: division by zero"), {"Id": "s2"}
        )
        with pytest.raises(StatementFailed, match="s2 FAILED: ERROR: division by zero"):
            api.run("select 1/0")
        stub.assert_no_pending_responses()


def test_throttling_is_retried_and_result_pages_are_joined() -> None:
    client = boto3.client("redshift-data", region_name="us-east-1")
    api = DataApi(SETTINGS, client=client, sleep=lambda s: None)
    with Stubber(client) as stub:
        stub.add_client_error("execute_statement", "ThrottlingException", "Rate exceeded")
        stub.add_response("execute_statement", {"Id": "s3", "CreatedAt": datetime(2026, 1, 1)})
        stub.add_response("describe_statement", _described("s3", "FINISHED", HasResultSet=True), {"Id": "s3"})
        stub.add_response(
            "get_statement_result",
            {"Records": [[{"stringValue": "r1"}], [{"isNull": True}]], "NextToken": "t"},
            {"Id": "s3"},
        )
        stub.add_response(
            "get_statement_result", {"Records": [[{"stringValue": "r2"}]]}, {"Id": "s3", "NextToken": "t"}
        )
        assert api.rows("select run_id from ledger") == [["r1"], [None], ["r2"]]
        stub.add_client_error("execute_statement", "ValidationException", "bad sql")
        with pytest.raises(Exception, match="bad sql"):
            api.run("select nonsense")
        stub.assert_no_pending_responses()


def test_spectrum_ddl_and_load_warehouse_redshift_commands(write_config, tmp_path, monkeypatch) -> None:
    from .conftest import demo_config_doc
    from .test_cli import cli

    write_config(demo_config_doc(tmp_path / "inbox", tmp_path / "lake"))
    monkeypatch.delenv("TIDEMARK_REDSHIFT_IAM_ROLE", raising=False)
    config = str(tmp_path / "ingestion.yml")
    ok = cli(
        "redshift-spectrum-ddl",
        "--config",
        config,
        "--iam-role",
        ROLE,
        "--glue-database",
        "tm_{source}",
    )
    assert ok.returncode == 0, ok.stderr
    assert (
        "create external schema if not exists \"landing_billing\"\nfrom data catalog database 'tm_billing'"
        in ok.stdout
    )
    bad = cli("redshift-spectrum-ddl", "--config", config)
    assert bad.returncode == 2 and "--iam-role" in bad.stderr + bad.stdout
    # The lake is local: COPY can't read it, and the error says what to do instead.
    local = cli("load-warehouse", "--config", config, "--target", "redshift")
    assert local.returncode == 2 and "--target postgres" in local.stderr + local.stdout


class PostgresDataApi:
    """The Data API's contract (`run`, `rows`) served by PostgreSQL, to execute the loader's SQL for real.

    A batch runs as one transaction, like batch_execute_statement. Redshift's COPY from a manifest is
    simulated: the manifest and its Parquet files are read from S3 (moto) and copied into the staging
    table with COPY FROM STDIN. Everything else is the loader's own SQL, run as generated.
    """

    def __init__(self, dbname: str, s3) -> None:
        import psycopg

        self.conn = psycopg.connect(host="127.0.0.1", user="postgres", dbname=dbname, autocommit=True)
        self.s3 = s3
        self.copies: list[str] = []

    def _copy(self, cur, sql: str) -> None:
        import io
        import re

        import pyarrow.csv as pacsv

        m = re.match(r"copy (\S+) from '([^']+)' iam_role '[^']+' format as parquet manifest$", sql)
        assert m, sql
        self.copies.append(sql)
        bucket, key = m.group(2)[5:].split("/", 1)
        manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        for entry in manifest["entries"]:
            b, k = entry["url"][5:].split("/", 1)
            body = self.s3.get_object(Bucket=b, Key=k)["Body"].read()
            assert len(body) == entry["meta"]["content_length"]
            table = pq.read_table(io.BytesIO(body))
            buf = io.BytesIO()
            pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            with cur.copy(f"copy {m.group(1)} from stdin (format csv)") as copy:
                copy.write(buf.getvalue())

    def run(self, sql):
        import psycopg

        stmts = [sql] if isinstance(sql, str) else list(sql)
        counts = []
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                for s in stmts:
                    self._copy(cur, s) if s.startswith("copy ") else cur.execute(s)
                    counts.append(max(cur.rowcount, 0))
                rows = cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            raise StatementFailed(f"Redshift statement pg FAILED: ERROR: {exc}") from None
        # A batch's description lists its sub-statements with the rows each changed, as Redshift's does.
        subs = [{"Status": "FINISHED", "ResultRows": n} for n in counts]
        return {
            "Status": "FINISHED",
            "rows": rows,
            **({"SubStatements": subs} if not isinstance(sql, str) else {}),
        }

    def rows(self, sql: str):
        return [list(r) for r in self.run(sql)["rows"]]


@pytest.mark.slow
def test_redshift_loader_sql_runs_for_real_and_loads_each_run_once(
    s3_bucket: str, tmp_path, scratch_db: str
) -> None:
    """Two demo days landed locally, the lake copied to S3 (moto); the loader's SQL executed on PostgreSQL."""
    psycopg = pytest.importorskip("psycopg")
    from ingestion.config import parse_config
    from ingestion.demo.billing import KEYS, truth, write_day
    from ingestion.lake.state import StateStore
    from ingestion.run.pipeline import run_pipeline

    from .conftest import demo_config_doc
    from .redshift_harness import install_shims

    name = scratch_db
    s3 = boto3.client("s3")
    lake_local, lake = tmp_path / "lake", f"s3://{s3_bucket}/lake"
    cfg = parse_config(demo_config_doc(tmp_path / "inbox", lake_local))

    def upload() -> None:
        for f in lake_local.rglob("*"):
            if f.is_file() and f.parts[len(lake_local.parts)] in ("landing", "_state", "_audit"):
                s3.put_object(Bucket=s3_bucket, Key=f"lake/{f.relative_to(lake_local)}", Body=f.read_bytes())

    api = None
    try:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as conn:
            install_shims(conn)  # getdate() for the ledger's default
            conn.execute(
                "create view svv_columns as select table_schema, table_name, column_name, data_type,"
                " character_maximum_length, numeric_precision, numeric_scale, ordinal_position"
                " from information_schema.columns"
            )
        api = PostgresDataApi(name, s3)
        loader = RedshiftLoader(lake, SETTINGS, api=api, s3=s3)  # type: ignore[arg-type]
        store = StateStore(str(lake_local), "billing_demo")
        for day in (1, 2):
            list(write_day(day, tmp_path / "inbox"))
            assert run_pipeline(cfg).ok
            upload()
            for table in KEYS:
                committed = store.read("billing", table).committed_runs  # type: ignore[union-attr]
                report = load_table(lake, loader, "billing", table, committed)
                assert report.runs and report.rows > 0, (day, table)
                # Idempotent per run id: the same state again loads nothing and sends no COPY.
                copies = len(api.copies)
                assert load_table(lake, loader, "billing", table, committed).runs == []
                assert len(api.copies) == copies
        for table, key in KEYS.items():
            latest = api.rows(
                f"select count(distinct {key}), count(*), count(*) filter (where _ingest_date is null)"
                f" from landing_billing.{table}"
            )[0]
            landed = api.rows(
                f"select sum(row_count) from tidemark_meta.load_ledger where table_name = '{table}'"
            )
            assert latest[0] == len(truth(2)[table]) and latest[1] == landed[0][0] and latest[2] == 0, table
        # The ingestion ledger (the dbt audit models' source) is copied too, each file once.
        ledger_files = list((lake_local / "_audit" / "ingestion_runs").rglob("*.parquet"))
        audit = load_audit_ledger(lake, loader)
        assert len(audit.runs) == len(ledger_files) > 0
        assert audit.rows == sum(pq.read_metadata(f).num_rows for f in ledger_files)
        assert api.rows("select count(*) from lake_audit.ingestion_runs") == [[audit.rows]]
        assert load_audit_ledger(lake, loader).runs == []
        # load-warehouse's path: committed runs read from the state store on S3. Forget the latest
        # accounts run in the warehouse: exactly that run is loaded again, nothing else.
        last = api.rows("select max(run_id) from tidemark_meta.load_ledger where table_name = 'accounts'")[0][
            0
        ]
        api.run(
            [
                f"delete from tidemark_meta.load_ledger where table_name = 'accounts' and run_id = '{last}'",
                f"delete from landing_billing.accounts where _run_id = '{last}'",
            ]
        )
        s3cfg = parse_config(demo_config_doc(tmp_path / "inbox", lake))  # type: ignore[arg-type]
        reports = load_all(s3cfg, loader)
        assert [r.name for r in reports] == [f"billing.{t}" for t in KEYS] + ["_audit.ingestion_runs"]
        assert [r.runs for r in reports] == [[last], [], [], [], []]
        # Day 2's new column was added by the loader.
        assert "segment" in loader.columns("landing_billing", "accounts")
        # A run recorded meanwhile by another loader: the guard rolls the whole batch back.
        run_id = api.rows("select max(run_id) from tidemark_meta.load_ledger where table_name = 'accounts'")[
            0
        ][0]
        files = list_run_files(s3, lake, "billing", "accounts")[run_id]
        again = copy_statements(
            lake,
            RunFiles("billing", "accounts", run_id, tuple(files), parquet_columns(s3, files)),
            "landing_billing",
            ROLE,
            loader.columns("landing_billing", "accounts"),
        )
        before = api.rows("select count(*) from landing_billing.accounts")
        # Redshift doesn't enforce primary keys: neither may PostgreSQL here, so the guard is what stops it.
        api.run("alter table tidemark_meta.load_ledger drop constraint load_ledger_pkey")
        # Issue 19: no error text to match; the batch changes nothing and its ledger insert reports 0 rows.
        done = api.run(list(again.transaction))
        assert not RedshiftLoader.recorded(done, again.ledger_insert)
        assert api.rows("select count(*) from landing_billing.accounts") == before
    finally:
        if api is not None:
            api.conn.close()
