"""What every table of a run shares: config, state store, engine, ledger, progress observer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ingestion.config import LoadType, PipelineConfig
from ingestion.engines import Engine, get_engine
from ingestion.lake.state import StateStore
from ingestion.observe.audit import RunLedger
from ingestion.observe.faults import checkpoint


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def state_store(cfg: PipelineConfig) -> StateStore:
    """The pipeline's state store, in the lake's `_state/` folder."""
    return StateStore(cfg.lake_root, cfg.pipeline, checkpoint=checkpoint)


@dataclass
class RunContext:
    """One run: its id and clock, the options it was started with, and what its tables share."""

    cfg: PipelineConfig
    store: StateStore
    run_id: str
    now: datetime
    engine_name: str
    load_type: LoadType | None
    pause: bool
    dry_run: bool
    engine: Engine | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    audit: RunLedger | None = None
    on_step: Callable[[str, str], None] | None = None  # (source.table, checkpoint): progress bars

    def step(self, point: str, name: str) -> None:
        """Pass a table's checkpoint: injected faults (tests), then the progress observer."""
        checkpoint(point, name.split(".", 1)[1])
        self.observe(name, point)

    def observe(self, name: str, point: str) -> None:
        if self.on_step is not None:
            self.on_step(name, point)

    def get_engine(self) -> Engine:
        with self.lock:  # tables start in parallel; only one engine (one JVM) is made
            if self.engine is None:
                self.engine = get_engine(self.engine_name, self.cfg)
            return self.engine

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.cfg.lease_ttl_seconds)
