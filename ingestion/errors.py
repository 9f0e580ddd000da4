"""One exception hierarchy; every message says what went wrong and what to do next."""

from __future__ import annotations


class TidemarkError(Exception):
    """Base class of every error tidemark raises on purpose; `hint` tells the user what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class ConfigError(TidemarkError):
    """The pipeline config is missing, malformed or names something that does not exist."""


class SourceError(TidemarkError):
    """A source could not be listed or read."""


class SchemaError(TidemarkError):
    """Landed data would not fit the table's columns (name collisions, incompatible types)."""


class EngineError(TidemarkError):
    """An engine (DuckDB, Spark) failed or is not available on this machine."""


class StateConflict(TidemarkError):
    """Another run committed the table's state since this run read it: nothing was committed."""


class LeaseHeld(TidemarkError):
    """Another run holds the table's lease."""


class CatalogError(TidemarkError):
    """The Glue Data Catalog could not be updated; the landed data and its commit stand."""


class StateCorrupt(TidemarkError):
    """A table's state document cannot be read (truncated, edited by hand, or of an unknown format)."""


class LakeError(TidemarkError):
    """The lake cannot be reached or written (missing bucket, read-only folder, no credentials)."""


class WarehouseError(TidemarkError):
    """The warehouse could not be reached or refused a load."""


class StatementFailed(WarehouseError):
    """A Redshift Data API statement ended FAILED or ABORTED, or was cancelled after waiting too long."""


class StateFormatTooNew(StateCorrupt):
    """A state document (or history part) was written by a newer tidemark in a format this one can't read."""
