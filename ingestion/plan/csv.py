"""What a run lands for a table and what it commits afterwards: pure functions over config, state and facts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from ingestion.config import DURATION, Effective, LoadType
from ingestion.errors import ConfigError, TidemarkError
from ingestion.lake.model import FileEntry, TableState, Watermark
from ingestion.plan.rejects import Quarantine

TIME_TYPES = ("timestamp", "timestamptz", "date")
NUMERIC_TYPES = ("bigint", "double")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class NoState(TidemarkError):
    """An incremental load was asked for a table that has never been landed."""


@dataclass(frozen=True)
class TablePlan:
    """The files a run lands for one table, the rows it keeps, and why the rest is left alone."""

    source: str
    table: str
    load_type: Effective
    files: tuple[FileFacts, ...]
    already_landed: tuple[str, ...]
    changed: tuple[str, ...]  # landed before with another size or mtime: landed again
    lower_bound: Watermark | None = None  # keep rows with cursor >= this (in the column's own terms)
    # Files a committed run processed that are still in the inbox (a crash before the archive step).
    leftovers: tuple[FileFacts, ...] = ()
    duplicates: tuple[tuple[str, str], ...] = ()  # (new file, landed file with the same bytes)

    @property
    def has_work(self) -> bool:
        return bool(self.files)


@dataclass(frozen=True)
class LandedBatch:
    """What an engine reports after writing a batch (the facts the commit needs).

    `max_cursor` is in the column's own terms (naive timestamps as written in the source).
    """

    rows_read: int
    rows_landed: int
    max_cursor: Watermark | None
    columns: dict[str, str]
    files_written: tuple[str, ...]
    rows_filtered: int = 0  # older than the lower bound: landed by an earlier run
    rows_rejected: int = 0  # quarantined in _rejected/ (files refused whole are not counted)
    quarantine: Quarantine | None = None

    @property
    def rows_deduplicated(self) -> int:
        return self.rows_read - self.rows_rejected - self.rows_filtered - self.rows_landed


def parse_lookback(value: str | float, cursor_type: str) -> timedelta | float:
    """The lookback as a timedelta for time cursors, a number for numeric ones."""
    if cursor_type in NUMERIC_TYPES:
        if isinstance(value, str):
            raise ConfigError(
                f"lookback {value!r} is a duration, but the cursor is {cursor_type}",
                hint="give a number in the cursor's units",
            )
        return float(value)
    if isinstance(value, str):
        m = DURATION.fullmatch(value.strip())
        assert m, value  # validated with the config
        return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    return timedelta(seconds=float(value))


def _utc(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(timezone.utc)


def _text(ts: datetime, *, utc: bool) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + ("+00:00" if utc else "")


def lower_bound(wm: Watermark, lookback: str | float) -> Watermark | None:
    """Watermark minus lookback, in the column's own terms; rows at the bound itself are kept (>=)."""
    back = parse_lookback(lookback, wm.type)
    if wm.type == "bigint":
        assert isinstance(back, float)
        return replace(wm, value=str(int(wm.value) - math.ceil(back)))
    if wm.type == "double":
        assert isinstance(back, float)
        return replace(wm, value=repr(float(wm.value) - back))
    if wm.type not in TIME_TYPES:
        return wm if wm.type == "string" else None
    assert isinstance(back, timedelta)
    if wm.type == "date":
        days = math.ceil(back.total_seconds() / 86400)
        return replace(wm, value=(date.fromisoformat(wm.value) - timedelta(days=days)).isoformat())
    bound = _utc(wm.value) - back
    if wm.type == "timestamptz":
        return replace(wm, value=_text(bound, utc=True))
    # A naive column compares in its own zone: the UTC bound is turned into that zone's wall clock.
    local = bound.astimezone(ZoneInfo(wm.timezone or "UTC")).replace(tzinfo=None)
    return replace(wm, value=_text(local, utc=False))


def canonical_watermark(raw: Watermark | None, cursor_timezone: str | None, table: str) -> Watermark | None:
    """An engine's max cursor as a watermark: timestamps in UTC, naive ones read in the declared zone."""
    if raw is None:
        return None
    if raw.type == "timestamptz":
        return replace(raw, value=_text(_utc(raw.value), utc=True))
    if raw.type != "timestamp":
        return raw
    if not cursor_timezone:
        raise ConfigError(
            f"{table}: the cursor is a timestamp without time zone, so its watermark can't be placed in UTC",
            hint="declare the zone the source writes it in: cursor_timezone: UTC (or e.g. Europe/Berlin)",
        )
    # fold=0 takes the earlier instant of a repeated wall-clock hour: the watermark errs low, never high.
    local = datetime.fromisoformat(raw.value).replace(tzinfo=ZoneInfo(cursor_timezone), fold=0)
    return Watermark(_text(local.astimezone(timezone.utc), utc=True), "timestamp", cursor_timezone)


def plan_csv_table(
    source: str,
    table: str,
    state: TableState | None,
    listing: Sequence[FileFacts],
    *,
    load_type: LoadType = "auto",
    lookback: str | float = 0,
    has_cursor: bool = True,
) -> TablePlan:
    """Choose the files to land and the cursor bound to keep rows from.

    auto: full without committed state, incremental with it. full: every listed file, no bound.
    incremental: files the ledger has not seen with the same size and mtime, rows >= watermark - lookback.
    """
    has_state = state is not None and state.has_data
    if load_type == "incremental" and not has_state:
        raise NoState(
            f"{source}.{table} has no committed state, so there is nothing to be incremental from",
            hint="run it once with --load-type auto (the default) or full",
        )
    effective: Effective = "full" if load_type == "full" or not has_state else "incremental"
    ledger = state.files if state and effective == "incremental" else {}
    todo, seen, changed, leftovers = [], [], [], []
    for f in listing:
        entry = ledger.get(f.relpath)
        if entry is None:
            todo.append(f)
        elif same_file(entry, f):
            seen.append(f.relpath)
            leftovers.append(f)
        else:
            todo.append(f)  # its checksum decides: see settle_checksums
            changed.append(f.relpath)
    bound = None
    if effective == "incremental" and has_cursor and state and state.watermark:
        bound = lower_bound(state.watermark, lookback)
    return TablePlan(
        source, table, effective, tuple(todo), tuple(seen), tuple(changed), bound, tuple(leftovers)
    )


def same_file(entry: FileEntry, f: FileFacts) -> bool:
    """Is a listed file the one the ledger recorded? Size and mtime (and the ETag on S3) all agree."""
    if entry.etag and f.etag:
        return (entry.size, entry.etag) == (f.size, f.etag)
    return (entry.size, entry.mtime_ns) == (f.size, f.mtime_ns)


def settle_checksums(plan: TablePlan, fetched: Sequence[FileFacts], state: TableState | None) -> TablePlan:
    """Drop checksummed files whose bytes were already landed: touched but unchanged, or re-delivered under
    another name. A file whose bytes changed stays in the plan (landed again, flagged as changed).

    An S3 object whose ETag and size are those the ledger recorded is unchanged too (ledgers written
    before S3 files were identified by ETag hold a sha256 checksum for them).
    """
    ledger = state.files if state and plan.load_type == "incremental" else {}
    by_checksum = {e.checksum: name for name, e in ledger.items() if e.checksum and e.status == "landed"}
    keep, seen, leftovers, dupes, changed = [], list(plan.already_landed), list(plan.leftovers), [], []
    for f in fetched:
        entry = ledger.get(f.relpath)
        same_object = entry is not None and bool(entry.etag) and entry.etag == f.etag and entry.size == f.size
        if entry is not None and ((entry.checksum and entry.checksum == f.checksum) or same_object):
            seen.append(f.relpath)
            leftovers.append(f)
        elif entry is None and f.checksum in by_checksum:
            dupes.append((f.relpath, by_checksum[f.checksum]))
            leftovers.append(f)
        else:
            keep.append(f)
            if entry is not None:
                changed.append(f.relpath)
    return replace(
        plan,
        files=tuple(keep),
        already_landed=tuple(seen),
        changed=tuple(changed),
        leftovers=tuple(leftovers),
        duplicates=tuple(dupes),
    )


def max_watermark(old: Watermark | None, new: Watermark | None) -> Watermark | None:
    """The later of two canonical watermarks; a cursor whose type changed restarts from the new value."""
    if old is None or (new is not None and new.type != old.type):
        return new
    if new is None:
        return old
    key = {"bigint": int, "double": float}.get(old.type)
    if key:
        return new if key(new.value) > key(old.value) else old
    if old.type in ("timestamp", "timestamptz"):
        return new if _utc(new.value) > _utc(old.value) else old
    return new if new.value > old.value else old


def next_state(
    state: TableState,
    plan: TablePlan,
    batch: LandedBatch,
    run_id: str,
    now: datetime,
    *,
    cursor_timezone: str | None = None,
    pause: bool = False,
) -> TableState:
    """The state to commit once `batch` is landed.

    The run id always joins the committed runs (its files now count). Unless paused, the ledger records
    the files and the watermark advances; a full load resets the watermark to what it landed.
    """
    runs = (*state.committed_runs, run_id)
    if pause:
        return replace(state, committed_runs=runs, updated_at=now.isoformat())
    landed = canonical_watermark(batch.max_cursor, cursor_timezone, f"{plan.source}.{plan.table}")
    watermark = landed if plan.load_type == "full" else max_watermark(state.watermark, landed)
    files = dict(state.files)
    counts = batch.quarantine.files if batch.quarantine else {}
    for f in plan.files:
        c = counts.get(f.relpath)
        files[f.relpath] = FileEntry(
            f.size,
            f.mtime_ns,
            run_id,
            etag=f.etag,
            checksum=f.checksum,
            status="rejected" if c and c.error else "landed",
            reason=c.error if c else None,
            rows_read=c.read if c else 0,
            rows_rejected=c.rejected if c else 0,
        )
    # A re-delivered copy of landed bytes is recorded too, so it is not checksummed again next run.
    for new, old in plan.duplicates:
        f = next(x for x in plan.leftovers if x.relpath == new)
        files[new] = replace(state.files[old], size=f.size, mtime_ns=f.mtime_ns, etag=f.etag)
    return replace(
        state,
        watermark=watermark,
        committed_runs=runs,
        files=files,
        columns={**state.columns, **batch.columns},
        updated_at=now.isoformat(),
    )


@dataclass(frozen=True, order=True)
class FileFacts:
    """A source file as listed at plan time.

    Its ledger identity is (relpath, size, mtime_ns, etag); `checksum` (sha256 of the bytes) is filled in
    when the file is planned (a local file's sha256, an S3 object's `etag:<ETag>`), and tells a
    touched-but-identical file from a changed one.
    """

    relpath: str
    path: str  # local path or s3:// URL
    size: int
    mtime_ns: int
    etag: str | None = None
    checksum: str | None = None
    origin: str | None = None  # the inbox path of a copy (a download, or a decompressed text copy)

    @property
    def is_s3(self) -> bool:
        return self.path.startswith("s3://")

    @property
    def source_path(self) -> str:
        """Where the file lives in the inbox (what archiving moves)."""
        return self.origin or self.path
