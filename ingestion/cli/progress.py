"""Per-table progress bars for `run` on a terminal (rich); off a terminal the JSON log says it all."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

# The steps a table passes (pipeline checkpoints), and what the bar says after each.
STEPS = {
    "started": "planning",
    "lease_acquired": "leased",
    "orphans_removed": "landing",
    "batch_written": "committing",
    "state_committed": "committed",
    "lease_released": "releasing",
}
DONE_STYLE = {"landed": "green", "up_to_date": "cyan", "failed": "red", "locked": "red", "refused": "red"}


class TableProgress:
    """One bar per table, advanced by `step()` from the pipeline's worker threads."""

    def __init__(self, tables: Sequence[str], console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<32}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[step]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {
            t: self.progress.add_task(t, total=len(STEPS) + 1, step="queued", start=False) for t in tables
        }
        self.lock = threading.Lock()

    def step(self, table: str, step: str) -> None:
        """Move `table`'s bar to `step` (a checkpoint name), or finish it with `done:<status>`."""
        with self.lock:
            task = self.tasks.get(table)
            if task is None:  # a table discovered during the run (PostgreSQL `tables: "*"`)
                task = self.tasks[table] = self.progress.add_task(
                    table, total=len(STEPS) + 1, step="queued", start=False
                )
            if step.startswith("done:"):
                status = step.removeprefix("done:")
                style = DONE_STYLE.get(status, "yellow")
                self.progress.update(task, completed=len(STEPS) + 1, step=f"[{style}]{status}[/]")
                self.progress.stop_task(task)
                return
            if step == "started":
                self.progress.start_task(task)
            done = list(STEPS).index(step) + 1 if step in STEPS else 0
            self.progress.update(task, completed=done, step=STEPS.get(step, step))

    def __enter__(self) -> TableProgress:
        self.progress.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()
