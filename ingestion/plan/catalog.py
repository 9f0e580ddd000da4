"""What a run reads from a Glue Data Catalog table: pure functions over config, catalog facts and state.

A catalog table is S3 data a crawler registered: a location (and partitions, each with its own location
and key values), a format (Parquet, CSV through a SerDe, JSON lines) and declared columns. A table is
read incrementally one of two ways:

- by a cursor column: every file is read and rows `cursor >= watermark - lookback` are kept (the same
  inclusive lower bound, lookback and typed watermark as a PostgreSQL table);
- without one: by new partitions and new files since the last commit (path, size, last-modified and
  ETag in the table's file ledger, as CSV drops are tracked; what Glue job bookmarks track).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ingestion.config import CsvOptions, Effective, GlueCatalogSourceConfig, LoadType
from ingestion.errors import ConfigError, SchemaError
from ingestion.lake.model import TableState, Watermark
from ingestion.plan.csv import FileFacts, NoState, TablePlan, lower_bound, plan_csv_table
from ingestion.plan.normalize import DECIMAL, STRING, clean_header, widen

Format = Literal["parquet", "csv", "json"]
CURSOR_TYPES = ("timestamptz", "timestamp", "date", "bigint")
NESTED_TYPES = ("struct<", "array<", "map<")
# Table parameters that name a primary key (comma-separated), as teams write them on crawled tables.
KEY_PARAMETERS = ("primary_key", "primaryKey", "primary_keys", "primaryKeys", "pk")
_SERDE_FORMATS = {
    "parquet": "parquet",
    "lazysimpleserde": "csv",
    "opencsvserde": "csv",
    "jsonserde": "json",
}


@dataclass(frozen=True)
class GlueColumn:
    """A column as the catalog declares it (`type` in Hive/Athena terms: bigint, decimal(12,2), …)."""

    name: str
    type: str


@dataclass(frozen=True)
class GluePartition:
    """One partition of a table: its key values (in partition-key order) and where its files are."""

    values: tuple[str, ...]
    location: str


@dataclass(frozen=True)
class GlueTable:
    """A catalog table as `glue:GetTables` describes it (only what tidemark reads)."""

    name: str
    location: str
    columns: tuple[GlueColumn, ...]
    partition_keys: tuple[GlueColumn, ...] = ()
    parameters: Mapping[str, str] = field(default_factory=dict)
    input_format: str = ""
    serde: str = ""
    serde_parameters: Mapping[str, str] = field(default_factory=dict)
    table_type: str = ""
    partitions: tuple[GluePartition, ...] = ()

    @property
    def connection(self) -> str | None:
        """The Glue connection a JDBC-crawled table reads through (None: S3 data)."""
        p = self.parameters
        name = p.get("connectionName") or p.get("connection_name")
        if name:
            return name
        return "" if p.get("classification", "").lower() in ("postgresql", "mysql", "jdbc") else None


@dataclass(frozen=True)
class JdbcLocation:
    """Where a JDBC-crawled catalog table lives in its database."""

    database: str | None
    schema: str
    table: str


def jdbc_location(table: GlueTable) -> JdbcLocation:
    """The database, schema and table a JDBC catalog entry names: its location `db.schema.table` (as
    Glue's JDBC crawler writes it) or `schema.table`."""
    parts = table.location.split(".")
    if len(parts) == 3 and all(parts):
        return JdbcLocation(parts[0], parts[1], parts[2])
    if len(parts) == 2 and all(parts):
        return JdbcLocation(None, parts[0], parts[1])
    raise SchemaError(
        f"catalog table {table.name}: its location {table.location!r} does not name a database table "
        "(database.schema.table)",
        hint="re-crawl the connection, or exclude the table and land it with a jdbc source",
    )


def table_format(table: GlueTable) -> Format:
    """The data format of a table, from its SerDe (then `classification`, then its input format)."""
    serde = table.serde.lower()
    for hint, fmt in _SERDE_FORMATS.items():
        if hint in serde:
            return fmt  # type: ignore[return-value]
    classification = table.parameters.get("classification", "").lower()
    if classification in ("parquet", "csv", "json"):
        return classification  # type: ignore[return-value]
    if "parquet" in table.input_format.lower():
        return "parquet"
    raise SchemaError(
        f"catalog table {table.name}: format not supported (SerDe {table.serde or 'none'}, "
        f"classification {classification or 'none'})",
        hint="tidemark reads Parquet, CSV (LazySimpleSerDe, OpenCSVSerde) and JSON lines (JsonSerDe) "
        "tables; exclude this table from the source",
    )


def header_lines(table: GlueTable) -> int:
    """`skip.header.line.count`: how many lines at the start of each file are not data (Hive skips them)."""
    p = table.parameters
    text = (
        p.get("skip.header.line.count") or table.serde_parameters.get("skip.header.line.count") or "0"
    ).strip()
    if not text.isdigit():
        raise SchemaError(
            f"catalog table {table.name}: skip.header.line.count = {text!r} is not a whole number of lines",
            hint="set it to 0 (no header) or the number of lines before the first row",
        )
    return int(text)


def csv_options(table: GlueTable) -> CsvOptions:
    """The CSV options a table's SerDe describes: delimiter, quote, escape, header line, null token.

    With `skip.header.line.count` = N >= 1 the N-th line is read as the header line (and the N - 1 lines
    before it are skipped: `CatalogSpec.skip_lines`); the table's columns are the catalog's either way.
    """
    p, serde = table.serde_parameters, table.serde.lower()
    header = str(min(header_lines(table), 1))
    if "opencsvserde" in serde:
        return CsvOptions(
            delimiter=p.get("separatorChar", ","),
            quote=p.get("quoteChar", '"'),
            escape=p.get("escapeChar", "\\"),
            header=header == "1",
        )
    # LazySimpleSerDe: field.delim (or serialization.format) with Hive's ^A default; \N is its null token.
    delimiter = p.get("field.delim") or p.get("serialization.format") or "\x01"
    nulls = ("", p.get("serialization.null.format", "\\N"))
    return CsvOptions(
        delimiter=delimiter,
        escape=p.get("escape.delim", '"'),
        header=header == "1",
        null_values=tuple(dict.fromkeys(nulls)),
    )


def landed_type(glue_type: str) -> str:
    """The lake's type for a catalog type (the types a Parquet or JSON table lands as)."""
    t = glue_type.strip().lower()
    if t in ("tinyint", "smallint", "int", "integer", "bigint"):
        return "bigint"
    if t in ("float", "double", "real"):
        return "double"
    if t.startswith("decimal"):
        return t.replace(" ", "") if "(" in t else "decimal(10,0)"  # Hive's default precision
    if t in ("boolean", "date", "timestamp"):
        return t
    if t in ("string",) or t.startswith(("varchar", "char")):
        return STRING
    if t.startswith(NESTED_TYPES):
        return STRING  # landed as its JSON text (both engines), never flattened or dropped
    raise SchemaError(
        f"catalog type {glue_type!r} has no landed equivalent (binary columns are not landed)",
        hint="exclude the table, or expose the column as a string (e.g. base64) in the catalog",
    )


def widen_type(current: str, new: str) -> str | None:
    """The lake's widening rules (`plan.normalize.widen`) extended to declared decimals."""
    if current == new:
        return current
    cur, nw = _decimal(current), _decimal(new)
    if cur and nw:
        scale = max(cur[1], nw[1])
        digits = max(cur[0] - cur[1], nw[0] - nw[1])
        return f"decimal({digits + scale},{scale})" if digits + scale <= 38 else "double"
    if cur and new == "bigint":
        return current if cur[0] - cur[1] >= 19 else widen_type(current, "decimal(19,0)")
    if nw and current == "bigint":
        return widen_type("decimal(19,0)", new)
    if (cur and new == "double") or (nw and current == "double"):
        return "double"
    return widen(DECIMAL if cur else current, DECIMAL if nw else new)


def _decimal(t: str) -> tuple[int, int] | None:
    if not t.startswith("decimal("):
        return None
    p, _, s = t[len("decimal(") : -1].partition(",")
    return int(p), int(s or 0)


def fold_types(
    table: str, committed: Mapping[str, str], files: Sequence[tuple[str, Mapping[str, str]]]
) -> dict[str, str]:
    """One type per column over the committed types and each file's (in order): new columns join,
    compatible changes widen (bigint → decimal → double, date → timestamp), anything else is an error."""
    types = dict(committed)
    for relpath, found in files:
        for col, t in found.items():
            current = types.get(col)
            if current is None:
                types[col] = t
                continue
            wider = widen_type(current, t)
            if wider is None:
                raise SchemaError(
                    f"{table}: column {col} is {current} in the lake (or an earlier file) but {t} in {relpath}",
                    hint="the lake only widens types (bigint → decimal → double, date → timestamp); "
                    "re-land the table with --load-type full after fixing the catalog",
                )
            types[col] = wider
    return types


@dataclass(frozen=True)
class CatalogSpec:
    """A catalog table with every setting resolved (config, table parameters, registry, defaults)."""

    source: str
    source_name: str  # as the catalog spells it
    name: str  # landed name
    format: Format
    location: str
    columns: dict[str, str]  # cleaned data column → landed type (partition keys last)
    raw_columns: tuple[str, ...]  # the catalog's names of the data columns (header-less CSV files)
    partition_keys: tuple[str, ...]  # cleaned names
    partitions: tuple[GluePartition, ...]
    primary_key: tuple[str, ...]
    cursor: str | None
    cursor_timezone: str | None
    lookback: str | float
    load_type: LoadType
    full_load: bool
    csv: CsvOptions | None = None
    # Lines at the start of each CSV file before its header line (skip.header.line.count - 1): not data.
    skip_lines: int = 0
    # A file with a larger share of rejected rows is refused (none of its rows land; retried next run).
    max_rejected_fraction: float = 1.0

    @property
    def cursor_type(self) -> str | None:
        return self.columns.get(self.cursor) if self.cursor else None

    @property
    def partitioned(self) -> bool:
        return bool(self.partition_keys)


def _matches(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
        fnmatch.fnmatchcase(name, p) for p in exclude
    )


def table_key(table: GlueTable) -> tuple[str, ...]:
    """A primary key named in the table's parameters (`primary_key` etc., comma-separated)."""
    for k in KEY_PARAMETERS:
        if table.parameters.get(k):
            return tuple(c.strip() for c in table.parameters[k].replace("|", ",").split(",") if c.strip())
    return ()


def select_tables(
    source: GlueCatalogSourceConfig, tables: Sequence[GlueTable]
) -> tuple[list[GlueTable], list[GlueTable]]:
    """The catalog tables a source lands (listed or every one, include/exclude applied), and of those the
    ones whose entry is a JDBC connection (read through the PostgreSQL path, not S3)."""
    by_name = {t.name: t for t in tables}
    if source.tables is None:
        names = sorted(by_name)
    else:
        names = [t.name for t in source.tables]
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ConfigError(
                f"{source.name}: tables {missing} are not in the Glue database {source.database}",
                hint=f"tables there: {sorted(by_name) or 'none'}",
            )
    chosen = [by_name[n] for n in names if _matches(n, source.include, source.exclude)]
    return [t for t in chosen if t.connection is None], [t for t in chosen if t.connection is not None]


def resolve_table(
    source: GlueCatalogSourceConfig, table: GlueTable, registry: Mapping[str, tuple[str, ...]]
) -> tuple[CatalogSpec, list[str]]:
    """A table's landed name, columns and settings; and warnings for what was defaulted."""
    where = f"{source.name}.{table.name}"
    warnings: list[str] = []
    landed = clean_header([table.name], file=f"{source.name}: table")[0]
    if landed != table.name:
        warnings.append(f"{where} lands as {landed} (names are cleaned to lowercase_snake)")
    fmt = table_format(table)
    raw = [c.name for c in table.columns] + [k.name for k in table.partition_keys]
    cleaned = clean_header(raw, file=where)
    types = []
    for c in (*table.columns, *table.partition_keys):
        try:
            types.append(landed_type(c.type))
        except SchemaError as exc:
            raise SchemaError(f"{where}: column {c.name}: {exc.message}", hint=exc.hint) from None
    columns = dict(zip(cleaned, types, strict=True))
    to_landed = dict(zip(raw, cleaned, strict=True))
    cfg = source.table_config(table.name)

    def landed_names(names: Sequence[str], what: str) -> tuple[str, ...]:
        out = []
        for n in names:
            hit = to_landed.get(n) or (n if n in columns else None)
            if hit is None:
                raise ConfigError(
                    f"{where}: {what} column {n!r} is not a column of the table",
                    hint=f"its columns: {', '.join(columns)}",
                )
            out.append(hit)
        return tuple(out)

    if cfg and cfg.primary_key is not None:
        pk = landed_names(cfg.primary_key, "primary_key")
    elif table_key(table):
        pk = landed_names(table_key(table), "table parameter primary_key")
    elif table.name in registry:
        pk = landed_names(registry[table.name], "pk_registry")
    else:
        pk = ()
        warnings.append(
            f"{where} has no primary key (config, table parameters or registry): rows are not deduplicated"
        )

    full_load = bool(cfg and cfg.full_load)
    cursor: str | None = None
    if full_load:
        cursor = None
    elif cfg and cfg.cursor:
        cursor = landed_names([cfg.cursor], "cursor")[0]
    else:
        cursor = to_landed.get(source.cursor) or (source.cursor if source.cursor in columns else None)
    if cursor is not None and fmt != "csv" and columns[cursor] not in CURSOR_TYPES:
        if cfg and cfg.cursor:
            raise ConfigError(
                f"{where}: cursor {cfg.cursor} is {columns[cursor]}, not one of {', '.join(CURSOR_TYPES)}"
            )
        cursor = None
    if cursor is None and not full_load:
        warnings.append(
            f"{where} has no usable cursor column ({source.cursor}): new partitions and files are landed whole"
        )
    zone = (cfg.cursor_timezone if cfg else None) or source.cursor_timezone
    spec = CatalogSpec(
        source=source.name,
        source_name=table.name,
        name=landed,
        format=fmt,
        location=table.location,
        columns=columns,
        raw_columns=tuple(c.name for c in table.columns),
        partition_keys=tuple(to_landed[k.name] for k in table.partition_keys),
        partitions=table.partitions,
        primary_key=pk,
        cursor=cursor,
        # Athena's timestamps carry no zone and mean UTC unless the config says otherwise.
        cursor_timezone=zone or "UTC",
        lookback=cfg.lookback if cfg and cfg.lookback is not None else source.lookback,
        load_type=cfg.load_type if cfg else "auto",
        full_load=full_load,
        csv=csv_options(table) if fmt == "csv" else None,
        skip_lines=max(header_lines(table) - 1, 0) if fmt == "csv" else 0,
        max_rejected_fraction=(
            cfg.max_rejected_fraction
            if cfg and cfg.max_rejected_fraction is not None
            else source.max_rejected_fraction
        ),
    )
    return spec, warnings


@dataclass(frozen=True)
class CatalogFile:
    """A data file of a table: its listing facts and the partition values its rows take."""

    facts: FileFacts
    partition: tuple[tuple[str, str], ...] = ()  # (cleaned key, value)


@dataclass(frozen=True)
class CatalogPlan:
    """The files one run reads from a catalog table, the rows it keeps, and the ledger plan behind it."""

    spec: CatalogSpec
    load_type: Effective
    files: tuple[CatalogFile, ...]
    lower_bound: Watermark | None
    table_plan: TablePlan  # the file ledger's view: which files the commit records

    @property
    def has_work(self) -> bool:
        return bool(self.files)


def retry_refused(state: TableState | None) -> TableState | None:
    """The state as planning sees it: files a run refused (too many rejected rows) are not in its ledger,
    so every run reads them again until they land. Catalog files stay where their writer put them (CSV
    drops are moved to unprocessed/ instead): a file fixed in place, or a raised max_rejected_fraction,
    lands on the next run."""
    if state is None or all(e.status != "rejected" for e in state.files.values()):
        return state
    return replace(state, files={k: e for k, e in state.files.items() if e.status != "rejected"})


def plan_catalog_table(
    spec: CatalogSpec,
    state: TableState | None,
    listing: Sequence[CatalogFile],
    *,
    load_type: LoadType | None = None,
) -> CatalogPlan:
    """Choose the files of a run and the cursor bound.

    With a cursor: every listed file, rows `>= watermark - lookback` once a watermark is committed.
    Without one: files the ledger has not seen with the same size, mtime and ETag (a full load, or
    `full_load`, takes every file). auto: full without committed state, incremental with it.
    """
    chosen = load_type or spec.load_type
    where = f"{spec.source}.{spec.name}"
    state = retry_refused(state)
    if spec.full_load and chosen != "incremental":
        chosen = "full"
    by_path = {f.facts.relpath: f for f in listing}
    facts = [f.facts for f in listing]
    if spec.cursor is None:
        tp = plan_csv_table(spec.source, spec.name, state, facts, load_type=chosen, has_cursor=False)
        if spec.full_load:  # every run lands every file: the ledger says nothing about what to read
            tp = replace(tp, files=tuple(facts), already_landed=(), changed=(), leftovers=())
        files = tuple(by_path[f.relpath] for f in tp.files)
        return CatalogPlan(spec, tp.load_type, files, None, tp)
    has_state = state is not None and state.watermark is not None
    if chosen == "incremental" and not has_state:
        raise NoState(
            f"{where} has no committed watermark, so there is nothing to be incremental from",
            hint="run it once with --load-type auto (the default) or full",
        )
    effective: Effective = "incremental" if has_state and chosen != "full" else "full"
    bound = None
    if effective == "incremental" and state is not None and state.watermark is not None:
        wm = state.watermark
        ctype = _cursor_landed_type(spec, state)
        if ctype is not None and wm.type != ctype:
            raise SchemaError(
                f"{where}: cursor {spec.cursor} is {ctype} now but {wm.type} in the committed watermark",
                hint="re-land the table with --load-type full",
            )
        bound = lower_bound(wm, spec.lookback)
    tp = TablePlan(spec.source, spec.name, effective, tuple(facts), (), (), bound)
    return CatalogPlan(spec, effective, tuple(listing), bound, tp)


def _cursor_landed_type(spec: CatalogSpec, state: TableState) -> str | None:
    """The cursor's type as the lake holds it: the committed column's (the files' own type, e.g. a
    UTC-adjusted Parquet timestamp the catalog calls `timestamp`), else the catalog's. CSV cursors are
    typed from their values (the CSV flow checks the bound's type)."""
    if spec.format == "csv" or spec.cursor is None:
        return None
    return state.columns.get(spec.cursor) or spec.columns[spec.cursor]


def partition_columns(spec: CatalogSpec, partition: GluePartition) -> tuple[tuple[str, str], ...]:
    """A partition's (cleaned key, value) pairs."""
    if len(partition.values) != len(spec.partition_keys):
        raise SchemaError(
            f"{spec.source}.{spec.name}: partition {partition.location} has {len(partition.values)} values "
            f"for {len(spec.partition_keys)} partition keys",
            hint="repair the table's partitions (MSCK REPAIR TABLE or the crawler)",
        )
    return tuple(zip(spec.partition_keys, partition.values, strict=True))
