"""The CSV steps the protocol calls: list + plan, checksum + settle, land, archive."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from ingestion.config import CsvSourceConfig, CsvTableConfig
from ingestion.engines import CsvBatch
from ingestion.errors import SourceError
from ingestion.lake.layout import table_dir
from ingestion.lake.model import TableState
from ingestion.observe.logs import event
from ingestion.plan.csv import FileFacts, TablePlan, next_state, plan_csv_table, settle_checksums
from ingestion.run.context import RunContext
from ingestion.run.protocol import Extracted, Look, warn_dropped_columns
from ingestion.sources.csv import (
    ARCHIVE_DIR,
    UNPROCESSED_DIR,
    Move,
    claimed_by,
    fingerprint,
    list_files,
    move_files,
)


@dataclass
class CsvJob:
    """One configured table of a CSV source (a local folder or an `s3://` prefix)."""

    config: CsvSourceConfig
    table_config: CsvTableConfig
    # The inbox listing, taken once per run: the look before the lease and the plan under it share it
    # (files dropped after it wait for the next run, as they would have anyway).
    listing: list[FileFacts] | None = None

    @property
    def source(self) -> str:
        return self.config.name

    @property
    def table(self) -> str:
        return self.table_config.name

    def _plan(self, ctx: RunContext, state: TableState | None) -> TablePlan:
        if self.listing is None:
            self.listing = list_files(ctx.cfg.resolve(self.config.path), self.table_config.glob)
        others = {t.name: t.glob for t in self.config.tables if t.name != self.table}
        for f in self.listing:
            also = claimed_by(f.relpath, others)
            if also:
                raise SourceError(
                    f"{f.relpath} matches the patterns of tables {self.source}.{self.table} "
                    f"({self.table_config.glob!r}) and {', '.join(f'{self.source}.{n} ({others[n]!r})' for n in also)}; "
                    "it is landed in none of them",
                    hint="give the tables patterns that don't overlap (e.g. pattern: 'orders_*.csv'), "
                    "or move the file",
                )
        return plan_csv_table(
            self.source,
            self.table,
            state,
            self.listing,
            load_type=ctx.load_type or self.table_config.load_type,
            lookback=self.table_config.lookback,
            has_cursor=self.table_config.cursor is not None,
        )

    def look(self, ctx: RunContext, state: TableState | None) -> Look:
        plan = self._plan(ctx, state)
        leftovers = bool(plan.leftovers) and self.config.archive.enabled
        return Look(plan.load_type, len(plan.files), plan.has_work or leftovers)

    def plan(self, ctx: RunContext, state: TableState) -> TablePlan:
        name = f"{self.source}.{self.table}"
        plan = self._plan(ctx, state)
        if plan.has_work:
            # Checksums settle files whose size or mtime changed: same bytes are not landed again.
            plan = settle_checksums(plan, fingerprint(plan.files), state)
        if plan.changed:
            event(
                "files changed since they were landed; landing them again",
                logging.WARNING,
                table=name,
                files=list(plan.changed),
            )
        if plan.duplicates:
            event(
                "files hold the same bytes as files already landed; not landed again",
                logging.WARNING,
                table=name,
                files=dict(plan.duplicates),
            )
        if not self.table_config.cursor:
            event(
                "no cursor column: every new file is landed whole and no watermark is kept",
                logging.WARNING,
                table=name,
            )
        return plan

    def extract(self, ctx: RunContext, state: TableState, plan: TablePlan) -> Extracted:
        out = Extracted(load_type=plan.load_type, files=len(plan.files))
        if not plan.has_work:
            return out
        t = self.table_config
        batch = ctx.get_engine().land_csv(
            CsvBatch(
                source=self.source,
                table=self.table,
                files=plan.files,
                options=t.csv,
                primary_key=t.primary_key,
                cursor=t.cursor,
                run_id=ctx.run_id,
                ingested_at=ctx.now,
                target=table_dir(ctx.cfg.lake_root, self.source, self.table),
                lake_root=ctx.cfg.lake_root,
                lower_bound=plan.lower_bound,
                declared=dict(t.columns),
                committed=dict(state.columns) if plan.load_type == "incremental" else {},
                max_rejected_fraction=t.max_rejected_fraction,
                double_as_decimal=t.double_as_decimal,
                decimal_keys=t.decimal_keys,
            )
        )
        dropped = (
            warn_dropped_columns(f"{self.source}.{self.table}", state.columns, batch.columns)
            if batch.rows_landed
            else []
        )
        q = batch.quarantine
        new = next_state(
            state, plan, batch, ctx.run_id, ctx.now, cursor_timezone=t.cursor_timezone, pause=ctx.pause
        )
        out.commit = replace(new, primary_key=tuple(t.primary_key), cursor=t.cursor)
        out.rows_read, out.rows_landed = batch.rows_read, batch.rows_landed
        out.rows_deduplicated, out.rows_filtered = batch.rows_deduplicated, batch.rows_filtered
        out.rows_rejected = batch.rows_rejected
        out.rejects = list(q.rejects) if q else []
        out.warnings = dropped
        out.files_refused = q.refused if q else {}
        if not self.config.archive.enabled:
            out.refused_to = "left in the inbox (archiving is off; the ledger skips it)"
        return out

    def after_commit(
        self,
        ctx: RunContext,
        state: TableState,
        plan: TablePlan,
        extracted: Extracted | None,
    ) -> None:
        """Move processed files out of the inbox: landed to archive/, refused to unprocessed/."""
        if not self.config.archive.enabled or ctx.pause:
            return
        moves = [Move(f.relpath, f.source_path, _folder_of(state, f.relpath)) for f in plan.leftovers]
        if extracted is not None and extracted.commit is not None:
            refused = extracted.files_refused
            moves += [
                Move(f.relpath, f.source_path, UNPROCESSED_DIR if f.relpath in refused else ARCHIVE_DIR)
                for f in plan.files
            ]
        if not moves:
            return
        root = ctx.cfg.resolve(self.config.path)
        archive_root = ctx.cfg.resolve(self.config.archive.root) if self.config.archive.root else None
        done = move_files(root, moves, ctx.now, archive_root)
        ctx.step("files_archived", f"{self.source}.{self.table}")
        event("files moved out of the inbox", table=f"{self.source}.{self.table}", files=len(done))


def _folder_of(state: TableState | None, relpath: str) -> str:
    """Where a file the ledger already knows belongs: archive/ if it landed, unprocessed/ if refused."""
    entry = state.files.get(relpath) if state else None
    return UNPROCESSED_DIR if entry and entry.status == "rejected" else ARCHIVE_DIR
