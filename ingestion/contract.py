"""The landing contract, once: the metadata columns every landed row carries and the dedup orders.

DESIGN.md "The lake": every writer (both engines' CSV and PostgreSQL paths, the tombstone writer) renders
these specs in its own SQL; none spells a column name or an order of its own. dbt's CDC macro applies
`LATEST_VERSION` across runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

RUN_ID = "_run_id"  # sortable: time-ordered
INGESTED_AT = "_ingested_at"  # UTC timestamp of the run
SOURCE_FILE = "_source_file"  # CSV only, else null
OP = "_op"  # `u` upsert, `d` tombstone from delete detection
METADATA_COLUMNS = (RUN_ID, INGESTED_AT, SOURCE_FILE, OP)
# Hive partition of the landing folder: the UTC date of the run.
PARTITION_COLUMN = "_ingest_date"
UPSERT, TOMBSTONE = "u", "d"


@dataclass(frozen=True)
class OrderTerm:
    """One `ORDER BY` term; every term sorts descending with nulls last (the greatest value wins)."""

    column: str


def batch_dedup_order(
    primary_key: Sequence[str], cursor: str | None, columns: Sequence[str]
) -> list[OrderTerm]:
    """Which row of a batch wins per key: latest cursor, then the later file, then the greatest row.

    Deterministic on any engine: every non-key column takes part, so equal cursors never tie on content.
    """
    terms = [OrderTerm(cursor)] if cursor else []
    terms.append(OrderTerm(SOURCE_FILE))
    terms += [OrderTerm(c) for c in columns if c not in primary_key and c != cursor]
    return terms


def latest_version_order(cursor: str | None) -> list[OrderTerm]:
    """Which landed version of a key is current across runs: latest cursor, then landing time, then run."""
    return [*([OrderTerm(cursor)] if cursor else []), OrderTerm(INGESTED_AT), OrderTerm(RUN_ID)]


def render_window(primary_key: Sequence[str], order: Sequence[OrderTerm], quote: Callable[[str], str]) -> str:
    """`PARTITION BY … ORDER BY …` for DuckDB or Spark SQL (both read `DESC NULLS LAST`)."""
    parts = ", ".join(quote(k) for k in primary_key)
    terms = ", ".join(f"{quote(t.column)} DESC NULLS LAST" for t in order)
    return f"PARTITION BY {parts}" + (f" ORDER BY {terms}" if terms else "")
