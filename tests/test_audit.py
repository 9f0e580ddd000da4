"""The ingestion ledger: rows of successful, partly failed and killed runs; redaction; S3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from ingestion.config import parse_config
from ingestion.demo.billing import KEYS, truth, write_day
from ingestion.lake.model import Lease, TableState, Watermark
from ingestion.lake.state import StateStore
from ingestion.observe.audit import Ledger, LedgerRow, abandoned_rows, lag_seconds, latest, running_row
from ingestion.redact import redact
from ingestion.run.pipeline import run_pipeline

from .conftest import DEMO_TABLES, REPO, demo_config_doc
from .helpers import DBT, Dbt, InProcessDbt

AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PASSWORD = "Tr0ub4dor-and-3"


def _strings(rows: list[LedgerRow]) -> str:
    return "\n".join(str(v) for r in rows for v in r.__dict__.values())


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"could not connect to postgresql://etl:{PASSWORD}@db.internal:5432/billing", PASSWORD),
        (f"jdbc:postgresql://db/billing?user=etl&password={PASSWORD}&ssl=true", PASSWORD),
        (f"dsn host=db user=etl password={PASSWORD} dbname=billing", PASSWORD),
        (f'{{"user": "etl", "password": "{PASSWORD}"}}', PASSWORD),
        (f"aws_secret_access_key={AWS_SECRET}", AWS_SECRET),
        (f"key {AWS_KEY_ID} was denied", AWS_KEY_ID),
        (f"bare secret {AWS_SECRET} in a message", AWS_SECRET),
        (f"s3://{AWS_KEY_ID}:{AWS_SECRET}@bucket/drops", AWS_SECRET),
    ],
)
def test_redact_removes_secrets(text, secret):
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_redact_keeps_ordinary_text():
    text = (
        "CSV source folder /tmp/pytest-of-root/inbox/billing does not exist; run 20261122T103700123456Z-1a2b3c "
        "file sha 0123456789abcdef0123456789abcdef01234567 at https://example.com/path"
    )
    assert redact(text) == text
    assert redact(None) is None


def test_lag_is_measured_for_time_cursors_only():
    now = datetime(2026, 1, 2, 0, 0, tzinfo=timezone.utc)
    assert lag_seconds(Watermark("2026-01-01T00:00:00.000000+00:00", "timestamp"), now) == 86400
    assert lag_seconds(Watermark("2026-01-01", "date"), now) == 86400
    assert lag_seconds(Watermark("1234", "integer"), now) is None
    assert lag_seconds(None, now) is None


def _opened(run_id: str, table: str, started: datetime, **kw) -> LedgerRow:
    return replace(running_row(run_id, "p", "dev", "duckdb", "billing", table, started), **kw)


def test_running_rows_of_other_hosts_close_only_when_their_lease_and_ttl_are_gone():
    now = datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)
    ttl = timedelta(hours=1)
    old = now - timedelta(hours=2)
    rows = [
        _opened("r-old", "accounts", old, host="elsewhere", pid=1),  # lapsed: abandoned
        _opened("r-old", "customers", old, host="elsewhere", pid=1),  # still leased by r-old: live
        _opened("r-new", "invoices", now - timedelta(minutes=5), host="elsewhere", pid=1),  # young: live
        _opened("r-done", "subscriptions", old, host="elsewhere", pid=1),
        replace(
            _opened("r-done", "subscriptions", old, host="elsewhere", pid=1),
            status="landed",
            recorded_at=old + timedelta(seconds=5),
        ),
    ]
    lease = Lease("r-old", old.isoformat(), (now + ttl).isoformat(), "elsewhere", 1)
    states = {("billing", "customers"): TableState("p", "billing", "customers", lease=lease)}
    closed = abandoned_rows(rows, states, now, ttl, current_run="r-now")
    assert [(r.run_id, r.table, r.status) for r in closed] == [("r-old", "accounts", "abandoned")]
    # The closing row wins over the row it closes.
    assert {(r.run_id, r.table): r.status for r in latest(rows + closed)}[
        ("r-old", "accounts")
    ] == "abandoned"


# ---------------------------------------------------------------- runs


def _run_doc(tmp_path: Path) -> dict:
    inbox = tmp_path / "inbox"
    list(write_day(1, inbox))
    return demo_config_doc(inbox, tmp_path / "lake")


def test_successful_run_writes_one_closing_row_per_table(tmp_path, write_config):
    cfg = write_config(_run_doc(tmp_path))
    report = run_pipeline(cfg)
    assert report.ok
    rows = Ledger(cfg.lake_root).read()
    # One "running" row per table at the start, one closing row per table at its end.
    assert sorted(r.status for r in rows) == ["landed"] * 4 + ["running"] * 4
    files = sorted(p.name for p in Path(cfg.lake_root, "_audit/ingestion_runs").glob("run_date=*/*.parquet"))
    assert files and all(f.startswith(report.run_id) for f in files)
    final = {r.table: r for r in latest(rows)}
    assert set(final) == set(DEMO_TABLES)
    for o in report.tables:
        r = final[o.table]
        assert (r.run_id, r.pipeline, r.env, r.engine, r.source) == (
            report.run_id,
            "billing_demo",
            "dev",
            "duckdb",
            "billing",
        )
        assert (r.status, r.load_type, r.files) == ("landed", "full", o.files)
        assert (r.rows_read, r.rows_landed, r.rows_deduplicated, r.rows_filtered, r.rows_rejected) == (
            o.rows_read,
            o.rows_landed,
            o.rows_deduplicated,
            o.rows_filtered,
            0,
        )
        assert r.rows_landed > 0
        assert r.watermark_before is None and r.watermark_after == o.watermark.value
        assert r.watermark_type == "timestamp"
        assert r.lag_seconds == lag_seconds(o.watermark, r.ended_at)
        assert r.started_at <= r.ended_at and r.error_class is None and r.error_message is None

    # A second run with nothing new: up_to_date rows carrying the watermark before and after.
    report2 = run_pipeline(cfg)
    second = [r for r in latest(Ledger(cfg.lake_root).read()) if r.run_id == report2.run_id]
    assert {r.status for r in second} == {"up_to_date"}
    assert all(r.watermark_before == r.watermark_after == final[r.table].watermark_after for r in second)


def test_partly_failed_run_records_the_failure_without_secrets(tmp_path, write_config):
    doc = _run_doc(tmp_path)
    # A second source whose folder does not exist, configured (wrongly) with credentials in its path.
    doc["sources"].append(
        {
            "name": "partner",
            "kind": "csv",
            "path": str(tmp_path / f"missing/password={PASSWORD}/{AWS_KEY_ID}"),
            "tables": [{"name": "orders", "pattern": "*.csv", "primary_key": ["id"], "cursor": "updated_at"}],
        }
    )
    cfg = write_config(doc)
    report = run_pipeline(cfg)
    assert [t.name for t in report.failed] == ["partner.orders"]
    assert PASSWORD not in report.failed[0].error  # one redactor for every source kind: masked already
    rows = Ledger(cfg.lake_root).read()
    final = {r.table: r for r in latest(rows)}
    assert {t: r.status for t, r in final.items()} == {
        **dict.fromkeys(DEMO_TABLES, "landed"),
        "orders": "failed",
    }
    failed = final["orders"]
    assert failed.error_class == "SourceError"
    assert "does not exist" in failed.error_message
    assert failed.watermark_after is None and failed.rows_landed == 0 and failed.ended_at is not None
    everything = _strings(rows)
    assert PASSWORD not in everything and AWS_KEY_ID not in everything


def test_locked_table_gets_a_closing_row(tmp_path, write_config):
    cfg = write_config(_run_doc(tmp_path))
    # Another live run (this very process, so it is alive) holds the accounts lease.
    store = StateStore(cfg.lake_root, cfg.pipeline)
    store.acquire("billing", "accounts", "other-run", datetime.now(timezone.utc), timedelta(hours=1))
    report = run_pipeline(cfg)
    assert [t.name for t in report.failed] == ["billing.accounts"]
    final = {r.table: r for r in latest(Ledger(cfg.lake_root).read())}
    locked = final["accounts"]
    assert (locked.status, locked.error_class, locked.rows_landed) == ("locked", "LeaseHeld", 0)
    assert "locked by run other-run" in locked.error_message
    assert {final[t].status for t in DEMO_TABLES if t != "accounts"} == {"landed"}


def test_killed_run_is_closed_as_abandoned_by_the_next_run(tmp_path, write_config):
    cfg = write_config({**_run_doc(tmp_path), "max_parallel_tables": 1})
    env = {k: v for k, v in os.environ.items() if k not in ("TIDEMARK_LAKE", "TIDEMARK_ENV")}
    env["TIDEMARK_FAULTS"] = "batch_written@subscriptions=kill"
    proc = subprocess.run(
        [sys.executable, "-m", "ingestion", "run", "--config", str(tmp_path / "ingestion.yml")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    ledger = Ledger(cfg.lake_root)
    dead = {r.table: r for r in latest(ledger.read())}
    killed_run = dead["subscriptions"].run_id
    # Tables run one at a time in config order: two closed before the kill, two left "running".
    assert {t: r.status for t, r in dead.items()} == {
        "accounts": "landed",
        "customers": "landed",
        "subscriptions": "running",
        "invoices": "running",
    }

    report = run_pipeline(cfg)
    assert report.ok
    final = {(r.run_id, r.table): r for r in latest(ledger.read())}
    for table in ("subscriptions", "invoices"):
        row = final[(killed_run, table)]
        assert row.status == "abandoned" and row.error_class == "RunAbandoned"
        assert report.run_id in row.error_message
    assert final[(killed_run, "accounts")].status == "landed"
    # The rerun landed what the dead run never committed; it is not itself closed as abandoned.
    assert {final[(report.run_id, t)].status for t in DEMO_TABLES} <= {"landed", "up_to_date"}
    assert final[(report.run_id, "subscriptions")].status == "landed"
    # A third run has nothing left to close.
    before = len(ledger.read())
    report3 = run_pipeline(cfg)
    assert len(ledger.read()) == before + 2 * len(DEMO_TABLES)
    assert all(r.status != "running" for r in latest(ledger.read()) if r.run_id != report3.run_id)


def test_ledger_on_s3(s3_bucket):
    ledger = Ledger(f"s3://{s3_bucket}/lake")
    started = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
    opened = running_row(
        "20260101T100000000000Z-abcdef", "p", "prod", "spark", "billing", "accounts", started
    )
    closed = replace(
        opened,
        status="failed",
        recorded_at=started + timedelta(seconds=3),
        ended_at=started + timedelta(seconds=3),
        error_class="SourceError",
        error_message=redact(f"cannot read s3://{AWS_KEY_ID}:{AWS_SECRET}@bucket/x"),
    )
    url1 = ledger.append(opened.run_id, [opened])
    url2 = ledger.append(opened.run_id, [closed])
    assert (
        url1 == f"s3://{s3_bucket}/lake/_audit/ingestion_runs/run_date=2026-01-01/{opened.run_id}-0.parquet"
    )
    assert url2.endswith("-1.parquet")
    rows = Ledger(f"s3://{s3_bucket}/lake").read()
    assert sorted(r.status for r in rows) == ["failed", "running"]
    assert latest(rows) == [closed]
    assert AWS_SECRET not in _strings(rows)
    assert len(ledger.read(started.date())) == 2 and ledger.read((started + timedelta(days=1)).date()) == []


# ---------------------------------------------------------------- dbt: node results and the audit model


@pytest.mark.slow
def test_dbt_audit_model_joins_ingestion_and_dbt_runs(tmp_path, monkeypatch):
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox, lake, wh = tmp_path / "inbox", tmp_path / "lake", tmp_path / "wh.duckdb"
    dbt = None
    runs = []
    for day in (1, 2):
        list(write_day(day, inbox))
        report = run_pipeline(parse_config(demo_config_doc(inbox, lake)))
        assert report.ok
        runs.append(report)
        # In process, one parsed manifest for both builds (no interpreter start-up, no re-parse).
        dbt = dbt or InProcessDbt(tmp_path, lake, wh)
        dbt("build")

    con = duckdb.connect(str(wh), read_only=True)
    try:
        audit = con.sql(
            "select run_id, table_name, ingestion_status, rows_landed, dbt_invocation_id, dbt_model, "
            "dbt_status, dbt_rows_inserted, dbt_rows_updated, pipeline_status from audit_pipeline_runs"
        ).fetchall()
        nodes = con.sql(
            "select invocation_id, node_name, resource_type, status, started_at, completed_at, "
            "rows_inserted, rows_updated, upstream_sources from dbt_node_runs"
        ).fetchall()
    finally:
        con.close()

    # Every executed node of both invocations is recorded, tests included.
    invocations = sorted({n[0] for n in nodes})
    assert len(invocations) == 2
    for inv in invocations:
        mine = {n[1]: n for n in nodes if n[0] == inv}
        assert {"accounts", "stg_billing__accounts", "audit_pipeline_runs"} <= set(mine)
        assert any(n[2] == "test" and n[3] == "pass" for n in mine.values())
        assert all(n[3] in ("success", "pass") and n[4] <= n[5] for n in mine.values())
        assert mine["accounts"][8] == "billing.accounts"

    # One row per table per ingestion run, each with the dbt run that merged it.
    assert len(audit) == 2 * len(DEMO_TABLES)
    assert {(r[0], r[1]) for r in audit} == {(rep.run_id, t) for rep in runs for t in DEMO_TABLES}
    by_run = {(r[0], r[1]): r for r in audit}
    day1, day2 = truth(1), truth(2)
    for t in DEMO_TABLES:
        first, second = by_run[(runs[0].run_id, t)], by_run[(runs[1].run_id, t)]
        assert first[4] != second[4] and {first[4], second[4]} == set(invocations)
        for row in (first, second):
            assert (row[2], row[5], row[6], row[9]) == ("landed", t, "success", "ok")
        # Day 1 inserts every key; day 2 inserts the new keys and updates the keys it landed again.
        assert (first[7], first[8]) == (len(day1[t]), 0)
        landed_again = duckdb.sql(
            f"select count(distinct {KEYS[t]}) from read_parquet('{lake}/landing/billing/{t}/**/*.parquet') "
            f"where _run_id = '{runs[1].run_id}'"
        ).fetchall()[0][0]
        new_keys = len(set(day2[t]) - set(day1[t]))
        assert second[7] == new_keys
        assert second[8] == landed_again - new_keys
        assert second[8] > 0


@pytest.mark.slow
def test_dbt_results_are_recorded_on_postgres(tmp_path, scratch_db):
    """The on-run-end macro's SQL is adapter-neutral: create-if-missing, append and commit on PostgreSQL."""
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    psycopg2 = pytest.importorskip("psycopg2", reason="dbt-postgres (psycopg2) is not installed")
    pytest.importorskip("dbt.adapters.postgres", reason="dbt-postgres is not installed")
    db = scratch_db
    dbt = Dbt(tmp_path, tmp_path / "lake", tmp_path / "unused.duckdb")
    dbt.env.update(
        DBT_TARGET="postgres", PGHOST="127.0.0.1", PGUSER="postgres", PGDATABASE=db, DBT_SCHEMA="audit"
    )
    for _ in range(2):  # the second invocation finds the table and appends
        dbt("run", "--select", "stg_audit__dbt_node_runs")
    con = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=db)
    try:
        cur = con.cursor()
        cur.execute(
            "select invocation_id, node_name, status, target_type, started_at <= completed_at, "
            "execution_seconds > 0 from audit.dbt_node_runs order by recorded_at"
        )
        rows = cur.fetchall()
        cur.execute("select count(*) from audit.stg_audit__dbt_node_runs")
        via_view = cur.fetchone()[0]
    finally:
        con.close()
    assert len({r[0] for r in rows}) == 2 and len(rows) == 2 == via_view
    assert all(r[1:] == ("stg_audit__dbt_node_runs", "success", "postgres", True, True) for r in rows)


def test_ledger_reads_from_a_date_on(tmp_path):
    ledger = Ledger(str(tmp_path))
    for day in (1, 5, 9):
        at = datetime(2026, 1, day, 10, 0, tzinfo=timezone.utc)
        ledger.append(
            f"run{day}", [running_row(f"run{day}", "p", "dev", "duckdb", "billing", "accounts", at)]
        )
    assert [r.run_id for r in ledger.read()] == ["run1", "run5", "run9"]
    assert [r.run_id for r in ledger.read(datetime(2026, 1, 5).date())] == ["run5", "run9"]


# Columns a newer ledger added; ledger files written before them lack them.
NEWER_LEDGER_COLUMNS = ("files_refused", "failed_step", "warnings")


def _as_older_ledger(lake: Path) -> list[Path]:
    """Rewrite the lake's ledger files the way an older tidemark wrote them (without the newer columns)."""
    import pyarrow.parquet as pq

    files = sorted((lake / "_audit" / "ingestion_runs").glob("run_date=*/*.parquet"))
    for path in files:
        old = pq.read_table(path, partitioning=None)
        pq.write_table(old.drop_columns(list(NEWER_LEDGER_COLUMNS)), path)
    return files


@pytest.mark.slow
def test_dbt_audit_models_carry_failed_step_and_warnings_over_a_mixed_ledger(
    tmp_path, write_config, monkeypatch
):
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    from .test_protocol import GOOD, csv_doc

    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    cfg = write_config(csv_doc(inbox, lake, ["t"]))
    (inbox / "t_1.csv").write_text(GOOD)
    old_run = run_pipeline(cfg)
    assert old_run.ok
    old_files = _as_older_ledger(lake)
    # An older-only ledger, kept aside: the audit models must build over it too.
    old_lake = tmp_path / "old_lake"
    for path in old_files:
        dest = old_lake / path.relative_to(lake)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())

    (inbox / "t_2.csv").write_text("id,updated_at\n3,2026-01-03 10:00:00\n")  # `name` is gone: a warning
    warned = run_pipeline(cfg)
    assert warned.ok
    (inbox / "t_3.csv").write_text("id,updated_at\n4,2026-01-04 10:00:00\n")
    monkeypatch.setenv("TIDEMARK_FAULTS", "batch_written@t=raise")
    failed = run_pipeline(cfg)
    monkeypatch.delenv("TIDEMARK_FAULTS")
    assert not failed.ok
    assert all(
        set(NEWER_LEDGER_COLUMNS) <= set(duckdb.sql(f"select * from '{p}'").columns)
        for p in (lake / "_audit" / "ingestion_runs").glob("run_date=*/*.parquet")
        if p not in old_files
    )

    def audit_rows(lake_dir: Path, warehouse: Path) -> dict[str, tuple]:
        Dbt(tmp_path / warehouse.stem, lake_dir, warehouse)("build", "--select", "+audit_pipeline_runs")
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            rows = con.sql(
                "select run_id, ingestion_status, failed_step, files_refused, warnings from audit_pipeline_runs"
            ).fetchall()
            staged = con.sql(
                "select failed_step, files_refused, warnings from stg_audit__ingestion_runs"
            ).fetchall()
        finally:
            con.close()
        assert len(staged) == len(rows)
        return {r[0]: r[1:] for r in rows}

    mixed = audit_rows(lake, tmp_path / "mixed.duckdb")
    assert set(mixed) == {old_run.run_id, warned.run_id, failed.run_id}
    assert mixed[old_run.run_id] == ("landed", None, None, None)  # older file: the columns read as null
    status, step, refused, warning = mixed[warned.run_id]
    assert (status, step, refused) == ("landed", None, 0)
    assert "columns gone from the source" in warning and "name" in warning
    assert mixed[failed.run_id][:3] == ("failed", "extract", 0)

    only_old = audit_rows(old_lake, tmp_path / "old.duckdb")
    assert only_old == {old_run.run_id: ("landed", None, None, None)}
