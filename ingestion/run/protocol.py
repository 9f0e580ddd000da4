"""The commit protocol, once, for every source kind (DESIGN.md "A run, per table").

look → lease → orphans → plan → extract (land) → quarantine → commit → after-commit → release, with one
outcome record and one failure path. A source kind plugs in as a `TableJob` (how to look, plan, extract,
and what to do after the commit); it never copies the protocol.

A crash before the commit leaves files of an uncommitted run, which the next run removes before writing;
a crash after it only leaves the lease, which expires (or is taken over at once when its process is known
to be dead). A table's failure is recorded in its outcome (with the step it failed in) and never
escapes: the other tables go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

from ingestion.config import Effective
from ingestion.errors import CatalogError, LeaseHeld, TidemarkError
from ingestion.lake.layout import (
    landed_files,
    partition_value,
    relative_to,
    remove_abandoned_files,
    remove_key_snapshot,
    remove_run_scratch,
    remove_stale_scratch,
    table_dir,
    write_empty_landing,
)
from ingestion.lake.model import TableState
from ingestion.lake.rejected import remove_rejects, write_rejects
from ingestion.lake.state import LeaseKeeper
from ingestion.observe.logs import event
from ingestion.plan.rejects import Reject
from ingestion.records import Step, TableOutcome
from ingestion.redact import error_text, redact
from ingestion.run.context import RunContext, utcnow
from ingestion.run.records import log_outcome
from ingestion.run.retype import finish_retype, partitions_to_retype
from ingestion.warehouse.glue_catalog import register_outcome

log = logging.getLogger("tidemark")


@dataclass(frozen=True)
class Look:
    """A table's work as seen before taking its lease (a table with nothing new costs no write)."""

    load_type: Effective
    files: int = 0
    has_work: bool = True


@dataclass
class Extracted:
    """What a job landed in one run, and the state that commits it (None: nothing to commit)."""

    load_type: Effective
    commit: TableState | None = None
    files: int = 0
    rows_read: int = 0
    rows_landed: int = 0
    rows_deduplicated: int = 0
    rows_filtered: int = 0
    rows_rejected: int = 0
    rejects: list[Reject] = field(default_factory=list)
    files_refused: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the ledger and the log should say (not errors)
    refused_to: str = "moved to unprocessed/"  # what happens to a refused file, in the user's words


P = TypeVar("P")


class TableJob(Protocol, Generic[P]):
    """One table of one source kind: the steps the protocol calls, in this order (`P`: its plan)."""

    @property
    def source(self) -> str: ...
    @property
    def table(self) -> str: ...

    def look(self, ctx: RunContext, state: TableState | None) -> Look:
        """Cheap, before the lease: the load type, the files seen, whether there is anything to do."""
        ...

    def plan(self, ctx: RunContext, state: TableState) -> P:
        """Under the lease, on the held state: what this run reads (source facts + a pure plan)."""
        ...

    def extract(self, ctx: RunContext, state: TableState, plan: P) -> Extracted:
        """Read, normalize, dedup and write the run's files; return counts and the state to commit."""
        ...

    def after_commit(self, ctx: RunContext, state: TableState, plan: P, extracted: Extracted | None) -> None:
        """Harmless to repeat: archive processed inputs (CSV)."""
        ...


def warn_dropped_columns(name: str, committed: Mapping[str, str], landed: Mapping[str, str]) -> list[str]:
    """Log the committed columns a batch no longer has (dropped at the source): the curated tables keep
    them, NULL in the versions landed from now on. Returns the warning for the ledger (none: empty)."""
    dropped = [c for c in committed if c not in landed]
    if dropped:
        event(
            "columns gone from the source: kept in the lake and the curated tables, null in new versions",
            logging.WARNING,
            table=name,
            dropped_columns=dropped,
        )
        return [f"columns gone from the source (null in new versions): {', '.join(dropped)}"]
    return []


def land_table(ctx: RunContext, job: TableJob[Any]) -> TableOutcome:
    """One table through the protocol, then its catalog registration, ledger row and progress."""
    outcome = run_protocol(ctx, job)
    if not ctx.dry_run:  # after the commit: registration never undoes it (see warehouse.glue_catalog)
        register_outcome(ctx.cfg, outcome, ctx.run_id, ctx.pause)
    if ctx.audit is not None:
        ctx.audit.record(outcome)
    ctx.observe(outcome.name, f"done:{outcome.status}")
    return outcome


def remove_abandoned(ctx: RunContext, keeper: LeaseKeeper, source: str, table: str) -> list[str]:
    """Remove what runs that never committed left (named in the state: no prefix is listed to find them);
    returns the landed files removed. Only while holding the table's lease."""
    state = keeper.held.state
    dead = set(state.abandoned_runs) - {ctx.run_id}
    if not dead:
        return []
    lake, removed = ctx.cfg.lake_root, []
    for run_id in sorted(dead):
        if run_id not in state.committed_runs:  # a committed run's files, rejects and keys are the table's
            removed += remove_abandoned_files(table_dir(lake, source, table), run_id)
            remove_rejects(lake, source, table, only={run_id})
            remove_key_snapshot(lake, source, table, run_id)
        remove_run_scratch(lake, source, table, run_id)
    keeper.forget_abandoned(dead)
    return removed


def retype_after_commit(
    ctx: RunContext, keeper: LeaseKeeper, job: TableJob[Any], outcome: TableOutcome
) -> None:
    """Cast the earlier files of the partitions this run widened a column in (see `run.retype`).

    After the commit, like the catalog registration: a failure never undoes the commit; it is recorded in
    the outcome and the log, and the state still names the partitions, so the next run finishes them.
    """
    try:
        outcome.warnings += finish_retype(ctx, keeper, job.source, job.table)
    except Exception as exc:
        message = error_text(exc)
        outcome.error, outcome.error_class = message, type(exc).__name__
        event(
            "could not cast the partition's earlier files to the widened types; the data is committed "
            "and the table's next run finishes it",
            logging.ERROR,
            table=outcome.name,
            error=message,
        )


def run_protocol(ctx: RunContext, job: TableJob[Any]) -> TableOutcome:
    """The commit protocol for one table; every error ends up in the outcome, none escapes."""
    started = time.monotonic()
    outcome = TableOutcome(job.source, job.table, status="up_to_date", started_at=utcnow())
    ctx.observe(outcome.name, "started")
    lake = ctx.cfg.lake_root
    target = table_dir(lake, job.source, job.table)
    keeper: LeaseKeeper | None = None
    committed = abandon = False
    step: Step = "look"
    try:
        state = ctx.store.read(job.source, job.table)
        look = job.look(ctx, state)
        outcome.load_type, outcome.files = look.load_type, look.files
        outcome.watermark = outcome.watermark_before = state.watermark if state else None
        # A dead run's lease (and maybe its files) is tidied up now rather than when new data comes.
        stale = (
            state is not None
            and state.lease is not None
            and (state.lease.expired(utcnow()) or state.lease.holder_is_dead())
        )
        unfinished = state is not None and bool(state.retype)  # a same-day widening not retyped yet
        if ctx.dry_run or not (look.has_work or stale or unfinished):
            outcome.status = "planned" if ctx.dry_run else "up_to_date"
            return outcome

        step = "lease"  # its clock is now, not the run's start: a table may wait in the pool a long time
        held = ctx.store.acquire(job.source, job.table, ctx.run_id, utcnow(), ctx.ttl)
        keeper = LeaseKeeper(ctx.store, held, ctx.ttl, utcnow)
        ctx.step("lease_acquired", outcome.name)

        step = "orphans"
        orphans = remove_abandoned(ctx, keeper, job.source, job.table)
        remove_stale_scratch(lake, job.source, job.table, ctx.run_id)
        outcome.orphans_removed = len(orphans)
        if orphans:
            event(
                "removed files of runs that never committed",
                logging.WARNING,
                table=outcome.name,
                files=len(orphans),
            )
        ctx.step("orphans_removed", outcome.name)

        # A widening run's partitions whose earlier files were not cast yet (it crashed or failed after
        # its commit): finished first, so nothing lands beside files of two types.
        step = "retype"
        try:
            retyped = finish_retype(ctx, keeper, job.source, job.table)
        except (
            CatalogError
        ) as exc:  # the files are cast; only Glue is behind: it is tried again after the commit
            retyped = []
            outcome.error, outcome.error_class = exc.message, "CatalogError"
            event("Glue partition columns not updated", logging.ERROR, table=outcome.name, error=exc.message)

        step = "plan"
        state = keeper.held.state  # it may have moved between the first look and the lease
        plan = job.plan(ctx, state)

        step = "extract"
        extracted = job.extract(ctx, state, plan)
        outcome.load_type, outcome.files = extracted.load_type, extracted.files
        outcome.warnings = retyped + list(extracted.warnings)
        outcome.rows_read, outcome.rows_landed = extracted.rows_read, extracted.rows_landed
        outcome.rows_deduplicated, outcome.rows_filtered = (
            extracted.rows_deduplicated,
            extracted.rows_filtered,
        )
        if extracted.commit is not None:
            ctx.step("batch_written", outcome.name)
            step = "quarantine"
            if extracted.rejects:
                write_rejects(extracted.rejects, lake, job.source, job.table, ctx.run_id, ctx.now)
            step = "commit"
            # The commit records the run's files: the catalog and the loaders read them, not `landing/`.
            landed = landed_files(target, ctx.run_id, partition_value(ctx.now), extracted.rows_landed > 0)
            if not landed and not any(keeper.held.state.run_files.values()):
                # Nothing landed yet, ever (files with a header only): leave the table readable and empty.
                landed = [write_empty_landing(target, ctx.run_id, partition_value(ctx.now))]
            recorded = tuple(relative_to(target, f) for f in landed)
            commit = extracted.commit
            # A widening on a day that already has files: the commit names the partitions to retype.
            retype = partitions_to_retype(keeper.held.state, commit, recorded)
            keeper.commit(
                replace(commit, run_files={**commit.run_files, ctx.run_id: recorded}, retype=retype)
            )
            outcome.landed_files = tuple(landed)
            committed = True
            ctx.step("state_committed", outcome.name)
            outcome.status = "landed"
            outcome.rows_rejected, outcome.files_refused = extracted.rows_rejected, extracted.files_refused
            outcome.refused_to = extracted.refused_to
            if extracted.files_refused:
                event(
                    f"files refused; {extracted.refused_to}",
                    logging.ERROR,
                    table=outcome.name,
                    files=extracted.files_refused,
                )

        step = "after_commit"
        job.after_commit(ctx, state, plan, extracted)
        outcome.watermark = keeper.held.state.watermark
        if committed:
            retype_after_commit(ctx, keeper, job, outcome)
    except LeaseHeld as exc:
        outcome.status, outcome.error = "locked", redact(str(exc.message))
        outcome.error_class, outcome.failed_step = type(exc).__name__, step
    except Exception as exc:  # even an engine bug must not stop the other tables
        outcome.status, outcome.error = "failed", error_text(exc)
        outcome.error_class, outcome.failed_step = type(exc).__name__, step
        if not isinstance(exc, TidemarkError):
            log.debug("traceback", exc_info=True)
        if not committed and keeper is not None:
            # This run's files never counted; remove them now rather than at the next run.
            try:
                remove_abandoned_files(target, ctx.run_id)
                remove_key_snapshot(lake, job.source, job.table, ctx.run_id)
                remove_rejects(lake, job.source, job.table, only={ctx.run_id})
            except Exception as cleanup:  # the next run removes them: release records the run as abandoned
                abandon = True
                event(
                    "could not remove this run's files; the next run of the table will",
                    logging.WARNING,
                    table=outcome.name,
                    error=error_text(cleanup),
                )
    finally:
        if keeper is not None:
            try:
                keeper.release(abandon=abandon)
                ctx.step("lease_released", outcome.name)
            except TidemarkError as exc:
                event(
                    "could not release the lease; it expires by itself",
                    logging.WARNING,
                    table=outcome.name,
                    error=redact(str(exc)),
                )
        outcome.seconds = round(time.monotonic() - started, 3)
        log_outcome(outcome)
    return outcome
