"""Engine-neutral normalization rules: column names, metadata columns, type inference, dedup order.

Both engines implement these rules in their own SQL; keeping them here as data is what makes the DuckDB
and Spark engines land the same columns and types (the parity tests check it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ingestion.errors import SchemaError

# Metadata columns every landed row carries (DESIGN.md: the contract between ingestion and dbt).
RUN_ID = "_run_id"
INGESTED_AT = "_ingested_at"
SOURCE_FILE = "_source_file"
OP = "_op"
METADATA_COLUMNS = (RUN_ID, INGESTED_AT, SOURCE_FILE, OP)
# Hive partition of the landing folder: the UTC date of the run.
PARTITION_COLUMN = "_ingest_date"

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def clean_column_name(raw: str) -> str:
    """Lowercase, turn runs of non-alphanumerics into `_`, trim `_` at both ends (`"First Name!"` → `first_name`).

    Cleaned names never start with `_`, so they cannot collide with the metadata columns.
    """
    return _NON_ALNUM.sub("_", raw.strip().lower()).strip("_")


def clean_header(raw_names: Sequence[str], *, file: str) -> list[str]:
    """Clean every name of a file's header; collisions and empty names are errors naming the file."""
    cleaned: list[str] = []
    for i, raw in enumerate(raw_names):
        name = clean_column_name(raw)
        if not name:
            name = f"column_{i + 1}"
        elif name[0].isdigit():
            name = f"c{name}"  # keep identifiers unquoted-safe in every warehouse
        cleaned.append(name)
    seen: dict[str, list[str]] = {}
    for raw, name in zip(raw_names, cleaned, strict=True):
        seen.setdefault(name, []).append(raw)
    collisions = {name: raws for name, raws in seen.items() if len(raws) > 1}
    if collisions:
        detail = "; ".join(f"{raws} → {name!r}" for name, raws in collisions.items())
        raise SchemaError(
            f"{file}: columns collide after name cleaning: {detail}",
            hint="rename the columns in the file so their cleaned names differ",
        )
    return cleaned


@dataclass(frozen=True)
class TypeRule:
    """A logical column type and the pattern every non-null string value must match to infer it."""

    name: str
    pattern: str  # full-match regex in the common subset of RE2 (DuckDB) and java.util.regex (Spark)


# Tried in order; a column gets the first type whose pattern all its non-null values match *and* to
# which every value casts. Inference scans all rows of the batch, not a sample.
TYPE_RULES: tuple[TypeRule, ...] = (
    TypeRule("boolean", r"(?i)(true|false)"),
    TypeRule("bigint", r"[+-]?[0-9]{1,18}"),
    TypeRule("double", r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"),
    TypeRule("date", r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    TypeRule("timestamp", r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"),
    TypeRule(
        "timestamptz",
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)",
    ),
)
STRING = "string"
LOGICAL_TYPES = (*(r.name for r in TYPE_RULES), STRING)


def choose_type(matches: dict[str, bool], non_null: int) -> str:
    """Pick the first rule every value satisfied; `string` when none did or the column is all null."""
    if non_null == 0:
        return STRING
    for rule in TYPE_RULES:
        if matches.get(rule.name):
            return rule.name
    return STRING


def output_columns(data_columns: Sequence[str]) -> list[str]:
    """Column order of a landed file: the data columns in first-seen order, then the metadata columns."""
    return [*data_columns, *METADATA_COLUMNS]


def union_columns(headers: Sequence[Sequence[str]]) -> list[str]:
    """Union of several files' cleaned headers, by name, in first-seen order."""
    out: dict[str, None] = {}
    for header in headers:
        out.update(dict.fromkeys(header))
    return list(out)
