"""The narrow interface between the engine-neutral core and an engine."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ingestion.config import CsvOptions
from ingestion.errors import SchemaError
from ingestion.landing import scratch_dir
from ingestion.plan import LandedBatch
from ingestion.sources.csv import FileFacts
from ingestion.sources.jdbc import PgConnection
from ingestion.state import Watermark


@dataclass(frozen=True)
class CsvBatch:
    """Everything an engine needs to land one table's new CSV files."""

    source: str
    table: str
    files: tuple[FileFacts, ...]
    options: CsvOptions
    primary_key: tuple[str, ...]
    cursor: str | None
    run_id: str
    ingested_at: datetime  # UTC, tz-aware
    target: str  # <lake>/landing/<source>/<table>
    lake_root: str
    # Keep rows whose cursor is >= this value (or null); None keeps every row.
    lower_bound: Watermark | None = None

    @property
    def staging(self) -> str:
        """A scratch folder for this batch outside `landing/`, so dbt never sees half-written files."""
        return os.path.join(scratch_dir(self.lake_root, self.run_id), self.source, self.table)


@dataclass(frozen=True)
class JdbcBatch:
    """Everything an engine needs to land one PostgreSQL table's rows for a run.

    `query` is the full statement PostgreSQL runs (typed projection + cursor predicate); `columns` maps
    each output column to its landed type, in order. With `partitions` > 1 the read is split by
    `partition_column` over `partition_bounds` (queried beforehand).
    """

    source: str
    table: str
    connection: PgConnection
    query: str
    columns: dict[str, str]
    primary_key: tuple[str, ...]
    cursor: str | None
    run_id: str
    ingested_at: datetime  # UTC, tz-aware
    target: str
    lake_root: str
    partition_column: str | None = None
    partition_bounds: tuple[int, int] | None = None
    partitions: int = 1
    fetchsize: int = 10000

    @property
    def staging(self) -> str:
        """The batch's scratch folder outside `landing/`."""
        return os.path.join(scratch_dir(self.lake_root, self.run_id), self.source, self.table)


class Engine(Protocol):
    """Reads a batch, cleans column names, infers types, adds metadata, dedups by key, writes Parquet.

    Files are written as `<target>/_ingest_date=<date>/part-<run_id>-<n>.parquet`; nothing else in
    `target` is touched. Rules every engine follows live in `ingestion.normalize`.
    """

    name: str

    def land_csv(self, batch: CsvBatch) -> LandedBatch: ...

    def land_jdbc(self, batch: JdbcBatch) -> LandedBatch: ...

    def close(self) -> None: ...


def sql_string(value: str) -> str:
    """A SQL string literal (both DuckDB and Spark SQL double a single quote)."""
    return "'" + value.replace("'", "''") + "'"


def require_columns(batch: CsvBatch, columns: list[str]) -> None:
    """The key and cursor columns the config names must be among the files' cleaned columns."""
    needed = [*batch.primary_key, *([batch.cursor] if batch.cursor else [])]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise SchemaError(
            f"{batch.source}.{batch.table}: configured key/cursor columns {missing} are not in the files "
            f"(columns after name cleaning: {columns})",
            hint="fix primary_key/cursor in the config to use the cleaned column names",
        )


def check_bound_type(batch: CsvBatch, types: dict[str, str]) -> None:
    """The bound must be of the type the batch's cursor column was inferred as."""
    if batch.lower_bound and batch.cursor and types.get(batch.cursor) != batch.lower_bound.type:
        raise SchemaError(
            f"{batch.source}.{batch.table}: cursor {batch.cursor} is {types.get(batch.cursor)} in the new "
            f"files but {batch.lower_bound.type} in the committed watermark",
            hint="fix the files, or re-land the table with --load-type full",
        )
