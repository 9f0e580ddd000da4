"""Engine selection and the messages a user sees when the Spark engine cannot start."""

from __future__ import annotations

import pytest

from ingestion.config import SparkConfig, parse_config
from ingestion.engines import get_engine
from ingestion.errors import ConfigError, EngineError


def test_unknown_engine_is_a_config_error():
    cfg = parse_config(
        {"pipeline": "p", "sources": [{"name": "s", "kind": "csv", "path": ".", "tables": [{"name": "t"}]}]}
    )
    with pytest.raises(ConfigError, match="unknown engine 'flink'"):
        get_engine("flink", cfg)
    assert get_engine("duckdb", cfg).name == "duckdb"


def test_missing_java_says_how_to_install_it(monkeypatch):
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    from ingestion.engines.spark import engine as spark_engine

    monkeypatch.setattr(SparkSession, "getActiveSession", staticmethod(lambda: None))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(spark_engine.shutil, "which", lambda _name: None)
    with pytest.raises(EngineError) as e:
        spark_engine.get_spark(SparkConfig())
    assert "Java 17 or 21" in e.value.message
    assert "openjdk-17" in e.value.hint and "--engine duckdb" in e.value.hint
