"""Rejected rows on disk: `<lake>/_rejected/<source>/<table>/run_id=<run_id>/part-0.parquet`.

Written when a run lands, removed with the landed files of a run that never committed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from ingestion.lake import fs as lakefs


class RejectedRow(Protocol):
    """What the file keeps of a rejected record (`ingestion.plan.rejects.Reject`)."""

    @property
    def file(self) -> str: ...
    @property
    def record(self) -> int: ...
    @property
    def code(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def column(self) -> str | None: ...
    @property
    def raw(self) -> str | None: ...
    @property
    def line(self) -> int | None: ...
_RAW_LIMIT = 10_000  # characters of a rejected record kept in `_raw`


def rejected_dir(lake_root: str, source: str, table: str, run_id: str) -> str:
    """`<lake>/_rejected/<source>/<table>/run_id=<run_id>`."""
    return lakefs.join(lake_root, "_rejected", source, table, f"run_id={run_id}")


def write_rejects(
    rejects: Iterable[RejectedRow], lake_root: str, source: str, table: str, run_id: str, at: datetime
) -> str | None:
    """Write rejected rows as one Parquet file (written then renamed); returns its path, None if none."""
    import pyarrow as pa

    rows = sorted(rejects, key=lambda r: (r.file, r.line or 0, r.record))
    if not rows:
        return None
    table_ = pa.table(
        {
            "_source_file": pa.array([r.file for r in rows], pa.string()),
            "_line": pa.array([r.line for r in rows], pa.int64()),
            "_record": pa.array([r.record for r in rows], pa.int64()),
            "_reason_code": pa.array([r.code for r in rows], pa.string()),
            "_reason": pa.array([r.reason for r in rows], pa.string()),
            "_column": pa.array([r.column for r in rows], pa.string()),
            "_raw": pa.array([(r.raw or "")[:_RAW_LIMIT] for r in rows], pa.string()),
            "_run_id": pa.array([run_id] * len(rows), pa.string()),
            "_rejected_at": pa.array([at] * len(rows), pa.timestamp("us", tz="UTC")),
        }
    )
    path = lakefs.join(rejected_dir(lake_root, source, table, run_id), "part-0.parquet")
    lakefs.write_parquet(table_, path)
    return path


def remove_rejects(
    lake_root: str, source: str, table: str, *, keep: set[str] | None = None, only: set[str] | None = None
) -> int:
    """Remove rejected-row folders of runs that never committed (all but `keep`, or just `only`).

    Only safe while holding the table's lease, like removing landed orphans.
    """
    root = lakefs.join(lake_root, "_rejected", source, table)
    if only is not None and keep is None:  # known runs: no listing of the table's folder
        for run_id in only:
            lakefs.remove_tree(lakefs.join(root, f"run_id={run_id}"))
        return len(only)
    removed = 0
    for d in lakefs.children(lakefs.join(lake_root, "_rejected", source, table), "run_id=*"):
        run_id = d.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1].removeprefix("run_id=")
        if (only is not None and run_id in only) or (keep is not None and run_id not in keep):
            lakefs.remove_tree(d)
            removed += 1
    return removed
