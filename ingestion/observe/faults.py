"""Named checkpoints on a run's path, where tests inject crashes, delays and errors.

`TIDEMARK_FAULTS="batch_written@customers=kill,lease_acquired=sleep:1.5"` makes the process SIGKILL
itself after the customers batch is written, and sleep 1.5 s after taking each lease. Actions: `kill`,
`sleep:<seconds>`, `raise`. Unset (always, outside tests) a checkpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time

from ingestion.errors import TidemarkError

ENV = "TIDEMARK_FAULTS"
# The checkpoints, in the order a table passes them.
POINTS = (
    "run_started",
    "lease_acquired",
    "orphans_removed",
    "rows_landed",  # PostgreSQL: the rows are landed, the key set for delete detection not read yet
    "batch_written",
    "history_written",  # a history part is written, the state document that names it not yet
    "history_pruning",  # the state is committed; before each unreferenced history part is deleted
    "state_committed",
    "partition_retyping",  # a same-day widening: before each earlier file of the partition is replaced
    "files_archived",
    "lease_released",
    "run_finished",
)


class InjectedFault(TidemarkError):
    """Raised at a checkpoint on request of TIDEMARK_FAULTS (tests only)."""


def checkpoint(point: str, table: str | None = None) -> None:
    """Act on the fault configured for `point` (optionally `point@table`), if any."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        where, _, action = item.strip().partition("=")
        name, _, only = where.partition("@")
        if name != point or (only and only != table):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action.startswith("sleep:"):
            time.sleep(float(action.removeprefix("sleep:")))
        elif action == "raise":
            raise InjectedFault(f"fault injected at {point}" + (f" for {table}" if table else ""))
