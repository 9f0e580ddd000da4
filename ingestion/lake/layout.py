"""The lake's landing layout: run ids, table folders, run-id-named Parquet files."""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from ingestion.lake import fs as lakefs
from ingestion.contract import PARTITION_COLUMN


def new_run_id(now: datetime) -> str:
    """A run id that sorts by time: `20261122T103700123456Z-1a2b3c` (UTC, microseconds, random suffix)."""
    return f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


def table_dir(lake_root: str, source: str, table: str) -> str:
    """`<lake>/landing/<source>/<table>`: the folder dbt reads the table from (local or `s3://`)."""
    return lakefs.join(lake_root, "landing", source, table)


def keys_dir(lake_root: str, source: str, table: str) -> str:
    """`<lake>/_keys/<source>/<table>`: the table's live-keys snapshots, one folder per writing run.

    `<run_id>/*.parquet` holds, per key ever landed, its latest version's key, cursor and metadata columns
    as of that run (tombstones included). Outside `landing/`: dbt never reads it. Only a committed run's
    snapshot counts; delete detection removes the others.
    """
    return lakefs.join(lake_root, "_keys", source, table)


def key_snapshots(lake_root: str, source: str, table: str) -> dict[str, list[str]]:
    """The Parquet files of each live-keys snapshot in the lake, by the run id that wrote it."""
    out: dict[str, list[str]] = {}
    for f in lakefs.glob(keys_dir(lake_root, source, table), "*/*.parquet"):
        out.setdefault(Path(f).parent.name, []).append(f)
    return out


def remove_key_snapshot(lake_root: str, source: str, table: str, run_id: str) -> None:
    """Delete a run's live-keys snapshot (a run that failed before its commit); none is fine."""
    lakefs.remove_tree(lakefs.join(keys_dir(lake_root, source, table), run_id))


def scratch_dir(lake_root: str, run_id: str) -> str:
    """`<lake>/_tmp/<run_id>`: where engines stage files outside `landing/`; removed when the run ends.

    Always a local folder: for an S3 lake it lives under `lakefs.scratch_root` (a temp folder).
    """
    return os.path.join(lakefs.scratch_root(lake_root), "_tmp", run_id)


def lake_scratch(lake_root: str, run_id: str) -> str:
    """`<lake>/_tmp/<run_id>` on the lake's own filesystem (an `s3://` prefix for an S3 lake): where the
    Spark engine's executors stage files, so no step needs the driver's disk. Same as `scratch_dir` for a
    local lake."""
    return lakefs.join(lake_root, "_tmp", run_id)


def partition_value(ingested_at: datetime) -> str:
    """The `_ingest_date=` partition a run writes to: the run's UTC date."""
    return ingested_at.strftime("%Y-%m-%d")


def run_files(target: str, run_id: str) -> list[Path]:
    """The Parquet files a run wrote under a table folder."""
    return sorted(Path(target).glob(f"{PARTITION_COLUMN}=*/part-{run_id}-*.parquet"))


def run_id_of(path: Path) -> str | None:
    """The run id in a landed file's name (`part-<run_id>-<n>.parquet`)."""
    stem = path.name.removeprefix("part-").removesuffix(".parquet")
    run_id, sep, n = stem.rpartition("-")
    return run_id if sep and n.isdigit() and path.name.startswith("part-") else None


def landed_files(target: str, run_id: str, partition: str, expect_files: bool) -> list[str]:
    """The Parquet files a run landed: one listing of its own partition folder (a run writes one).

    Only when that folder holds none of them although the run landed rows is the whole table folder
    looked through (a run whose files went to another partition).
    """
    folder = lakefs.join(target, f"{PARTITION_COLUMN}={partition}")
    files = lakefs.glob(folder, f"part-{run_id}-*.parquet")
    if not files and expect_files:
        files = lakefs.glob(target, f"{PARTITION_COLUMN}=*/part-{run_id}-*.parquet")
    return files


def write_empty_landing(target: str, run_id: str, partition: str) -> str:
    """Write a zero-row file of the landing metadata columns for a run that landed no rows (returns its path).

    A table whose files held no rows so far has nothing in `landing/`, and a reader of the table folder
    (dbt's `read_parquet`, a catalog table) finds no files and fails. This file makes the table readable
    and empty. It carries no data column: the lake has no type for a column until values arrive.
    """
    import pyarrow as pa

    from ingestion.contract import INGESTED_AT, OP, RUN_ID, SOURCE_FILE

    schema = pa.schema(
        [
            (RUN_ID, pa.string()),
            (INGESTED_AT, pa.timestamp("us", tz="UTC")),
            (SOURCE_FILE, pa.string()),
            (OP, pa.string()),
        ]
    )
    path = lakefs.join(target, f"{PARTITION_COLUMN}={partition}", f"part-{run_id}-0.parquet")
    lakefs.write_parquet(schema.empty_table(), path)
    return path


def relative_to(target: str, path: str) -> str:
    """A landed file's path relative to its table folder (`_ingest_date=…/part-….parquet`)."""
    if not lakefs.is_remote(target):
        return Path(os.path.relpath(path, target)).as_posix()
    base = target.rstrip("/") + "/"
    if not path.startswith(base):
        raise ValueError(f"{path} is not under {target}")
    return path[len(base) :]


def landed_run_ids(target: str) -> set[str]:
    """The run ids of every landed file under a table folder."""
    found = (run_id_of(Path(f)) for f in lakefs.glob(target, f"{PARTITION_COLUMN}=*/part-*.parquet"))
    return {r for r in found if r is not None}




def remove_abandoned_files(target: str, run_id: str) -> list[str]:
    """Delete the landed files of a run that never committed, listing only the partition folders it could
    have written (its run id's UTC date and the next: a run's date is its start, a moment after its id)."""
    try:
        start = datetime.strptime(run_id[:8], "%Y%m%d")
        found = [
            f
            for day in (start, start + timedelta(days=1))
            for f in lakefs.glob(
                lakefs.join(target, f"{PARTITION_COLUMN}={day:%Y-%m-%d}"), f"part-{run_id}-*.parquet"
            )
        ]
    except ValueError:  # a run id that is not tidemark's own (given by a caller): look everywhere
        found = lakefs.glob(target, f"{PARTITION_COLUMN}=*/part-{run_id}-*.parquet")
    for f in found:
        lakefs.remove(f)
    return found


def remove_run_scratch(lake_root: str, source: str, table: str, run_id: str) -> None:
    """Remove one run's scratch folders for a table: the local ones and, on an S3 lake, its `_tmp/`."""
    local = Path(scratch_dir(lake_root, run_id))
    for d in (local / source / table, local / "_text" / source / table, local / "_inbox" / source / table):
        shutil.rmtree(d, ignore_errors=True)
    if lakefs.is_remote(lake_root):
        run_dir = lakefs.join(lake_root, "_tmp", run_id)
        for sub in (lakefs.join(run_dir, source, table), lakefs.join(run_dir, "_text", source, table)):
            lakefs.remove_tree(sub)


def remove_stale_scratch(lake_root: str, source: str, table: str, run_id: str) -> None:
    """Remove other runs' local scratch folders for a table (only while holding its lease). A dead run's
    `<lake>/_tmp/` on S3 is removed by name (`remove_run_scratch`), never found by listing."""
    for d in Path(lakefs.scratch_root(lake_root), "_tmp").glob(f"*/{source}/{table}"):
        if d.parent.parent.name != run_id:
            shutil.rmtree(d, ignore_errors=True)




def publish_staged(staging: str, target: str, run_id: str) -> list[str]:
    """Move Parquet files an engine wrote under `staging` into `target`, named `part-<run_id>-<n>.parquet`.

    For engines that cannot choose their file names (Spark); partition folders are kept. `staging` is a
    local folder (uploaded to an S3 `target`) or a folder on the lake's own filesystem (renamed locally,
    copied server-side on S3, several files at a time).
    """
    staged = lakefs.files_under(staging, ".parquet")
    base = staging.rstrip("/\\")
    pairs = []
    for n, src in enumerate(staged):
        rel_dir = [p for p in src[len(base) + 1 :].replace("\\", "/").split("/")[:-1] if p]
        pairs.append((src, lakefs.join(target, *rel_dir, f"part-{run_id}-{n}.parquet")))
    lakefs.move_all(pairs)
    lakefs.remove_tree(staging)
    return [dest for _, dest in pairs]
