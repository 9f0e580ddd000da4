"""The narrow interface between the engine-neutral core and an engine, and the CSV landing flow.

`land_csv_files` is the one flow both engines run: headers → read with structural rejects → per-file
type statistics → one type plan → type rejects → per-file verdicts (conservation, max rejected share)
→ filter, dedup, write. Engines only supply the data-parallel steps (`CsvOps`); every decision is made
here, in plain Python, so both engines land the same rows and reject the same ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from ingestion.config import CsvOptions
from ingestion.errors import SchemaError, SourceError
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import lake_scratch, scratch_dir
from ingestion.lake.model import Watermark
from ingestion.plan.catalog import CatalogFile, CatalogSpec
from ingestion.plan.csv import FileFacts, LandedBatch
from ingestion.plan.jdbc import JdbcPlan, JdbcTable
from ingestion.plan.normalize import (
    ColumnStats,
    TypePlan,
    TypeRule,
    ValueCheck,
    clean_header,
    one_pass_plan,
    plan_types,
    type_rules,
    value_checks,
)
from ingestion.plan.rejects import (
    MAX_LINE_BYTES,
    FileCounts,
    KeptRejects,
    Quarantine,
    Reject,
    check_file,
    first_misfit_reason,
    reason_summary,
    tally,
)
from ingestion.sources.csv import as_text_file, blank_long_lines, drop_first_lines, locate, read_header
from ingestion.sources.jdbc import PgConnection

log = logging.getLogger("tidemark")


@dataclass(frozen=True)
class CsvBatch:
    """Everything an engine needs to land one table's new CSV files (local paths or `s3://` URLs)."""

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
    declared: dict[str, str] = field(default_factory=dict)  # types the config declares
    committed: dict[str, str] = field(default_factory=dict)  # types earlier runs landed
    max_rejected_fraction: float = 1.0
    double_as_decimal: bool = True
    decimal_keys: bool = False
    # Header-less files (a Glue catalog's CSV tables): the columns' names, in order, instead of column0….
    column_names: tuple[str, ...] = ()
    # Text values every row of a file takes as extra columns (a catalog partition's key values), by relpath.
    file_columns: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # Lines at the start of each file before its header line (a catalog table's skip.header.line.count
    # above 1): read from a copy without them; rejects keep the file's own line numbers.
    skip_lines: int = 0

    @property
    def staging(self) -> str:
        """A scratch folder for this batch outside `landing/`, so dbt never sees half-written files."""
        return os.path.join(scratch_dir(self.lake_root, self.run_id), self.source, self.table)

    @property
    def lake_staging(self) -> str:
        """The batch's scratch folder on the lake's own filesystem (`<lake>/_tmp/<run_id>/…`, an `s3://`
        prefix for an S3 lake): where executors on other machines can write (the Spark engine)."""
        return lakefs.join(lake_scratch(self.lake_root, self.run_id), self.source, self.table)

    @property
    def lake_text_copies(self) -> str:
        """Decompressed copies of compressed drops on the lake's own filesystem (the Spark engine)."""
        return lakefs.join(lake_scratch(self.lake_root, self.run_id), "_text", self.source, self.table)

    @property
    def text_copies(self) -> str:
        """Where compressed drops are decompressed for reading (beside, not inside, `staging`)."""
        return os.path.join(scratch_dir(self.lake_root, self.run_id), "_text", self.source, self.table)

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"

    @property
    def rules(self) -> tuple[TypeRule, ...]:
        return type_rules(self.options.date_format, self.options.timestamp_format)

    @property
    def plan_options(self) -> dict[str, Any]:
        """What `plan_types` (and `one_pass_plan`) take from the batch besides the statistics."""
        return {
            "committed": self.committed,
            "declared": self.declared,
            "keys": self.primary_key,
            "double_as_decimal": self.double_as_decimal,
            "decimal_keys": self.decimal_keys,
            "cursor": self.cursor,
        }


@dataclass(frozen=True)
class FileRead:
    """What an engine's CSV reader made of one file: rows it accepted and records it refused (held by the
    driver, or kept in `_rejected/` by the engine itself)."""

    accepted: int
    rejects: tuple[Reject, ...] | KeptRejects


@dataclass(frozen=True)
class Written:
    """What an engine wrote for the landable rows of a batch."""

    rows_kept: int  # after the lower-bound filter
    rows_landed: int  # after dedup (counted from what was written)
    max_cursor: Watermark | None
    files: tuple[str, ...]


@dataclass(frozen=True)
class OnePass:
    """What an engine's landing in one pass read and wrote: rows per file (all accepted), the write."""

    read: dict[str, int]
    written: Written


class CsvOps(Protocol):
    """The data-parallel steps an engine supplies for one batch (it keeps per-file data between calls)."""

    def sample_stats(
        self, files: list[tuple[FileFacts, list[str], list[str]]]
    ) -> dict[str, dict[str, ColumnStats]] | None:
        """Per relpath, the statistics of every type rule over the file's first rows, for a landing in one
        pass (`write_checked`); None: the engine lands in passes only (`read_files` and on)."""
        ...

    def write_checked(
        self,
        files: list[FileFacts],
        columns: list[str],
        plan: TypePlan,
        checks: dict[str, dict[str, ValueCheck]],
    ) -> OnePass | None:
        """`write` in one read of the files, checking every value against its column's `checks` (per
        relpath) and every record against the parser: None, with nothing written, when one fails (a
        rejected record, a repeated header line, a value the sample did not foresee)."""
        ...

    def read_files(self, files: list[tuple[FileFacts, list[str], list[str]]]) -> dict[str, FileRead]:
        """Read files (each with its raw header and text column names), null tokens mapped; per relpath,
        counts and structural rejects. An engine may read files of the same layout together."""
        ...

    def stats(self, f: FileFacts, rules: tuple[TypeRule, ...]) -> dict[str, ColumnStats]:
        """Per column of a read file: non-null values and how many satisfy each type rule."""
        ...

    def type_rejects(
        self, f: FileFacts, plan: TypePlan, rules: tuple[TypeRule, ...]
    ) -> list[Reject] | KeptRejects:
        """Rows of a read file whose values don't fit the planned types (removed from what lands): held
        by the driver, or kept in `_rejected/` by the engine itself (only their counts returned)."""
        ...

    def keep_rejects(self) -> None:
        """Write the rejected rows the engine kept itself (`KeptRejects`) to the run's `_rejected/` folder:
        called once per batch, after every read and check, whether or not any file lands."""
        ...

    def write(self, files: list[FileFacts], columns: list[str], plan: TypePlan) -> Written:
        """Cast, filter by the lower bound, dedup by key, write Parquet under staging, publish to target."""
        ...

    def close(self) -> None: ...


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

    @property
    def lake_staging(self) -> str:
        """The batch's scratch folder on the lake's own filesystem (see `CsvBatch.lake_staging`)."""
        return lakefs.join(lake_scratch(self.lake_root, self.run_id), self.source, self.table)


@dataclass(frozen=True)
class CatalogBatch:
    """The Parquet or JSON-lines files of a Glue catalog table that one run lands (typed data).

    Each file's columns widen into one type per column, starting from the `committed` types; rows with a
    cursor below `lower_bound` are left out; the rest are deduplicated by key like any other batch.
    """

    spec: CatalogSpec
    files: tuple[CatalogFile, ...]
    committed: dict[str, str]
    lower_bound: Watermark | None
    run_id: str
    ingested_at: datetime  # UTC, tz-aware
    target: str
    lake_root: str
    # A CSV table: its files as a CSV batch (the SerDe's options, the catalog's column names, partition
    # values as per-file columns), landed through the CSV flow with its inference and rejects.
    csv: CsvBatch | None = None

    @property
    def name(self) -> str:
        return f"{self.spec.source}.{self.spec.name}"

    @property
    def staging(self) -> str:
        """The batch's scratch folder outside `landing/`."""
        return os.path.join(scratch_dir(self.lake_root, self.run_id), self.spec.source, self.spec.name)

    @property
    def lake_staging(self) -> str:
        """The batch's scratch folder on the lake's own filesystem (see `CsvBatch.lake_staging`)."""
        return lakefs.join(lake_scratch(self.lake_root, self.run_id), self.spec.source, self.spec.name)


@dataclass(frozen=True)
class TombstoneBatch:
    """Delete detection for one PostgreSQL table in a run: the source's key set against the landed keys."""

    table: JdbcTable
    connection: PgConnection
    plan: JdbcPlan
    run_id: str
    ingested_at: datetime  # UTC, tz-aware
    target: str
    lake_root: str
    has_landed: bool  # committed data or this run's files: without either there is nothing to delete
    # The table's committed runs in commit order: which live-keys snapshot to trust, which files to read.
    committed_runs: tuple[str, ...] = ()

    @property
    def scratch(self) -> str:
        return scratch_dir(self.lake_root, self.run_id)


class Engine(Protocol):
    """Reads a batch, cleans column names, infers types, adds metadata, dedups by key, writes Parquet.

    Files are written as `<target>/_ingest_date=<date>/part-<run_id>-<n>.parquet`; nothing else in
    `target` is touched. Rules every engine follows live in `ingestion.plan.normalize` and this module.
    """

    name: str

    def land_csv(self, batch: CsvBatch) -> LandedBatch: ...

    def land_jdbc(self, batch: JdbcBatch) -> LandedBatch: ...

    def land_catalog(self, batch: CatalogBatch) -> LandedBatch:
        """Land a Glue catalog table's files: Parquet or JSON lines as typed data, CSV through the CSV flow."""
        ...

    def land_tombstones(self, batch: TombstoneBatch) -> int:
        """Land `_op='d'` rows for keys live in the lake but gone from the source; returns how many."""
        ...

    def close(self) -> None: ...


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


def landed_type(logical: str, zone: str | None) -> str:
    """The type a column lands as: naive timestamps read in a configured zone land as UTC instants."""
    return "timestamptz" if logical == "timestamp" and zone else logical


def check_bound_type(batch: CsvBatch, types: dict[str, str]) -> None:
    """The bound must be of the type the batch's cursor column lands as."""
    ctype = landed_type(types.get(batch.cursor, ""), batch.options.timezone) if batch.cursor else None
    if batch.lower_bound and batch.cursor and ctype != batch.lower_bound.type:
        raise SchemaError(
            f"{batch.source}.{batch.table}: cursor {batch.cursor} is {ctype} in the new "
            f"files but {batch.lower_bound.type} in the committed watermark",
            hint="fix the files, or re-land the table with --load-type full",
        )


def land_csv_files(batch: CsvBatch, ops: CsvOps, text_dir: str | None = None) -> LandedBatch:
    """The CSV landing flow shared by both engines (see the module docstring).

    Compressed drops are decompressed into `text_dir` (default: the run's local scratch folder; the
    Spark engine passes one on the lake's filesystem, where its executors can read them).
    """
    q = Quarantine()
    readable: list[tuple[FileFacts, list[str]]] = []
    # Every header first, then one read call for all files: an engine can read a layout's files at once.
    pending: list[tuple[FileFacts, list[str], list[str], list[Reject]]] = []
    for f in batch.files:
        counts = q.files[f.relpath] = FileCounts(f.relpath)
        try:
            f = as_text_file(f, text_dir or batch.text_copies, batch.options)  # the text copy from here on
            f = drop_first_lines(f, text_dir or batch.text_copies, batch.skip_lines)
            raw_names = read_header(f.path, batch.options)
            if raw_names is None:
                continue  # an empty file: nothing to read, nothing lost
            if batch.column_names:
                # A catalog table's columns are the catalog's (Hive's rule), header line or not.
                if len(raw_names) != len(batch.column_names):
                    raise SchemaError(
                        f"{f.relpath} has {len(raw_names)} fields per record but the table declares "
                        f"{len(batch.column_names)} columns ({', '.join(batch.column_names)})",
                        hint="fix the file or the table's columns in the catalog",
                    )
                names = clean_header(list(batch.column_names), file=f.relpath)
                if not batch.options.header:
                    raw_names = list(batch.column_names)
            else:
                names = clean_header(raw_names, file=f.relpath)
            # A line longer than MAX_LINE_BYTES is rejected before any engine reads the file (Spark's
            # parser can't skip one without exhausting an executor's memory): blanked in a copy, it
            # becomes a `line_too_long` reject and the file's other rows land, on both engines alike.
            f, too_long = blank_long_lines(f, text_dir or batch.text_copies, batch.options, MAX_LINE_BYTES)
        except (SchemaError, SourceError) as exc:
            counts.error = exc.message
            continue
        pending.append((f, raw_names, names, too_long))
    _refuse_keyless(batch, pending, q)
    landed = _land_in_one_pass(batch, ops, pending, q)
    if landed is not None:
        return landed
    reads = ops.read_files([(f, raw_names, names) for f, raw_names, names, _ in pending])
    for f, _, names, too_long in pending:
        counts, read = q.files[f.relpath], reads[f.relpath]
        counts.accepted = read.accepted
        counts.read = read.accepted + len(read.rejects) + len(too_long)
        counts.rejected = len(read.rejects) + len(too_long)
        _quarantine(q, f, batch.options, read.rejects)
        q.rejects += too_long
        readable.append((f, names + [k for k, _ in batch.file_columns.get(f.relpath, ())]))

    rules = batch.rules
    stats = [(f.relpath, ops.stats(f, rules)) for f, _ in readable]
    plan = plan_types(stats, **batch.plan_options)
    by_file = dict(stats)
    landable: list[FileFacts] = []
    headers: list[list[str]] = []
    for f, names in readable:
        counts = q.files[f.relpath]
        check = any(k[0] == f.relpath for k in plan.misfits) or _may_hold_null_keys(
            batch, plan, by_file[f.relpath], q.files[f.relpath].accepted
        )
        bad = ops.type_rejects(f, plan, rules) if check else []
        _quarantine(q, f, batch.options, bad)
        counts.rejected += len(bad)
        counts.landable = counts.accepted - len(bad)
        check_file(counts, batch.max_rejected_fraction)
        if counts.error:
            misfit = first_misfit_reason(tally(bad), plan.types)
            if misfit:
                counts.error += f"; {misfit}"
            counts.error += reason_summary(q.tally(f.relpath))
            continue
        landable.append(f)
        headers.append(names)
    # A refused file's rejected rows are kept in _rejected/ too (with their own reasons): the file is
    # kept whole in unprocessed/, its ledger entry says why.

    columns = union_names(headers)
    written = Written(0, 0, None, ())
    if landable:
        require_columns(batch, columns)
        check_bound_type(batch, plan.types)
        columns = _written_columns(batch, columns, plan)
        written = ops.write(landable, columns, plan)
    ops.keep_rejects()
    if q.kept:
        log.info(
            "rejected rows written by the engine",
            extra={
                "fields": {
                    "table": batch.name,
                    "rows": sum(sum(c.values()) for c in q.kept.values()),
                    "sample": [
                        {"file": r.file, "record": r.record, "reason_code": r.code, "reason": r.reason}
                        for r in q.sample[:5]
                    ],
                }
            },
        )
    if batch.skip_lines:  # line numbers in the copy → the file's own
        q.rejects = [replace(r, line=r.line + batch.skip_lines if r.line else r.line) for r in q.rejects]
    return _landed(batch, q, landable, written, plan, columns)


def _refuse_keyless(
    batch: CsvBatch, pending: list[tuple[FileFacts, list[str], list[str], list[Reject]]], q: Quarantine
) -> None:
    """Refuse a file without a key column the batch's other files have: every row of it would land with
    no key (a key column no file has is the table's error: `require_columns`)."""

    def columns(f: FileFacts, names: list[str]) -> list[str]:
        return names + [k for k, _ in batch.file_columns.get(f.relpath, ())]

    have = set(union_names([columns(f, names) for f, _, names, _ in pending]))
    for entry in list(pending):
        f, _, names, _ = entry
        missing = [k for k in batch.primary_key if k in have and k not in columns(f, names)]
        if missing:
            q.files[f.relpath].error = (
                f"{f.relpath} has no column {', '.join(missing)} (the table's primary key): its rows would "
                "land without a key"
            )
            pending.remove(entry)


def _written_columns(batch: CsvBatch, columns: list[str], plan: TypePlan) -> list[str]:
    """A column with no value yet has no type yet: it is not written (readers see it as null until values
    arrive and type it), except the key and cursor, which the write itself needs."""
    needed = {*batch.primary_key, *([batch.cursor] if batch.cursor else [])}
    typed = [c for c in columns if c not in plan.untyped or c in needed]
    return typed or columns  # no column has a value: rows of nulls keep their (text) columns


def _landed(
    batch: CsvBatch,
    q: Quarantine,
    landable: list[FileFacts],
    written: Written,
    plan: TypePlan,
    columns: list[str],
) -> LandedBatch:
    landable_rows = sum(q.files[f.relpath].landable for f in landable)
    return LandedBatch(
        rows_read=sum(q.files[f.relpath].read for f in landable),
        rows_landed=written.rows_landed,
        rows_rejected=q.rows_rejected,
        rows_filtered=landable_rows - written.rows_kept,
        max_cursor=written.max_cursor,
        columns={c: plan.types[c] for c in columns if c not in plan.untyped},
        files_written=written.files,
        quarantine=q,
    )


def _land_in_one_pass(
    batch: CsvBatch,
    ops: CsvOps,
    pending: list[tuple[FileFacts, list[str], list[str], list[Reject]]],
    q: Quarantine,
) -> LandedBatch | None:
    """Land the files in one read when every value bears out what their first rows show (see
    `plan.normalize.one_pass_plan`): the same rows, types and counts as the exact flow, which runs
    instead (None) when the engine can't, a record is rejected or a value breaks the sample's findings."""
    if not pending or any(too_long for *_, too_long in pending):
        return None
    samples = ops.sample_stats([(f, raw_names, names) for f, raw_names, names, _ in pending])
    if samples is None:
        return None
    rules = batch.rules
    plan = one_pass_plan([(f.relpath, samples[f.relpath]) for f, *_ in pending], rules, **batch.plan_options)
    if plan is None:
        return None
    files = [f for f, *_ in pending]
    columns = union_names(
        [names + [k for k, _ in batch.file_columns.get(f.relpath, ())] for f, _, names, _ in pending]
    )
    try:  # the exact flow raises these errors itself, with every file's counts
        require_columns(batch, columns)
        check_bound_type(batch, plan.types)
    except SchemaError:
        return None
    columns = _written_columns(batch, columns, plan)
    checks = {f.relpath: value_checks(samples[f.relpath], rules, batch.primary_key) for f in files}
    done = ops.write_checked(files, columns, plan, checks)
    if done is None:
        log.info("one-pass landing not possible: landing in passes", extra={"fields": {"table": batch.name}})
        return None
    for f in files:
        counts = q.files[f.relpath]
        counts.read = counts.accepted = counts.landable = done.read[f.relpath]
        check_file(counts, batch.max_rejected_fraction)
    ops.keep_rejects()
    return _landed(batch, q, files, done.written, plan, columns)


def _quarantine(
    q: Quarantine, f: FileFacts, options: CsvOptions, rejects: Sequence[Reject] | KeptRejects
) -> None:
    """Rejected rows of a file into the quarantine: the driver's own located (line numbers filled in),
    an engine's kept ones counted."""
    if isinstance(rejects, KeptRejects):
        q.keep(f.relpath, rejects)
    else:
        q.rejects += locate(f.path, options, rejects)


def _may_hold_null_keys(batch: CsvBatch, plan: TypePlan, stats: dict[str, ColumnStats], rows: int) -> bool:
    """Can a file hold a row with a null or empty key? Null: fewer values than rows; empty: a text key."""
    return any(
        k in stats and (stats[k].non_null < rows or plan.types.get(k) == "string") for k in batch.primary_key
    )


def union_names(headers: list[list[str]]) -> list[str]:
    """Union of several files' cleaned headers, by name, in first-seen order."""
    out: dict[str, None] = {}
    for header in headers:
        out.update(dict.fromkeys(header))
    return list(out)
