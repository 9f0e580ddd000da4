"""After a same-day widening: a partition's earlier files are cast to the wider types, then its catalog schema.

A run that widens a column (its commit's column types differ from the ones before it) records the
`_ingest_date` partitions it wrote in the state (`TableState.retype`) in the same commit. After the
commit, the partitions' earlier files are rewritten with the wider types (`ingestion.lake.retype`) and
their Glue partitions get the types the files now hold; then the state forgets them. A crash or an error
in between leaves them recorded: the table's next run (a takeover of a dead run's lease included)
finishes the work right after taking the lease, before it plans anything.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace

from ingestion.contract import PARTITION_COLUMN
from ingestion.lake.layout import table_dir
from ingestion.lake.model import TableState
from ingestion.lake.retype import retype_partition
from ingestion.lake.state import LeaseKeeper
from ingestion.observe.logs import event
from ingestion.run.context import RunContext
from ingestion.warehouse.glue_catalog import hive_type, partition_values, update_partition_columns


def partitions_to_retype(before: TableState, after: TableState, landed: Sequence[str]) -> tuple[str, ...]:
    """The partitions a commit must record for retyping: those the run `landed` files in, when it changed
    a committed column's type (a widening) on a table that already had landed runs; plus any still pending."""
    changed = any(t != after.columns.get(c, t) for c, t in before.columns.items())
    new = partition_values(landed) if before.committed_runs and changed else []
    return tuple(sorted({*before.retype, *new}))


def finish_retype(ctx: RunContext, keeper: LeaseKeeper, source: str, table: str) -> list[str]:
    """Retype the partitions the table's state names, update their Glue partitions, then clear them.

    Returns warnings for the ledger (casts the lake's rules don't allow: those files keep their type).
    Raises on any failure; the state then still names the partitions, and the next run finishes them.
    """
    state = keeper.held.state
    if not state.retype:
        return []
    name = f"{source}.{table}"
    target = table_dir(ctx.cfg.lake_root, source, table)
    committed = set(state.committed_runs)
    columns: dict[str, list[tuple[str, str]]] = {}
    warnings: list[str] = []
    for partition in state.retype:
        done = retype_partition(target, partition, committed, lambda _: ctx.step("partition_retyping", name))
        columns[partition] = [(c, hive_type(t)) for c, t in done.types.items() if c != PARTITION_COLUMN]
        if done.rewritten:
            event(
                "cast a partition's earlier files to the widened column types",
                table=name,
                partition=partition,
                files=len(done.rewritten),
            )
        if done.refused:
            text = "; ".join(f"{f}: {', '.join(r)}" for f, r in done.refused.items())
            warnings.append(f"{PARTITION_COLUMN}={partition} keeps files of two types ({text})")
            event(
                "a partition keeps files whose types can't be cast losslessly",
                logging.WARNING,
                table=name,
                partition=partition,
                refused=_short(done.refused),
            )
    if ctx.cfg.catalog.glue_database is not None:
        update_partition_columns(ctx.cfg.catalog, target, source, table, columns)
    keeper.commit(replace(keeper.held.state, retype=()))
    return warnings


def _short(refused: Mapping[str, list[str]]) -> dict[str, list[str]]:
    return {f.rsplit("/", 1)[-1]: r for f, r in refused.items()}
