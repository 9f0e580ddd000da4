"""The pipeline's table inventory, one for every command (run, status, report, reset, load-warehouse, dbt).

Configured CSV tables, plus PostgreSQL and Glue catalog tables known without a connection: listed in
the config or holding committed state (discovered by an earlier run). `run` adds what discovery finds today; `status`,
`report`, `reset`, `load-warehouse`, `redshift-spectrum-ddl`, `dbt-sources` and `dbt-scaffold` read
this inventory and need no database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from ingestion.config import (
    CsvSourceConfig,
    CsvTableConfig,
    GlueCatalogSourceConfig,
    JdbcSourceConfig,
    PipelineConfig,
)
from ingestion.errors import ConfigError
from ingestion.lake.state import StateStore

SourceKind = Literal["csv", "jdbc", "glue_catalog"]


@dataclass(frozen=True)
class TableRef:
    """A table of the pipeline, by name, with its source's config."""

    source: str
    table: str
    kind: SourceKind
    source_config: CsvSourceConfig | JdbcSourceConfig | GlueCatalogSourceConfig
    table_config: CsvTableConfig | None = None  # CSV tables only

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"


def inventory(cfg: PipelineConfig, store: StateStore | None = None) -> list[TableRef]:
    """Every table the pipeline knows: configured CSV tables, then PostgreSQL tables listed or with state.

    With the lake's state `store`, PostgreSQL tables discovered by earlier runs are known too (also
    those whose state document is unreadable); without it only tables listed by name in the config.
    """
    out = [TableRef(s.name, t.name, "csv", s, t) for s, t in cfg.csv_tables()]
    with_state: dict[str, set[str]] = {}
    if store is not None and (cfg.jdbc_sources() or cfg.catalog_sources()):
        for source, table in [(st.source, st.table) for st in store.tables()] + list(store.unreadable):
            with_state.setdefault(source, set()).add(table)
    for s in cfg.jdbc_sources():
        listed = {t.name for t in s.tables or ()}
        out += [TableRef(s.name, n, "jdbc", s) for n in sorted(listed | with_state.get(s.name, set()))]
    for c in cfg.catalog_sources():
        listed = {t.name for t in c.tables or ()}
        out += [
            TableRef(c.name, n, "glue_catalog", c) for n in sorted(listed | with_state.get(c.name, set()))
        ]
    return out


class Named(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def table(self) -> str: ...


T = TypeVar("T", bound=Named)


def select(items: Sequence[T], names: Sequence[str] | None, *, failed_sources: Sequence[str] = ()) -> list[T]:
    """The items named `table` or `source.table` (all when no names are given), in inventory order.

    Names under a source whose discovery failed are not reported as unknown (that source's failure is).
    """
    if not names:
        return list(items)
    chosen: list[T] = []
    unknown = []
    for name in names:
        hits = [i for i in items if name in (i.table, f"{i.source}.{i.table}")]
        if hits:
            chosen += [h for h in hits if h not in chosen]
        elif not any(name.startswith(f"{f}.") for f in failed_sources):
            unknown.append(name)
    if unknown:
        known = ", ".join(f"{i.source}.{i.table}" for i in items) or "none"
        raise ConfigError(f"no table named {', '.join(unknown)} in the config", hint=f"known tables: {known}")
    return chosen
