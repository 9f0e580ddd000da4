"""What a run lands for a table and what it commits afterwards: pure functions over config, state and facts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ingestion.sources.csv import FileFacts
from ingestion.state import FileEntry, TableState, Watermark

LoadType = Literal["full", "incremental"]


@dataclass(frozen=True)
class TablePlan:
    """The files a run lands for one table, and why the others are left alone."""

    source: str
    table: str
    load_type: LoadType
    files: tuple[FileFacts, ...]
    already_landed: tuple[str, ...]
    changed: tuple[str, ...]  # landed before with another size or mtime: landed again

    @property
    def has_work(self) -> bool:
        return bool(self.files)


@dataclass(frozen=True)
class LandedBatch:
    """What an engine reports after writing a batch (the facts the commit needs)."""

    rows_read: int
    rows_landed: int
    max_cursor: Watermark | None
    columns: dict[str, str]
    files_written: tuple[str, ...]

    @property
    def rows_deduplicated(self) -> int:
        return self.rows_read - self.rows_landed


def plan_csv_table(
    source: str, table: str, state: TableState | None, listing: Sequence[FileFacts]
) -> TablePlan:
    """Land every listed file the ledger has not seen with the same size and modification time."""
    ledger = state.files if state else {}
    todo, seen, changed = [], [], []
    for f in listing:
        entry = ledger.get(f.relpath)
        if entry is None:
            todo.append(f)
        elif (entry.size, entry.mtime_ns) == (f.size, f.mtime_ns):
            seen.append(f.relpath)
        else:
            todo.append(f)
            changed.append(f.relpath)
    return TablePlan(
        source=source,
        table=table,
        load_type="incremental" if state else "full",
        files=tuple(todo),
        already_landed=tuple(seen),
        changed=tuple(changed),
    )


def _as_comparable(w: Watermark) -> object:
    if w.type == "bigint":
        return int(w.value)
    if w.type == "double":
        return float(w.value)
    return w.value  # canonical ISO strings and plain strings order correctly as text


def max_watermark(old: Watermark | None, new: Watermark | None) -> Watermark | None:
    """The later of two watermarks; a cursor whose type changed restarts from the new value."""
    if old is None or (new is not None and new.type != old.type):
        return new
    if new is None:
        return old
    return new if _as_comparable(new) > _as_comparable(old) else old


def next_state(
    pipeline: str,
    state: TableState | None,
    plan: TablePlan,
    batch: LandedBatch,
    run_id: str,
    now: datetime,
) -> TableState:
    """The state to commit once `batch` is landed: watermark, run id, ledger entries and columns advance."""
    base = state or TableState(pipeline=pipeline, source=plan.source, table=plan.table)
    files = dict(base.files)
    files.update({f.relpath: FileEntry(f.size, f.mtime_ns, run_id) for f in plan.files})
    return base.bump(
        watermark=max_watermark(base.watermark, batch.max_cursor),
        committed_runs=(*base.committed_runs, run_id),
        files=files,
        columns={**base.columns, **batch.columns},
        updated_at=now.isoformat(),
    )
