"""What a run reads from a PostgreSQL table: pure functions over config, catalog facts, state and horizon.

The safe-horizon rule (README "PostgreSQL sources"): a run reads `cursor >= watermark - lookback AND
cursor < H`, where H = min(server clock, start of the oldest other open transaction in the database).
A writer stamps rows with its transaction's `now()` (or a later clock), so every row with a cursor
below H was written by a transaction that had already committed when H was read, and is visible to
the read that follows. The committed watermark is the highest cursor read, which is below H; rows a
still-open transaction commits later carry a cursor >= its start >= H and are read by the next run.
"""

from __future__ import annotations

import fnmatch
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from ingestion.config import Effective, JdbcSourceConfig, LoadType
from ingestion.errors import ConfigError, SchemaError
from ingestion.lake.model import TableState, Watermark
from ingestion.plan.csv import NoState, TablePlan, lower_bound, max_watermark
from ingestion.plan.normalize import clean_header
from ingestion.sqltext import quote_ident, sql_string

CURSOR_TYPES = ("timestamptz", "timestamp", "date", "bigint")
TIME_CURSORS = ("timestamptz", "timestamp")
_INTS = ("int2", "int4", "int8", "oid")
_FLOATS = ("float4", "float8")
MAX_DECIMAL_PRECISION = 38


def logical_type(col: CatalogColumn) -> str:
    """The landed type of a PostgreSQL column; the same on both engines.

    Integers of any width land as bigint, so widening int → bigint changes nothing downstream; numeric
    with a declared precision ≤ 38 lands as decimal(p,s), unconstrained numeric as exact text.
    """
    t = col.pg_type
    if t in _INTS:
        return "bigint"
    if t in _FLOATS:
        return "double"
    if t == "numeric":
        if col.numeric_precision and col.numeric_precision <= MAX_DECIMAL_PRECISION:
            return f"decimal({col.numeric_precision},{col.numeric_scale or 0})"
        return "string"
    if t == "bool":
        return "boolean"
    if t in ("date", "timestamp", "timestamptz"):
        return t
    return "string"


def pg_expression(column: str, ltype: str) -> str:
    """The expression PostgreSQL evaluates for a column, so both readers receive the same plain types.

    Times travel as ISO text (UTC for timestamptz) and are cast by the engine: no driver, JVM or session
    time zone can shift them, and microseconds are kept.
    """
    c = quote_ident(column)
    if ltype == "bigint":
        return f"{c}::int8"
    if ltype == "double":
        return f"{c}::float8"
    if ltype == "boolean":
        return c
    if ltype == "date":
        return f"to_char({c}, 'YYYY-MM-DD')"
    if ltype == "timestamp":
        return f"to_char({c}, 'YYYY-MM-DD HH24:MI:SS.US')"
    if ltype == "timestamptz":
        return f"to_char({c} at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    return f"{c}::text"


@dataclass(frozen=True)
class JdbcColumn:
    """A source column: its name in PostgreSQL, its cleaned landed name and landed type."""

    source_name: str
    name: str
    type: str


@dataclass(frozen=True)
class JdbcTable:
    """A discovered table with every setting resolved (config, registry, catalog, defaults)."""

    source: str
    schema: str
    source_name: str  # as PostgreSQL spells it
    name: str  # landed name
    columns: tuple[JdbcColumn, ...]
    primary_key: tuple[str, ...]
    cursor: str | None
    cursor_timezone: str | None
    lookback: str | float
    load_type: LoadType
    detect_deletes: bool
    num_partitions: int
    partition_column: str | None
    fetchsize: int

    @property
    def types(self) -> dict[str, str]:
        return {c.name: c.type for c in self.columns}

    @property
    def cursor_type(self) -> str | None:
        return self.types[self.cursor] if self.cursor else None

    def column(self, name: str) -> JdbcColumn:
        return next(c for c in self.columns if c.name == name)

    @property
    def relation(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.source_name)}"


def _matches(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def resolve_tables(
    source: JdbcSourceConfig,
    catalog: Sequence[CatalogTable],
    registry: dict[str, tuple[str, ...]],
    server_timezone: str,
) -> tuple[list[JdbcTable], list[str]]:
    """The tables a source lands, with their settings; and warnings for what was skipped or defaulted."""
    by_name = {t.name: t for t in catalog}
    warnings: list[str] = []
    if source.tables is None:
        names = sorted(by_name)
    else:
        names = [t.name for t in source.tables]
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ConfigError(
                f"{source.name}: tables {missing} are not in schema {source.schema}",
                hint=f"tables there: {sorted(by_name) or 'none'}",
            )
    out = []
    for name in names:
        if not _matches(name, source.include, source.exclude):
            continue
        cat = by_name[name]
        landed = clean_header([name], file=f"{source.name}: table")[0]
        if landed != name:
            warnings.append(f"{source.name}.{name} lands as {landed} (names are cleaned to lowercase_snake)")
        try:
            cleaned = clean_header([c.name for c in cat.columns], file=f"{source.name}.{name}")
        except SchemaError as exc:
            warnings.append(f"{exc.message}; table skipped")
            continue
        columns = tuple(
            JdbcColumn(c.name, n, logical_type(c)) for c, n in zip(cat.columns, cleaned, strict=True)
        )
        table, why = _resolve_one(source, cat, landed, columns, registry, server_timezone)
        warnings += why
        out.append(table)
    return out, warnings


def _resolve_one(
    source: JdbcSourceConfig,
    cat: CatalogTable,
    landed: str,
    columns: tuple[JdbcColumn, ...],
    registry: dict[str, tuple[str, ...]],
    server_timezone: str,
) -> tuple[JdbcTable, list[str]]:
    cfg = source.table_config(cat.name)
    where = f"{source.name}.{cat.name}"
    warnings: list[str] = []
    to_landed = {c.source_name: c.name for c in columns}
    types = {c.name: c.type for c in columns}

    def landed_names(names: Sequence[str], what: str) -> tuple[str, ...]:
        out = []
        for n in names:
            hit = to_landed.get(n) or (n if n in types else None)
            if hit is None:
                raise ConfigError(f"{where}: {what} column {n!r} is not a column of the table")
            out.append(hit)
        return tuple(out)

    if cfg and cfg.primary_key is not None:
        pk = landed_names(cfg.primary_key, "primary_key")
    elif cat.name in registry:
        pk = landed_names(registry[cat.name], "pk_registry")
    else:
        pk = landed_names(cat.primary_key, "primary key")
    if not pk:
        warnings.append(
            f"{where} has no primary key (constraint, registry or config): rows are not deduplicated"
        )

    cursor: str | None = None
    if cfg and cfg.full_load:
        cursor = None
    elif cfg and cfg.cursor:
        cursor = landed_names([cfg.cursor], "cursor")[0]
        if types[cursor] not in CURSOR_TYPES:
            raise ConfigError(
                f"{where}: cursor {cfg.cursor} is {types[cursor]}, not one of {', '.join(CURSOR_TYPES)}"
            )
    else:
        hit = to_landed.get(source.cursor)
        if hit and types[hit] in CURSOR_TYPES:
            cursor = hit
    if cursor is None and not (cfg and cfg.full_load):
        warnings.append(
            f"{where} has no usable cursor column ({source.cursor} of a time or integer type): "
            "every run lands the whole table"
        )

    detect = cfg.detect_deletes if cfg and cfg.detect_deletes is not None else source.detect_deletes
    if detect and not pk:
        warnings.append(f"{where}: detect_deletes needs a primary key; delete detection is off")
        detect = False

    parts = (cfg.num_partitions if cfg else None) or source.num_partitions
    pcol = (
        landed_names([cfg.partition_column], "partition_column")[0] if cfg and cfg.partition_column else None
    )
    if parts > 1 and pcol is None:
        if len(pk) == 1 and types[pk[0]] == "bigint":
            pcol = pk[0]
        else:
            warnings.append(
                f"{where}: num_partitions needs an integer partition_column; reading in one query"
            )
            parts = 1
    if pcol and types[pcol] != "bigint":
        raise ConfigError(f"{where}: partition_column {pcol} must be an integer column, not {types[pcol]}")

    zone = (cfg.cursor_timezone if cfg else None) or source.cursor_timezone or server_timezone
    lookback = cfg.lookback if cfg and cfg.lookback is not None else source.lookback
    table = JdbcTable(
        source=source.name,
        schema=source.schema,
        source_name=cat.name,
        name=landed,
        columns=columns,
        primary_key=pk,
        cursor=cursor,
        cursor_timezone=zone if cursor and types[cursor] in ("timestamp", "date") else None,
        lookback=lookback,
        load_type=cfg.load_type if cfg else "auto",
        detect_deletes=detect,
        num_partitions=parts,
        partition_column=pcol if parts > 1 else None,
        fetchsize=(cfg.fetchsize if cfg else None) or source.fetchsize,
    )
    return table, warnings


# --- planning --------------------------------------------------------------------------------------------


def _text(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")


def safe_horizon(now: datetime, oldest_xact_start: datetime | None) -> datetime:
    """The instant below which every cursor stamped by a transaction's clock is already committed."""
    h = now if oldest_xact_start is None else min(now, oldest_xact_start)
    return h.astimezone(timezone.utc)


@dataclass(frozen=True)
class JdbcPlan:
    """The rows one run reads from a table and the cap on the watermark it may commit."""

    source: str
    table: str
    load_type: Effective
    lower_bound: Watermark | None  # cursor >= this (column's own terms)
    upper_bound: Watermark | None  # cursor < this (column's own terms); only for time cursors
    horizon: Watermark | None  # canonical UTC cap on the committed watermark

    def table_plan(self) -> TablePlan:
        """The shape `next_state` takes (a JDBC table has no file ledger)."""
        return TablePlan(self.source, self.table, self.load_type, (), (), (), self.lower_bound)


def plan_jdbc_table(
    table: JdbcTable, state: TableState | None, horizon: datetime, *, load_type: LoadType | None = None
) -> JdbcPlan:
    """Choose the cursor range of a run.

    auto: full without committed state, incremental with it. Full reads every row; incremental reads
    `cursor >= watermark - lookback` (ties at the boundary are read again, never dropped) and, for time
    cursors, `cursor < horizon`. Either way the committed watermark never passes the horizon.
    """
    chosen = load_type or table.load_type
    has_state = state is not None and state.watermark is not None
    if chosen == "incremental" and not has_state:
        raise NoState(
            f"{table.source}.{table.name} has no committed watermark, so there is nothing to be incremental from",
            hint="run it once with --load-type auto (the default) or full",
        )
    ctype = table.cursor_type
    incremental = table.cursor is not None and chosen != "full" and has_state
    effective: Effective = "incremental" if incremental else "full"
    cap = upper = None
    if ctype in TIME_CURSORS:
        cap = Watermark(
            _text(horizon) + "+00:00", ctype, table.cursor_timezone if ctype == "timestamp" else None
        )
        if ctype == "timestamptz":
            upper = cap
        else:
            wall = horizon.astimezone(ZoneInfo(table.cursor_timezone or "UTC")).replace(tzinfo=None)
            upper = Watermark(_text(wall), ctype, table.cursor_timezone)
    lower = None
    if incremental and state and state.watermark:
        wm = state.watermark
        if wm.type != ctype:
            raise SchemaError(
                f"{table.source}.{table.name}: cursor {table.cursor} is {ctype} now but {wm.type} in the "
                "committed watermark",
                hint="re-land the table with --load-type full",
            )
        lower = lower_bound(wm, table.lookback)
    return JdbcPlan(table.source, table.name, effective, lower, upper if incremental else None, cap)


def literal(wm: Watermark) -> str:
    """A PostgreSQL literal of a bound, typed so the comparison never depends on the session time zone."""
    if wm.type == "bigint":
        return str(int(wm.value))
    return f"{sql_string(wm.value)}::{wm.type}"


def where_clause(table: JdbcTable, plan: JdbcPlan) -> str | None:
    """The cursor predicate pushed down to PostgreSQL (None for a full read)."""
    if plan.load_type == "full" or not table.cursor:
        return None
    c = quote_ident(table.column(table.cursor).source_name)
    preds = []
    if plan.lower_bound:
        preds.append(f"{c} >= {literal(plan.lower_bound)}")
    if plan.upper_bound:
        preds.append(f"{c} < {literal(plan.upper_bound)}")
    return " and ".join(preds) or None


def select_sql(table: JdbcTable, where: str | None, columns: Sequence[str] | None = None) -> str:
    """The query PostgreSQL runs: typed projection of `columns` (default all), the cursor predicate."""
    wanted = [table.column(n) for n in columns] if columns else list(table.columns)
    projection = ", ".join(f"{pg_expression(c.source_name, c.type)} as {quote_ident(c.name)}" for c in wanted)
    return f"select {projection} from {table.relation}" + (f" where {where}" if where else "")


# Rows holding a value the lake has no exact equivalent for are rejected with this code and a reason.
UNREPRESENTABLE = "unrepresentable_value"


def unrepresentable_checks(table: JdbcTable) -> list[tuple[str, str, str]]:
    """(landed column, PostgreSQL condition, what) for values no landed type holds exactly on both
    engines: ±infinity and BC (or year ≥ 10000) dates and timestamps, NaN/±Infinity in a decimal."""
    out = []
    for col in table.columns:
        c = quote_ident(col.source_name)
        if col.type in ("date", "timestamp", "timestamptz"):
            lo, hi = {
                "date": ("date '0001-01-01'", "date '10000-01-01'"),
                "timestamp": ("timestamp '0001-01-01'", "timestamp '10000-01-01'"),
                "timestamptz": (
                    "timestamptz '0001-01-01 00:00:00+00'",
                    "timestamptz '10000-01-01 00:00:00+00'",
                ),
            }[col.type]
            cond = f"(not isfinite({c}) or {c} < {lo} or {c} >= {hi})"
            out.append((col.name, cond, f"an infinite, BC or year-10000+ {col.type}"))
        elif col.type.startswith("decimal("):
            out.append(
                (col.name, f"({c}::text in ('NaN', 'Infinity', '-Infinity'))", "a NaN or infinite numeric")
            )
    return out


def unrepresentable_predicate(table: JdbcTable) -> str | None:
    """True for a row holding any value of `unrepresentable_checks` (None: the table can't have one)."""
    checks = unrepresentable_checks(table)
    return " or ".join(f"coalesce({cond}, false)" for _, cond, _ in checks) or None


def landable_where(table: JdbcTable, where: str | None) -> str | None:
    """`where` restricted to rows every value of which lands exactly (the others are rejected)."""
    bad = unrepresentable_predicate(table)
    if bad is None:
        return where
    keep = f"not ({bad})"
    return f"({where}) and {keep}" if where else keep


def rejects_sql(table: JdbcTable, where: str | None) -> str | None:
    """The rows `where` selects that hold an unrepresentable value: the first such column, what it is,
    its original text, and the whole row as JSON (None when the table can't have one)."""
    checks = unrepresentable_checks(table)
    bad = unrepresentable_predicate(table)
    if not checks or bad is None:
        return None
    cases = " ".join(
        f"when coalesce({cond}, false) then array[{sql_string(name)}, {sql_string(what)}, "
        f"{quote_ident(table.column(name).source_name)}::text]"
        for name, cond, what in checks
    )
    cond = f"({where}) and ({bad})" if where else bad
    return f"select case {cases} end, row_to_json(t)::text from {table.relation} as t where {cond}"


def partition_ranges(lo: int, hi: int, n: int) -> list[tuple[int | None, int | None]]:
    """Split [lo, hi] into at most n half-open ranges; the first is open below, the last open above."""
    n = max(1, min(n, hi - lo + 1))
    step = math.ceil((hi - lo + 1) / n)
    cuts = [lo + i * step for i in range(1, n)]
    edges: list[int | None] = [None, *cuts, None]
    return list(itertools.pairwise(edges))


def partition_queries(query: str, column: str, ranges: Sequence[tuple[int | None, int | None]]) -> list[str]:
    """One query per key range over `query`'s output (rows with a null key go to the first)."""
    if len(ranges) <= 1:
        return [query]
    c = quote_ident(column)
    out = []
    for i, (a, b) in enumerate(ranges):
        preds = ([f"{c} >= {a}"] if a is not None else []) + ([f"{c} < {b}"] if b is not None else [])
        cond = " and ".join(preds)
        if i == 0:
            cond = f"({cond} or {c} is null)"
        out.append(f"select * from ({query}) as t where {cond}")
    return out


def cap_watermark(committed: TableState, plan: JdbcPlan) -> TableState:
    """Hold the watermark `next_state` computed at the run's horizon (a full read may see later rows)."""
    wm, cap = committed.watermark, plan.horizon
    if wm is None or cap is None or wm.type != cap.type:
        return committed
    return committed if max_watermark(cap, wm) is cap else replace(committed, watermark=cap)


@dataclass(frozen=True)
class CatalogColumn:
    """A column as the catalog describes it."""

    name: str
    pg_type: str  # pg_type.typname of the column (array types start with '_')
    declared: str  # format_type(): e.g. numeric(12,2), character varying(50)
    numeric_precision: int | None = None
    numeric_scale: int | None = None


@dataclass(frozen=True)
class CatalogTable:
    """A table (or view) of the source schema with its columns and primary key constraint."""

    name: str
    columns: tuple[CatalogColumn, ...]
    primary_key: tuple[str, ...] = ()
    kind: str = "r"
