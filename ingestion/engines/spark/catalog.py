"""The Spark engine's Glue catalog path: not built yet, so catalog tables are refused with what to do."""

from __future__ import annotations

from typing import Any

from ingestion.engines.base import CatalogBatch
from ingestion.errors import EngineError
from ingestion.plan.csv import LandedBatch

UNSUPPORTED = "glue_catalog tables land on the duckdb engine only in this version"


def land_catalog(spark: Any, batch: CatalogBatch) -> LandedBatch:
    """Refuse: reading catalog files through Hadoop paths on the executors is not built yet."""
    raise EngineError(f"{batch.name}: {UNSUPPORTED}", hint="run this source with --engine duckdb")
