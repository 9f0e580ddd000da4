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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ingestion.errors import EngineError

if TYPE_CHECKING:  # only the standard library at run time: the Spark engine's executors import this module
    from ingestion.config import CsvOptions

# Reason codes: the same on both engines (the parity tests compare them).
MISSING_COLUMNS = "missing_columns"
EXTRA_COLUMNS = "extra_columns"
BAD_QUOTING = "bad_quoting"
INVALID_ENCODING = "invalid_encoding"
LINE_TOO_LONG = "line_too_long"
TYPE_MISMATCH = "type_mismatch"
BAD_CURSOR = "bad_cursor"  # the cursor value is not a time or number of the cursor's type
NULL_KEY = "null_key"  # a primary key column is null or empty: never a merge group
REPEATED_HEADER = "repeated_header"  # the header line again, mid-file (concatenated exports)
MALFORMED_JSON = "malformed_json"  # a JSON-lines record that is not a JSON object
REASONS = (
    MISSING_COLUMNS,
    EXTRA_COLUMNS,
    BAD_QUOTING,
    INVALID_ENCODING,
    LINE_TOO_LONG,
    TYPE_MISMATCH,
    BAD_CURSOR,
    NULL_KEY,
    REPEATED_HEADER,
    MALFORMED_JSON,
)

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
# A record longer than this is rejected (line_too_long) rather than read, on both engines.
MAX_LINE_BYTES = 64 * 1024 * 1024
RAW_LIMIT = 10_000  # characters of a rejected record kept in `_raw`


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


@dataclass(frozen=True)
class Dialect:
    """What the reason functions read of a file's CSV options: a plain object the Spark engine's executors
    unpickle with the standard library alone (`CsvOptions` needs pydantic)."""

    delimiter: str
    quote: str
    escape: str
    encoding: str
    header: bool = True

    @classmethod
    def of(cls, options: CsvOptions) -> Dialect:
        return cls(options.delimiter, options.quote, options.escape, options.encoding, options.header)


def classify_structural(raw: str, expected: int, options: CsvOptions | Dialect) -> tuple[str, str]:
    """Code and reason for a record the CSV parser refused, from its raw text (engine-neutral)."""
    if REPLACEMENT_CHAR in raw:
        return INVALID_ENCODING, f"bytes that are not valid {options.encoding}"
    fields = split_record(raw, options)
    if fields is None:
        return BAD_QUOTING, "unterminated or stray quote"
    if options.escape == options.quote and raw.count(options.quote) % 2 == 1:
        # a quote never closed swallows the delimiters after it: it is the cause, not the field count
        return BAD_QUOTING, "unterminated or stray quote"
    if len(fields) < expected:
        return MISSING_COLUMNS, f"expected {expected} fields, found {len(fields)}"
    if len(fields) > expected:
        return EXTRA_COLUMNS, f"expected {expected} fields, found {len(fields)}"
    return BAD_QUOTING, "unterminated or stray quote"


def trailing_delimiter(raw: str, expected: int, options: CsvOptions | Dialect) -> bool:
    """Is a record one empty field too long only because it ends with the delimiter (`1,a,` under `id,name`)?

    Such a record is read without its empty last field on both engines (DuckDB does so natively).
    """
    fields = split_record(raw, options)
    return (
        fields is not None
        and len(fields) == expected + 1
        and fields[-1] == ""
        and raw.rstrip("\r\n").endswith(options.delimiter)
    )


def type_reason(column: str, value: str | None, target: str) -> str:
    """The reason of a type reject: which column, which value, which type."""
    shown = value if value is None or len(value) <= 60 else value[:57] + "..."
    return f"column {column}: {shown!r} is not a valid {target}"


def value_reject(
    column: str, value: str | None, target: str, *, keys: Sequence[str], cursor: str | None
) -> tuple[str, str]:
    """Code and reason for a row refused for one value: a null key, a bad cursor, or a type misfit."""
    if column in keys and (value is None or value == ""):
        return NULL_KEY, f"primary key column {column} is {'null' if value is None else 'empty'}"
    code = BAD_CURSOR if column == cursor else TYPE_MISMATCH
    return code, type_reason(column, value, target)


def check_order(names: Sequence[str], keys: Sequence[str], cursor: str | None) -> list[str]:
    """The order columns are checked in, so a row's reason names its key, then its cursor, first."""
    first = [c for c in (*keys, *([cursor] if cursor else [])) if c in names]
    return [*dict.fromkeys(first), *(c for c in names if c not in first)]


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


# Rejected rows counted by (reason code, column).
Tally = Counter[tuple[str, str | None]]


@dataclass(frozen=True)
class KeptRejects:
    """Rejected rows an engine writes to `_rejected/` itself (the Spark engine: its executors do).

    Only their counts by (code, column) and a capped sample (record indexes, no line numbers) reach the
    driver; the rows themselves, with their line numbers, are in the run's `_rejected/` folder.
    """

    counts: Mapping[tuple[str, str | None], int]
    sample: tuple[Reject, ...] = ()

    def __len__(self) -> int:
        return sum(self.counts.values())


def tally(rejects: Sequence[Reject] | KeptRejects) -> Tally:
    """Rejected rows by (code, column), whether the driver holds them or an engine kept them."""
    if isinstance(rejects, KeptRejects):
        return Counter(rejects.counts)
    return Counter((r.code, r.column) for r in rejects)


@dataclass
class Quarantine:
    """The rejected rows of a batch and the files refused whole.

    `rejects` are the rows the driver holds (written by the run, `lake.rejected.write_rejects`); `kept`
    counts, per file, the rows an engine wrote to `_rejected/` itself, with a capped `sample` of them.
    """

    rejects: list[Reject] = field(default_factory=list)
    files: dict[str, FileCounts] = field(default_factory=dict)
    kept: dict[str, Tally] = field(default_factory=dict)
    sample: list[Reject] = field(default_factory=list)

    @property
    def refused(self) -> dict[str, str]:
        return {f: c.error for f, c in self.files.items() if c.error}

    @property
    def rows_rejected(self) -> int:
        """Rejected rows of the files that land (a refused file is kept whole in unprocessed/)."""
        return sum(c.rejected for c in self.files.values() if not c.error)

    def keep(self, file: str, kept: KeptRejects) -> None:
        """Count rows an engine wrote to `_rejected/` itself for `file`."""
        if kept.counts:
            self.kept.setdefault(file, Counter()).update(kept.counts)
        self.sample += kept.sample

    def tally(self, file: str) -> Tally:
        """A file's rejected rows by (code, column): those the driver holds and those an engine kept."""
        return tally([r for r in self.rejects if r.file == file]) + self.kept.get(file, Counter())


def reason_summary(counts: Tally) -> str:
    """` (missing_columns: 8, bad_quoting: 4; rows kept in _rejected/)` for a refused file's message."""
    codes: Counter[str] = Counter()
    for (code, _), n in counts.items():
        codes[code] += n
    if not codes:
        return ""
    parts = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])))
    return f" ({parts}; rows kept in _rejected/)"


def refuse_files(q: Quarantine, max_fraction: float) -> set[str]:
    """Apply `check_file` to every file of a typed batch (Parquet, JSON lines): the files refused, each
    with its reason and reject summary in its counts (their rejects stay in the quarantine)."""
    refused = set()
    for path, counts in q.files.items():
        if counts.error is None and check_file(counts, max_fraction).error:
            counts.error = (counts.error or "") + reason_summary(q.tally(path))
        if counts.error:
            refused.add(path)
    return refused


def first_misfit_reason(counts: Tally, types: dict[str, str]) -> str | None:
    """For a refused file: the column whose values most often didn't fit (type rejects), to name it."""
    by_column: Counter[str] = Counter()
    for (code, column), n in counts.items():
        if code in (TYPE_MISMATCH, BAD_CURSOR) and column:
            by_column[column] += n
    if not by_column:
        return None
    col, n = max(by_column.items(), key=lambda kv: (kv[1], kv[0]))
    return f"column {col} is {types[col]} in this table, but {n} of this file's values are not"


def csv_dialect(options: CsvOptions | Dialect) -> dict[str, object]:
    same = options.escape == options.quote
    return {
        "delimiter": options.delimiter,
        "quotechar": options.quote,
        "doublequote": same,
        "escapechar": None if same else options.escape,
        "strict": False,
    }


def split_record(text: str, options: CsvOptions | Dialect) -> list[str] | None:
    """Fields of one raw record as Python's csv module splits them; None when it can't."""
    try:
        return next(csv.reader(io.StringIO(text), **csv_dialect(options)), [])  # type: ignore[arg-type]
    except csv.Error:
        return None


# The Spark engine's stand-in for a record its reader took to the end of the file (an unclosed quote).
UNCLOSED = "\x00unclosed quote"


def structural_reject(
    dialect: Dialect,
    raw_names: Sequence[str],
    width: int,
    corrupt: str | None,
    garbled: bool,
    header: bool,
    long: bool,
    *values: str | None,
) -> tuple[str, str, str] | None:
    """(code, reason, raw text) of a record the Spark engine's reader flagged (run on its executors);
    None when it is read as it is: DuckDB reads `1,a,` under `id,name` as `1,a`, and so does Spark.

    `corrupt` is the reader's raw text of a malformed record, `values` its first `width` fields; the flags
    say the record holds undecodable bytes, repeats the header, or is longer than `MAX_LINE_BYTES`.
    """
    d = dialect.delimiter
    fields = d.join("" if v is None else v for v in values[:width])
    if long:
        return LINE_TOO_LONG, f"record longer than {MAX_LINE_BYTES} bytes", (corrupt or fields)[:RAW_LIMIT]
    if (
        corrupt is not None
        and corrupt != UNCLOSED
        and not garbled
        and trailing_delimiter(corrupt, width, dialect)
    ):
        return None
    if header and corrupt is None:
        return REPEATED_HEADER, "the header line repeated as a data row", d.join(raw_names)
    if garbled:
        return INVALID_ENCODING, "bytes that are not valid in the file's encoding", corrupt or fields
    if corrupt is None or corrupt == UNCLOSED:
        return BAD_QUOTING, "unterminated or stray quote", fields
    code, reason = classify_structural(corrupt, width, dialect)
    return code, reason, corrupt


def type_reject(
    types: Mapping[str, str], keys: Sequence[str], cursor: str | None, column: str, value: str | None
) -> tuple[str, str]:
    """(code, reason) of a row refused for one value, by its column's planned type (`value_reject`)."""
    return value_reject(column, value, types[column], keys=keys, cursor=cursor)


def decode_line(encoding: str, data: bytes | None) -> str | None:
    """A physical line's bytes decoded with undecodable bytes escaped (`caf\\xe9`), as `locate` keeps it."""
    if data is None:
        return None
    return bytes(data).rstrip(b"\r\n").decode(encoding, errors="backslashreplace")


def start_lines(text: Iterable[str], options: CsvOptions | Dialect, wanted: set[int]) -> dict[int, int]:
    """Physical (1-based) line numbers where the data records with these 0-based indexes start, from a
    scan of the file's text (opened with `newline=""`) with Python's csv module; a blank line is no
    record for either engine. `options.header`: the first record is the header, not data."""
    out: dict[int, int] = {}
    todo = set(wanted)
    reader = csv.reader(text, **csv_dialect(options))  # type: ignore[arg-type]
    start, index = 1, 0
    if options.header:
        try:
            next(reader)
        except (StopIteration, csv.Error):
            return out
        start = reader.line_num + 1
    while todo:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:
            row = ["?"]
        if not row:
            start = reader.line_num + 1
            continue
        if index in todo:
            out[index] = start
            todo.discard(index)
        index += 1
        start = reader.line_num + 1
    return out


def content_start_lines(
    dialect: Dialect, content: bytes | None, wanted: list[int] | None
) -> list[tuple[int, int]]:
    """`start_lines` over a whole file's bytes (the Spark engine's executors, for UTF-16 files, whose
    lines a text read cannot split): (record index, line) pairs."""
    if content is None or not wanted:
        return []
    codec = "utf-8-sig" if dialect.encoding in ("utf-8", "utf-8-sig") else dialect.encoding
    text = io.TextIOWrapper(io.BytesIO(bytes(content)), encoding=codec, errors="replace", newline="")
    return sorted(start_lines(text, dialect, set(wanted)).items())
