"""Engines land a batch: read → normalize → dedup → write Parquet. Imported lazily: Spark only when used."""

from __future__ import annotations

from ingestion.config import PipelineConfig
from ingestion.engines.base import CatalogBatch, CsvBatch, Engine, JdbcBatch, TombstoneBatch
from ingestion.errors import ConfigError

ENGINES = ("duckdb", "spark")


def get_engine(name: str, config: PipelineConfig) -> Engine:
    """Create the named engine; the Spark module (and so pyspark and Java) is only touched for `spark`."""
    if name == "duckdb":
        from ingestion.engines.duckdb.engine import DuckDBEngine

        settings = config.duckdb
        if settings.temp_directory:  # relative to the config file, like every other path in it
            settings = settings.model_copy(update={"temp_directory": config.resolve(settings.temp_directory)})
        return DuckDBEngine(settings)
    if name == "spark":
        from ingestion.engines.spark.engine import SparkEngine
        from ingestion.engines.spark.jdbc import with_jdbc_driver

        return SparkEngine(with_jdbc_driver(config))
    raise ConfigError(f"unknown engine {name!r}", hint=f"use one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "CatalogBatch", "CsvBatch", "Engine", "JdbcBatch", "TombstoneBatch", "get_engine"]
