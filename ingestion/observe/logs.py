"""Logging: JSON lines to `<lake>/_logs/<yyyy-mm-dd>/<run_id>.jsonl`, and to the console.

The console gets rich, human-readable lines on a terminal and the same JSON lines otherwise (cron,
Airflow, Glue), so machines never have to parse prose.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ingestion.redact import SDK_LOGGERS, redact

LOGGER = "tidemark"
log = logging.getLogger(LOGGER)


class RedactFilter(logging.Filter):
    """Masks secrets in every record a handler emits (message, arguments, structured fields, traceback),
    whoever logged it: a library's DEBUG record with a request or response body included."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_tidemark_redacted", False):
            return True
        record.msg, record.args = redact(record.getMessage()), None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._tidemark_redacted = True
        return True


REDACT = RedactFilter()


def _install(handlers: list[logging.Handler]) -> None:
    """Mask secrets in tidemark's handlers, route the SDKs' records (at whatever level they are set) to
    them, and mask secrets in handlers others put on the root and SDK loggers (Glue's, Airflow's)."""
    for h in handlers:
        h.addFilter(REDACT)
        h._tidemark = True  # type: ignore[attr-defined]
    for name in SDK_LOGGERS:
        lib = logging.getLogger(name)
        for h in [h for h in lib.handlers if getattr(h, "_tidemark", False)]:
            lib.removeHandler(h)
        for h in handlers:
            lib.addHandler(h)
        lib.propagate = True
    for lg in (logging.getLogger(), *(logging.getLogger(n) for n in SDK_LOGGERS)):
        for h in lg.handlers:
            if REDACT not in h.filters:
                h.addFilter(REDACT)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, event, run id and the record's `fields`."""

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        if self.run_id:
            doc["run_id"] = self.run_id
        doc.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            doc["error_class"] = record.exc_info[0].__name__
        return redact(json.dumps(doc, default=str))  # secrets never reach a log, whoever logged them


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return redact(f"{record.getMessage()}  {extra}".rstrip())


def setup_logging(run_id: str, lake_root: str | None, *, verbose: bool = False) -> Path | None:
    """Send the `tidemark` logger to the console and to the run's JSON log file in the lake.

    For an S3 lake the file is written in the local scratch folder; `publish_log` uploads it to
    `<lake>/_logs/<yyyy-mm-dd>/<run_id>.jsonl` when the run ends.
    """
    log.handlers.clear()
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        console: logging.Handler = RichHandler(show_path=False, markup=False)
        console.setFormatter(_ConsoleFormatter())
    else:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(JsonFormatter(run_id))
    log.addHandler(console)
    if lake_root is None:
        _install([console])
        return None
    from ingestion.lake.fs import scratch_root

    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    path = Path(scratch_root(lake_root)) / "_logs" / day / f"{run_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter(run_id))
    log.addHandler(handler)
    _install([console, handler])
    return path


def event(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `msg` with structured fields."""
    log.log(level, msg, extra={"fields": fields})


def publish_log(lake_root: str, path: Path | None, also: str | None = None) -> str | None:
    """Upload a run's local JSON log to an S3 lake's `_logs/` (a local lake already holds it); returns where.

    `also` (a folder or `s3://` prefix, the Glue seeds' `--log_folder_path`) gets a copy too, as
    `<also>/<yyyy-mm-dd>/<run_id>.jsonl`. The file handler is closed first, so later log lines go to the
    console only. A failed upload is a warning (the local file is kept), never an error: the run's outcome
    does not depend on it.
    """
    from ingestion.lake import fs as lakefs

    remote = lakefs.is_remote(lake_root)
    if path is None or not (remote or also) or not path.exists():
        return None
    for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        if Path(handler.baseFilename) == path.resolve():
            log.removeHandler(handler)
            for name in SDK_LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            handler.close()
    if also:
        copy = lakefs.join(also, path.parent.name, path.name)
        try:
            with open(path, "rb") as src, lakefs.open_output(copy) as out:
                shutil.copyfileobj(src, out)
        except Exception as exc:
            event(
                "could not copy the run's log to the log folder", logging.WARNING, dest=copy, error=str(exc)
            )
    if not remote:
        return None
    dest = lakefs.join(lake_root, "_logs", path.parent.name, path.name)
    try:
        lakefs.place(str(path), dest)
    except Exception as exc:  # the run is over and its result stands: say where the log is instead
        event(
            "could not upload the run's log; it stays local", logging.WARNING, path=str(path), error=str(exc)
        )
        return None
    return dest
