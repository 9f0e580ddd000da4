"""The embedded default engine: DuckDB, in process, no Java."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb

from ingestion.config import DuckDBConfig
from ingestion.contract import SOURCE_FILE, OrderTerm, batch_dedup_order, render_window
from ingestion.engines.base import (
    CatalogBatch,
    CsvBatch,
    FileRead,
    JdbcBatch,
    OnePass,
    TombstoneBatch,
    Written,
    land_csv_files,
    landed_type,
)
from ingestion.engines.duckdb.common import (
    SQL_TYPES,
    count_rows,
    dedup_window,
    max_cursor,
    metadata_select,
    stage_parquet,
)
from ingestion.engines.duckdb.jdbc import ArrowLanding, land_arrow, land_jdbc
from ingestion.engines.duckdb.tombstones import land_tombstones
from ingestion.errors import EngineError
from ingestion.lake.layout import publish_staged, scratch_dir
from ingestion.plan.catalog import fold_types
from ingestion.plan.csv import FileFacts, LandedBatch
from ingestion.plan.normalize import (
    COLUMN_BATCH,
    DECIMAL,
    SAMPLE_ROWS,
    STRING,
    TYPE_RULES,
    ColumnStats,
    TypePlan,
    TypeRule,
    ValueCheck,
    accepted_rules,
    candidate_rules,
    column_batches,
    fit_rules,
    unpack_rule_counts,
    with_lower_bounds,
)
from ingestion.plan.rejects import (
    DUCKDB_ERRORS,
    INVALID_ENCODING,
    LINE_TOO_LONG,
    MAX_LINE_BYTES,
    REPEATED_HEADER,
    Reject,
    check_order,
    classify_structural,
    value_reject,
)
from ingestion.sources.catalog import conform, file_types, null_key_rejects, read_file
from ingestion.sources.csv import download
from ingestion.sqltext import quote_ident, sql_string

_batch_ids = itertools.count()


def parse_expr(col: str, rule: TypeRule) -> str:
    """The value of text column `col` as `rule`'s type, or NULL when it doesn't parse."""
    if rule.fmt:
        parsed = f"try_strptime({col}, {sql_string(rule.fmt)})"
        return f"CAST({parsed} AS DATE)" if rule.name == "date" else parsed
    return f"TRY_CAST({col} AS {SQL_TYPES[rule.name]})"


def cast_expr(col: str, target: str, rules: dict[str, TypeRule], zone: str | None) -> str:
    """Text column `col` cast to its landed type (values were checked to fit); naive times read in `zone`."""
    if target == STRING:
        return col
    rule = rules[target]
    expr = parse_expr(col, rule)
    if rule.fmt is None and target == "timestamp" and "date" in rules and rules["date"].fmt:
        # a custom-format date widened into an ISO timestamp column
        expr = f"coalesce({expr}, CAST({parse_expr(col, rules['date'])} AS TIMESTAMP))"
    if target == "timestamp" and zone:
        expr = f"timezone({sql_string(zone)}, CAST({expr} AS TIMESTAMP))"
    return f"CAST({expr} AS {SQL_TYPES['timestamptz' if target == 'timestamp' and zone else target]})"


def rule_ok_expr(col: str, rule: TypeRule) -> str:
    """TRUE when text column `col` matches `rule`'s pattern and parses as its type.

    A CASE, not an AND: DuckDB evaluates every side of an AND for every row, and a failing TRY_CAST or
    try_strptime is far dearer than a regex. So: the length bounds first (cheap), the regex only on
    values of a possible length, the cast only on values the regex let through (bench/RESULTS.md).
    """
    low, high = rule.lengths
    guard = f"length({col}) BETWEEN {low} AND {high}" if high else f"length({col}) >= {low}"
    return (
        f"CASE WHEN NOT ({guard}) THEN FALSE WHEN regexp_full_match({col}, {sql_string(rule.pattern)}) "
        f"THEN {parse_expr(col, rule)} IS NOT NULL ELSE FALSE END"
    )


def fits_expr(col: str, target: str, rules: dict[str, TypeRule], *, key: bool = False) -> str:
    """TRUE when text column `col` is null or a value a `target` column takes (pattern and parse).

    A `key` column must also hold a value: a null or empty key is never landed.
    """
    present = f"({col} IS NOT NULL AND {col} <> '')"
    if target == STRING:
        return present if key else "TRUE"
    alts = [f"({rule_ok_expr(col, rules[name])})" for name in accepted_rules(target) if name in rules]
    if key:
        return f"({present} AND ({' OR '.join(alts)}))"
    # An empty string in a typed column is its null: a number or a time has no empty value.
    return f"({col} IS NULL OR {col} = '' OR {' OR '.join(alts)})"


def check_expr(
    col: str, check: ValueCheck, value: str = "", target: str = "", zone: str | None = None
) -> str:
    """TRUE when text column `col`'s value passes `check` (what the file's sample showed of every value).

    `value`: the column's value as its landed `target` type (NULL when it doesn't parse), computed once
    for the write: it stands for the parse of `target`'s own rule.
    """
    absent = f"({col} IS NULL OR {col} = '')"
    if not check.values:
        if check.present:
            return "FALSE"
        return absent if check.empty else f"{col} IS NULL"
    ok = rules_ok_expr(col, check.rules, value, target, zone)
    if check.present:
        return f"(NOT {absent} AND {ok})"
    return "TRUE" if ok == "TRUE" else f"({absent} OR {ok})"


def rules_ok_expr(
    col: str, rules: Sequence[TypeRule], value: str = "", target: str = "", zone: str | None = None
) -> str:
    """TRUE when text column `col` satisfies every one of `rules` (pattern and parse), in fewer checks:
    decimal and double take every value bigint takes, double every decimal value with a point; an
    integer in DuckDB's own spelling of at most 18 characters is a bigint without the regex, so is a
    `YYYY-MM-DD HH:MM:SS` timestamp; `target`'s rule takes `value` (see `check_expr`) as its parse
    (`zone`: the value is an instant of naive times read there, not the naive time itself)."""

    def ok(rule: TypeRule) -> str:
        if not (value and rule.name == target):
            return rule_ok_expr(col, rule)
        parsed = f"({pattern_expr(col, rule)} AND {value} IS NOT NULL)"
        if target == "timestamp" and rule.fmt is None and not zone:
            # the commonest spelling, without the regex: the value printed back is the text
            return (
                f"CASE WHEN length({col}) = 19 AND {col} >= '0' "
                f"AND strftime({value}, '%Y-%m-%d %H:%M:%S') = {col} THEN TRUE ELSE {parsed} END"
            )
        return parsed

    by_name = {r.name: r for r in rules}
    terms = []
    if "bigint" in by_name:
        full = ok(by_name.pop("bigint"))
        number = value if value and target == "bigint" else f"TRY_CAST({col} AS BIGINT)"
        terms.append(
            f"CASE WHEN length({col}) <= 18 AND CAST({number} AS VARCHAR) = {col} THEN TRUE ELSE {full} END"
        )
        by_name.pop(DECIMAL, None)
        by_name.pop("double", None)
    if DECIMAL in by_name and "double" in by_name:
        double = ok(by_name.pop("double"))
        terms.append(f"CASE WHEN contains({col}, '.') THEN TRUE ELSE {double} END")
    terms += [ok(rule) for rule in by_name.values()]
    return " AND ".join(f"({t})" for t in terms) if terms else "TRUE"


def pattern_expr(col: str, rule: TypeRule) -> str:
    """TRUE when text column `col` matches `rule`'s pattern (its length bounds first, then the regex)."""
    low, high = rule.lengths
    guard = f"length({col}) BETWEEN {low} AND {high}" if high else f"length({col}) >= {low}"
    return f"CASE WHEN {guard} THEN regexp_full_match({col}, {sql_string(rule.pattern)}) ELSE FALSE END"


def plain_cast(target: str, rules: dict[str, TypeRule]) -> bool:
    """Is `cast_expr` to `target` NULL exactly when the value does not parse by `target`'s own rule? (Not
    for an ISO timestamp column that also takes dates of a custom format.)"""
    return target in rules and not (
        target == "timestamp" and rules[target].fmt is None and "date" in rules and rules["date"].fmt
    )


def _default_rule(name: str) -> TypeRule:
    return next(r for r in TYPE_RULES if r.name == name)


# The default rules type inference checks fewer of per value (`_DuckDBCsv._rule_count_terms`):
# tests/test_duckdb_scale.py checks the counts against every rule on every value, on DuckDB itself.
_BIGINT, _DECIMAL, _DOUBLE = _default_rule("bigint"), _default_rule(DECIMAL), _default_rule("double")
_TIMESTAMP, _TIMESTAMPTZ = _default_rule("timestamp"), _default_rule("timestamptz")

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def limit_bytes(limit: str) -> int:
    """Bytes of a memory_limit setting such as '4GB' or '512 MiB' (DuckDB's units: KB = 1000 B)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*", limit)
    if not m or m.group(2).upper() not in _UNITS:
        raise EngineError(f"memory_limit {limit!r} is not a size", hint="write it as e.g. '4GB' or '512MiB'")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def reader_line_limit(memory_limit: str) -> int:
    """The longest record DuckDB's CSV reader takes: MAX_LINE_BYTES, unless the memory limit is so small
    that its buffers (two records long, one per thread) would not fit: then an eighth of the limit."""
    return min(MAX_LINE_BYTES, limit_bytes(memory_limit) // 8) if memory_limit else MAX_LINE_BYTES


_MEMORY_PER_THREAD = 96 * 2**20  # the least memory per DuckDB thread the engine plans with


def default_memory_limit() -> str:
    """Half the machine's RAM: room for the Python process, the OS and the page cache beside DuckDB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): DuckDB's own default
        return ""
    return f"{max(total // 2 // 2**20, 256)}MB"


class DuckDBEngine:
    """Lands batches in process; each batch gets its own connection, so tables can land in parallel.

    One in-memory database for the run, bounded by `memory_limit`: what does not fit (the dedup's sort)
    spills to a folder of its own under `temp_directory`, removed at close. A CSV file is never copied
    into the database: each pass reads it again (`_DuckDBCsv`).
    """

    name = "duckdb"

    def __init__(self, settings: DuckDBConfig | None = None) -> None:
        settings = settings or DuckDBConfig()
        parent = settings.temp_directory
        if parent:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.temp_directory = tempfile.mkdtemp(prefix="tidemark-duckdb-", dir=parent)
        self.one_pass = settings.one_pass
        config: dict[str, str | bool | int | float | list[str]] = {"temp_directory": self.temp_directory}
        memory = settings.memory_limit or default_memory_limit()
        self.line_limit = reader_line_limit(memory)
        self.row_group_bytes = limit_bytes(memory) // 8 if memory else 0
        if memory:
            config["memory_limit"] = memory.replace(" ", "")
        threads = settings.threads
        if not threads and memory:
            # DuckDB's sort and window need some memory per thread (2 threads fail in 64MB, 1 lands)
            threads = max(1, min(os.cpu_count() or 1, limit_bytes(memory) // _MEMORY_PER_THREAD))
        if threads:
            config["threads"] = str(threads)
        try:
            self.db = duckdb.connect(":memory:", config=config)
        except duckdb.Error as exc:
            shutil.rmtree(self.temp_directory, ignore_errors=True)
            raise EngineError(
                f"DuckDB refused its settings {config}: {exc}", hint="fix the duckdb: block of the config"
            ) from exc

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.temp_directory, ignore_errors=True)  # spill files of the run

    def land_csv(self, batch: CsvBatch) -> LandedBatch:
        """Land `batch.files` as one deduplicated set of Parquet files under `batch.target`.

        DuckDB reads local files: S3 drops are downloaded into the run's local scratch folder first.
        """
        local = os.path.join(scratch_dir(batch.lake_root, batch.run_id), "_inbox", batch.source, batch.table)
        batch = replace(batch, files=tuple(download(batch.files, local)))
        # a connection of its own: temp tables stay per batch
        ops = _DuckDBCsv(
            self.db.cursor(), batch, self.line_limit, self.row_group_bytes, one_pass=self.one_pass
        )
        try:
            return land_csv_files(batch, ops)
        except duckdb.Error as exc:
            raise EngineError(f"{batch.name}: DuckDB failed: {exc}") from exc
        finally:
            ops.close()

    def land_jdbc(self, batch: JdbcBatch) -> LandedBatch:
        """Land a PostgreSQL batch (read through connectorx as Arrow); see `engines.duckdb.jdbc`."""
        return land_jdbc(self.db.cursor(), batch, next(_batch_ids))

    def land_catalog(self, batch: CatalogBatch) -> LandedBatch:
        """Land a catalog table's Parquet/JSON files: read as Arrow through the lake's S3 filesystem,
        widened into one type per column (the lake's rules), then landed like PostgreSQL rows; a CSV
        table's files go through the CSV flow."""
        if batch.csv is not None:
            return self.land_csv(batch.csv)
        spec = batch.spec
        read, parsed = [], {}
        for f in batch.files:
            data, parsed[f.facts.relpath] = read_file(spec, f)
            read.append((f.facts.relpath, data))
        types = fold_types(
            batch.name,
            batch.committed,
            [(path, file_types(data, path)) for path, data in read],
        )
        for c in (*spec.primary_key, *([spec.cursor] if spec.cursor else [])):
            types.setdefault(c, spec.columns[c])  # no file yet: the catalog's type
        conformed = [(path, conform([(path, data)], types)) for path, data in read]
        rows, quarantine = null_key_rejects(conformed, spec.primary_key, parsed, spec.max_rejected_fraction)
        landing = ArrowLanding(
            batch.name,
            types,
            spec.primary_key,
            spec.cursor,
            batch.run_id,
            batch.ingested_at,
            batch.staging,
            batch.target,
            batch.lower_bound,
        )
        landed = land_arrow(
            self.db.cursor(), rows if rows is not None else conform([], types), landing, next(_batch_ids)
        )
        return replace(
            landed,
            rows_read=landed.rows_read + quarantine.rows_rejected,
            rows_rejected=quarantine.rows_rejected,
            quarantine=quarantine,
        )

    def land_tombstones(self, batch: TombstoneBatch) -> int:
        """Delete detection over the landed files (see `engines.duckdb.tombstones`)."""
        return land_tombstones(batch)


@dataclass
class _CsvFile:
    """One file of a batch as `_DuckDBCsv` reads it."""

    reader: str  # read_csv(...) of the file, rows with errors skipped
    cols: list[str]  # select items over the reader: the named text columns, then `_source_file`
    names: list[str]  # the columns' names (the file's, then the batch's per-file columns)
    width: int  # fields per record
    hdr: str  # TRUE for a row that repeats the header line
    excl: str  # temp table of the ordinals left out (repeated headers, type rejects)
    raw: list[str] = field(default_factory=list)  # the header line's fields
    guard: bool = False  # the file holds undecodable bytes: every pass reads every column
    excluded: int = 0
    live_rows: int = 0
    stats: dict[str, ColumnStats] = field(default_factory=dict)
    rejected_records: list[int] = field(default_factory=list)


class _DuckDBCsv:
    """The CSV steps of one batch on one DuckDB connection.

    No copy of a file is held: each file is a query over `read_csv` (text columns), and each pass (the
    sample, the pass that finds the rejects and counts the types, the type checks, the write) reads the
    file again. A row is identified by its ordinal among the rows the reader accepts (file order, a
    streaming `row_number()`): the rows taken out after the read (repeated headers, type rejects) are a
    temp table of ordinals the later passes leave out.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        batch: CsvBatch,
        line_limit: int = MAX_LINE_BYTES,
        row_group_bytes: int = 0,
        *,
        one_pass: bool = True,
    ) -> None:
        self.con, self.batch, self.one_pass = con, batch, one_pass
        self.line_limit, self.row_group_bytes = line_limit, row_group_bytes
        self.n = next(_batch_ids)
        self.files: dict[str, _CsvFile] = {}
        con.execute("SET TimeZone = 'UTC'")

    def close(self) -> None:
        self.con.close()

    def keep_rejects(self) -> None:
        """Nothing to write: every rejected row goes back to the driver, which writes them."""

    def _reader(self, f: FileFacts, width: int, rejects: str = "", line_limit: int = 0) -> str:
        """`read_csv` of the file as `width` text columns `c0…`: rows with errors are skipped, and stored
        in the temp tables `rejects` + `_table`/`_scan` when it is given. `line_limit`: a shorter longest
        record than the engine's (a smaller buffer: for a sample, whose rows may be any of the file's)."""
        o, line_limit = self.batch.options, min(line_limit or self.line_limit, self.line_limit)
        positional = ", ".join(f"{sql_string(f'c{k}')}: 'VARCHAR'" for k in range(width))
        errors = (
            f"store_rejects = true, rejects_table = {sql_string(rejects + '_table')}, "
            f"rejects_scan = {sql_string(rejects + '_scan')}"
            if rejects
            else "ignore_errors = true"
        )
        return (
            f"read_csv({sql_string(f.path)}, columns = {{{positional}}}, header = {str(o.header).lower()}, "
            f"delim = {sql_string(o.delimiter)}, quote = {sql_string(o.quote)}, escape = {sql_string(o.escape)}, "
            f"encoding = {sql_string(o.encoding.replace('-sig', ''))}, auto_detect = false, strict_mode = true, "
            f"null_padding = false, max_line_size = {line_limit}, buffer_size = {2 * line_limit}, "
            f"{errors}, "
            # PostgreSQL COPY: an unquoted empty field is NULL, a quoted "" the empty string.
            "allow_quoted_nulls = false, nullstr = '', compression = 'none')"
        )

    def _rows(
        self, cf: _CsvFile, *, reader: str = "", ordinal: bool = False, hdr: bool = False, every: bool = False
    ) -> str:
        """A query of the file's rows as its named text columns (and `_source_file`), with `__ord` (the
        row's ordinal among the rows the reader accepts, in file order) and `__hdr` (it repeats the
        header line) on demand.

        The encoding guard: DuckDB checks the encoding only of the columns a query reads, so once a file
        is known to hold undecodable bytes (or with `every`) the query reads all its columns (a condition
        on all of them), or a pass that leaves a column out would take rows the read rejected (and shift
        every ordinal after them).
        """
        items = list(cf.cols)
        if ordinal:
            items.append("row_number() OVER () - 1 AS __ord")
        if hdr:
            items.append(f"{cf.hdr} AS __hdr")
        guard = ""
        if cf.guard or every:
            fields = ", ".join(quote_ident(f"c{k}") for k in range(cf.width))
            guard = f" WHERE length(concat({fields})) >= 0"
        return f"SELECT {', '.join(items)} FROM {reader or cf.reader}{guard}"

    def _live(self, cf: _CsvFile, *, ordinal: bool = False) -> str:
        """The rows still landable: the accepted rows but the excluded ordinals (`__ord` on demand)."""
        if not cf.excluded:
            return f"({self._rows(cf, ordinal=ordinal)})"
        rows = (
            f"SELECT * FROM ({self._rows(cf, ordinal=True)}) WHERE __ord NOT IN (SELECT ord FROM {cf.excl})"
        )
        return f"({rows})" if ordinal else f"(SELECT * EXCLUDE (__ord) FROM ({rows}))"

    def _exclude(self, cf: _CsvFile, ordinals: list[int]) -> None:
        if not ordinals:
            return
        if not cf.excluded:
            self.con.execute(f"CREATE TEMP TABLE {cf.excl} (ord BIGINT)")
        self.con.executemany(f"INSERT INTO {cf.excl} VALUES (?)", [(k,) for k in ordinals])
        cf.excluded += len(ordinals)

    def read_files(self, files: list[tuple[FileFacts, list[str], list[str]]]) -> dict[str, FileRead]:
        """One file at a time: each pass over a file is a query of its own."""
        return {f.relpath: self.read(f, raw_names, names) for f, raw_names, names in files}

    def _file(self, f: FileFacts, raw_names: list[str], names: list[str]) -> _CsvFile:
        """The file as queries over `read_csv` (its named text columns, the repeated-header test)."""
        o, i = self.batch.options, next(_batch_ids)
        nulls = [sql_string(v) for v in o.null_values if v]  # other tokens match quoted or not (as on Spark)
        cols, values = [], []
        for k, c in enumerate(names):
            expr = quote_ident(f"c{k}")  # a line break inside quotes is kept as it is (\r\n stays \r\n)
            if nulls:
                expr = f"CASE WHEN {expr} IN ({', '.join(nulls)}) THEN NULL ELSE {expr} END"
            cols.append(f"{expr} AS {quote_ident(c)}")
            values.append(f"coalesce({expr}, '')")
        extra = self.batch.file_columns.get(f.relpath, ())
        cols += [f"{sql_string(v)} AS {quote_ident(k)}" for k, v in extra]
        cols.append(f"{sql_string(f.relpath)} AS {SOURCE_FILE}")
        hdr = "FALSE"
        if o.header:  # a row that repeats the header line (concatenated exports)
            # The first field may carry the byte-order mark of a concatenated file's own header.
            values[0] = f"ltrim({values[0]}, chr(65279))"
            same = " AND ".join(f"{v} = {sql_string(raw)}" for v, raw in zip(values, raw_names, strict=True))
            hdr = f"({same})"
        all_names = names + [k for k, _ in extra]
        cf = _CsvFile(
            self._reader(f, len(names)), cols, all_names, len(names), hdr, f"excl_{self.n}_{i}", raw_names
        )
        self.files[f.relpath] = cf
        return cf

    def _sample(self, cf: _CsvFile, reader: str = "") -> tuple[dict[str, ColumnStats], bool]:
        """The statistics of every rule over the file's first `SAMPLE_ROWS` rows (of `reader`, default
        the file's), and whether they are all its rows."""
        o = self.batch.options
        sample, quoted = f"sample_{self.n}_{next(_batch_ids)}", ", ".join(quote_ident(c) for c in cf.names)
        self.con.execute(
            f"CREATE TEMP TABLE {sample} AS SELECT {quoted} FROM ({self._rows(cf, reader=reader, hdr=o.header)}) "
            + ("WHERE NOT __hdr " if o.header else "")
            + f"LIMIT {SAMPLE_ROWS + 1}"
        )
        small = count_rows(self.con, sample) <= SAMPLE_ROWS  # the sample is the whole file
        stats = self._rule_counts_long(sample, cf.names, self.batch.rules) if cf.names else {}
        self.con.execute(f"DROP TABLE {sample}")
        return stats, small

    def read(self, f: FileFacts, raw_names: list[str], names: list[str]) -> FileRead:
        """One pass over the file (after a sample of its first rows): its structural rejects, its repeated
        header lines and, from the sample's candidate rules, the type statistics of every value."""
        o = self.batch.options
        cf = self._file(f, raw_names, names)
        rej = f"rej_{cf.excl}"
        all_names = cf.names

        # The sample: type inference from the first rows, then every value verified with its candidates.
        rules = self.batch.rules
        sampled, small = self._sample(cf)
        candidates: dict[str, tuple[TypeRule, ...]] = {}
        if small:
            cf.stats = sampled
        else:
            exact = [self.batch.cursor] if self.batch.cursor else []
            candidates = candidate_rules(sampled, rules, exact)
        folded = not small and len(all_names) <= COLUMN_BATCH  # a wide file: a stats pass of its own

        # The pass that finds the rejects (the reader stores them), with the type counts folded in. It
        # reads every column (the encoding of a column a query leaves out is not checked).
        rejecting = self._reader(f, len(names), rej)
        source = f"({self._rows(cf, reader=rejecting, hdr=o.header, every=not folded)})"
        terms = ["count(*)", "count(*) FILTER (WHERE __hdr)" if o.header else "0"]
        scan = source
        if folded:
            # Over every row: a repeated header line (rare) is taken out after, and the counts made again.
            checks, scan = self._rule_count_terms(source, candidates)
            terms += checks
        # fetchall: the reader stores its rejects when the query is done, not when its one row is out
        row = self.con.execute(f"SELECT {', '.join(terms)} FROM {scan}").fetchall()[0]
        header_ordinals: list[int] = []
        if row[1]:  # the header line repeated: which rows (a pass of its own, rarely needed)
            header_ordinals = [
                int(k)
                for (k,) in self.con.execute(
                    f"SELECT __ord FROM ({self._rows(cf, ordinal=True, hdr=True, every=True)}) "
                    "WHERE __hdr ORDER BY __ord"
                ).fetchall()
            ]
        found = self.con.execute(
            # A whole-line error (line too long) has no column index: arg_min must not skip it.
            f"SELECT line, min(line_byte_position), arg_min(error_type, coalesce(column_idx, -1)), "
            f"arg_min(csv_line, coalesce(column_idx, -1)) FROM {rej}_table GROUP BY line ORDER BY line"
        ).fetchall()
        header = 1 if o.header else 0
        rejects = []
        for line, pos, error_type, found_line in found:
            csv_line = (found_line or "").lstrip("\r\n")  # DuckDB may start it on the CR/LF before it
            code = DUCKDB_ERRORS.get(str(error_type))
            if code == INVALID_ENCODING:
                reason = "bytes that are not valid in the file's encoding"
                cf.guard = True
            elif code == LINE_TOO_LONG:
                reason = f"record longer than {self.line_limit} bytes"
                if self.line_limit < MAX_LINE_BYTES:
                    reason += " (DuckDB's reader under this memory_limit: raise duckdb.memory_limit)"
            else:  # the same classifier as the Spark engine's: parity by construction
                code, reason = classify_structural(csv_line, len(names), o)
            record = int(line) - 1 - header
            rejects.append(Reject(f.relpath, record, code, reason, raw=csv_line, offset=max(int(pos) - 1, 0)))
        self.con.execute(f"DROP TABLE IF EXISTS {rej}_table")
        self.con.execute(f"DROP TABLE IF EXISTS {rej}_scan")
        cf.rejected_records = sorted(r.record for r in rejects)
        if header_ordinals:  # the header line repeated (concatenated exports): removed, types nothing
            self._exclude(cf, header_ordinals)
            raw = o.delimiter.join(raw_names)
            rejects += [
                Reject(f.relpath, r, REPEATED_HEADER, "the header line repeated as a data row", raw=raw)
                for r in _records_of_accepted(header_ordinals, cf.rejected_records)
            ]
        cf.live_rows = int(row[0]) - len(header_ordinals)
        if folded and not header_ordinals:
            cf.stats = with_lower_bounds(unpack_rule_counts(candidates, row[2:]), rules)
        elif not small and all_names:
            cf.stats = with_lower_bounds(self._rule_counts(self._live(cf), candidates), rules)
        return FileRead(cf.live_rows, tuple(rejects))

    def stats(self, f: FileFacts, rules: tuple[TypeRule, ...]) -> dict[str, ColumnStats]:
        """The statistics `read` gathered (with the batch's rules, which `rules` are)."""
        return self.files[f.relpath].stats

    def _rule_count_terms(self, source: str, rules: dict[str, tuple[TypeRule, ...]]) -> tuple[list[str], str]:
        """The aggregates `unpack_rule_counts` reads (per column: its non-empty values, its empty strings,
        one count per rule) over the rows of `source`, and the scan to run them on.

        Fewer checks than rules per value: decimal and double only where the bigint rule fails (they take
        every value it takes), double only where decimal fails too (a decimal value with a point is a
        double, one without is an integer of 19 or 20 digits, which double leaves to string); timestamptz
        only where the ISO timestamp rule fails (no value matches both). tests/test_duckdb_scale.py
        checks the counts against every rule on every value."""
        checks: list[str] = []
        first: list[str] = []  # flags of the scan: bigint, timestamp
        second: list[str] = []  # decimal (on the bigint flag)
        for k, (c, col_rules) in enumerate(rules.items()):
            col = quote_ident(c)
            checks.append(f"count(NULLIF({col}, ''))")
            checks.append(f"count(*) FILTER (WHERE {col} = '')")  # "" is no value (types nothing)
            has = set(col_rules)
            integer = f"__tidemark_int_{k}" if _BIGINT in has else ""
            dec = f"__tidemark_dec_{k}" if _DECIMAL in has and _DOUBLE in has else ""
            iso = f"__tidemark_ts_{k}" if _TIMESTAMP in has and _TIMESTAMPTZ in has else ""
            for rule in col_rules:
                ok = rule_ok_expr(col, rule)
                if rule == _BIGINT:
                    first.append(f"{ok} AS {integer}")
                    ok = integer
                elif rule == _DECIMAL:
                    if integer:  # decimal takes every value bigint takes
                        ok = f"CASE WHEN {integer} THEN TRUE ELSE {ok} END"
                    if dec:
                        second.append(f"{ok} AS {dec}")
                        ok = dec
                elif rule == _DOUBLE:
                    if dec:  # a decimal value with a point is a double; without, 19 or 20 digits: not one
                        ok = f"CASE WHEN {dec} THEN contains({col}, '.') ELSE {ok} END"
                    if integer:
                        ok = f"CASE WHEN {integer} THEN TRUE ELSE {ok} END"
                elif rule == _TIMESTAMP and iso:
                    first.append(f"{ok} AS {iso}")
                    ok = iso
                elif rule == _TIMESTAMPTZ and iso:  # no value matches both
                    ok = f"CASE WHEN {iso} THEN FALSE ELSE {ok} END"
                checks.append(f"count(*) FILTER (WHERE {ok})")
        scan = source
        if first:
            scan = f"(SELECT *, {', '.join(first)} FROM {scan})"
        if second:
            scan = f"(SELECT *, {', '.join(second)} FROM {scan})"
        return checks, scan

    def _rule_counts(self, source: str, rules: dict[str, tuple[TypeRule, ...]]) -> dict[str, ColumnStats]:
        """Per column of `source`, its non-null values and the values satisfying each of its rules: one
        scan per `COLUMN_BATCH` columns, so a wide file's query stays small (cost linear in the columns)."""
        out: dict[str, ColumnStats] = {}
        for part in column_batches(rules):
            checks, scan = self._rule_count_terms(source, part)
            row = self.con.execute(f"SELECT {', '.join(checks)} FROM {scan}").fetchone()
            assert row is not None
            out.update(unpack_rule_counts(part, row))
        return out

    def _rule_counts_long(
        self, source: str, names: list[str], rules: tuple[TypeRule, ...]
    ) -> dict[str, ColumnStats]:
        """`_rule_counts` with every rule for every column, over the values unpivoted into one column: a
        query of one term per rule whatever the width, so a 500-column file costs what its values do
        (the wide form's planning grows faster than its columns). For samples and small files."""
        cols = ", ".join(quote_ident(c) for c in names)
        checks = [f"count(*) FILTER (WHERE {rule_ok_expr('v', rule)})" for rule in rules]
        found = self.con.execute(
            f"SELECT col, count(NULLIF(v, '')), count(*) FILTER (WHERE v = ''), {', '.join(checks)} "
            f"FROM (UNPIVOT (SELECT {cols} FROM {source}) ON {cols} INTO NAME col VALUE v) GROUP BY col"
        ).fetchall()  # nulls are left out by UNPIVOT: they count nowhere
        out = {c: ColumnStats(0, {r.name: 0 for r in rules}, empty=0) for c in names}
        for col, non_null, empty, *ok in found:
            out[str(col)] = ColumnStats(
                int(non_null), {r.name: int(k) for r, k in zip(rules, ok, strict=True)}, empty=int(empty)
            )
        return out

    def type_rejects(self, f: FileFacts, plan: TypePlan, rules: tuple[TypeRule, ...]) -> list[Reject]:
        cf = self.files[f.relpath]
        names = cf.names
        keys, cursor = self.batch.primary_key, self.batch.cursor
        fits = {
            c: fits_expr(
                quote_ident(c),
                plan.types[c],
                fit_rules(rules, declared=c in self.batch.declared),
                key=c in keys,
            )
            for c in names
        }
        order = check_order(names, keys, cursor)
        first_bad = " ".join(f"WHEN NOT {fits[c]} THEN {sql_string(c)}" for c in order)
        quoted = ", ".join(quote_ident(c) for c in names)
        bad = self.con.execute(
            f"SELECT __ord, CASE {first_bad} END AS bad_column, {quoted} FROM {self._live(cf, ordinal=True)} "
            f"WHERE NOT ({' AND '.join(fits.values())}) ORDER BY __ord"
        ).fetchall()
        if not bad:
            return []
        ordinals = [int(r[0]) for r in bad]
        self._exclude(cf, ordinals)
        cf.live_rows -= len(bad)
        records = _records_of_accepted(ordinals, cf.rejected_records)
        out = []
        for row, record in zip(bad, records, strict=True):
            col = str(row[1])
            value = row[2 + names.index(col)]
            raw = self.batch.options.delimiter.join("" if v is None else str(v) for v in row[2:])
            code, reason = value_reject(col, value, plan.types[col], keys=keys, cursor=cursor)
            out.append(Reject(f.relpath, record, code, reason, col, raw))
        return out

    def write(self, files: list[FileFacts], columns: list[str], plan: TypePlan) -> Written:
        batch, con = self.batch, self.con
        rules = {r.name: r for r in batch.rules}
        zone = batch.options.timezone
        # Each file read once more, straight into the cast, filter, dedup and Parquet write.
        selects = [f"SELECT * FROM {self._live(self.files[f.relpath])}" for f in files]
        raw = f"raw_{self.n}"
        con.execute(f"CREATE TEMP VIEW {raw} AS " + "\nUNION ALL BY NAME\n".join(selects))
        typed = ", ".join(
            f"{cast_expr(quote_ident(c), plan.types[c], rules, zone)} AS {quote_ident(c)}" for c in columns
        )
        meta = metadata_select(batch.run_id, batch.ingested_at, source_file=True)
        select = f"SELECT {typed}, {meta} FROM {raw}"
        # Filter and dedup see the typed columns: in the SELECT above they would see the raw text.
        select = f"SELECT * FROM ({select}) AS typed"
        if batch.lower_bound and batch.cursor:
            select += f" WHERE {self._kept(quote_ident(batch.cursor), plan)}"
        # One pass from the files to the Parquet file: no table of kept rows, none of deduplicated rows
        # (each was a full copy of the batch in memory).
        if batch.lower_bound and batch.cursor:
            rows_kept = count_rows(con, f"({select}) AS kept")
        else:
            rows_kept = sum(self.files[f.relpath].live_rows for f in files)
        dedup = select
        if batch.primary_key:
            dedup += (
                f" QUALIFY row_number() OVER ({dedup_window(batch.primary_key, batch.cursor, columns)}) = 1"
            )
        staged = self._stage(f"({dedup})")
        return self._publish(staged, rows_kept, plan)

    def _stage(self, query: str) -> str:
        """Write `query` to the run's scratch folder (renamed into landing/ by `_publish`: a crash
        mid-write never leaves a truncated file where dbt reads)."""
        Path(self.batch.staging).mkdir(parents=True, exist_ok=True)
        return stage_parquet(
            self.con, query, self.batch.staging, self.batch.ingested_at, self.row_group_bytes
        )

    def _publish(self, staged: str, rows_kept: int, plan: TypePlan) -> Written:
        batch, con, zone = self.batch, self.con, self.batch.options.timezone
        # Count what was written, not what was meant to be (the conservation check depends on it): the
        # row counts of the file's own footer.
        rows_landed = int(
            con.execute(
                f"SELECT coalesce(sum(row_group_num_rows), 0) FROM "
                f"(SELECT DISTINCT row_group_id, row_group_num_rows FROM parquet_metadata({sql_string(staged)}))"
            ).fetchone()[0]  # type: ignore[index]
        )
        top = None
        if rows_landed == 0:  # nothing left after filter and dedup: no file, as on Spark
            Path(staged).unlink()
        else:
            top = max_cursor(
                con,
                f"read_parquet({sql_string(staged)})",
                batch.cursor,
                landed_type(plan.types[batch.cursor], zone) if batch.cursor else "",
            )
        published = publish_staged(batch.staging, batch.target, batch.run_id)
        return Written(rows_kept, rows_landed, top, tuple(published))

    def sample_stats(
        self, files: list[tuple[FileFacts, list[str], list[str]]]
    ) -> dict[str, dict[str, ColumnStats]] | None:
        """Every rule's statistics over each file's first rows (`_sample`), for `write_checked`."""
        if not self.one_pass:
            return None
        out = {}
        for f, raw_names, names in files:
            cf = self._file(f, raw_names, names)
            # A buffer of a few MiB, not the whole file: a longer record is left out of the sample (the
            # write's checks cover every record anyway).
            out[f.relpath] = self._sample(cf, self._reader(f, cf.width, line_limit=_SAMPLE_LINE_BYTES))[0]
        return out

    def write_checked(
        self,
        files: list[FileFacts],
        columns: list[str],
        plan: TypePlan,
        checks: dict[str, dict[str, ValueCheck]],
    ) -> OnePass | None:
        """`write` in one read of the files, every value checked on its way (`check_expr`): a value that
        fails stops the query (`error()`), a record the reader rejects or a repeated header line leaves the
        written file unpublished; then None, and the exact flow runs.

        The checks sit below the dedup, so every row passes them: a lower bound is not a filter under them
        (DuckDB pushes a filter below a projection that doesn't make its column) but the first term of the
        dedup order, the rows under it left out after the window.
        """
        batch, con, o = self.batch, self.con, self.batch.options
        bounded = bool(batch.lower_bound and batch.cursor)
        if bounded and not batch.primary_key:
            return None  # no window to hold the filter above the checks
        rules = {r.name: r for r in batch.rules}
        zone, n = o.timezone, next(_batch_ids)
        selects: list[str] = []
        rejects: list[str] = []
        for f in files:
            cf, check = self.files[f.relpath], checks[f.relpath]
            rej = f"one_{self.n}_{n}_{len(rejects)}"
            rejects.append(rej)
            values, items = [], []
            for k, c in enumerate(cf.names):
                if c not in columns:
                    continue
                q, target = quote_ident(c), plan.types[c]
                value = q
                if target != STRING:  # cast once, below the checks that read it
                    value = quote_ident(f"__tidemark_v{k}")
                    values.append(f"{cast_expr(q, target, rules, zone)} AS {value}")
                shared = value if target != STRING and plain_cast(target, rules) else ""
                ok = check_expr(q, check[c], shared, target, zone)
                items.append(
                    f"{value if ok == 'TRUE' else f'CASE WHEN {ok} THEN {value} ELSE {_fail(c)} END'} AS {q}"
                )
            # the columns not written (no value yet) must still have none; the header line no repeat
            idle = [check_expr(quote_ident(c), check[c]) for c in cf.names if c not in columns]
            idle = [e for e in idle if e != "TRUE"]
            hdr = o.header and not self._header_fails(cf, check)
            if hdr:
                idle.append("NOT __hdr")
            where = f" WHERE CASE WHEN {' AND '.join(idle)} THEN TRUE ELSE {_fail('')} END" if idle else ""
            rows = self._rows(cf, reader=self._reader(f, cf.width, rej), hdr=hdr)
            if values:
                rows = f"SELECT *, {', '.join(values)} FROM ({rows})"
            selects.append(f"SELECT {', '.join(items)}, {SOURCE_FILE} FROM ({rows}){where}")
        quoted = ", ".join(quote_ident(c) for c in columns)
        select = f"SELECT {quoted}, {SOURCE_FILE} FROM (" + "\nUNION ALL BY NAME\n".join(selects) + ")"
        if bounded:
            assert batch.cursor
            select = f"SELECT *, ({self._kept(quote_ident(batch.cursor), plan)}) AS {_KEEP} FROM ({select})"
        dedup = select
        if batch.primary_key:
            order = batch_dedup_order(batch.primary_key, batch.cursor, columns)
            if len(files) == 1:  # one file: the file term orders nothing
                order = [t for t in order if t.column != SOURCE_FILE]
            if bounded:
                order = [OrderTerm(_KEEP), *order]
            window = render_window(batch.primary_key, order, quote_ident)
            dedup = f"SELECT * FROM ({select}) QUALIFY row_number() OVER ({window}) = 1"
            if bounded:
                dedup = f"{dedup} AND {_KEEP}"
        # the metadata constants after the dedup: its window does not hold them
        meta = metadata_select(batch.run_id, batch.ingested_at, source_file=True)
        dedup = f"SELECT {quoted}, {meta} FROM ({dedup})"
        con.execute("SET enable_profiling = 'no_output'")
        try:
            staged = self._stage(f"({dedup})")
            profile = con.get_profiling_information(format="json")
        except duckdb.Error as exc:
            if _CHECK_FAILED not in str(exc):
                raise
            self._drop(rejects)
            shutil.rmtree(batch.staging, ignore_errors=True)
            return None
        finally:
            con.execute("PRAGMA disable_profiling")
        refused = any(count_rows(con, f"{rej}_table") for rej in rejects)
        self._drop(rejects)
        if refused:
            shutil.rmtree(batch.staging, ignore_errors=True)
            return None
        read = _scanned_rows(profile, {f.path: f.relpath for f in files})
        if read is None:  # the profile's shape not the one known: count them
            read = {f.relpath: count_rows(con, f"({self._rows(self.files[f.relpath])})") for f in files}
        rows_kept = sum(read.values())
        if bounded:
            assert batch.lower_bound and batch.cursor
            kept = " UNION ALL ".join(
                f"SELECT {cast_expr(quote_ident(batch.cursor), plan.types[batch.cursor], rules, zone)} AS c "
                f"FROM ({self._rows(self.files[f.relpath])})"
                for f in files
            )
            rows_kept = count_rows(con, f"({kept}) WHERE {self._kept('c', plan)}")
        return OnePass(read, self._publish(staged, rows_kept, plan))

    def _kept(self, cursor: str, plan: TypePlan) -> str:
        """TRUE for a row the lower bound keeps: its typed cursor (SQL `cursor`) null or at the bound."""
        batch = self.batch
        assert batch.lower_bound and batch.cursor
        ctype = SQL_TYPES[landed_type(plan.types[batch.cursor], batch.options.timezone)]
        bound = f"CAST({sql_string(batch.lower_bound.value)} AS {ctype})"
        return f"{cursor} IS NULL OR {cursor} >= {bound}"

    def _header_fails(self, cf: _CsvFile, checks: dict[str, ValueCheck]) -> bool:
        """Does a written column's check refuse the file's header line as a row (then a repeated header
        line stops the one-pass write without a test of its own)? The first field counts only if it
        refuses it with and without a byte-order mark."""
        nulls = set(self.batch.options.null_values)
        tests = []
        for k, raw in enumerate(cf.raw):
            forms = [raw, "\ufeff" + raw] if k == 0 else [raw]
            if raw in nulls or cf.names[k] not in checks:
                continue
            tests.append(
                " AND ".join(
                    f"NOT coalesce({check_expr(sql_string(v), checks[cf.names[k]])}, FALSE)" for v in forms
                )
            )
        if not tests:
            return False
        row = self.con.execute(f"SELECT {' OR '.join(f'({t})' for t in tests)}").fetchone()
        return bool(row and row[0])

    def _drop(self, rejects: list[str]) -> None:
        for rej in rejects:
            self.con.execute(f"DROP TABLE IF EXISTS {rej}_table")
            self.con.execute(f"DROP TABLE IF EXISTS {rej}_scan")


_KEEP = "__tidemark_keep"
_SAMPLE_LINE_BYTES = 4 * 2**20
_CHECK_FAILED = "tidemark: a value the sample did not foresee"


def _fail(column: str) -> str:
    """An expression that stops the query: a value (or a row) failed its one-pass check."""
    return f"error({sql_string(f'{_CHECK_FAILED} ({column})' if column else _CHECK_FAILED)})"


def _scanned_rows(profile: str, paths: dict[str, str]) -> dict[str, int] | None:
    """Rows each file's reader produced, from the query profile (per `read_csv` scan: its file and
    rows); None unless every file is there once."""
    try:
        tree = json.loads(profile)
    except ValueError:
        return None
    found: dict[str, int] = {}
    stack = list(tree.get("operator", []) if isinstance(tree, dict) else [])
    while stack:
        node = stack.pop()
        info = node.get("extra_info") or {}
        if info.get("Function") == "READ_CSV":
            path = paths.get(str(info.get("Filename(s)")))
            if path is None or path in found or not isinstance(node.get("intermediate_rows"), int):
                return None
            found[path] = node["intermediate_rows"]
        stack += node.get("children") or []
    return found if set(found) == set(paths.values()) else None


def _records_of_accepted(ordinals: list[int], rejected: list[int]) -> list[int]:
    """Record indexes of accepted rows given their 0-based order among accepted rows."""
    skip, out, record, k = set(rejected), [], -1, -1
    for target in sorted(ordinals):
        while k < target:
            record += 1
            if record not in skip:
                k += 1
        out.append(record)
    return out
