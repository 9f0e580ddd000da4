"""Shared fixtures: a config writer, the demo inbox, one real Spark session per test session."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingestion.config import PipelineConfig, load_config
from ingestion.demo import write_day

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
                    {"name": t, "pattern": f"{t}_*.csv", "primary_key": [k], "cursor": "updated_at"}
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
    from ingestion.config import SparkConfig
    from ingestion.engines.spark import get_spark, java_available

    if not java_available():
        pytest.skip("no Java runtime: the Spark engine needs Java 17 or 21")
    session = get_spark(SparkConfig(master="local[2]", conf={"spark.sql.shuffle.partitions": "4"}))
    yield session
    session.stop()
    shutil.rmtree(REPO / "spark-warehouse", ignore_errors=True)
