"""The Glue seeds' watermark files as tidemark watermarks: parsing, matching to tables, deciding (pure).

The seed scripts kept their progress in CSV files on S3, in three layouts:

- `max_timestamps.csv`: one row per table, a table column and a timestamp column (`table_name,max_timestamp`);
- per-table CDC tracker files under a prefix, `<prefix>/<table>.csv` or `<prefix>/<table>/part-….csv`,
  each holding the table's last timestamp (a header line is optional; several lines: the latest counts);
- one `last_load_timestamp.csv`: one timestamp for every table (or the tables chosen).

`import-watermarks` (ingestion.run.seeds reads the files) turns them into typed, canonical watermarks
(`ingestion.plan.csv.canonical_watermark`: the text the engines write) and decides per table what to set.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal
from zoneinfo import ZoneInfo

from ingestion.errors import ConfigError
from ingestion.lake.model import TableState, Watermark
from ingestion.plan.csv import canonical_watermark, max_watermark

Layout = Literal["auto", "max-timestamps", "per-table", "single"]
LAYOUTS: tuple[str, ...] = ("auto", "max-timestamps", "per-table", "single")

# Header names the seeds (and hand-written variants) use, compared lowercased with spaces as '_'.
TABLE_COLUMNS = ("table_name", "table", "tablename", "table_nm", "tbl_name", "source_table", "name")
TIME_COLUMNS = (
    "max_timestamp",
    "timestamp",
    "max_ts",
    "last_timestamp",
    "last_load_timestamp",
    "watermark",
    "max_updated_at",
    "updated_at",
    "last_updated",
    "last_updated_at",
    "cdc_timestamp",
    "max_time",
    "max_date",
)
EXPECTED_HEADER = (
    "a header naming a table column (one of: "
    + ", ".join(TABLE_COLUMNS)
    + ") and a timestamp column (one of: "
    + ", ".join(TIME_COLUMNS)
    + "), e.g. `table_name,max_timestamp`"
)
# Values a seed wrote for a table that had no rows yet: no watermark to import.
EMPTY = ("", "null", "none", "nan", "nat")
_OFFSET = re.compile(r"([+-]\d{2}):?(\d{2})$")
_FRACTION = re.compile(r"\.(\d+)")


@dataclass(frozen=True)
class SeedValue:
    """One table's watermark as a seed file holds it, with where it came from."""

    table: str  # as the seed names it: `table`, or `source.table`
    text: str | None  # None: the seed has no timestamp for it (an empty value)
    file: str
    line: int


@dataclass(frozen=True)
class Target:
    """A table of the config that can take an imported watermark, with its cursor's type."""

    source: str
    table: str
    cursor: str | None
    cursor_type: str | None  # None: unknown until its first run (a CSV table without declared types)
    cursor_timezone: str | None  # the zone naive cursor values are written in
    primary_key: tuple[str, ...] = ()
    csv_timezone: str | None = None  # a CSV table's `csv.timezone`: naive values land as timestamptz

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"


Action = Literal["set", "overwrite", "kept", "unknown", "no cursor", "no value", "locked"]


@dataclass(frozen=True)
class Decision:
    """What the import does (or, dry, would do) for one seed entry."""

    name: str  # `source.table`, or the seed's own name when it matches no table
    action: Action
    current: Watermark | None = None
    new: Watermark | None = None
    note: str = ""
    target: Target | None = None

    @property
    def writes(self) -> bool:
        return self.action in ("set", "overwrite")


def _norm(name: str) -> str:
    return name.strip().strip('"').lstrip("\ufeff").strip().lower().replace(" ", "_").replace("-", "_")


def read_rows(text: str, file: str) -> list[tuple[int, list[str]]]:
    """The non-blank CSV rows of a seed file with their 1-based line numbers."""
    rows = []
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    for row in reader:
        if any(cell.strip() for cell in row):
            rows.append((reader.line_num, [cell.strip() for cell in row]))
    return rows


def parse_time(text: str) -> datetime:
    """A seed timestamp (`2024-05-01 12:34:56`, ISO with `T`, `Z` or an offset, a date, more than
    microsecond digits) as a datetime: naive when the text has no offset. ValueError when it is none."""
    value = text.strip()
    if value.upper().endswith(" UTC"):
        value = value[:-4] + "+00:00"
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    value = (
        _OFFSET.sub(lambda m: f"{m.group(1)}:{m.group(2)}", value) if "T" in value or " " in value else value
    )
    # Nanoseconds (Spark, PostgreSQL text) are cut to microseconds: the bound errs low, rows are re-read.
    value = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], value, count=1)
    if not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError(text)
    return datetime.fromisoformat(value)


def _is_time(text: str) -> bool:
    try:
        parse_time(text)
    except ValueError:
        return False
    return True


def _value(text: str) -> str | None:
    return None if text.strip().lower() in EMPTY else text.strip()


def table_timestamps(text: str, file: str) -> list[SeedValue]:
    """The `max_timestamps.csv` layout: a table column and a timestamp column, one row per table.

    A file without a recognised header is read as `table,timestamp` when its first row already holds a
    timestamp in the second column; otherwise a ConfigError says which header is expected.
    """
    rows = read_rows(text, file)
    if not rows:
        return []
    header = [_norm(c) for c in rows[0][1]]
    t_col = next((header.index(c) for c in TABLE_COLUMNS if c in header), None)
    v_col = next((header.index(c) for c in TIME_COLUMNS if c in header), None)
    body = rows[1:]
    if t_col is None or v_col is None:
        first = rows[0][1]
        if len(first) == 2 and _is_time(first[1]):
            t_col, v_col, body = 0, 1, rows  # no header at all
        else:
            raise ConfigError(
                f"{file}: line {rows[0][0]}: header {rows[0][1]} is not a table/timestamp header",
                hint=f"expected {EXPECTED_HEADER}; for a file holding one timestamp use --layout single",
            )
    out = []
    for line, row in body:
        if len(row) <= max(t_col, v_col):
            raise ConfigError(f"{file}: line {line}: expected a table and a timestamp, got {row}")
        if not row[t_col]:
            raise ConfigError(f"{file}: line {line}: no table name in {row}")
        out.append(SeedValue(row[t_col], _value(row[v_col]), file, line))
    return out


def single_timestamp(text: str, file: str, table: str = "*") -> list[SeedValue]:
    """A file holding one table's (a tracker) or every table's (`last_load_timestamp.csv`) last timestamp.

    An optional header line; one column, or a timestamp column among several. Several lines: the latest
    timestamp counts. Returns one SeedValue for `table` (`*`: every table), or none for an empty file.
    """
    rows = read_rows(text, file)
    if not rows:
        return []
    col = 0
    header = [_norm(c) for c in rows[0][1]]
    if not _is_time(rows[0][1][0]) and _value(rows[0][1][0]) is not None:
        hit = next((header.index(c) for c in TIME_COLUMNS if c in header), None)
        if hit is None and len(header) > 1:
            raise ConfigError(
                f"{file}: line {rows[0][0]}: header {rows[0][1]} names no timestamp column",
                hint=f"expected one column of timestamps, or a header with one of: {', '.join(TIME_COLUMNS)}",
            )
        if hit is None and len(rows) == 1:  # one line that is no timestamp: not a header either
            raise ConfigError(
                f"{file}: line {rows[0][0]}: {rows[0][1][0]!r} is not a timestamp",
                hint="expected e.g. 2024-05-01 12:34:56 or 2024-05-01T12:34:56+00:00",
            )
        col, rows = hit or 0, rows[1:]
    elif len(rows[0][1]) > 1:
        col = next((i for i, cell in enumerate(rows[0][1]) if _is_time(cell)), 0)
    best: tuple[datetime, str, int] | None = None
    for line, row in rows:
        if len(row) <= col or _value(row[col]) is None:
            continue
        try:
            when = parse_time(row[col])
        except ValueError:
            raise ConfigError(
                f"{file}: line {line}: {row[col]!r} is not a timestamp",
                hint="expected e.g. 2024-05-01 12:34:56 or 2024-05-01T12:34:56+00:00",
            ) from None
        key = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        if best is None or key > best[0]:
            best = (key, row[col], line)
    if best is None:
        return [SeedValue(table, None, file, rows[0][0] if rows else 1)]
    return [SeedValue(table, best[1], file, best[2])]


def infer_cursor_type(text: str, target: Target) -> str:
    """The type a CSV cursor lands as, for a table that declares none and has not landed yet.

    From the config, not from how the seed happened to print its value: a table with `csv.timezone` lands
    naive timestamps as timestamptz; one with `cursor_timezone` has naive timestamps; one with neither has
    timestamps with an offset. Integers are bigint, bare dates date. A wrong guess is caught by the next
    run (the cursor's landed type must be the watermark's: a SchemaError names both).
    """
    value = text.strip()
    if re.fullmatch(r"[+-]?\d+", value):
        return "bigint"
    parse_time(value)  # ValueError when it is no time at all
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return "date"
    if target.csv_timezone:
        return "timestamptz"
    return "timestamp" if target.cursor_timezone else "timestamptz"


def to_watermark(value: SeedValue, target: Target, cursor_type: str, zone: str | None) -> Watermark:
    """The canonical watermark of a seed value for a cursor of `cursor_type` (what a run would commit).

    `zone` is the zone of seed timestamps written without an offset (default: the cursor's zone, else
    UTC). A value that is not of the cursor's kind is a ConfigError naming the file and line.
    """
    assert value.text is not None
    where = f"{value.file}: line {value.line}"
    try:
        if cursor_type == "bigint":
            return Watermark(str(int(value.text)), "bigint")
        if cursor_type == "double":
            return Watermark(repr(float(value.text)), "double")
        if cursor_type == "string":
            return Watermark(value.text, "string")
        when = parse_time(value.text)
    except ValueError:
        raise ConfigError(
            f"{where}: {value.text!r} is not a valid {cursor_type} for {target.name} (cursor {target.cursor})",
            hint="fix the value in the seed file, or leave the table out with --table",
        ) from None
    if cursor_type == "date":
        return Watermark(when.date().isoformat(), "date")
    if cursor_type not in ("timestamp", "timestamptz"):
        raise ConfigError(
            f"{target.name}: cursor {target.cursor} is {cursor_type}: it can take no imported value"
        )
    seed_zone = zone or target.cursor_timezone or "UTC"
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(seed_zone), fold=0)
    if cursor_type == "timestamptz":
        return canonical_watermark(Watermark(when.isoformat(), "timestamptz"), None, target.name)  # type: ignore[return-value]
    if not target.cursor_timezone:
        raise ConfigError(
            f"{target.name}: cursor {target.cursor} is a timestamp without time zone, so an imported watermark "
            "can't be placed in UTC",
            hint="declare the zone the source writes it in: cursor_timezone: UTC (or e.g. Europe/Berlin)",
        )
    local = when.astimezone(ZoneInfo(target.cursor_timezone)).replace(tzinfo=None)
    return canonical_watermark(  # type: ignore[return-value]
        Watermark(local.isoformat(), "timestamp"), target.cursor_timezone, target.name
    )


def match(name: str, targets: Sequence[Target], source: str | None) -> list[Target]:
    """The tables a seed's table name stands for: `source.table`, or a bare `table` (in `source` if given).

    Names compare case-insensitively (the seeds' catalog names are often upper case).
    """
    wanted = name.strip().lower()
    exact = [t for t in targets if t.name == wanted]
    if exact:
        return exact
    pool = [t for t in targets if source is None or t.source == source]
    return [t for t in pool if t.table == wanted]


def decide(
    values: Sequence[SeedValue],
    targets: Sequence[Target],
    states: dict[str, TableState | None],
    *,
    source: str | None = None,
    tables: Sequence[str] = (),
    zone: str | None = None,
    force: bool = False,
    types: dict[str, str] | None = None,
) -> list[Decision]:
    """What to set per table: every seed entry gets a decision, matched or not.

    A `*` entry (`last_load_timestamp.csv`) applies to `tables` (names as `--table` takes them), or to every
    target with a cursor. A table with a committed watermark is kept unless `force`. Two entries for one
    table: the later watermark wins. `types` gives known cursor types (a CSV table's landed columns).
    """
    chosen = {t.name for name in tables for t in match(name, targets, source)} if tables else None
    unknown_tables = [name for name in tables if not match(name, targets, source)]
    if unknown_tables:
        known = ", ".join(t.name for t in targets) or "none"
        raise ConfigError(
            f"--table {', '.join(unknown_tables)}: no such table in the config", hint=f"known: {known}"
        )
    found: dict[str, tuple[Target, list[SeedValue]]] = {}
    out: list[Decision] = []
    for v in values:
        # One value for every table: the tables a watermark means something for (those with a cursor).
        hits = [t for t in targets if t.cursor] if v.table == "*" else match(v.table, targets, source)
        if chosen is not None:
            hits = [t for t in hits if t.name in chosen]
        if v.table != "*" and not hits:
            if chosen is None:  # with --table, the seed's other entries are not asked about
                out.append(_unmatched(v, targets, source))
            continue
        if len(hits) > 1 and v.table != "*":
            out.append(
                Decision(
                    v.table,
                    "unknown",
                    note=f"{v.file}: line {v.line}: {v.table} is a table of several sources "
                    f"({', '.join(t.name for t in hits)}); pass --source to say which",
                )
            )
            continue
        for t in hits:
            if v.text is None:
                out.append(
                    Decision(t.name, "no value", note=f"{v.file}: line {v.line}: no timestamp", target=t)
                )
            else:
                found.setdefault(t.name, (t, []))[1].append(v)
    for name, (t, seen) in found.items():
        state = states.get(name)
        current = state.watermark if state else None
        if not t.cursor:
            out.append(Decision(name, "no cursor", current, note="the table has no cursor column", target=t))
            continue
        wm: Watermark | None = None
        origin = seen[0]
        for v in seen:  # two entries for one table: the later watermark wins
            assert v.text is not None
            ctype = t.cursor_type or (types or {}).get(name)
            if ctype is None:
                try:
                    ctype = infer_cursor_type(v.text, t)
                except ValueError:
                    raise ConfigError(
                        f"{v.file}: line {v.line}: {v.text!r} is not a timestamp, date or integer",
                        hint="expected e.g. 2024-05-01 12:34:56 or 2024-05-01T12:34:56+00:00",
                    ) from None
            new = to_watermark(v, t, ctype, zone)
            if max_watermark(wm, new) is new:
                wm, origin = new, v
        note = f"from {origin.file}" + (f": line {origin.line}" if origin.line > 1 else "")
        if current is not None and not force:
            out.append(
                Decision(
                    name, "kept", current, wm, note="has a committed watermark (--force overwrites)", target=t
                )
            )
            continue
        out.append(Decision(name, "overwrite" if current else "set", current, wm, note=note, target=t))
    return out


def _unmatched(v: SeedValue, targets: Sequence[Target], source: str | None) -> Decision:
    where = f" in source {source}" if source else ""
    known = ", ".join(t.name for t in targets) or "none"
    return Decision(
        v.table,
        "unknown",
        note=f"{v.file}: line {v.line}: no table {v.table}{where} in the config (tables: {known})",
    )
