"""The lake on s3:// (moto server): landed Parquet, rejects, state, ledger, inbox archive and logs on S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest
import yaml

from ingestion.config import parse_config
from ingestion.lake import fs as lakefs
from ingestion.lake.state import StateStore
from ingestion.observe.audit import Ledger
from ingestion.run.pipeline import run_pipeline

from .conftest import REPO
from .helpers import abandon_lease
from .pg_fixtures import jdbc_source

GOOD = "id,name,updated_at\n1,a,2026-01-01 10:00:00\n2,b,2026-01-02 10:00:00\n"
# One row too many fields (rejected), three good: under the 0.5 refusal threshold below.
SOME_BAD = (
    "id,name,updated_at\n3,c,2026-01-03 10:00:00\n4,d,x,y\n5,e,2026-01-04 10:00:00\n6,f,2026-01-05 10:00:00\n"
)


def doc(inbox: str, lake: str) -> dict:
    return {
        "pipeline": "p",
        "lake": {"root": lake},
        "sources": [
            {
                "name": "s",
                "kind": "csv",
                "path": inbox,
                "tables": [
                    {
                        "name": "t",
                        "primary_key": ["id"],
                        "cursor": "updated_at",
                        "cursor_timezone": "UTC",
                        "max_rejected_fraction": 0.5,
                    }
                ],
            }
        ],
    }


def keys(bucket: str, prefix: str = "") -> set[str]:
    s3 = boto3.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def landed_rows(bucket: str) -> list[dict]:
    files = sorted(k for k in keys(bucket, "lake/landing/s/t/") if k.endswith(".parquet"))
    fs, _ = lakefs.filesystem(f"s3://{bucket}")
    return [r for k in files for r in pq.read_table(f"{bucket}/{k}", filesystem=fs).to_pylist()]


@pytest.fixture
def s3_lake(s3_bucket, monkeypatch, tmp_path):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    monkeypatch.setenv("TIDEMARK_SCRATCH", str(tmp_path / "scratch"))
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="drops/t_1.csv", Body=GOOD.encode())
    s3.put_object(Bucket=s3_bucket, Key="drops/t_2.csv", Body=SOME_BAD.encode())
    return s3_bucket


def test_cli_run_with_the_lake_on_s3_lands_everything_there(s3_lake, tmp_path):
    bucket = s3_lake
    config = tmp_path / "ingestion.yml"
    config.write_text(yaml.safe_dump(doc(f"s3://{bucket}/drops", f"s3://{bucket}/lake")))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "ingestion", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr

    # landed Parquet under the final names, with every row of both files but the rejected one
    landed = {k for k in keys(bucket, "lake/landing/") if k.endswith(".parquet")}
    assert landed and all(k.startswith("lake/landing/s/t/_ingest_date=") for k in landed)
    assert all(Path(k).name.startswith("part-") for k in landed)
    rows = landed_rows(bucket)
    assert sorted(r["id"] for r in rows) == [1, 2, 3, 5, 6]
    run_id = rows[0]["_run_id"]
    assert all(f"part-{run_id}-" in k for k in landed)

    # rejected row, state, ledger, archive and the JSON log: all in the bucket, nothing in the local lake
    rejected = keys(bucket, "lake/_rejected/s/t/")
    assert rejected == {f"lake/_rejected/s/t/run_id={run_id}/part-0.parquet"}
    fs, _ = lakefs.filesystem(f"s3://{bucket}")
    bad = pq.read_table(f"{bucket}/{rejected.pop()}", filesystem=fs).to_pylist()
    assert [(r["_source_file"], r["_line"], r["_reason_code"]) for r in bad] == [
        ("t_2.csv", 3, "extra_columns")
    ]
    state = StateStore(f"s3://{bucket}/lake", "p").read("s", "t")
    assert state is not None and list(state.committed_runs) == [run_id] and state.watermark is not None
    assert set(state.files) == {"t_1.csv", "t_2.csv"}
    ledger = [r for r in Ledger(f"s3://{bucket}/lake").read() if r.run_id == run_id]
    assert {r.status for r in ledger} == {"running", "landed"}
    assert max(r.rows_landed or 0 for r in ledger) == 5
    month = f"{run_id[:4]}/{run_id[4:6]}"
    assert keys(bucket, "drops/") == {f"drops/archive/{month}/t_1.csv", f"drops/archive/{month}/t_2.csv"}
    logs = [k for k in keys(bucket, "lake/_logs/") if k.endswith(f"/{run_id}.jsonl")]
    assert len(logs) == 1
    body = boto3.client("s3").get_object(Bucket=bucket, Key=logs[0])["Body"].read().decode()
    events = [json.loads(line)["event"] for line in body.splitlines()]
    assert events[0] == "run started" and "run finished" in events
    assert not (tmp_path / "lake").exists() and not (tmp_path / "s3:").exists()
    assert not list((tmp_path / "scratch").glob("*/_tmp/*"))  # scratch is cleaned up

    # a rerun lands nothing and writes nothing new under landing/
    again = subprocess.run(
        [sys.executable, "-m", "ingestion", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    assert {k for k in keys(bucket, "lake/landing/") if k.endswith(".parquet")} == landed


def test_crash_after_upload_leaves_orphans_on_s3_that_the_next_run_removes(s3_lake, monkeypatch):
    bucket = s3_lake
    cfg = parse_config(doc(f"s3://{bucket}/drops", f"s3://{bucket}/lake"))
    # The run's files are uploaded, then the commit "crashes": they must never count.
    monkeypatch.setenv("TIDEMARK_FAULTS", "batch_written=raise")
    crashed = run_pipeline(cfg)
    assert crashed.tables[0].status == "failed"
    # A failed table removes its own files at once; put some back, and its lease, to play a killed
    # process's leftovers (its run id names them: no listing finds them).
    day = f"{crashed.run_id[:4]}-{crashed.run_id[4:6]}-{crashed.run_id[6:8]}"
    orphan = f"lake/landing/s/t/_ingest_date={day}/part-{crashed.run_id}-0.parquet"
    abandon_lease(StateStore(f"s3://{bucket}/lake", "p"), "s", "t", crashed.run_id)
    orphan_reject = f"lake/_rejected/s/t/run_id={crashed.run_id}/part-0.parquet"
    assert not keys(bucket, "lake/landing/") and not keys(bucket, "lake/_rejected/")
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=orphan, Body=b"half a parquet file")
    s3.put_object(Bucket=bucket, Key=orphan_reject, Body=b"rejects of a dead run")
    monkeypatch.delenv("TIDEMARK_FAULTS")

    rerun = run_pipeline(cfg)
    out = rerun.tables[0]
    assert out.status == "landed" and out.orphans_removed == 1 and out.rows_landed == 5
    landed = {k for k in keys(bucket, "lake/landing/") if k.endswith(".parquet")}
    assert orphan not in landed and all(rerun.run_id in k for k in landed)
    assert orphan_reject not in keys(bucket, "lake/_rejected/")
    assert sorted(r["id"] for r in landed_rows(bucket)) == [1, 2, 3, 5, 6]

    third = run_pipeline(cfg)
    assert third.tables[0].status == "up_to_date" and third.tables[0].rows_landed == 0


def test_crash_after_commit_on_s3_lands_nothing_twice(s3_lake, monkeypatch):
    bucket = s3_lake
    cfg = parse_config(doc(f"s3://{bucket}/drops", f"s3://{bucket}/lake"))
    monkeypatch.setenv("TIDEMARK_FAULTS", "state_committed=raise")
    crashed = run_pipeline(cfg)
    assert crashed.tables[0].status == "failed"
    assert {"drops/t_1.csv", "drops/t_2.csv"} <= keys(bucket, "drops/")  # committed, not yet archived
    monkeypatch.delenv("TIDEMARK_FAULTS")
    rerun = run_pipeline(cfg)
    assert rerun.tables[0].rows_landed == 0 and rerun.tables[0].orphans_removed == 0
    assert not {"drops/t_1.csv", "drops/t_2.csv"} & keys(bucket, "drops/")  # moved now
    assert sorted(r["id"] for r in landed_rows(bucket)) == [1, 2, 3, 5, 6]
    assert {r["_run_id"] for r in landed_rows(bucket)} == {crashed.run_id}


def test_unsupported_lake_scheme_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    cfg = parse_config(doc(str(tmp_path / "in"), "gs://bucket/lake"))
    from ingestion.errors import ConfigError

    with pytest.raises(ConfigError, match="only local folders and s3://"):
        run_pipeline(cfg)


@pytest.mark.slow
@pytest.mark.spark
def test_a_spark_write_that_lands_on_another_filesystem_fails_loudly(
    s3_bucket, s3a_spark, tmp_path, monkeypatch
):
    """Spark's S3 settings point somewhere else than the lake's (here: another S3 endpoint for this bucket,
    as an EMR default filesystem or a mis-mapped scheme would): the write "succeeds" there, the lake
    finds no file where it looks, and the run fails loudly instead of committing rows that aren't there."""
    from .conftest import moto_server

    monkeypatch.setenv("TIDEMARK_SCRATCH", str(tmp_path / "scratch"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    hconf = s3a_spark.sparkContext._jsc.hadoopConfiguration()
    with moto_server() as other:
        boto3.client("s3", endpoint_url=other).create_bucket(Bucket=s3_bucket)
        hconf.set(f"fs.s3a.bucket.{s3_bucket}.endpoint", other)  # per bucket: no other test sees it
        try:
            cfg = parse_config({**doc(str(inbox), f"s3://{s3_bucket}/lake"), "engine": "spark"})
            report = run_pipeline(cfg)
        finally:
            hconf.unset(f"fs.s3a.bucket.{s3_bucket}.endpoint")
        elsewhere = (
            boto3.client("s3", endpoint_url=other).list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        )
    outcome = report.tables[0]
    assert not report.ok and outcome.status == "failed"
    assert "no Parquet file is there" in (outcome.error or ""), outcome.error
    assert any(o["Key"].endswith(".parquet") for o in elsewhere), "the files went to the other endpoint"
    assert not [k for k in keys(s3_bucket, "lake/landing/") if k.endswith(".parquet")]
    state = StateStore(f"s3://{s3_bucket}/lake", "p").read("s", "t")
    assert state is None or not state.committed_runs
    assert (inbox / "t_1.csv").exists(), "a failed run archives nothing"


def test_spark_engine_in_local_mode_lands_to_an_s3_lake(s3_lake, s3a_spark):
    """Spark reads the S3 inbox and writes the S3 lake through S3A (`s3://` mapped to it, as EMRFS on
    Glue): the same rows land; a rerun lands nothing; no staging is left under the lake's _tmp/."""
    bucket = s3_lake
    cfg = parse_config({**doc(f"s3://{bucket}/drops", f"s3://{bucket}/lake"), "engine": "spark"})
    first = run_pipeline(cfg)
    assert first.ok, first.tables[0].error
    assert sorted(r["id"] for r in landed_rows(bucket)) == [1, 2, 3, 5, 6]
    # the rejected row was written by the executors (through S3A, published by a server-side copy)
    assert keys(bucket, "lake/_rejected/s/t/") == {
        f"lake/_rejected/s/t/run_id={first.run_id}/part-{first.run_id}-0.parquet"
    }
    assert run_pipeline(cfg).tables[0].status == "up_to_date"
    assert keys(bucket, "lake/_tmp/") == set()


def test_delete_detection_on_an_s3_lake_lands_a_tombstone_once(s3_bucket, pg_db, tmp_path, monkeypatch):
    """PostgreSQL source with detect_deletes → S3 lake (DuckDB engine): the deleted key's tombstone is
    landed and committed like any landed file, a snapshot of live keys is kept, and the next run doesn't
    tombstone the key again."""
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    monkeypatch.setenv("TIDEMARK_SCRATCH", str(tmp_path / "scratch"))
    pg_db.con.execute(
        "create table orders (order_id bigint primary key, amount numeric(10,2), "
        "updated_at timestamptz not null default clock_timestamp())"
    )
    pg_db.con.execute("insert into orders (order_id, amount) values (1, 9.50), (2, 12.00), (3, 1.25)")
    config = tmp_path / "pg.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "pg_s3",
                "lake": {"root": f"s3://{s3_bucket}/lake"},
                "sources": [jdbc_source(pg_db, tables=["orders"], detect_deletes=True)],
            }
        )
    )
    from ingestion.config import load_config

    cfg = load_config(config)
    first = run_pipeline(cfg)
    assert first.ok, [t.error for t in first.tables]
    assert f"lake/_keys/pg/orders/{first.run_id}/part-0.parquet" in keys(s3_bucket, "lake/_keys/")

    pg_db.con.execute("delete from orders where order_id = 2")
    second = run_pipeline(cfg)
    assert second.ok, [t.error for t in second.tables]
    out = second.tables[0]
    assert out.status == "landed" and out.rows_landed >= 1
    rel = f"_ingest_date={second.run_id[:4]}-{second.run_id[4:6]}-{second.run_id[6:8]}/part-{second.run_id}-900000.parquet"
    tomb = f"lake/landing/pg/orders/{rel}"
    assert tomb in keys(s3_bucket, "lake/landing/")
    fs, _ = lakefs.filesystem(f"s3://{s3_bucket}")
    rows = pq.read_table(f"{s3_bucket}/{tomb}", filesystem=fs).to_pylist()
    assert [(r["order_id"], r["_op"], r["amount"], r["_run_id"]) for r in rows] == [
        (2, "d", None, second.run_id)
    ]
    # Committed like any landed file: the run is in the state, the tombstone in its file list.
    state = StateStore(f"s3://{s3_bucket}/lake", "pg_s3").read("pg", "orders")
    assert state is not None and second.run_id in state.committed_runs
    assert rel in state.run_files[second.run_id]
    snapshot = pq.read_table(
        f"{s3_bucket}/lake/_keys/pg/orders/{second.run_id}/part-0.parquet", filesystem=fs
    ).to_pylist()
    assert sorted((r["order_id"], r["_op"]) for r in snapshot) == [(1, "u"), (2, "d"), (3, "u")]

    third = run_pipeline(cfg)
    assert third.ok, [t.error for t in third.tables]
    tombstones = [k for k in keys(s3_bucket, "lake/landing/") if k.endswith("-900000.parquet")]
    assert tombstones == [tomb]
    # The first run's snapshot was superseded by the second's and removed.
    assert not any(f"/{first.run_id}/" in k for k in keys(s3_bucket, "lake/_keys/"))

    # Several times: the process's native teardown after pyarrow's S3 use aborted intermittently (exit -6)
    # after printing the whole result, so one call could pass by luck.
    for _ in range(5):
        status = subprocess.run(
            [sys.executable, "-m", "ingestion", "status", "--config", str(config), "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert status.returncode == 0, status.stderr
    (table,) = json.loads(status.stdout)["tables"]
    assert table["name"] == "pg.orders" and not table["failing"]
    assert table["last_run_id"] == third.run_id


def test_postgres_table_lands_to_an_s3_lake_and_registers_its_new_column(
    s3_bucket, pg_db, moto_endpoint, tmp_path, monkeypatch
):
    """JDBC source (DuckDB engine) → S3 lake → Glue catalog, then a new column at the source."""
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    monkeypatch.setenv("TIDEMARK_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", moto_endpoint)
    pg_db.con.execute(
        "create table orders (order_id bigint primary key, amount numeric(10,2), "
        "updated_at timestamptz not null default now())"
    )
    pg_db.con.execute("insert into orders (order_id, amount) values (1, 9.50), (2, 12.00)")
    database = f"landing_pg_{pg_db.name}"
    cfg = parse_config(
        {
            "pipeline": "pg_s3",
            "lake": {"root": f"s3://{s3_bucket}/lake"},
            "catalog": {"glue_database": database},
            "sources": [jdbc_source(pg_db, tables=["orders"])],
        }
    )
    first = run_pipeline(cfg)
    assert first.ok, [t.error for t in first.tables]
    files = [k for k in keys(s3_bucket, "lake/landing/pg/orders/") if k.endswith(".parquet")]
    assert files and all(f"part-{first.run_id}-" in k for k in files)

    pg_db.con.execute("alter table orders add column channel text")
    pg_db.con.execute("insert into orders (order_id, amount, channel) values (3, 1.25, 'web')")
    second = run_pipeline(cfg)
    assert second.ok and second.tables[0].rows_landed >= 1
    glue = boto3.client("glue")
    cols = glue.get_table(DatabaseName=database, Name="orders")["Table"]["StorageDescriptor"]["Columns"]
    types = {c["Name"]: c["Type"] for c in cols}
    assert types["order_id"] == "bigint" and types["amount"] == "decimal(10,2)"
    assert types["updated_at"] == "timestamp" and types["channel"] == "string"
    assert [c["Name"] for c in cols][-1] == "channel"  # appended, the others kept in place


# Every point of the commit protocol once: the Spark crash matrix (test_crash.py keeps one local-lake case).
SPARK_S3_FAULTS = [
    "run_started=kill",
    *[f"{p}@t=kill" for p in ("lease_acquired", "orphans_removed", "batch_written", "state_committed")],
    "lease_released@t=kill",
    "run_finished=kill",
]


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.parametrize("fault", SPARK_S3_FAULTS)
def test_spark_on_s3_killed_then_rerun_lands_every_row_once(s3_lake, s3a_spark, tmp_path, fault):
    """SIGKILL a Spark run on the S3 lake at every point of the commit protocol (the crash matrix of
    test_crash.py, on S3 through S3A), and plant what a run killed mid-write leaves (staging under _tmp/):
    a clean rerun lands every row once, removes the dead run's files, rejects and staging, and leaves
    nothing of either behind."""
    from tests.spark_cluster import s3a_jars

    bucket = s3_lake
    cfg_doc = {
        **doc(f"s3://{bucket}/drops", f"s3://{bucket}/lake"),
        "engine": "spark",
        # The killed run is a short-lived JVM on a tiny table: the quick-start C1 compiler, as test_crash.py.
        "spark": {
            "master": "local[1]",
            "conf": {
                "spark.jars": ",".join(s3a_jars() or []),
                "spark.sql.shuffle.partitions": "2",
                "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            },
        },
    }
    config = tmp_path / "ingestion.yml"
    config.write_text(yaml.safe_dump(cfg_doc))
    s3 = boto3.client("s3")
    env = {k: v for k, v in os.environ.items() if k not in ("TIDEMARK_LAKE", "PYSPARK_SUBMIT_ARGS")}
    killed = subprocess.run(
        [sys.executable, "-m", "ingestion", "run", "--config", str(config)],
        cwd=REPO,
        env={**env, "TIDEMARK_FAULTS": fault},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    dead = StateStore(f"s3://{bucket}/lake", "p").read("s", "t")
    point = fault.split("@")[0].split("=")[0]
    if point in ("run_started", "lease_released", "run_finished"):
        # killed before the lease was taken, or after it was given back: nothing of the run is half done
        assert dead is None or dead.lease is None
    else:
        assert dead is not None and dead.lease is not None  # the killed run's lease names it
        s3.put_object(Bucket=bucket, Key=f"lake/_tmp/{dead.lease.run_id}/s/t/part-00000-x.parquet", Body=b"x")
    report = run_pipeline(parse_config(cfg_doc))
    assert report.ok, report.tables[0].error
    assert sorted(r["id"] for r in landed_rows(bucket)) == [1, 2, 3, 5, 6]
    state = StateStore(f"s3://{bucket}/lake", "p").read("s", "t")
    assert state is not None
    landed = [k for k in keys(bucket, "lake/landing/") if k.endswith(".parquet")]
    assert landed and all(any(run in k for run in state.committed_runs) for k in landed), landed
    assert len(landed_rows(bucket)) == 5  # no row twice
    rejected = {k.split("run_id=")[1].split("/")[0] for k in keys(bucket, "lake/_rejected/")}
    assert rejected and rejected <= set(state.committed_runs), rejected  # the dead run's rejects are gone
    assert keys(bucket, "lake/_tmp/") == set()
