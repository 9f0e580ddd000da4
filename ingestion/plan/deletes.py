"""What delete detection reads: the newest committed live-keys snapshot plus the runs committed after it.

Pure: a function of the committed run list (in commit order), the run ids that have a snapshot in the lake
and the current run. The latest version of a key over the whole landed history equals the latest over
(the snapshot plus the files of later runs), because "latest by cursor, then `_ingested_at`, then `_run_id`" is a
maximum and the snapshot holds each key's maximum (tombstones included) as of its run. So full reloads,
re-inserted keys and late re-landed versions need no special case: the answer is the one a read of the
whole history gives.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyReads:
    """Which snapshot to trust (None: none, read every committed run), whose landed files to read, and
    which snapshots to remove (a crashed run's, or superseded by a newer committed one)."""

    snapshot: str | None
    runs: frozenset[str]
    stale: tuple[str, ...]


def plan_key_reads(committed_runs: Sequence[str], snapshot_runs: Collection[str], run_id: str) -> KeyReads:
    """Trust the snapshot of the latest-committed run that wrote one; read the runs committed after it.

    Commit order, not run-id order: a run that started earlier may commit later (it waited for the lease).
    The current run's own files are always read (it is not committed yet). A snapshot of a run that never
    committed is ignored and removed, like its landed files.
    """
    order = {r: i for i, r in enumerate(committed_runs)}
    trusted = max((r for r in snapshot_runs if r in order), key=order.__getitem__, default=None)
    after = committed_runs[order[trusted] + 1 :] if trusted is not None else committed_runs
    stale = tuple(sorted(r for r in snapshot_runs if r != trusted and r != run_id))
    return KeyReads(trusted, frozenset([*after, run_id]), stale)
