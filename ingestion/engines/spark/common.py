"""What the Spark engine's CSV and PostgreSQL paths share: types, the dedup window, count and max cursor.

pyspark is imported inside functions: the Spark engine is loaded only when a run asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ingestion.contract import INGESTED_AT, OP, RUN_ID, SOURCE_FILE, UPSERT, batch_dedup_order
from ingestion.lake.model import Watermark
from ingestion.plan.normalize import DECIMAL, DECIMAL_PRECISION, DECIMAL_SCALE, STRING
from ingestion.sqltext import quote_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
SQL_TYPES = {
    "boolean": "boolean",
    "bigint": "bigint",
    DECIMAL: f"decimal({DECIMAL_PRECISION},{DECIMAL_SCALE})",
    "double": "double",
    "date": "date",
    "timestamp": "timestamp_ntz",
    "timestamptz": "timestamp",
    STRING: "string",
}


_CURSOR_FORMAT = {
    "timestamp": "yyyy-MM-dd'T'HH:mm:ss.SSSSSS",
    "timestamptz": "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'+00:00'",
    "date": "yyyy-MM-dd",
}


def count_and_max(landed: DataFrame, cursor: str | None, ctype: str) -> tuple[int, Watermark | None]:
    """One scan of what was written: its row count and the max cursor in canonical text."""
    from pyspark.sql import functions as F

    if not cursor:
        return landed.count(), None
    agg = F.max(F.col(quote_spark(cursor)))
    expr = F.date_format(agg, _CURSOR_FORMAT[ctype]) if ctype in _CURSOR_FORMAT else agg.cast("string")
    count, value = landed.agg(F.count(F.lit(1)), expr).first()  # type: ignore[misc]
    return int(count), None if value is None else Watermark(value=str(value), type=ctype)


def spark_type(ltype: str) -> str:
    """Spark SQL type of a landed type (`decimal(p,s)` passes through)."""
    return SQL_TYPES.get(ltype) or ltype


def dedup_window(primary_key: Sequence[str], cursor: str | None, columns: Sequence[str]) -> Any:
    """The batch dedup window of the landing contract as a Spark `WindowSpec`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = [F.col(t.column).desc_nulls_last() for t in batch_dedup_order(primary_key, cursor, columns)]
    return Window.partitionBy(*primary_key).orderBy(*order)


def metadata_columns(run_id: str, ingested_at: datetime, *, source_file: bool, op: str = UPSERT) -> list[Any]:
    """The landing contract's metadata columns as Spark columns (`_source_file` from the rows or null)."""
    from pyspark.sql import functions as F

    return [
        F.lit(run_id).alias(RUN_ID),
        F.lit(ingested_at.strftime("%Y-%m-%d %H:%M:%S.%f")).cast("timestamp").alias(INGESTED_AT),
        F.col(SOURCE_FILE) if source_file else F.lit(None).cast("string").alias(SOURCE_FILE),
        F.lit(op).alias(OP),
    ]
