"""The ingestion ledger: one Parquet row per table per run under `<lake>/_audit/ingestion_runs/`.

Files are append-only and never rewritten: `run_date=<yyyy-mm-dd>/<run_id>-<n>.parquet`. A run writes
a "running" row for each selected table when it starts and a closing row when the table ends; the next
run closes rows of runs that died (SIGKILL, OOM, lost machine) with an "abandoned" row. So a run and
table may own several rows: **the latest row (by `recorded_at`) per run_id + source + table wins**;
`latest()` here and the dbt staging model apply that rule.

Everything written passes through `redact()`: error messages may quote connection strings or keys.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.config import Effective
from ingestion.lake.model import TableState, Watermark
from ingestion.lake.state import StateStore
from ingestion.observe.logs import event
from ingestion.records import LedgerStatus, TableOutcome
from ingestion.redact import redact

log = logging.getLogger("tidemark")

LEDGER_DIR = "_audit/ingestion_runs"
# Statuses that end a table's run; "running" is the only open one (vocabulary: ingestion.records).
OPEN: LedgerStatus = "running"
ABANDONED: LedgerStatus = "abandoned"
# How far back a run looks for rows of dead runs to close: any run since then would have closed them.
ABANDONED_SCAN_DAYS = 7
# Runs in progress in this process: a "running" row with our own pid is live only if its run is here.
_ACTIVE_RUNS: set[str] = set()


@dataclass(frozen=True)
class LedgerRow:
    """One table in one run, as the ledger stores it (all times UTC)."""

    run_id: str
    pipeline: str
    env: str
    engine: str
    source: str
    table: str
    status: LedgerStatus  # running | landed | up_to_date | locked | failed | refused | abandoned
    started_at: datetime
    recorded_at: datetime
    ended_at: datetime | None = None
    load_type: Effective | None = None
    rows_read: int = 0
    rows_landed: int = 0
    rows_rejected: int = 0
    rows_deduplicated: int = 0
    rows_filtered: int = 0
    files: int = 0
    watermark_before: str | None = None
    watermark_after: str | None = None
    watermark_type: str | None = None
    lag_seconds: float | None = None
    duration_seconds: float | None = None
    error_class: str | None = None
    error_message: str | None = None
    host: str = ""
    pid: int = 0
    files_refused: int = 0  # files moved to unprocessed/ (status `refused`)
    failed_step: str | None = None  # the protocol step a failed table stopped in
    warnings: str | None = None  # what the run noticed but did not fail for (columns gone from the source)


_TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("pipeline", pa.string()),
        ("env", pa.string()),
        ("engine", pa.string()),
        ("source_name", pa.string()),
        ("table_name", pa.string()),
        ("status", pa.string()),
        ("started_at", _TS),
        ("recorded_at", _TS),
        ("ended_at", _TS),
        ("load_type", pa.string()),
        ("rows_read", pa.int64()),
        ("rows_landed", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("rows_deduplicated", pa.int64()),
        ("rows_filtered", pa.int64()),
        ("files", pa.int64()),
        ("watermark_before", pa.string()),
        ("watermark_after", pa.string()),
        ("watermark_type", pa.string()),
        ("lag_seconds", pa.float64()),
        ("duration_seconds", pa.float64()),
        ("error_class", pa.string()),
        ("error_message", pa.string()),
        ("host", pa.string()),
        ("pid", pa.int64()),
        ("files_refused", pa.int64()),
        ("failed_step", pa.string()),
        ("warnings", pa.string()),
    ]
)
# Parquet column names differ from the fields only where SQL would need quotes (`table` is reserved).
_COLUMN = {"source": "source_name", "table": "table_name"}
_FIELD = {v: k for k, v in _COLUMN.items()}
assert SCHEMA.names == [_COLUMN.get(f.name, f.name) for f in fields(LedgerRow)]


# ---------------------------------------------------------------- pure functions


def lag_seconds(watermark: Watermark | None, now: datetime) -> float | None:
    """Seconds from the watermark to `now` when the cursor is a time (timestamp or date), else None."""
    if watermark is None:
        return None
    try:
        if watermark.type == "date":
            at = datetime.combine(date.fromisoformat(watermark.value[:10]), datetime.min.time(), timezone.utc)
        elif watermark.type.startswith("timestamp"):
            at = datetime.fromisoformat(watermark.value)
            at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        else:
            return None
    except ValueError:
        return None
    return round((now - at).total_seconds(), 3)


def running_row(
    run_id: str, pipeline: str, env: str, engine: str, source: str, table: str, started_at: datetime
) -> LedgerRow:
    """The row a run writes for a table when it starts: closed later by the table's outcome (or as abandoned)."""
    return LedgerRow(
        run_id=run_id,
        pipeline=pipeline,
        env=env,
        engine=engine,
        source=source,
        table=table,
        status=OPEN,
        started_at=started_at,
        recorded_at=started_at,
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def outcome_row(opened: LedgerRow, outcome: TableOutcome, now: datetime) -> LedgerRow:
    """The closing row for a table's outcome; errors are redacted, lag is measured at `now`."""
    before = outcome.watermark_before
    after = outcome.watermark
    error_class = outcome.error_class
    message = outcome.error
    if message and error_class and message.startswith(f"{error_class}: "):
        message = message[len(error_class) + 2 :]  # the class has its own column
    if outcome.files_refused and not message:
        error_class = "FilesRefused"
        message = f"{len(outcome.files_refused)} file(s) refused, {outcome.refused_to}: " + "; ".join(
            f"{f}: {why}" for f, why in sorted(outcome.files_refused.items())
        )
    started = outcome.started_at or now - timedelta(seconds=outcome.seconds)
    return replace(
        opened,
        status=outcome.ledger_status,
        started_at=started,
        ended_at=now,
        recorded_at=max(now, opened.recorded_at),
        load_type=outcome.load_type or None,
        rows_read=outcome.rows_read,
        rows_landed=outcome.rows_landed,
        rows_rejected=outcome.rows_rejected,
        rows_deduplicated=outcome.rows_deduplicated,
        rows_filtered=outcome.rows_filtered,
        files=outcome.files,
        watermark_before=before.value if before else None,
        watermark_after=after.value if after else None,
        watermark_type=wm.type if (wm := after or before) else None,
        lag_seconds=lag_seconds(after, now),
        duration_seconds=outcome.seconds,
        error_class=error_class or ("LeaseHeld" if outcome.status == "locked" else None),
        error_message=redact(message),
        files_refused=len(outcome.files_refused),
        failed_step=outcome.failed_step,
        warnings="; ".join(outcome.warnings) or None,
    )


def latest(rows: Iterable[LedgerRow]) -> list[LedgerRow]:
    """The winning row per run_id + source + table (latest `recorded_at`; a closing row beats "running")."""
    best: dict[tuple[str, str, str], LedgerRow] = {}
    for r in rows:
        key = (r.run_id, r.source, r.table)
        cur = best.get(key)
        if cur is None or (r.recorded_at, r.status != OPEN) > (cur.recorded_at, cur.status != OPEN):
            best[key] = r
    return sorted(best.values(), key=lambda r: (r.started_at, r.source, r.table))


def is_live(row: LedgerRow, states: dict[tuple[str, str], TableState], now: datetime, ttl: timedelta) -> bool:
    """Could the run that wrote this "running" row still be working?

    On this host the process id decides. Elsewhere, the run is live while it holds the table's lease
    (leases expire), or, before it took one, while the row is younger than the lease TTL.
    """
    if row.host == socket.gethostname():
        if row.pid == os.getpid():
            return row.run_id in _ACTIVE_RUNS
        try:
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = states.get((row.source, row.table))
    lease = state.lease if state else None
    if lease and lease.run_id == row.run_id and not lease.expired(now):
        return True
    return now - row.started_at < ttl


def abandoned_rows(
    rows: Iterable[LedgerRow],
    states: dict[tuple[str, str], TableState],
    now: datetime,
    ttl: timedelta,
    *,
    current_run: str,
) -> list[LedgerRow]:
    """Closing "abandoned" rows for tables whose latest row is still "running" in a run that is gone."""
    out = []
    for r in latest(rows):
        if r.status != OPEN or r.run_id == current_run or is_live(r, states, now, ttl):
            continue
        state = states.get((r.source, r.table))
        out.append(
            replace(
                r,
                status=ABANDONED,
                recorded_at=max(now, r.recorded_at),
                ended_at=None,  # unknown: the run died without saying when
                lag_seconds=lag_seconds(state.watermark if state else None, now),
                watermark_after=state.watermark.value if state and state.watermark else None,
                error_class="RunAbandoned",
                error_message=f"run {r.run_id} (host {r.host}, pid {r.pid}) ended without closing this "
                f"table; closed by run {current_run}",
            )
        )
    return out


def to_table(rows: Sequence[LedgerRow]) -> pa.Table:
    """Ledger rows as an Arrow table in the ledger's schema."""
    cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for r in rows:
        for k, v in asdict(r).items():
            cols[_COLUMN.get(k, k)].append(v)
    return pa.table(cols, schema=SCHEMA)


def from_table(table: pa.Table) -> list[LedgerRow]:
    """Ledger rows out of an Arrow table (columns a newer ledger added are ignored)."""
    names = [n for n in SCHEMA.names if n in table.column_names]
    return [LedgerRow(**{_FIELD.get(k, k): d[k] for k in names}) for d in table.select(names).to_pylist()]


# ---------------------------------------------------------------- storage (local folder or S3)


class Ledger:
    """Append-only Parquet files of ledger rows under `<lake>/_audit/ingestion_runs/`, local or on S3."""

    def __init__(self, lake_root: str) -> None:
        self.location = f"{lake_root.rstrip('/')}/{LEDGER_DIR}"
        self._s3 = lake_root.startswith("s3://")
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}
        if self._s3:
            from ingestion.lake.s3 import s3_client

            parsed = urlparse(self.location)
            self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
            self.client = s3_client()

    def _next_name(self, run_id: str, day: str) -> str:
        with self._lock:  # tables finish in parallel threads
            n = self._seq.get(run_id, 0)
            self._seq[run_id] = n + 1
        return f"run_date={day}/{run_id}-{n}.parquet"

    def append(self, writer_run_id: str, rows: Sequence[LedgerRow]) -> str | None:
        """Write `rows` as one new Parquet file named by the writing run; returns its path or URL."""
        if not rows:
            return None
        buf = io.BytesIO()
        pq.write_table(to_table(rows), buf, compression="zstd")
        name = self._next_name(writer_run_id, rows[0].recorded_at.strftime("%Y-%m-%d"))
        if self._s3:
            from ingestion.lake.s3 import s3_retry

            key = f"{self.prefix}/{name}"
            s3_retry(self.client.put_object)(Bucket=self.bucket, Key=key, Body=buf.getvalue())
            return f"s3://{self.bucket}/{key}"
        path = Path(self.location) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")  # dbt globs *.parquet: never let it see half a file
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
        return str(path)

    def read(self, since: date | None = None) -> list[LedgerRow]:
        """Every row written (on or after `since`, by the `run_date=` partition); not collapsed: see `latest()`."""
        rows: list[LedgerRow] = []
        first = f"run_date={since.isoformat()}" if since else ""
        if self._s3:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/"
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    partition = obj["Key"][len(self.prefix) + 1 :].split("/", 1)[0]
                    if obj["Key"].endswith(".parquet") and partition >= first:
                        body = self.client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                        rows += from_table(pq.read_table(io.BytesIO(body)))
            return rows
        for path in sorted(Path(self.location).glob("run_date=*/*.parquet")):
            if path.parent.name >= first:
                rows += from_table(pq.read_table(path, partitioning=None))
        return rows


# ---------------------------------------------------------------- a run's ledger


class RunLedger:
    """What one run writes: opening rows, abandoned rows of dead runs, and each table's closing row.

    The ledger is an observer: a failure to write it is logged as an error and never fails a table.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        run_id: str,
        pipeline: str,
        env: str,
        engine: str,
        started_at: datetime,
    ) -> None:
        self.ledger, self.run_id = ledger, run_id
        self.pipeline, self.env, self.engine, self.started_at = pipeline, env, engine, started_at
        self._open: dict[tuple[str, str], LedgerRow] = {}

    def start(self, tables: Sequence[tuple[str, str]], store: StateStore, ttl: timedelta) -> None:
        """Close rows of dead runs as abandoned, then write a "running" row per selected table."""
        _ACTIVE_RUNS.add(self.run_id)
        try:
            self._close_abandoned(store, ttl)
        except Exception as exc:  # a corrupt old file must not stop today's run
            event("could not close abandoned ledger rows", logging.ERROR, error=redact(str(exc)))
        opened = [
            running_row(self.run_id, self.pipeline, self.env, self.engine, s, t, self.started_at)
            for s, t in tables
        ]
        self._open = {(r.source, r.table): r for r in opened}
        self._write(opened)

    def _close_abandoned(self, store: StateStore, ttl: timedelta) -> None:
        now = datetime.now(timezone.utc)
        since = (now - timedelta(days=ABANDONED_SCAN_DAYS)).date()
        rows = [r for r in self.ledger.read(since) if r.pipeline == self.pipeline]
        if not any(r.status == OPEN for r in rows):
            return
        states = {(s.source, s.table): s for s in store.tables()}
        closed = abandoned_rows(rows, states, now, ttl, current_run=self.run_id)
        if closed:
            event(
                "closed ledger rows of runs that died as abandoned",
                logging.WARNING,
                runs=sorted({r.run_id for r in closed}),
                tables=len(closed),
            )
            self._write(closed)

    def record(self, outcome: TableOutcome) -> None:
        """Write the closing row of a table (landed, up to date, locked or failed)."""
        opened = self._open.get((outcome.source, outcome.table)) or running_row(
            self.run_id, self.pipeline, self.env, self.engine, outcome.source, outcome.table, self.started_at
        )
        self._write([outcome_row(opened, outcome, datetime.now(timezone.utc))])

    def finish(self) -> None:
        """Mark the run as over in this process (its rows are all closed, or it failed as a whole)."""
        _ACTIVE_RUNS.discard(self.run_id)

    def _write(self, rows: Sequence[LedgerRow]) -> None:
        try:
            self.ledger.append(self.run_id, rows)
        except Exception as exc:
            event(
                "could not write the audit ledger",
                logging.ERROR,
                location=self.ledger.location,
                error=redact(f"{type(exc).__name__}: {exc}"),
            )
