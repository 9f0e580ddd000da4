"""The Spark engine on a real multi-worker cluster: `local-cluster[2,1,1024]` starts two executor JVMs,
and each runs in a mount namespace where the driver's temp folder is an empty tmpfs (see
tests/spark_cluster.py), as on a cluster where executors live on other machines.

An S3 lake and inbox on moto (through S3A) and a local lake on a folder every executor mounts both land
CSV files and a PostgreSQL table through it, twice (a first load, then an incremental one). The cluster
starts once for the module (tests/cluster_driver.py serves every run).
"""

from __future__ import annotations

import gzip
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
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


class ClusterDriver:
    """tests/cluster_driver.py as one process for the module: the cluster (driver and two executor JVMs)
    starts once, and each run is a request to it."""

    def __init__(self, env: dict[str, str], hidden: Path, spark: dict[str, Any], log: Path) -> None:
        self.spark, self.log = spark, log
        self._err = open(log, "w")  # noqa: SIM115  (closed in close())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster_driver", str(hidden)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # the driver exited

    def run(self, config: Path, doc: dict[str, Any]) -> dict[str, Any]:
        """Run the pipeline of `doc` (its spark settings: the cluster's) in the driver; its report."""
        config.write_text(yaml.safe_dump({**doc, "engine": "spark", "spark": self.spark}))
        # What the run reads from the environment: the S3 endpoint and keys, the PostgreSQL password.
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "TM_TEST_"))}
        assert self.proc.stdin is not None and self.proc.poll() is None, self.tail()
        self.proc.stdin.write(json.dumps({"config": str(config), "env": env}) + "\n")
        self.proc.stdin.flush()
        out: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=900)
            except queue.Empty:
                pytest.fail("the cluster driver gave no report in 900 s\n" + self.tail(out))
            if line is None:
                pytest.fail("the cluster driver exited\n" + self.tail(out))
            if line.startswith("REPORT="):
                break
            out.append(line)
        report = json.loads(line.removeprefix("REPORT="))
        assert report["master"] == "local-cluster[2,1,1024]" and report["executors"] == 2, report
        return report

    def tail(self, out: list[str] | None = None) -> str:
        self._err.flush()
        return "".join(out or [])[-3000:] + self.log.read_text()[-5000:]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._err.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterDriver]:
    """A driver process whose executors cannot see its temp folder, shared by the module's tests."""
    pytest.importorskip("pyspark")
    tmp = tmp_path_factory.mktemp("cluster")
    hidden = tmp / "driver-tmp"
    hidden.mkdir()
    java_home = hiding_java_home(tmp, hidden)
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
    driver = ClusterDriver(env, hidden, spark, tmp / "driver.log")
    yield driver
    driver.close()


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
    cluster: ClusterDriver, s3_bucket: str, pg_db: PgDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLUSTER_COPY", str(tmp_path / "copies"))
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
    first = cluster.run(tmp_path / "ingestion.yml", doc)
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
    second = cluster.run(tmp_path / "ingestion.yml", doc)
    assert second["ok"], second
    assert second["tables"]["s.orders"]["rows_landed"] == 1
    assert second["tables"]["pg.customers"]["rows_landed"] >= 1
    assert lake_rows(lake, "landing/s/orders", "id, amount", s3=True) == [(1, 11), (2, 21), (4, 40)]
    assert (7, "changed") in lake_rows(lake, "landing/pg/customers", "id, name", s3=True)


def test_local_lake_on_a_shared_folder_lands_through_executors(
    cluster: ClusterDriver, pg_db: PgDb, tmp_path: Path
) -> None:
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
    report = cluster.run(tmp_path / "ingestion.yml", doc)
    assert report["ok"], report
    assert report["tables"]["s.orders"]["rows_rejected"] == 1
    assert lake_rows(str(lake), "landing/s/orders", "id, amount", s3=False) == [(1, 10), (3, 30)]
    assert len(lake_rows(str(lake), "landing/pg/customers", "id", s3=False)) == 1000
    assert not list((lake / "_tmp").rglob("*.parquet"))
