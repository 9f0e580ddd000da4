"""Shared fixtures: a config writer, the demo inbox, one real Spark session per test session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingestion.config import PipelineConfig, load_config
from ingestion.demo.billing import write_day

# PostgreSQL fixtures (pg_admin, pg_db) live in their own module.
pytest_plugins = ["tests.pg_fixtures"]

REPO = Path(__file__).resolve().parent.parent
DEMO_TABLES = {
    "accounts": "account_id",
    "customers": "customer_id",
    "subscriptions": "subscription_id",
    "invoices": "invoice_id",
}


def demo_config_doc(inbox: Path, lake: Path, engine: str = "duckdb") -> dict[str, Any]:
    return {
        "pipeline": "billing_demo",
        "engine": engine,
        "lake": {"root": str(lake)},
        "spark": {"master": "local[2]"},
        "sources": [
            {
                "name": "billing",
                "kind": "csv",
                "path": str(inbox / "billing"),
                "tables": [
                    {
                        "name": t,
                        "pattern": f"{t}_*.csv",
                        "primary_key": [k],
                        "cursor": "updated_at",
                        "cursor_timezone": "UTC",
                    }
                    for t, k in DEMO_TABLES.items()
                ],
            }
        ],
    }


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], PipelineConfig]:
    """Write a config document to tmp_path/ingestion.yml and load it the way the CLI does."""

    def write(doc: dict[str, Any], name: str = "ingestion.yml") -> PipelineConfig:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return load_config(path)

    return write


@pytest.fixture
def demo_inbox(tmp_path: Path) -> Path:
    """An inbox holding the demo's day-1 drop (call write_day(2, inbox) for day 2)."""
    inbox = tmp_path / "inbox"
    list(write_day(1, inbox))
    return inbox


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark session for the whole test session; skips when pyspark or Java is missing."""
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'tidemark[spark]')")
    from ingestion.config import DEFAULT_DRIVER_JAR, SparkConfig
    from ingestion.engines.spark.engine import get_spark, java_available
    from tests.spark_cluster import s3a_jars

    if not java_available():
        pytest.skip("no Java runtime: the Spark engine needs Java 17 or 21")
    conf = {"spark.sql.shuffle.partitions": "4"}
    jars = s3a_jars()  # hadoop-aws for s3:// against moto (fetched once; see tests/spark_cluster.py)
    if jars:
        conf["spark.jars"] = ",".join(
            [*jars, *([DEFAULT_DRIVER_JAR] if Path(DEFAULT_DRIVER_JAR).is_file() else [])]
        )
    session = get_spark(SparkConfig(master="local[2]", conf=conf))
    session.tidemark_s3a = bool(jars)
    yield session
    session.stop()
    shutil.rmtree(REPO / "spark-warehouse", ignore_errors=True)


@pytest.fixture
def s3a_spark(spark: Any) -> Any:
    """The session Spark, able to read and write `s3://` (S3A) on moto; skips without the S3A jars."""
    if not getattr(spark, "tidemark_s3a", False):
        pytest.skip("the S3A jars (hadoop-aws 3.3.1, from sagemaker-pyspark==1.4.5) could not be fetched")
    return spark


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server as a separate process on 127.0.0.1 (its endpoint URL); skips when it can't start."""
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = _free_port()
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.skip(f"moto_server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server as a separate process on 127.0.0.1; skips when it can't be started."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch) -> str:
    """A fresh bucket on the moto server; boto3 in this process is pointed at it."""
    import uuid

    import boto3

    for key, value in {
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    name = f"tidemark-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
