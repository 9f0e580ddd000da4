"""`python -m ingestion status`: each table's last run, watermark and lag, from the ledger and the state store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from ingestion.lake.model import TableState
from ingestion.observe.audit import LedgerRow, abandoned_rows, lag_seconds, latest
from ingestion.records import FAILING, LedgerStatus


@dataclass(frozen=True)
class TableStatus:
    """What an operator asks first about a table: did its last run work, how far behind is it, why not."""

    source: str
    table: str
    last_run_id: str | None = None
    last_status: LedgerStatus | Literal["never_run"] = "never_run"
    last_started_at: datetime | None = None
    last_ended_at: datetime | None = None
    last_seconds: float | None = None
    rows_read: int = 0
    rows_landed: int = 0
    rows_rejected: int = 0
    files_refused: int = 0
    watermark: str | None = None
    lag_seconds: float | None = None
    leased_by: str | None = None
    last_error: str | None = None
    last_error_run_id: str | None = None
    last_error_at: datetime | None = None
    state_error: str | None = None  # the table's state document cannot be read

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"

    @property
    def failing(self) -> bool:
        """Does the table need a human: its last run failed, was locked, refused a file, or was abandoned?"""
        return self.last_status in FAILING or self.state_error is not None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["name"], doc["failing"] = self.name, self.failing
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in doc.items()}


def table_statuses(
    tables: Sequence[tuple[str, str]],
    rows: Iterable[LedgerRow],
    states: dict[tuple[str, str], TableState],
    now: datetime,
    ttl: timedelta | None = None,
    unreadable: dict[tuple[str, str], str] | None = None,
) -> list[TableStatus]:
    """One status per table: its latest ledger row, its most recent error, and its state's watermark.

    The watermark comes from the state store (what the next run builds on) and its lag is measured at `now`.
    With the lease `ttl`, a "running" row of a run that is gone shows as `abandoned` at once (the next run
    writes that row; `status` need not wait for it).
    """
    rows = list(rows)
    if ttl is not None:
        rows += abandoned_rows(rows, states, now, ttl, current_run="")
    by_table: dict[tuple[str, str], list[LedgerRow]] = {}
    for r in latest(rows):  # sorted by started_at
        by_table.setdefault((r.source, r.table), []).append(r)
    out = []
    for source, table in tables:
        history = by_table.get((source, table), [])
        state = states.get((source, table))
        wm = state.watermark if state else None
        last = history[-1] if history else None
        err = next((r for r in reversed(history) if r.error_message or r.error_class), None)
        status = TableStatus(
            source=source,
            table=table,
            watermark=wm.value if wm else None,
            lag_seconds=lag_seconds(wm, now),
            leased_by=state.lease.run_id if state and state.lease else None,
            state_error=(unreadable or {}).get((source, table)),
        )
        if last is not None:
            status = replace(
                status,
                last_run_id=last.run_id,
                last_status=last.status,
                last_started_at=last.started_at,
                last_ended_at=last.ended_at,
                last_seconds=last.duration_seconds,
                rows_read=last.rows_read,
                rows_landed=last.rows_landed,
                rows_rejected=last.rows_rejected,
                files_refused=last.files_refused,
            )
        if err is not None:
            message = f"{err.error_class}: {err.error_message}" if err.error_class else err.error_message
            status = replace(
                status,
                last_error=message,
                last_error_run_id=err.run_id,
                last_error_at=err.ended_at or err.recorded_at,
            )
        out.append(status)
    return out


def human_duration(seconds: float | None) -> str:
    """`93784` → `1d 2h`, `4000` → `1h 6m`, `75` → `1m 15s`; None → empty."""
    if seconds is None:
        return ""
    s = int(abs(seconds))
    sign = "-" if seconds < 0 else ""
    days, rem = divmod(s, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"
