"""Per-table CDC state (watermark, committed runs, file ledger, columns) and the store that keeps it."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ingestion.errors import StateConflict

STATE_FORMAT = 1


@dataclass(frozen=True)
class Watermark:
    """The highest cursor value committed for a table, in its canonical string form (see engines)."""

    value: str
    type: str


@dataclass(frozen=True)
class FileEntry:
    """A landed file in a table's ledger: what it looked like when it was landed, and by which run."""

    size: int
    mtime_ns: int
    run_id: str


@dataclass(frozen=True)
class TableState:
    """Everything tidemark remembers about one table between runs."""

    pipeline: str
    source: str
    table: str
    version: int = 0
    watermark: Watermark | None = None
    committed_runs: tuple[str, ...] = ()
    files: dict[str, FileEntry] = field(default_factory=dict)
    columns: dict[str, str] = field(default_factory=dict)
    updated_at: str | None = None

    def to_json(self) -> str:
        doc: dict[str, Any] = {"format": STATE_FORMAT, **asdict(self)}
        doc["committed_runs"] = list(self.committed_runs)
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TableState:
        doc = json.loads(text)
        doc.pop("format", None)
        wm = doc.pop("watermark", None)
        files = {k: FileEntry(**v) for k, v in doc.pop("files", {}).items()}
        return cls(
            **{k: v for k, v in doc.items() if k != "committed_runs"},
            watermark=Watermark(**wm) if wm else None,
            committed_runs=tuple(doc.get("committed_runs", ())),
            files=files,
        )

    def bump(self, **changes: Any) -> TableState:
        """The next version of this state with `changes` applied."""
        return replace(self, version=self.version + 1, **changes)


class LocalStateStore:
    """State documents in `<lake>/_state/<pipeline>/<source>/<table>.json` on a local filesystem."""

    def __init__(self, lake_root: str, pipeline: str) -> None:
        self.root = Path(lake_root) / "_state" / pipeline
        self.pipeline = pipeline

    def path(self, source: str, table: str) -> Path:
        return self.root / source / f"{table}.json"

    def read(self, source: str, table: str) -> TableState | None:
        """The table's committed state, or None when it was never landed (or was reset)."""
        p = self.path(source, table)
        try:
            return TableState.from_json(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def commit(self, state: TableState, expected_version: int) -> None:
        """Write `state` if the stored version is still `expected_version`; raise StateConflict if not."""
        current = self.read(state.source, state.table)
        found = current.version if current else 0
        if found != expected_version:
            raise StateConflict(
                f"state of {state.source}.{state.table} moved from version {expected_version} to {found} "
                "while this run was landing it; nothing was committed",
                hint="another run landed this table at the same time; rerun to pick up where it left off",
            )
        p = self.path(state.source, state.table)
        p.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename so a reader never sees half a document.
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(state.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
