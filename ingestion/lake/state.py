"""Per-table CDC state and leases: one JSON document per table, every change a conditional write.

The document holds the watermark, committed run ids, file ledger, column types and the lease. Because
the lease lives in the same document, taking over an expired lease changes the document's token, and
the old holder's commit (conditional on the token it last wrote) fails: the token is the fencing token.

The document stays small: past `KEEP_RUNS` committed runs and `KEEP_FILES` file ledger entries, the
older ones move into an immutable history part (`_state/_history/<pipeline>/<source>/<table>/…json`,
written once, before the document that names it). The document names the newest part, each part the
one before it; parts merge as they grow (a binary counter), so a chain has O(log history) parts and a
commit writes O(changes) amortized, never the whole history. Readers get the full state back:
`committed_runs` and `files` hold the history's entries and the document's own. A document naming
history parts is written as format 3 (`model.FORMAT_HISTORY`), which a tidemark that predates parts
refuses instead of misreading; a document or part of a format newer than this version knows is
refused with StateFormatTooNew.

Parts no committed document names any more (merged into a bigger one, dropped by a reset, or written by
a writer that lost its race or died before its document) are deleted after a write that changed the
chain (see `StateStore._prune`): only parts written for a document version up to the one just written
and not in its chain. Every write presents the token of the version it read, so a part written for
version N can only ever be named by the write that creates version N; once version V >= N is committed,
no writer can still name it. Readers walk a chain after reading its document without a lock, so a part
may go while they read; they then read the (newer) document again. No grace period is needed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta

from ingestion.errors import LeaseHeld, StateConflict, StateCorrupt, StateFormatTooNew
from ingestion.lake.docstore import DocStore, PreconditionFailed, open_docstore
from ingestion.lake.model import (
    FileEntry,
    History,
    Lease,
    NewerFormat,
    TableState,
    check_format,
)

log = logging.getLogger("tidemark")

# The document keeps between KEEP and 2 * KEEP of its newest entries; compaction moves the rest.
KEEP_RUNS = 16
KEEP_FILES = 32
HISTORY_DIR = "_history"
PART_FORMAT = 1
# A part's name: the version of the document written with it, then a random suffix.
_PART_NAME = re.compile(r"(\d{12})-[0-9a-f]+\.json")


def part_version(key: str) -> int | None:
    """The document version a history part was written for (from its name); None if not a part's name."""
    m = _PART_NAME.fullmatch(key.rsplit("/", 1)[-1])
    return int(m.group(1)) if m else None


def _too_new(what: str, exc: NewerFormat) -> StateFormatTooNew:
    return StateFormatTooNew(
        f"{what} was written by a newer tidemark (format {exc.found}; this version reads formats up to "
        f"{exc.known}); the table is not run by this version",
        hint="upgrade tidemark to the version that wrote it (pip install -U tidemark) and run again; do not "
        "reset the table with this version",
    )


@dataclass(frozen=True)
class Part:
    """One immutable history part: the committed runs and file ledger entries it holds, and its predecessor."""

    previous: str | None
    runs: tuple[str, ...]
    files: dict[str, FileEntry]
    run_files: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {
            "format": PART_FORMAT,
            "previous": self.previous,
            "runs": list(self.runs),
            "files": {k: asdict(v) for k, v in self.files.items()},
            "run_files": {k: list(v) for k, v in self.run_files.items()},
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Part:
        doc = json.loads(body)
        check_format(doc, PART_FORMAT)
        files = {k: FileEntry(**v) for k, v in doc.get("files", {}).items()}
        run_files = {k: tuple(v) for k, v in doc.get("run_files", {}).items()}
        return cls(doc.get("previous"), tuple(doc.get("runs", ())), files, run_files)

    @property
    def size(self) -> int:
        return len(self.runs) + len(self.files) + sum(len(v) for v in self.run_files.values())


def document_form(state: TableState) -> TableState:
    """The state as its document holds it: without the entries its history parts already hold."""
    h = state.history
    archived = set(h.runs)
    return replace(
        state,
        committed_runs=tuple(r for r in state.committed_runs if r not in archived),
        files={k: v for k, v in state.files.items() if h.files.get(k) != v},
        run_files={k: v for k, v in state.run_files.items() if h.run_files.get(k) != v},
    )


def history_intact(state: TableState) -> bool:
    """Does the state still hold everything its history does? (A reset forgets files: then it doesn't.)"""
    h = state.history
    return (
        set(h.runs) <= set(state.committed_runs)
        and all(k in state.files for k in h.files)
        and all(k in state.run_files for k in h.run_files)
    )


@dataclass(frozen=True)
class Held:
    """A table's state as this run last wrote it, with the token its next write must present."""

    state: TableState
    token: str


class StateStore:
    """Table documents under `<lake>/_state/<pipeline>/<source>/<table>.json`, local or on S3."""

    def __init__(
        self,
        lake_root: str,
        pipeline: str,
        docs: DocStore | None = None,
        checkpoint: Callable[[str, str], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.root = f"{lake_root.rstrip('/')}/_state"
        self.docs = docs or open_docstore(self.root)
        self.unreadable: dict[tuple[str, str], StateCorrupt] = {}  # what `tables()` had to skip
        self._parts: dict[str, Part] = {}  # history parts are immutable: read each once
        # (point, table) on the history's write path, for fault injection (ingestion.observe.faults).
        self._checkpoint = checkpoint or (lambda point, table: None)

    def _part(self, key: str) -> Part:
        if key not in self._parts:
            doc = self.docs.get(key)
            if doc is None:
                raise StateCorrupt(
                    f"history part {self.root}/{key} named by a state document is missing",
                    hint="restore it from a backup (parts are never rewritten), or reset the table",
                )
            try:
                self._parts[key] = Part.from_json(doc.body)
            except NewerFormat as exc:
                raise _too_new(f"the history part {self.root}/{key}", exc) from None
        return self._parts[key]

    def _chain(self, head: str | None) -> list[Part]:
        """The history parts from the oldest to the newest."""
        return [self._part(key) for key in self._chain_keys(head)][::-1]

    def _chain_keys(self, head: str | None) -> list[str]:
        """The keys of the history parts a document names, from the newest to the oldest."""
        out = []
        while head:
            out.append(head)
            head = self._part(head).previous
        return out

    def _with_history(self, doc: TableState) -> TableState:
        """A document's state with its history folded back in (what every reader sees)."""
        if not doc.history.head:
            return doc
        runs: list[str] = []
        files: dict[str, FileEntry] = {}
        run_files: dict[str, tuple[str, ...]] = {}
        for part in self._chain(doc.history.head):
            runs += part.runs
            files.update(part.files)
            run_files.update(part.run_files)
        known = set(runs)
        history = History(doc.history.head, doc.history.parts, tuple(runs), files, run_files)
        return replace(
            doc,
            committed_runs=(*runs, *(r for r in doc.committed_runs if r not in known)),
            files={**files, **doc.files},
            run_files={**run_files, **doc.run_files},
            history=history,
        )

    def _serialize(self, state: TableState) -> tuple[TableState, bytes]:
        """(the state with its history as written, the document's bytes), compacting when the document grew.

        New history parts are written before the document that names them: a write that then loses its
        race leaves an unnamed part, which no reader sees.
        """
        if not history_intact(state):
            state = replace(state, history=History())  # start a new chain from what the state holds
        h = state.history
        doc = document_form(state)
        paths = sum(len(v) for v in doc.run_files.values())
        if (
            len(doc.committed_runs) <= 2 * KEEP_RUNS
            and len(doc.files) <= 2 * KEEP_FILES
            and paths <= 2 * KEEP_FILES
        ):
            return state, doc.to_json()
        runs = doc.committed_runs[: max(len(doc.committed_runs) - KEEP_RUNS, 0)]
        newest = sorted(doc.files, key=lambda k: (doc.files[k].run_id, k))
        moved = {k: doc.files[k] for k in newest[: max(len(newest) - KEEP_FILES, 0)]}
        # Landed file lists: the newest runs' stay while they hold at most KEEP_FILES paths.
        landed: dict[str, tuple[str, ...]] = {}
        kept = 0
        for run_id in sorted(doc.run_files, reverse=True):
            kept += len(doc.run_files[run_id])
            if kept > KEEP_FILES:
                landed[run_id] = doc.run_files[run_id]
        part = Part(h.head, runs, moved, landed)
        parts = h.parts + 1
        # Merge with the previous part while it is no bigger than twice the new one: O(log n) parts.
        while part.previous and self._part(part.previous).size <= 2 * part.size:
            prev = self._part(part.previous)
            part = Part(
                prev.previous,
                prev.runs + part.runs,
                {**prev.files, **part.files},
                {**prev.run_files, **part.run_files},
            )
            parts -= 1
        table_key = self.key(state.source, state.table).removesuffix(".json")
        key = f"{HISTORY_DIR}/{table_key}/{state.version:012d}-{secrets.token_hex(4)}.json"
        self.docs.put(key, part.to_json(), token=None)
        self._parts[key] = part
        self._checkpoint("history_written", state.table)  # the part exists, no document names it yet
        history = History(key, parts, (*h.runs, *runs), {**h.files, **moved}, {**h.run_files, **landed})
        state = replace(state, history=history)
        return state, document_form(state).to_json()

    def key(self, source: str, table: str) -> str:
        return f"{self.pipeline}/{source}/{table}.json"

    def _prune(self, state: TableState) -> None:
        """Delete the table's history parts that the document just written (`state`) does not name.

        Only parts written for a version up to `state.version`: a writer can name a part only in the
        write that creates the version the part was written for, and that version is taken. Parts of
        later versions may belong to a write still in flight and are left alone. A failure here (or a
        crash) leaves unreferenced parts, which the next write that changes the chain deletes: the
        commit stands either way.
        """
        folder = f"{HISTORY_DIR}/{self.key(state.source, state.table).removesuffix('.json')}/"
        try:
            live = set(self._chain_keys(state.history.head))
            for key in self.docs.list(folder):
                version = part_version(key)
                if key in live or version is None or version > state.version:
                    continue
                self._checkpoint("history_pruning", state.table)
                self.docs.discard(key)
                self._parts.pop(key, None)
        except Exception as exc:
            log.warning(
                "could not delete unreferenced history parts; the next compaction tries again",
                extra={"fields": {"table": state.name, "error": f"{type(exc).__name__}: {exc}"}},
            )

    def _parse(self, key: str, body: bytes) -> TableState:
        """A document's state, or StateCorrupt naming the file and the recovery command."""
        try:
            return TableState.from_json(body)
        except NewerFormat as exc:
            raise _too_new(f"the state document {self.root}/{key}", exc) from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            name = key.removeprefix(f"{self.pipeline}/").removesuffix(".json").replace("/", ".")
            raise StateCorrupt(
                f"the state document {self.root}/{key} cannot be read ({type(exc).__name__}: {exc}); "
                f"table {name} is not run until it is repaired",
                hint=f"restore the file from a backup, or start the table over: python -m ingestion reset "
                f"{name} --yes (landed files stay; the next run is a full load)",
            ) from None

    def _load(self, key: str) -> tuple[TableState | None, str | None]:
        """A document's state with its history, and its token; (None, None) when it does not exist."""
        for _ in range(5):
            doc = self.docs.get(key)
            if doc is None:
                return None, None
            state = self._parse(key, doc.body)
            try:
                return self._with_history(state), doc.token
            except StateFormatTooNew:
                raise
            except StateCorrupt:
                # A newer commit may have pruned a part this document named: read the newer one.
                again = self.docs.get(key)
                if again is None or again.token == doc.token:
                    raise
        raise StateConflict(f"{self.root}/{key}: could not read it: its history keeps changing")

    def _get(self, source: str, table: str) -> tuple[TableState | None, str | None]:
        return self._load(self.key(source, table))

    def read(self, source: str, table: str) -> TableState | None:
        """The table's current document, or None when no run ever touched it."""
        return self._get(source, table)[0]

    def tables(self) -> list[TableState]:
        """Every readable table document of the pipeline; unreadable ones are kept in `unreadable`.

        `status` and `reset` must work on a lake with a corrupted document, so one bad file never
        hides the others; a run of that table fails with the same StateCorrupt error.
        """
        out = []
        self.unreadable = {}
        for key in self.docs.list(self.pipeline):
            try:
                state, _ = self._load(key)
            except StateCorrupt as exc:
                source, _, table = key.removeprefix(f"{self.pipeline}/").removesuffix(".json").partition("/")
                self.unreadable[(source, table)] = exc
                continue
            if state is not None:
                out.append(state)
        return out

    def _update(
        self, source: str, table: str, what: str, change: Callable[[TableState | None], TableState | None]
    ) -> tuple[TableState | None, Held | None]:
        """Read, change, write conditionally; on a lost race read again (up to 5 times).

        `change` returns the next document (None: write nothing) or raises. Returns the state it saw and,
        when it wrote, what it wrote.
        """
        for _ in range(5):
            state, token = self._get(source, table)
            new = change(state)
            if new is None:
                return state, None
            new, body = self._serialize(replace(new, version=(state.version if state else 0) + 1))
            try:
                held = Held(new, self.docs.put(self.key(source, table), body, token=token))
            except PreconditionFailed:
                continue  # someone wrote in between: look again
            if new.history.head != (state.history.head if state else None):
                self._prune(new)
            return state, held
        raise StateConflict(f"{source}.{table}: could not {what}: its state keeps changing")

    def acquire(self, source: str, table: str, run_id: str, now: datetime, ttl: timedelta) -> Held:
        """Take the table's lease; raise LeaseHeld while another live run holds it."""

        def take(state: TableState | None) -> TableState:
            base = state or TableState(pipeline=self.pipeline, source=source, table=table)
            held = base.lease
            if held and held.run_id != run_id and not held.expired(now):
                if not held.holder_is_dead():
                    raise LeaseHeld(
                        f"{base.name} is locked by run {held.run_id} since {held.acquired_at} "
                        f"(host {held.host}, pid {held.pid}; the lease expires {held.expires_at})",
                        hint=f"wait for that run, or if it is dead: python -m ingestion run --force-unlock {base.name}",
                    )
                log.warning(
                    "taking over a lease whose process is gone",
                    extra={"fields": {"table": base.name, "dead_run": held.run_id, "pid": held.pid}},
                )
            lease = Lease(run_id, now.isoformat(), (now + ttl).isoformat(), socket.gethostname(), os.getpid())
            return replace(base, lease=lease, abandoned_runs=_abandon(base, held))

        _, held = self._update(source, table, "take the lease", take)
        assert held is not None
        return held

    def renew(self, held: Held, now: datetime, ttl: timedelta) -> Held:
        """Push the lease's expiry out; fails with StateConflict if the lease was taken over."""
        assert held.state.lease is not None
        lease = replace(held.state.lease, expires_at=(now + ttl).isoformat())
        return self._write(held, replace(held.state, lease=lease))

    def commit(self, held: Held, new: TableState) -> Held:
        """Write the run's new state (still leased) if nobody else wrote since `held`."""
        return self._write(held, replace(new, lease=held.state.lease))

    def forget_abandoned(self, held: Held, runs: set[str]) -> Held:
        """Drop `runs` from the abandoned runs once their files are gone (while holding the lease)."""
        left = tuple(r for r in held.state.abandoned_runs if r not in runs)
        return self._write(held, replace(held.state, abandoned_runs=left))

    def release(self, held: Held, *, abandon: bool = False) -> None:
        """Drop the lease; harmless if someone already took it over. `abandon`: the run could not remove
        its own files, so the next run of the table does."""
        state = held.state
        if abandon and state.lease is not None:
            state = replace(state, abandoned_runs=_abandon(state, state.lease))
        try:
            self._write(held, replace(state, lease=None))
        except StateConflict:
            log.warning("lease was taken over before release", extra={"fields": {"table": held.state.name}})

    def _write(self, held: Held, new: TableState) -> Held:
        new, body = self._serialize(replace(new, version=held.state.version + 1))
        try:
            token = self.docs.put(self.key(new.source, new.table), body, token=held.token)
        except PreconditionFailed:
            current = self.read(new.source, new.table)
            who = current.lease.run_id if current and current.lease else "nobody"
            raise StateConflict(
                f"{new.name}: state changed under run {held.state.lease.run_id if held.state.lease else '?'} "
                f"(now version {current.version if current else 0}, leased by {who}); nothing was committed",
                hint="another run took this table over (its lease expired or was force-unlocked); rerun",
            ) from None
        if new.history.head != held.state.history.head:
            self._prune(new)
        return Held(new, token)

    def force_unlock(self, source: str, table: str) -> Lease | None:
        """Remove a table's lease whoever holds it; returns the lease that was removed."""
        old, _ = self._update(
            source,
            table,
            "unlock",
            lambda state: (
                replace(state, lease=None, abandoned_runs=_abandon(state, state.lease))
                if state and state.lease
                else None
            ),
        )
        return old.lease if old else None

    def reset(
        self, source: str, table: str, now: datetime, landed_runs: Callable[[], set[str]] | None = None
    ) -> TableState | None:
        """Forget watermark, file ledger and columns; keep the committed run ids (they vouch for landed files).

        A corrupted document is replaced: its committed run ids are lost, so `landed_runs` (the run ids of
        the table's landed files) vouches for what is in the lake, and the next run removes nothing.
        """
        key = self.key(source, table)
        doc = self.docs.get(key)
        if doc is not None:
            try:
                self._parse(key, doc.body)
            except StateFormatTooNew:
                raise  # a newer tidemark's document is not corrupt: replacing it would lose its state
            except StateCorrupt:
                runs = tuple(sorted(landed_runs() if landed_runs else ()))
                fresh = TableState(
                    self.pipeline, source, table, committed_runs=runs, updated_at=now.isoformat()
                )
                self.docs.put(key, replace(fresh, version=1).to_json(), token=doc.token)
                log.warning("replaced a corrupted state document", extra={"fields": {"key": key}})
                return None

        def forget(state: TableState | None) -> TableState | None:
            if state is None:
                return None
            if state.lease and not state.lease.expired(now) and not state.lease.holder_is_dead():
                raise LeaseHeld(
                    f"{state.name} is locked by run {state.lease.run_id} since {state.lease.acquired_at}",
                    hint="reset it when that run has finished",
                )
            return TableState(
                self.pipeline,
                source,
                table,
                version=state.version,
                committed_runs=state.committed_runs,
                run_files=state.run_files,
                updated_at=now.isoformat(),
                primary_key=state.primary_key,
                cursor=state.cursor,
            )

        return self._update(source, table, "reset", forget)[0]


class LeaseKeeper:
    """Holds a table's lease for a run: renews it in the background every ttl/3 while the table lands.

    Commit and release go through the keeper, under the same lock as the renewals, so the token a write
    presents is always the latest this run wrote. If a renewal finds the lease taken over, renewing stops
    and the commit fails with StateConflict (fencing), as it would have anyway.
    """

    def __init__(self, store: StateStore, held: Held, ttl: timedelta, clock: Callable[[], datetime]) -> None:
        self.store, self.ttl, self.clock = store, ttl, clock
        self._held = held
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_until_stopped, daemon=True, name=f"lease-{held.state.name}"
        )
        self._thread.start()

    @property
    def held(self) -> Held:
        with self._lock:
            return self._held

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl.total_seconds() / 3):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self._held = self.store.renew(self._held, self.clock(), self.ttl)
                except StateConflict:
                    log.warning(
                        "lease was taken over; this run will not commit",
                        extra={"fields": {"table": self._held.state.name}},
                    )
                    return
                except Exception as exc:  # a flaky store: the next round tries again
                    log.warning(
                        "could not renew the lease",
                        extra={"fields": {"table": self._held.state.name, "error": str(exc)}},
                    )

    def commit(self, new: TableState) -> Held:
        with self._lock:
            self._held = self.store.commit(self._held, new)
            return self._held

    def forget_abandoned(self, runs: set[str]) -> Held:
        with self._lock:
            self._held = self.store.forget_abandoned(self._held, runs)
            return self._held

    def release(self, *, abandon: bool = False) -> None:
        self._stop.set()
        with self._lock:
            self.store.release(self._held, abandon=abandon)
        self._thread.join(timeout=5)


def _abandon(state: TableState, lease: Lease | None) -> tuple[str, ...]:
    """`state`'s abandoned runs plus the run of a lease that ends without a release (a committed one too:
    its staging may be left, though its files and rejects are the table's)."""
    runs = state.abandoned_runs
    if lease is None or lease.run_id in runs:
        return runs
    return (*runs, lease.run_id)
