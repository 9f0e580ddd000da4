"""The Spark engine on a real multi-worker cluster: `local-cluster[2,1,1024]` starts two executor JVMs,
and each runs in a mount namespace where the driver's temp folder is an empty tmpfs (see
tests/spark_cluster.py), as on a cluster where executors live on other machines.

An S3 lake and inbox on moto (through S3A) and a local lake on a folder every executor mounts both land
CSV files and a PostgreSQL table through it, twice (a first load, then an incremental one).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
import yaml

from ingestion.config import DEFAULT_DRIVER_JAR
from tests.pg_fixtures import PgDb, jdbc_source
from tests.spark_cluster import hiding_java_home, s3a_jars

pytestmark = [pytest.mark.slow, pytest.mark.spark]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster(tmp_path: Path) -> dict[str, Any]:
    """Environment and settings for a driver process whose executors cannot see its temp folder."""
    pytest.importorskip("pyspark")
    hidden = tmp_path / "driver-tmp"
    hidden.mkdir()
    java_home = hiding_java_home(tmp_path, hidden)
    if java_home is None:
        pytest.skip("cannot hide the driver's folder from executors here (needs unshare -m and tmpfs mounts)")
    jars = s3a_jars()
    if jars is None:
        pytest.skip("the S3A jars (sagemaker-pyspark==1.4.5 sdist) could not be fetched")
    if not Path(DEFAULT_DRIVER_JAR).is_file():
        pytest.skip(
            f"no PostgreSQL JDBC driver at {DEFAULT_DRIVER_JAR} (apt-get install libpostgresql-jdbc-java)"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("PYSPARK_SUBMIT_ARGS", "PYSPARK_GATEWAY_PORT")}
    env.update(JAVA_HOME=java_home, TMPDIR=str(hidden), PYTHONPATH=str(REPO))
    spark = {
        "master": "local-cluster[2,1,1024]",
        "conf": {"spark.jars": ",".join(jars), "spark.sql.shuffle.partitions": "4"},
    }
    return {"env": env, "hidden": hidden, "spark": spark, "tmp": tmp_path}


def run_on_cluster(cluster: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    config = cluster["tmp"] / "ingestion.yml"
    config.write_text(yaml.safe_dump({**doc, "engine": "spark", "spark": cluster["spark"]}))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cluster_driver", str(config), str(cluster["hidden"])],
        cwd=REPO,
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("REPORT=")), None)
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-5000:]
    report = json.loads(line.removeprefix("REPORT="))
    assert report["master"] == "local-cluster[2,1,1024]" and report["executors"] == 2, report
    return report


def csv_bytes(rows: list[str]) -> bytes:
    return ("id,amount,updated_at\n" + "\n".join(rows) + "\n").encode()


def orders_table(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "orders",
        "primary_key": ["id"],
        "cursor": "updated_at",
        "cursor_timezone": "UTC",
        "max_rejected_fraction": 0.5,
        **(extra or {}),
    }


def seed_customers(db: PgDb) -> None:
    db.con.execute("create table customers (id int primary key, name text, updated_at timestamptz not null)")
    db.con.execute(
        "insert into customers select g, 'c' || g, timestamptz '2026-01-01' + g * interval '1 second' "
        "from generate_series(1, 1000) g"
    )


def lake_rows(root: str, folder: str, columns: str, s3: bool) -> list[tuple]:
    """The latest row per id of a landed table (read with DuckDB from local copies or local files)."""
    con = duckdb.connect()
    if s3:
        bucket, _, prefix = root.removeprefix("s3://").partition("/")
        client = boto3.client("s3")
        local = Path(os.environ["CLUSTER_COPY"], folder.replace("/", "_"))
        local.mkdir(parents=True, exist_ok=True)
        keys = [
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}/{folder}/"
            )
            for o in page.get("Contents", [])
            if o["Key"].endswith(".parquet")
        ]
        files = []
        for n, key in enumerate(keys):
            client.download_file(bucket, key, str(local / f"{n}.parquet"))
            files.append(str(local / f"{n}.parquet"))
    else:
        files = [str(p) for p in Path(root, folder).rglob("*.parquet")]
    return con.execute(
        f"select {columns} from read_parquet($files, union_by_name = true) "
        "qualify row_number() over (partition by id order by _ingested_at desc) = 1 order by id",
        {"files": files},
    ).fetchall()


def test_s3_lake_and_inbox_land_through_executors_that_cannot_see_the_driver(
    cluster: dict[str, Any], s3_bucket: str, pg_db: PgDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLUSTER_COPY", str(tmp_path / "copies"))
    cluster["env"].update({k: v for k, v in os.environ.items() if k.startswith(("AWS_", "TM_TEST_"))})
    s3 = boto3.client("s3")
    s3.put_object(
        Bucket=s3_bucket,
        Key="drops/orders_1.csv",
        Body=csv_bytes(["1,10,2026-01-01 10:00:00", "2,20,2026-01-01 11:00:00", "3,30,oops,extra"]),
    )
    s3.put_object(
        Bucket=s3_bucket,
        Key="drops/orders_2.csv.gz",
        Body=gzip.compress(csv_bytes(["4,40,2026-01-02 10:00:00", "2,21,2026-01-02 11:00:00"])),
    )
    seed_customers(pg_db)
    lake = f"s3://{s3_bucket}/lake"
    doc = {
        "pipeline": "cluster",
        "lake": {"root": lake},
        "sources": [
            {
                "name": "s",
                "kind": "csv",
                "path": f"s3://{s3_bucket}/drops",
                "tables": [orders_table({"pattern": "orders_*"})],
            },
            jdbc_source(pg_db, tables=[{"name": "customers", "cursor": "updated_at", "num_partitions": 2}]),
        ],
    }
    first = run_on_cluster(cluster, doc)
    assert first["ok"], first
    assert first["tables"]["s.orders"]["rows_rejected"] == 1
    assert first["tables"]["pg.customers"]["rows_landed"] == 1000
    assert lake_rows(lake, "landing/s/orders", "id, amount", s3=True) == [(1, 10), (2, 21), (4, 40)]
    customers = lake_rows(lake, "landing/pg/customers", "id, name", s3=True)
    assert len(customers) == 1000 and customers[0] == (1, "c1")
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    assert any(k.startswith("lake/_rejected/s/orders/") for k in listed), listed
    assert not any(k.startswith("lake/_tmp/") for k in listed), "staging left behind"
    assert "drops/orders_1.csv" not in listed and any(k.startswith("drops/archive/") for k in listed)

    # An incremental run: a new file, an updated PostgreSQL row.
    s3.put_object(Bucket=s3_bucket, Key="drops/orders_3.csv", Body=csv_bytes(["1,11,2026-01-03 10:00:00"]))
    pg_db.con.execute("update customers set name = 'changed', updated_at = now() where id = 7")
    second = run_on_cluster(cluster, doc)
    assert second["ok"], second
    assert second["tables"]["s.orders"]["rows_landed"] == 1
    assert second["tables"]["pg.customers"]["rows_landed"] >= 1
    assert lake_rows(lake, "landing/s/orders", "id, amount", s3=True) == [(1, 11), (2, 21), (4, 40)]
    assert (7, "changed") in lake_rows(lake, "landing/pg/customers", "id, name", s3=True)


def test_local_lake_on_a_shared_folder_lands_through_executors(
    cluster: dict[str, Any], pg_db: PgDb, tmp_path: Path
) -> None:
    cluster["env"].update({k: v for k, v in os.environ.items() if k.startswith("TM_TEST_")})
    shared = tmp_path / "shared"  # what every executor mounts (NFS, EFS …); the driver's temp is hidden
    inbox = shared / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "orders_1.csv").write_bytes(csv_bytes(["1,10,2026-01-01 10:00:00", "2,x,y,z"]))
    with gzip.open(inbox / "orders_2.csv.gz", "wb") as fh:
        fh.write(csv_bytes(["3,30,2026-01-02 10:00:00"]))
    seed_customers(pg_db)
    lake = shared / "lake"
    doc = {
        "pipeline": "cluster",
        "lake": {"root": str(lake)},
        "sources": [
            {
                "name": "s",
                "kind": "csv",
                "path": str(inbox),
                "tables": [orders_table({"pattern": "orders_*"})],
            },
            jdbc_source(pg_db, tables=[{"name": "customers", "cursor": "updated_at", "num_partitions": 2}]),
        ],
    }
    report = run_on_cluster(cluster, doc)
    assert report["ok"], report
    assert report["tables"]["s.orders"]["rows_rejected"] == 1
    assert lake_rows(str(lake), "landing/s/orders", "id, amount", s3=False) == [(1, 10), (3, 30)]
    assert len(lake_rows(str(lake), "landing/pg/customers", "id", s3=False)) == 1000
    assert not list((lake / "_tmp").rglob("*.parquet"))
