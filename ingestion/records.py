"""What a run reports: each table's outcome and the run's report, with their status vocabulary.

The protocol (`ingestion.run.protocol`) fills these in; the ledger, the catalog registration, the CLI
and the Glue entry read them. Plain data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ingestion.config import Effective
from ingestion.lake.model import Watermark

# How one table's run ended. `refused` is never an outcome's own status: the ledger and `status` show a
# landed table that refused a file as `refused` (it landed what it could; a human must look at the rest).
OutcomeStatus = Literal["landed", "up_to_date", "planned", "locked", "failed"]
LedgerStatus = Literal[
    "running", "landed", "up_to_date", "planned", "locked", "failed", "refused", "abandoned"
]
# Statuses that need a human: `status` exits non-zero and the report counts them as failed runs.
FAILING: tuple[LedgerStatus, ...] = ("failed", "locked", "refused", "abandoned")
# The steps of the protocol, in order; a failed table records the one it failed in.
Step = Literal[
    "look", "lease", "orphans", "retype", "plan", "extract", "quarantine", "commit", "after_commit", "release"
]


@dataclass
class TableOutcome:
    """What happened to one table in a run."""

    source: str
    table: str
    status: OutcomeStatus
    load_type: Effective | Literal[""] = ""
    files: int = 0
    rows_read: int = 0
    rows_landed: int = 0
    rows_deduplicated: int = 0
    rows_filtered: int = 0
    rows_rejected: int = 0
    files_refused: dict[str, str] = field(default_factory=dict)  # file → why it was not landed
    refused_to: str = "moved to unprocessed/"  # what happens to a refused file (archiving off: left)
    orphans_removed: int = 0
    watermark: Watermark | None = None
    watermark_before: Watermark | None = None
    started_at: datetime | None = None
    seconds: float = 0.0
    error: str | None = None
    error_class: str | None = None
    failed_step: Step | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. columns gone from the source
    # The Parquet files the committed run landed (full lake paths), as its commit recorded them; None when
    # nothing was committed. Not a ledger column: the catalog registration reads it.
    landed_files: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"

    @property
    def ledger_status(self) -> LedgerStatus:
        """The status the ledger and `status` show: a landed table that refused files is `refused`."""
        return "refused" if self.status == "landed" and self.files_refused else self.status

    @property
    def needs_attention(self) -> bool:
        return self.ledger_status in FAILING


@dataclass
class RunReport:
    """What a run did, table by table; `ok` is false when any table failed, was locked or refused a file."""

    run_id: str
    engine: str
    lake_root: str
    tables: list[TableOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[TableOutcome]:
        """Tables that failed or were locked, and tables that refused a file (it needs a human)."""
        return [t for t in self.tables if t.needs_attention]

    @property
    def locked_only(self) -> bool:
        """Every table that needs attention was only locked by another run (exit code 3, not 1)."""
        return bool(self.failed) and all(t.status == "locked" for t in self.failed)
