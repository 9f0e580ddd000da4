"""Rejected rows and files: reasons both engines agree on, line numbers, the `_rejected` Parquet, verdicts.

Engines find bad rows their own way (DuckDB's CSV reject tables, Spark's corrupt-record column, a
pattern-and-cast check for types). This module turns what they found into the same reason codes and
physical line numbers, decides which files are too broken to land, checks that no row went missing,
and writes the rejected rows to `<lake>/_rejected/<source>/<table>/run_id=<run_id>/`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ingestion.config import CsvOptions
from ingestion.errors import EngineError
from ingestion.sources.csv import record_lines, split_record

# Reason codes: the same on both engines (the parity tests compare them).
MISSING_COLUMNS = "missing_columns"
EXTRA_COLUMNS = "extra_columns"
BAD_QUOTING = "bad_quoting"
INVALID_ENCODING = "invalid_encoding"
LINE_TOO_LONG = "line_too_long"
TYPE_MISMATCH = "type_mismatch"
REASONS = (MISSING_COLUMNS, EXTRA_COLUMNS, BAD_QUOTING, INVALID_ENCODING, LINE_TOO_LONG, TYPE_MISMATCH)

# DuckDB's reject table `error_type` → reason code.
DUCKDB_ERRORS = {
    "MISSING COLUMNS": MISSING_COLUMNS,
    "TOO MANY COLUMNS": EXTRA_COLUMNS,
    "UNQUOTED VALUE": BAD_QUOTING,
    "INVALID ENCODING": INVALID_ENCODING,
    "INVALID UNICODE": INVALID_ENCODING,
    "LINE SIZE OVER MAXIMUM": LINE_TOO_LONG,
    "CAST": TYPE_MISMATCH,
}
REPLACEMENT_CHAR = "\ufffd"
_RAW_LIMIT = 10_000  # characters of a rejected record kept in `_raw`


@dataclass(frozen=True)
class Reject:
    """One rejected record of one file."""

    file: str  # relpath, as in `_source_file`
    record: int  # 0-based index among the file's data records
    code: str
    reason: str
    column: str | None = None
    raw: str | None = None
    line: int | None = None  # physical, 1-based; filled in by `locate`
    offset: int | None = None  # byte offset of the record's start, when the engine knows it


def classify_structural(raw: str, expected: int, options: CsvOptions) -> tuple[str, str]:
    """Code and reason for a record the CSV parser refused, from its raw text (engine-neutral)."""
    if REPLACEMENT_CHAR in raw:
        return INVALID_ENCODING, f"bytes that are not valid {options.encoding}"
    fields = split_record(raw, options)
    if fields is None:
        return BAD_QUOTING, "unterminated or stray quote"
    if len(fields) < expected:
        return MISSING_COLUMNS, f"expected {expected} fields, found {len(fields)}"
    if len(fields) > expected:
        return EXTRA_COLUMNS, f"expected {expected} fields, found {len(fields)}"
    return BAD_QUOTING, "unterminated or stray quote"


def type_reason(column: str, value: str | None, target: str) -> str:
    """The reason of a type reject: which column, which value, which type."""
    shown = value if value is None or len(value) <= 60 else value[:57] + "..."
    return f"column {column}: {shown!r} is not a valid {target}"


def locate(path: str, options: CsvOptions, rejects: Sequence[Reject]) -> list[Reject]:
    """Fill in physical line numbers: from byte offsets when the engine gave them, else by a file scan."""
    from dataclasses import replace

    from ingestion.sources.csv import lines_at_offsets

    by_offset = lines_at_offsets(path, [r.offset for r in rejects if r.offset is not None])
    scan = record_lines(path, options, [r.record for r in rejects if r.offset is None])
    return [
        replace(r, line=by_offset[r.offset] if r.offset is not None else scan.get(r.record)) for r in rejects
    ]


@dataclass
class FileCounts:
    """What happened to the rows of one file: read = accepted + rejected, accepted = typed ok + type rejects."""

    file: str
    read: int = 0  # records the parser saw (accepted + structural rejects)
    accepted: int = 0  # parsed into the right number of fields
    rejected: int = 0  # structural + type rejects (distinct records)
    landable: int = 0  # accepted and typed: what goes on to filtering and dedup
    error: str | None = None  # set when the whole file is refused (goes to unprocessed/)

    @property
    def fraction(self) -> float:
        return self.rejected / self.read if self.read else 0.0


def check_file(counts: FileCounts, max_fraction: float) -> FileCounts:
    """Refuse a file that is mostly garbage; verify its rows add up (read = landable + rejected)."""
    if counts.read != counts.landable + counts.rejected:
        raise EngineError(
            f"{counts.file}: rows don't add up: read {counts.read}, typed {counts.landable}, "
            f"rejected {counts.rejected}",
            hint="this is a tidemark bug: please report it with the file",
        )
    if counts.error is None and counts.read and counts.fraction > max_fraction:
        counts.error = (
            f"{counts.rejected} of {counts.read} rows rejected ({counts.fraction:.0%}), more than "
            f"max_rejected_fraction {max_fraction:.0%}"
        )
    return counts


@dataclass
class Quarantine:
    """The rejected rows of a batch and the files refused whole."""

    rejects: list[Reject] = field(default_factory=list)
    files: dict[str, FileCounts] = field(default_factory=dict)

    @property
    def refused(self) -> dict[str, str]:
        return {f: c.error for f, c in self.files.items() if c.error}

    @property
    def rows_rejected(self) -> int:
        """Rejected rows of the files that land (a refused file is kept whole in unprocessed/)."""
        return sum(c.rejected for c in self.files.values() if not c.error)


def first_misfit_reason(rejects: Sequence[Reject], types: dict[str, str]) -> str | None:
    """For a refused file: the column whose values most often didn't fit (type rejects), to name it."""
    counts = Counter(r.column for r in rejects if r.code == TYPE_MISMATCH and r.column)
    if not counts:
        return None
    col, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return f"column {col} is {types[col]} in this table, but {n} of this file's values are not"


def rejected_dir(lake_root: str, source: str, table: str, run_id: str) -> str:
    """`<lake>/_rejected/<source>/<table>/run_id=<run_id>`."""
    from ingestion.lake import fs as lakefs

    return lakefs.join(lake_root, "_rejected", source, table, f"run_id={run_id}")


def write_rejects(
    rejects: Iterable[Reject], lake_root: str, source: str, table: str, run_id: str, at: datetime
) -> str | None:
    """Write rejected rows as one Parquet file (written then renamed); returns its path, None if none."""
    import pyarrow as pa

    rows = sorted(rejects, key=lambda r: (r.file, r.line or 0, r.record))
    if not rows:
        return None
    table_ = pa.table(
        {
            "_source_file": pa.array([r.file for r in rows], pa.string()),
            "_line": pa.array([r.line for r in rows], pa.int64()),
            "_record": pa.array([r.record for r in rows], pa.int64()),
            "_reason_code": pa.array([r.code for r in rows], pa.string()),
            "_reason": pa.array([r.reason for r in rows], pa.string()),
            "_column": pa.array([r.column for r in rows], pa.string()),
            "_raw": pa.array([(r.raw or "")[:_RAW_LIMIT] for r in rows], pa.string()),
            "_run_id": pa.array([run_id] * len(rows), pa.string()),
            "_rejected_at": pa.array([at] * len(rows), pa.timestamp("us", tz="UTC")),
        }
    )
    from ingestion.lake import fs as lakefs

    path = lakefs.join(rejected_dir(lake_root, source, table, run_id), "part-0.parquet")
    lakefs.write_parquet(table_, path)
    return path


def remove_rejects(
    lake_root: str, source: str, table: str, *, keep: set[str] | None = None, only: set[str] | None = None
) -> int:
    """Remove rejected-row folders of runs that never committed (all but `keep`, or just `only`).

    Only safe while holding the table's lease, like removing landed orphans.
    """
    from ingestion.lake import fs as lakefs

    removed = 0
    for d in lakefs.children(lakefs.join(lake_root, "_rejected", source, table), "run_id=*"):
        run_id = d.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1].removeprefix("run_id=")
        if (only is not None and run_id in only) or (keep is not None and run_id not in keep):
            lakefs.remove_tree(d)
            removed += 1
    return removed
