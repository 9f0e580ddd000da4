"""CSV sources: list the files of a table in its inbox folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ingestion.errors import SourceError


@dataclass(frozen=True, order=True)
class FileFacts:
    """A source file as listed at plan time: its identity for the ledger is (relpath, size, mtime)."""

    relpath: str
    path: str
    size: int
    mtime_ns: int


def list_files(root: str, pattern: str) -> list[FileFacts]:
    """Files under `root` matching the glob `pattern` (`**` allowed), sorted by relative path."""
    if "://" in root:
        raise SourceError(
            f"CSV source path {root}: only local folders are supported by this version",
            hint="copy the files to a local folder, or point the source at one",
        )
    base = Path(root)
    if not base.is_dir():
        raise SourceError(
            f"CSV source folder {base} does not exist",
            hint="create it and drop CSV files in it, or fix the source's `path` in the config",
        )
    facts = []
    for p in base.glob(pattern):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            facts.append(
                FileFacts(p.relative_to(base).as_posix(), str(p.resolve()), st.st_size, st.st_mtime_ns)
            )
    return sorted(facts)
