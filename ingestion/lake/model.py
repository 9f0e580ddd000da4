"""The state document's data: watermark, file ledger, lease, table state (plain data, JSON in and out).

Pure: planning reads and builds these; `ingestion.lake.state` stores them with conditional writes.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

# The state document's format, in its `format` key. 2: the document holds all of the table's state.
# 3: the document may name history parts (`history.head`) holding older committed runs and file ledger
# entries; a tidemark that predates them would take the document for the whole state (and the compacted
# runs' files for orphans), so such documents carry a number it refuses. A document without history is
# still written as 2, readable by either version.
FORMAT_PLAIN = 2
FORMAT_HISTORY = 3
STATE_FORMAT = FORMAT_HISTORY  # the newest format this version reads


class NewerFormat(ValueError):
    """A document written in a format newer than this version of tidemark knows."""

    def __init__(self, found: object, known: int) -> None:
        super().__init__(f"format {found} is newer than this tidemark knows (up to {known})")
        self.found, self.known = found, known


def check_format(doc: dict[str, Any], known: int) -> int:
    """The document's format number (1 when it has none); NewerFormat if this version can't read it."""
    found = doc.get("format", 1)
    if not isinstance(found, int) or isinstance(found, bool) or found > known:
        raise NewerFormat(found, known)
    return found


@dataclass(frozen=True)
class Watermark:
    """The highest cursor value committed for a table.

    `value` is canonical text: timestamps in UTC (`2026-01-01T10:00:00.000000+00:00`), dates
    `YYYY-MM-DD`, numbers as digits. `timezone` is the declared zone of a naive timestamp cursor.
    """

    value: str
    type: str
    timezone: str | None = None


@dataclass(frozen=True)
class FileEntry:
    """A file in a table's ledger: what it looked like when a run processed it, and what became of it.

    `status` is `landed`, or `rejected` for a file refused whole (moved to unprocessed/, with `reason`).
    Rows add up: `rows_read` = landed-or-deduplicated rows + `rows_rejected`.
    """

    size: int
    mtime_ns: int
    run_id: str
    etag: str | None = None
    checksum: str | None = None
    status: Literal["landed", "rejected"] = "landed"
    reason: str | None = None
    rows_read: int = 0
    rows_rejected: int = 0


@dataclass(frozen=True)
class Lease:
    """Who is working on a table, since when, and until when the claim holds without renewal."""

    run_id: str
    acquired_at: str
    expires_at: str
    host: str
    pid: int

    def expired(self, now: datetime) -> bool:
        return now >= datetime.fromisoformat(self.expires_at)

    def holder_is_dead(self) -> bool:
        """A holder on this machine whose process is gone (killed, OOM) can't come back to commit."""
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


@dataclass(frozen=True)
class History:
    """Where a table's compacted past lives: a chain of immutable parts, newest first.

    The state document keeps only recent committed runs and file ledger entries; older ones move to
    history parts (`ingestion.lake.state` writes them), each naming the part before it. The document
    stores `head` and `parts`; `runs` and `files` are what the parts hold, filled in when the document
    is read (never serialized with it).
    """

    head: str | None = None
    parts: int = 0
    runs: tuple[str, ...] = ()
    files: dict[str, FileEntry] = field(default_factory=dict)
    run_files: dict[str, tuple[str, ...]] = field(default_factory=dict)


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
    lease: Lease | None = None
    # What the table is keyed and ordered by, as the last commit used them: for commands that must know
    # a discovered PostgreSQL table without asking the database (dbt-sources, dbt-scaffold).
    primary_key: tuple[str, ...] = ()
    cursor: str | None = None
    # Committed runs and file ledger entries compacted out of the document (see History). In memory,
    # `committed_runs` and `files` hold everything: the history's and the document's own.
    history: History = field(default_factory=History)
    # Run id → the Parquet files the run landed, relative to the table's landing folder, recorded by the
    # commit: the catalog and the warehouse loaders read them instead of listing `landing/`.
    run_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Runs that held the lease and never released it (taken over, force-unlocked, or failed while
    # removing their own files): the next leased run removes exactly their files, so no run has to list
    # `landing/`, `_rejected/` or `_tmp/` to find orphans.
    abandoned_runs: tuple[str, ...] = ()
    # `_ingest_date` partitions a committed run widened a column in, whose earlier files still hold the
    # old type (`ingestion.lake.retype`): the run that committed it, or else the table's next run, casts
    # them before anything else and clears this.
    retype: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"

    @property
    def has_data(self) -> bool:
        """Has a run committed progress (a watermark or landed files) that an incremental load builds on?

        Committed run ids alone are not progress: a reset or paused table keeps them only so that its
        landed files are not taken for orphans.
        """
        return self.watermark is not None or bool(self.files)

    def to_json(self) -> bytes:
        fmt = FORMAT_HISTORY if self.history.head else FORMAT_PLAIN
        doc: dict[str, Any] = {"format": fmt, **asdict(replace(self, history=History()))}
        doc["committed_runs"] = list(self.committed_runs)
        if self.abandoned_runs:
            doc["abandoned_runs"] = list(self.abandoned_runs)
        else:
            del doc["abandoned_runs"]  # the usual case: documents stay as earlier versions wrote them
        if self.retype:
            doc["retype"] = list(self.retype)
        else:
            del doc["retype"]
        doc["run_files"] = {k: list(v) for k, v in self.run_files.items()}
        doc["history"] = {"head": self.history.head, "parts": self.history.parts}
        # Keys sorted for stable documents, except the columns: their order is the source's, which the
        # generated dbt models keep (a staging view lists columns in source order).
        columns = doc.pop("columns")
        text = json.dumps(doc, sort_keys=True)
        return json.dumps({**json.loads(text), "columns": columns}, indent=2).encode()

    @classmethod
    def from_json(cls, body: bytes | str) -> TableState:
        doc = json.loads(body)
        check_format(doc, STATE_FORMAT)
        doc.pop("format", None)
        wm, lease = doc.pop("watermark", None), doc.pop("lease", None)
        files = {k: FileEntry(**v) for k, v in doc.pop("files", {}).items()}
        runs = tuple(doc.pop("committed_runs", ()))
        abandoned = tuple(doc.pop("abandoned_runs", ()))
        retype = tuple(doc.pop("retype", ()))
        key = tuple(doc.pop("primary_key", ()))
        hist = doc.pop("history", None) or {}
        run_files = {k: tuple(v) for k, v in (doc.pop("run_files", None) or {}).items()}
        return cls(
            **doc,
            history=History(hist.get("head"), int(hist.get("parts", 0))),
            run_files=run_files,
            primary_key=key,
            watermark=Watermark(**wm) if wm else None,
            lease=Lease(**lease) if lease else None,
            committed_runs=runs,
            abandoned_runs=abandoned,
            retype=retype,
            files=files,
        )
