"""What load-warehouse loads and how raw tables change, decided without touching a warehouse (pure).

Which committed runs are still to load, the warehouse types of landed Arrow columns, and the columns a
raw table must gain or widen to take a batch. Both loaders (`postgres`, `redshift`) build on these, and
the records they exchange with the loading loop (`RunLoad`, `TableLoadReport`) live here too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingestion.contract import PARTITION_COLUMN
from ingestion.errors import SchemaError

LEDGER_SCHEMA = "tidemark_meta"
LEDGER_TABLE = "load_ledger"
# The ingestion ledger (`<lake>/_audit/ingestion_runs/`) is loaded like a landed table under this name.
AUDIT_SOURCE, AUDIT_TABLE = "_audit", "ingestion_runs"
# Strings become varchar(n), n a power of two from 32 up to Redshift's limit, so loads behave like
# Redshift's (and the dbt widening path is exercised); longer text becomes unbounded.
MIN_VARCHAR = 32
MAX_VARCHAR = 65535
INT_RANK = {"smallint": 2, "integer": 4, "bigint": 8}
_VARCHAR = re.compile(r"^(?:varchar|character varying)\((\d+)\)$")
_NUMERIC = re.compile(r"^(?:numeric|decimal)\((\d+),\s*(\d+)\)$")


def raw_schema(source: str) -> str:
    """The warehouse schema of a source's raw tables: `landing_<source>` unless overridden by env."""
    return os.environ.get(f"TIDEMARK_SOURCE_SCHEMA_{source.upper()}", f"landing_{source}")


def audit_schema() -> str:
    """The warehouse schema of the loaded ingestion ledger: `lake_audit` unless overridden by env."""
    return os.environ.get("TIDEMARK_SOURCE_SCHEMA_AUDIT", "lake_audit")


@dataclass(frozen=True)
class RunLoad:
    """One committed run's landed files of one table, to be loaded in one transaction.

    `files` are lake paths (local or `s3://`); `partition_column` is the hive partition the files' folders
    name (None: the folders are no column, as for the ingestion ledger's `run_date=`).
    """

    source: str
    table: str
    schema: str
    run_id: str
    files: tuple[str, ...]
    partition_column: str | None = PARTITION_COLUMN


@dataclass
class TableLoadReport:
    """What load-warehouse did for one table."""

    source: str
    table: str
    runs: list[str] = field(default_factory=list)
    files: int = 0
    rows: int = 0
    added: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"

    def merge(self, done: TableLoadReport) -> None:
        """Add what one more run's load did."""
        self.runs += done.runs
        self.files += done.files
        self.rows += done.rows
        self.added += [c for c in done.added if c not in self.added]
        self.widened += done.widened


@dataclass(frozen=True)
class ColumnPlan:
    """Changes a raw table needs before a batch fits: new columns and wider types."""

    add: tuple[tuple[str, str], ...] = ()
    widen: tuple[tuple[str, str, str], ...] = ()  # (column, old type, new type)


def pending_runs(committed: Sequence[str], loaded: set[str]) -> list[str]:
    """Committed runs not loaded yet, oldest first (run ids sort by time)."""
    return sorted(r for r in set(committed) if r not in loaded)


def varchar_size(max_bytes: int) -> int | None:
    """The varchar length for strings up to `max_bytes` bytes; None means unbounded (text)."""
    size = MIN_VARCHAR
    while size < max_bytes:
        size *= 2
    if size > MAX_VARCHAR:
        return None if max_bytes > MAX_VARCHAR else MAX_VARCHAR
    return size


def postgres_type(arrow_type: Any, max_bytes: int = 0) -> str:
    """The PostgreSQL column type for an Arrow type (strings sized by their longest value in bytes)."""
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_boolean(arrow_type):
        return "boolean"
    if t.is_int8(arrow_type) or t.is_int16(arrow_type) or t.is_uint8(arrow_type):
        return "smallint"
    if t.is_int32(arrow_type) or t.is_uint16(arrow_type):
        return "integer"
    if t.is_int64(arrow_type) or t.is_uint32(arrow_type):
        return "bigint"
    if t.is_uint64(arrow_type):
        return "numeric(20,0)"
    if t.is_float16(arrow_type) or t.is_float32(arrow_type):
        return "real"
    if t.is_float64(arrow_type):
        return "double precision"
    if t.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    if t.is_string(arrow_type) or t.is_large_string(arrow_type):
        size = varchar_size(max_bytes)
        return f"varchar({size})" if size else "text"
    if t.is_date(arrow_type):
        return "date"
    if t.is_timestamp(arrow_type):
        return "timestamptz" if arrow_type.tz else "timestamp"
    if t.is_time(arrow_type):
        return "time"
    if t.is_binary(arrow_type) or t.is_large_binary(arrow_type):
        return "bytea"
    if arrow_type == pa.null():
        return f"varchar({MIN_VARCHAR})"
    raise SchemaError(
        f"landed type {arrow_type} has no PostgreSQL column type in tidemark",
        hint="cast the column to a scalar type in the source query, or open an issue",
    )


def _normal(sql_type: str) -> str:
    s = sql_type.strip().lower()
    return {
        "int": "integer",
        "int4": "integer",
        "int2": "smallint",
        "int8": "bigint",
        "character varying": "text",
        "varchar": "text",
        "timestamp with time zone": "timestamptz",
        "timestamp without time zone": "timestamp",
        "float8": "double precision",
        "float4": "real",
        "float": "double precision",
    }.get(s, s)


# Decimal digits an integer type holds before the decimal point (numeric widening keeps them).
INT_DIGITS = {"smallint": 5, "integer": 10, "bigint": 19}
MAX_NUMERIC = 38
_NUMERIC = re.compile(r"^(?:numeric|decimal)\((\d+),\s*(\d+)\)$")
_TIMESTAMPS = ("timestamp", "timestamptz")
_FLOATS = ("real", "double precision")


def _numeric_of(sql_type: str) -> tuple[int, int] | None:
    """(integer digits, scale) of an integer or numeric type; None for anything else."""
    if sql_type in INT_DIGITS:
        return INT_DIGITS[sql_type], 0
    m = _NUMERIC.match(sql_type)
    return (int(m.group(1)) - int(m.group(2)), int(m.group(2))) if m else None


def wider_type(old: str, new: str) -> str | None:
    """The type to widen `old` to so it holds `new` values; None when `old` already holds them.

    The steps are the lake's own (`plan.normalize.widen`): smallint → integer → bigint → numeric →
    double precision, date → timestamp, longer varchars. Raises SchemaError when the types can't be
    reconciled by widening (e.g. bigint → varchar).
    """
    old, new = _normal(old), _normal(new)
    if old == new:
        return None
    if old in INT_RANK and new in INT_RANK:
        return new if INT_RANK[new] > INT_RANK[old] else None
    old_num, new_num = _numeric_of(old), _numeric_of(new)
    if old_num and new_num:
        digits, scale = max(old_num[0], new_num[0]), max(old_num[1], new_num[1])
        if (digits, scale) == old_num:
            return None
        if digits + scale > MAX_NUMERIC:
            return "double precision"  # beyond numeric(38): the lake itself goes to double
        return f"numeric({digits + scale},{scale})"
    if old_num and new in _FLOATS:
        return "double precision"
    old_var, new_var = _VARCHAR.match(old), _VARCHAR.match(new)
    if old == "text" and (new_var or new == "text"):
        return None
    if old_var and (new_var or new == "text"):
        if new == "text":
            return "text"
        return new if int(new_var.group(1)) > int(old_var.group(1)) else None  # type: ignore[union-attr]
    if old in _FLOATS and (new_num or new in _FLOATS):
        return None if old == "double precision" or new == "real" else "double precision"
    if old == "date" and new in _TIMESTAMPS:
        return new
    if old in _TIMESTAMPS and new == "date":
        return None
    if old == "timestamptz" and new == "timestamp":
        return None
    # The lake's other widenings (issue 16): integer → decimal, decimal precision/scale, → double,
    # date → timestamp, timestamp → timestamptz; never a rounded or truncated value.
    old_num, new_num = _exact_numeric(old), _exact_numeric(new)
    if old_num and new_num:
        digits = max(old_num[0] - old_num[1], new_num[0] - new_num[1])
        scale = max(old_num[1], new_num[1])
        wider = f"numeric({min(digits + scale, 38)},{scale})"
        return None if wider == old else wider
    if old_num and new == "double precision":
        return new
    if old == "date" and new in ("timestamp", "timestamptz"):
        return new
    if old == "timestamp" and new == "timestamptz":
        return new
    raise SchemaError(
        f"cannot widen a {old} column to hold {new} values",
        hint="the landed type changed incompatibly: add a new column in the source, or reload the table",
    )


def _exact_numeric(sql_type: str) -> tuple[int, int] | None:
    """(precision, scale) of an integer or numeric(p,s) type; integers count their decimal digits."""
    digits = {"smallint": 5, "integer": 10, "bigint": 19}
    if sql_type in digits:
        return digits[sql_type], 0
    found = _NUMERIC.match(sql_type)
    return (int(found.group(1)), int(found.group(2))) if found else None


def plan_columns(existing: dict[str, str], incoming: dict[str, str]) -> ColumnPlan:
    """New columns to add and existing ones to widen so `incoming` rows fit a table with `existing` columns."""
    add, widen = [], []
    for name, typ in incoming.items():
        if name not in existing:
            add.append((name, typ))
            continue
        try:
            wider = wider_type(existing[name], typ)
        except SchemaError as exc:
            raise SchemaError(f"column {name}: {exc.message}", hint=exc.hint) from None
        if wider:
            widen.append((name, existing[name], wider))
    return ColumnPlan(tuple(add), tuple(widen))


def batch_types(tables: Iterable[Any], type_of: Callable[[Any, int], str] = postgres_type) -> dict[str, str]:
    """Column → warehouse type over a run's files (strings sized by their longest value)."""
    import pyarrow.compute as pc
    import pyarrow.types as t

    out: dict[str, str] = {}
    for table in tables:
        for name, column in zip(table.column_names, table.columns, strict=True):
            longest = 0
            if t.is_string(column.type) or t.is_large_string(column.type):
                longest = pc.max(pc.binary_length(column)).as_py() or 0
            typ = type_of(column.type, longest)
            out[name] = typ if name not in out else (wider_type(out[name], typ) or out[name])
    return out
