"""The per-table log line of an outcome."""

from __future__ import annotations

import logging

from ingestion.observe.logs import event
from ingestion.records import TableOutcome


def log_outcome(o: TableOutcome) -> None:
    """One JSON log event per table: its status, counts, watermark and error (already redacted)."""
    level = logging.ERROR if o.needs_attention else logging.INFO
    event(
        f"table {o.ledger_status}",
        level,
        table=o.name,
        load_type=o.load_type or None,
        files=o.files,
        rows_read=o.rows_read,
        rows_landed=o.rows_landed,
        rows_deduplicated=o.rows_deduplicated,
        rows_filtered=o.rows_filtered,
        rows_rejected=o.rows_rejected,
        files_refused=o.files_refused or None,
        orphans_removed=o.orphans_removed or None,
        watermark=o.watermark.value if o.watermark else None,
        seconds=o.seconds,
        error=o.error,
        failed_step=o.failed_step,
    )
