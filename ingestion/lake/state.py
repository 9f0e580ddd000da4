"""Per-table CDC state and leases: one JSON document per table, every change a conditional write.

The document holds the watermark, committed run ids, file ledger, column types and the lease. Because
the lease lives in the same document, taking over an expired lease changes the document's token, and
the old holder's commit (conditional on the token it last wrote) fails: the token is the fencing token.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from ingestion.lake.docstore import DocStore, PreconditionFailed, open_docstore
from ingestion.errors import LeaseHeld, StateConflict

STATE_FORMAT = 2
log = logging.getLogger("tidemark")


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
    status: str = "landed"
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
        doc: dict[str, Any] = {"format": STATE_FORMAT, **asdict(self)}
        doc["committed_runs"] = list(self.committed_runs)
        return json.dumps(doc, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes | str) -> TableState:
        doc = json.loads(body)
        doc.pop("format", None)
        wm, lease = doc.pop("watermark", None), doc.pop("lease", None)
        files = {k: FileEntry(**v) for k, v in doc.pop("files", {}).items()}
        runs = tuple(doc.pop("committed_runs", ()))
        return cls(
            **doc,
            watermark=Watermark(**wm) if wm else None,
            lease=Lease(**lease) if lease else None,
            committed_runs=runs,
            files=files,
        )


@dataclass(frozen=True)
class Held:
    """A table's state as this run last wrote it, with the token its next write must present."""

    state: TableState
    token: str


class StateStore:
    """Table documents under `<lake>/_state/<pipeline>/<source>/<table>.json`, local or on S3."""

    def __init__(self, lake_root: str, pipeline: str, docs: DocStore | None = None) -> None:
        self.pipeline = pipeline
        self.docs = docs or open_docstore(f"{lake_root.rstrip('/')}/_state")

    def key(self, source: str, table: str) -> str:
        return f"{self.pipeline}/{source}/{table}.json"

    def _get(self, source: str, table: str) -> tuple[TableState | None, str | None]:
        doc = self.docs.get(self.key(source, table))
        return (TableState.from_json(doc.body), doc.token) if doc else (None, None)

    def read(self, source: str, table: str) -> TableState | None:
        """The table's current document, or None when no run ever touched it."""
        return self._get(source, table)[0]

    def tables(self) -> list[TableState]:
        """Every table document of the pipeline."""
        out = []
        for key in self.docs.list(self.pipeline):
            doc = self.docs.get(key)
            if doc:
                out.append(TableState.from_json(doc.body))
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
            new = replace(new, version=(state.version if state else 0) + 1)
            try:
                return state, Held(new, self.docs.put(self.key(source, table), new.to_json(), token=token))
            except PreconditionFailed:
                continue  # someone wrote in between: look again
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
            return replace(base, lease=lease)

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

    def release(self, held: Held) -> None:
        """Drop the lease; harmless if someone already took it over."""
        try:
            self._write(held, replace(held.state, lease=None))
        except StateConflict:
            log.warning("lease was taken over before release", extra={"fields": {"table": held.state.name}})

    def _write(self, held: Held, new: TableState) -> Held:
        new = replace(new, version=held.state.version + 1)
        try:
            token = self.docs.put(self.key(new.source, new.table), new.to_json(), token=held.token)
        except PreconditionFailed:
            current = self.read(new.source, new.table)
            who = current.lease.run_id if current and current.lease else "nobody"
            raise StateConflict(
                f"{new.name}: state changed under run {held.state.lease.run_id if held.state.lease else '?'} "
                f"(now version {current.version if current else 0}, leased by {who}); nothing was committed",
                hint="another run took this table over (its lease expired or was force-unlocked); rerun",
            ) from None
        return Held(new, token)

    def force_unlock(self, source: str, table: str) -> Lease | None:
        """Remove a table's lease whoever holds it; returns the lease that was removed."""
        old, _ = self._update(
            source,
            table,
            "unlock",
            lambda state: replace(state, lease=None) if state and state.lease else None,
        )
        return old.lease if old else None

    def reset(self, source: str, table: str, now: datetime) -> TableState | None:
        """Forget watermark, file ledger and columns; keep the committed run ids (they vouch for landed files)."""

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
                updated_at=now.isoformat(),
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

    def release(self) -> None:
        self._stop.set()
        with self._lock:
            self.store.release(self._held)
        self._thread.join(timeout=5)
