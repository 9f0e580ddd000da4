"""Delete detection's lake side, shared by both engines: which files to read, where tombstones and snapshots go.

A run of a `detect_deletes` table reads the newest committed live-keys snapshot (`<lake>/_keys/<source>/
<table>/<run_id>/`, see `lake.layout.keys_dir`) plus the landed files of the runs committed after it and its
own, instead of the whole landed history (`plan.deletes` decides which). It lands the tombstones as
`part-<run_id>-900000….parquet` in its landing partition, and, when it lands anything (so it will commit),
writes the next snapshot. Everything goes through the lake's file operations, so a local and an S3 lake
work alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ingestion.contract import INGESTED_AT, OP, PARTITION_COLUMN, RUN_ID
from ingestion.engines.base import TombstoneBatch
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import key_snapshots, keys_dir, partition_value, run_id_of
from ingestion.observe.logs import event
from ingestion.plan.deletes import plan_key_reads
from ingestion.plan.jdbc import JdbcTable

# Tombstone files take numbers far above an engine's data files of the same run.
TOMBSTONE_FILE_NUMBER = 900000


@dataclass(frozen=True)
class KeyInputs:
    """The files a run's delete detection reads, and where its outputs go."""

    snapshot: list[str]  # the trusted snapshot's files (empty: none, `landed` is the whole history)
    landed: list[str]  # landed files of the runs committed after the snapshot, and of this run
    own_files: bool  # this run landed data files (so it commits whatever delete detection finds)
    snapshot_dir: str  # where this run's snapshot goes

    @property
    def files(self) -> list[str]:
        return [*self.snapshot, *self.landed]


def key_inputs(batch: TombstoneBatch) -> KeyInputs:
    """Plan the reads from the lake listing and committed runs; remove stale snapshots (under the lease)."""
    table = batch.table
    snapshots = key_snapshots(batch.lake_root, table.source, table.name)
    reads = plan_key_reads(batch.committed_runs, snapshots, batch.run_id)
    if reads.snapshot and not _fits(snapshots[reads.snapshot][0], table):
        # Written for another key or cursor (the config changed): every snapshot is useless, so read the
        # whole history once (this run writes a fitting one).
        reads = replace(
            plan_key_reads(batch.committed_runs, (), batch.run_id),
            stale=tuple(sorted(set(snapshots) - {batch.run_id})),
        )
    base = keys_dir(batch.lake_root, table.source, table.name)
    for run in reads.stale:
        lakefs.remove_tree(lakefs.join(base, run))
    landed = [
        f
        for f in lakefs.glob(batch.target, f"{PARTITION_COLUMN}=*/part-*.parquet")
        if run_id_of(Path(f)) in reads.runs
    ]
    event(
        "delete detection reads",
        table=f"{table.source}.{table.name}",
        snapshot_run=reads.snapshot,
        landed_files=len(landed),
        stale_snapshots_removed=len(reads.stale) or None,
    )
    return KeyInputs(
        snapshot=snapshots.get(reads.snapshot, []) if reads.snapshot else [],
        landed=landed,
        own_files=any(run_id_of(Path(f)) == batch.run_id for f in landed),
        snapshot_dir=lakefs.join(base, batch.run_id),
    )


def _fits(snapshot_file: str, table: JdbcTable) -> bool:
    """Does a snapshot hold the table's current key and cursor columns (one footer read)?"""
    return set(snapshot_columns(table)) <= set(lakefs.read_schema(snapshot_file).names)


def snapshot_columns(table: JdbcTable) -> list[str]:
    """A snapshot's columns, in order: the key, the cursor, then `_op`, `_ingested_at`, `_run_id`."""
    cursor = [table.cursor] if table.cursor and table.cursor not in table.primary_key else []
    return [*table.primary_key, *cursor, OP, INGESTED_AT, RUN_ID]


def tombstone_path(batch: TombstoneBatch, n: int = 0) -> str:
    """`<target>/_ingest_date=<run date>/part-<run_id>-<900000+n>.parquet`."""
    return lakefs.join(
        batch.target,
        f"{PARTITION_COLUMN}={partition_value(batch.ingested_at)}",
        f"part-{batch.run_id}-{TOMBSTONE_FILE_NUMBER + n}.parquet",
    )
