"""Rejected rows and files: reasons both engines agree on, line numbers, the `_rejected` Parquet, verdicts.

Engines find bad rows their own way (DuckDB's CSV reject tables, Spark's corrupt-record column, a
pattern-and-cast check for types). This module turns what they found into the same reason codes and
physical line numbers, decides which files are too broken to land, checks that no row went missing,
and writes the rejected rows to `<lake>/_rejected/<source>/<table>/run_id=<run_id>/`.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ingestion.config import CsvOptions
from ingestion.errors import EngineError

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


def csv_dialect(options: CsvOptions) -> dict[str, object]:
    same = options.escape == options.quote
    return {
        "delimiter": options.delimiter,
        "quotechar": options.quote,
        "doublequote": same,
        "escapechar": None if same else options.escape,
        "strict": False,
    }


def split_record(text: str, options: CsvOptions) -> list[str] | None:
    """Fields of one raw record as Python's csv module splits them; None when it can't."""
    try:
        return next(csv.reader(io.StringIO(text), **csv_dialect(options)), [])  # type: ignore[arg-type]
    except csv.Error:
        return None
