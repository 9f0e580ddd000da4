"""CSV sources: list a table's files (local folder or S3 prefix), read headers, stage, archive.

Everything here is I/O at the edge: the planner gets `FileFacts`. An S3 file is identified by its ETag,
size and last-modified time (never downloaded to plan); the Spark engine's executors read it where it is
(`s3://`), the DuckDB engine reads a local copy (`download`). The driver-side checks (header, long
lines, encoding, line numbers of rejects) stream the bytes through `lake.fs.open_input`. Files are
archived with copy + delete after the commit.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import hashlib
import io
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path, PurePosixPath

from ingestion.config import CsvOptions
from ingestion.errors import SourceError
from ingestion.lake import fs as lakefs
from ingestion.lake.s3 import error_code, s3_client, split_s3
from ingestion.plan.csv import FileFacts
from ingestion.plan.rejects import (
    INVALID_ENCODING,
    LINE_TOO_LONG,
    RAW_LIMIT,
    Reject,
    csv_dialect,
    start_lines,
)

log = logging.getLogger("tidemark")
# Sub-folders of an inbox that hold processed files: never listed as new drops.
ARCHIVE_DIR = "archive"
UNPROCESSED_DIR = "unprocessed"
_CHUNK = 1 << 20


def _skipped(relpath: str) -> bool:
    """Hidden files and the inbox's own archive/unprocessed folders are never new drops."""
    parts = PurePosixPath(relpath).parts
    return (
        any(p.startswith(".") for p in parts)
        or parts[0] in (ARCHIVE_DIR, UNPROCESSED_DIR)
        or relpath.endswith(".tidemark-tmp")
    )


def _glob_match(relpath: str, pattern: str) -> bool:
    """`fnmatch` with `**/` also matching zero folders, like pathlib's glob."""
    if fnmatch.fnmatchcase(relpath, pattern):
        return True
    return pattern.startswith("**/") and fnmatch.fnmatchcase(relpath, pattern[3:])


def claimed_by(relpath: str, patterns: dict[str, str]) -> list[str]:
    """The names (keys of `patterns`) whose glob matches a listed file's relative path."""
    return [name for name, pattern in patterns.items() if _glob_match(relpath, pattern)]


def list_files(root: str, pattern: str) -> list[FileFacts]:
    """Files under `root` (folder or `s3://` prefix) matching the glob `pattern`, sorted by relative path."""
    if root.startswith("s3://"):
        return _list_s3(root, pattern)
    if "://" in root:
        raise SourceError(
            f"CSV source path {root}: unsupported scheme", hint="use a local folder or s3://bucket/prefix"
        )
    base = Path(root)
    if not base.is_dir():
        raise SourceError(
            f"CSV source folder {base} does not exist",
            hint="create it and drop CSV files in it, or fix the source's `path` in the config",
        )
    facts = []
    inbox = base.resolve()
    for p in base.glob(pattern):
        rel = p.relative_to(base).as_posix()
        if not p.is_file() or _skipped(rel):
            continue
        if not _inside(p, inbox):
            # A symlink out of the inbox: reading it would land (and archiving move) someone else's file.
            log.warning("skipping %s: a symlink to %s, outside the inbox %s", rel, p.resolve(), inbox)
            continue
        st = p.stat()
        # The inbox entry itself (a link inside the inbox stays a link): archiving moves the entry.
        facts.append(FileFacts(rel, str(inbox / rel), st.st_size, st.st_mtime_ns))
    return sorted(facts)


def _inside(path: Path, inbox: Path) -> bool:
    """Does `path` (and whatever a symlink on its way points to) stay inside the resolved `inbox`?"""
    return path.resolve().is_relative_to(inbox)


def _list_s3(root: str, pattern: str) -> list[FileFacts]:
    """One delimited listing of the inbox's top level, then each folder the pattern can reach.

    archive/ and unprocessed/ (and hidden folders) come back as common prefixes of the first listing and
    are never listed: a long-lived inbox's processed files cost nothing per run.
    """
    bucket, prefix = split_s3(root.rstrip("/") + "/")
    facts = []
    try:
        paginator = s3_client().get_paginator("list_objects_v2")
        objects: list[dict] = []
        folders: list[str] = []
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            objects += page.get("Contents", [])
            folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        # A pattern without a folder part matches top-level files only.
        if "/" in pattern:
            for folder in folders:
                if not _skipped(folder[len(prefix) :].rstrip("/")):
                    for page in paginator.paginate(Bucket=bucket, Prefix=folder):
                        objects += page.get("Contents", [])
        for obj in objects:
            rel = obj["Key"][len(prefix) :]
            if rel and not rel.endswith("/") and not _skipped(rel) and _glob_match(rel, pattern):
                mtime = int(obj["LastModified"].timestamp() * 1_000_000_000)
                etag = str(obj.get("ETag", "")).strip('"') or None
                facts.append(FileFacts(rel, f"s3://{bucket}/{obj['Key']}", obj["Size"], mtime, etag))
    except Exception as exc:  # botocore errors carry no secrets; say where we looked
        raise SourceError(
            f"cannot list CSV files under {root}: {exc}",
            hint="check the bucket name, the credentials (AWS_PROFILE/AWS_ACCESS_KEY_ID) and s3:ListBucket",
        ) from None
    return sorted(facts)


def sha256_file(path: str) -> str:
    """The sha256 of a local file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(files: Sequence[FileFacts]) -> list[FileFacts]:
    """`files` with the checksum that tells a touched-but-identical file from a changed one, read without
    moving a byte of an S3 object: a local file's sha256, an S3 object's ETag (S3's own content hash)."""
    out = []
    for f in files:
        checksum = (f"etag:{f.etag}" if f.etag else None) if f.is_s3 else sha256_file(f.path)
        out.append(replace(f, checksum=checksum))
    return out


def download(files: Sequence[FileFacts], scratch: str) -> list[FileFacts]:
    """Local copies of the S3 files among `files` under `scratch` (local files stay where they are), for
    an engine that reads local files only (DuckDB). Each copy remembers its S3 URL (`origin`)."""
    out = []
    client = None
    for f in files:
        if not f.is_s3:
            out.append(f)
            continue
        client = client or s3_client()
        bucket, key = split_s3(f.path)
        local = Path(scratch, f.relpath)
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            client.download_file(bucket, key, str(local))
        except Exception as exc:
            raise SourceError(f"cannot download {f.path}: {exc}", hint="check s3:GetObject") from None
        out.append(replace(f, path=str(local), origin=f.path))
    return out


def _decoder_name(options: CsvOptions) -> str:
    return "utf-8-sig" if options.encoding in ("utf-8", "utf-8-sig") else options.encoding


def open_text(path: str, options: CsvOptions) -> io.TextIOWrapper:
    """The file as text in its declared encoding (a UTF-8 BOM dropped); bad bytes become U+FFFD."""
    return io.TextIOWrapper(
        lakefs.open_input(path), encoding=_decoder_name(options), errors="replace", newline=""
    )


class NotText(SourceError):
    """A file that is not CSV text: binary, or an archive with other than one member."""


_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip", b"PK\x05\x06": "zip"}


def as_text_file(f: FileFacts, scratch: str, options: CsvOptions) -> FileFacts:
    """The file as CSV text a reader can open: compressed drops (gzip, zstd, a zip holding one file) are
    decompressed into `scratch`, whatever their name says; binary content raises `NotText`.

    The copy keeps the file's relpath, so its rows still name the file as it was dropped.
    """
    with lakefs.open_input(f.path) as fh:
        head = fh.read(4)
    kind = next((k for magic, k in _MAGIC.items() if head.startswith(magic)), None)
    out = f
    if kind is not None:
        # No .gz/.zst suffix: readers must not decompress again. `scratch` is on the lake's filesystem
        # for the Spark engine (its executors read the copy), a local folder for DuckDB.
        target = lakefs.join(scratch, copy_name(f.relpath) + ".text")
        if kind == "zip":
            _unzip_one(f, target)
        else:
            import pyarrow as pa

            try:
                with (
                    lakefs.open_input(f.path) as raw,
                    pa.input_stream(raw, compression=kind) as src,
                    lakefs.open_output(target) as dst,
                ):
                    while chunk := src.read(_CHUNK):
                        dst.write(chunk)
            except (OSError, pa.ArrowException) as exc:
                raise NotText(f"{f.relpath}: not_text: a damaged {kind} file ({exc})") from None
        out = FileFacts(f.relpath, target, f.size, f.mtime_ns, f.etag, f.checksum, f.source_path)
    with lakefs.open_input(out.path) as fh:
        sample = fh.read(8192)
    # NUL bytes never occur in CSV text (UTF-16 aside): an image, a spreadsheet, a nested archive.
    if b"\x00" in sample and options.encoding != "utf-16":
        what = f"a {kind} file holding binary data" if kind else "binary data, not CSV text"
        raise NotText(f"{f.relpath}: not_text: {what}")
    return out


def _unzip_one(f: FileFacts, target: str) -> None:
    import zipfile

    try:
        with lakefs.open_input(f.path) as raw, zipfile.ZipFile(raw) as z:
            members = [
                m for m in z.infolist() if not m.is_dir() and not m.filename.startswith(("__MACOSX/", "."))
            ]
            if len(members) != 1:
                raise NotText(
                    f"{f.relpath}: not_text: a zip archive with {len(members)} files "
                    f"({', '.join(m.filename for m in members[:5])}); tidemark reads a zip holding one CSV",
                    hint="drop the CSV files one by one, or one zip per file",
                )
            with z.open(members[0]) as src, lakefs.open_output(target) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
    except zipfile.BadZipFile as exc:
        raise NotText(f"{f.relpath}: not_text: a damaged zip archive ({exc})") from None


def copy_name(relpath: str) -> str:
    """A file's relpath as a path under a scratch folder (a catalog file's relpath is its `s3://` URL)."""
    return relpath.replace("://", "/")


def drop_first_lines(f: FileFacts, scratch: str, n: int) -> FileFacts:
    """A copy of the file without its first `n` physical lines (lines a catalog table says are no data:
    a title or comment before the header line), in `scratch` beside the other text copies; the file
    itself when `n` is 0. A file of `n` lines or fewer becomes an empty copy (nothing to read)."""
    if n <= 0:
        return f
    target = lakefs.join(scratch, copy_name(f.relpath) + ".skip")
    with lakefs.open_input(f.path) as src, lakefs.open_output(target) as dst:
        skipped = 0
        while skipped < n:
            line = src.readline(_CHUNK)  # bounded: a long line is read (and dropped) in pieces
            if not line:
                break
            if line.endswith(b"\n"):
                skipped += 1
        shutil.copyfileobj(src, dst, _CHUNK)
    return replace(f, path=target, origin=f.source_path)


def blank_long_lines(
    f: FileFacts, scratch: str, options: CsvOptions, limit: int
) -> tuple[FileFacts, list[Reject]]:
    """A copy of the file in which every physical line longer than `limit` bytes is blanked (its line
    ending kept, so every other line keeps its number), and one `line_too_long` reject per such line, its
    first `RAW_LIMIT` characters kept in `_raw` (the whole file stays in the inbox archive).

    Both engines then skip the blank line and land the file's other rows. Only safe where a long line is
    a record of its own: it must start and end outside quotes (quotes escaped by doubling, an ASCII
    encoding of the quote). Otherwise, or for the header line, the file is refused whole (a SourceError).
    Free for files no longer than `limit`, nearly free for files whose lines are all well under it.
    """
    size = lakefs.size(f.path)
    if size <= limit or _lines_shorter_than(f.path, size, limit):
        return f, []
    quote = options.quote.encode("latin-1")
    countable = options.escape == options.quote and options.encoding != "utf-16"
    long_lines: list[tuple[int, int, bytes]] = []  # (line number, record index, first bytes)
    with lakefs.open_input(f.path) as fh:
        n, records, inside = 0, 0, False
        while True:
            head = fh.readline(limit + 1)
            if not head:
                break
            n += 1
            long_line = len(head) > limit and not head.endswith(b"\n")
            quotes, start_inside = head.count(quote), inside
            more = head
            while long_line and more and not more.endswith(b"\n"):  # the rest of a long line, bounded
                more = fh.readline(limit + 1)
                quotes += more.count(quote)
            inside = inside != (quotes % 2 == 1)
            if long_line:
                where = f"{f.relpath}: line {n} is longer than {limit} bytes (line_too_long)"
                if n == 1:
                    raise SourceError(f"{where}: it is the header line")
                if not countable or start_inside or inside:
                    raise SourceError(
                        f"{where}, and it is not a record of its own (it starts or ends inside a quoted "
                        "field, or the quoting can't tell): the file is refused whole"
                    )
                long_lines.append((n, records - (1 if options.header else 0), head[: RAW_LIMIT * 4]))
            if not start_inside and head.strip(b"\r\n"):
                records += 1  # a record starts on this line (blank lines are no record)
    if not long_lines:
        return f, []
    blank = {n for n, _, _ in long_lines}
    ending = b"\r\n" if has_crlf(f.path) else b"\n"
    target = lakefs.join(scratch, copy_name(f.relpath) + ".short")
    with lakefs.open_input(f.path) as src, lakefs.open_output(target) as dst:
        n = 0
        while True:
            line = src.readline(limit + 1)
            if not line:
                break
            n += 1
            if n not in blank:
                dst.write(line)
                continue
            while not line.endswith(b"\n"):  # skip the rest of the long line, keep its ending
                line = src.readline(limit + 1)
                if not line:
                    break
            dst.write(ending)
    decoder = _decoder_name(options)
    rejects = [
        Reject(
            f.relpath,
            record,
            LINE_TOO_LONG,
            f"record longer than {limit} bytes",
            raw=first.decode(decoder, errors="backslashreplace")[:RAW_LIMIT],
            line=n,
        )
        for n, record, first in long_lines
    ]
    return replace(f, path=target, origin=f.source_path), rejects


def _lines_shorter_than(path: str, size: int, limit: int) -> bool:
    """True when every physical line of the file is shorter than `limit` bytes, seen by seeking: if each
    whole block of `limit // 2` bytes holds a line break, no two breaks are `limit` bytes apart. Reads a
    few bytes per block (where the first break is), not the file; False means: scan it line by line."""
    half = limit // 2
    with lakefs.open_input(path) as fh:
        for start in range(0, size - half + 1, half):
            fh.seek(start)
            left = half
            while left > 0:
                chunk = fh.read(min(left, 1 << 20))
                if not chunk:
                    return False
                if b"\n" in chunk:
                    break
                left -= len(chunk)
            else:
                return False
    return True


def has_crlf(path: str) -> bool:
    """Does the file use Windows line endings (judged on its first 64 KiB)?"""
    with lakefs.open_input(path) as fh:
        return b"\r\n" in fh.read(1 << 16)


def decodes_cleanly(path: str, options: CsvOptions) -> bool:
    """Are all of a file's bytes valid in its encoding? (Then a U+FFFD in it is a real character.)"""
    decoder = codecs.getincrementaldecoder(_decoder_name(options))(errors="strict")
    try:
        with lakefs.open_input(path) as fh:
            while chunk := fh.read(_CHUNK):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def read_header(path: str, options: CsvOptions) -> list[str] | None:
    """The raw column names of a file (its first record), or None for an empty file.

    Without a header, names are `column0…` (as DuckDB names them); the count comes from the first record.
    """
    with open_text(path, options) as f:
        try:
            first = next(csv.reader(f, **csv_dialect(options)), None)  # type: ignore[arg-type]
        except csv.Error as exc:
            raise SourceError(f"{path}: cannot read the header: {exc}") from None
    if first is None or first == []:
        return None
    return first if options.header else [f"column{i}" for i in range(len(first))]


def record_lines(path: str, options: CsvOptions, wanted: Iterable[int]) -> dict[int, int]:
    """Physical (1-based) line numbers where the data records with these 0-based indexes start.

    A scan of the file with Python's csv module (`plan.rejects.start_lines`): only run for files that
    have rejected rows whose engine could not say where they were, so its cost is paid only then.
    """
    todo = set(wanted)
    if not todo:
        return {}
    with open_text(path, options) as f:
        return start_lines(f, options, todo)


def lines_at_offsets(path: str, offsets: Iterable[int], encoding: str = "utf-8") -> dict[int, int]:
    """Physical (1-based) line numbers of byte offsets (0-based) in a file: newlines counted before each.

    DuckDB reads a file in another encoding (Latin-1, UTF-16) through a UTF-8 transcoding, and its offsets
    count the transcoded bytes: such a file is transcoded the same way before counting.
    """
    wanted = sorted(set(offsets))
    out: dict[int, int] = {}
    if not wanted:
        return out
    codec = codecs.lookup(encoding).name
    with lakefs.open_input(path) as f:
        if codec in ("utf-8", "utf-8-sig"):  # raw bytes, a byte-order mark included (DuckDB counts it)
            data = f.read(wanted[-1] + 3)
        else:  # transcoding at most halves the size (UTF-16 → ASCII): three times the offset is plenty
            data = f.read(3 * (wanted[-1] + 3) + 4).decode(codec, errors="replace").encode("utf-8")
    line, pos = 1, 0
    for off in wanted:
        # A record never starts with a line break: an offset on one (DuckDB's, after a CR) moves past it.
        start = off
        while start < len(data) and data[start : start + 1] in (b"\r", b"\n"):
            start += 1
        line += data.count(b"\n", pos, start)
        out[off] = line
        pos = start
    return out


def decode_check(options: CsvOptions) -> str:
    """The Python codec for the declared encoding (validated: the config only allows known ones)."""
    return codecs.lookup(_decoder_name(options)).name


@dataclass(frozen=True)
class Move:
    """A processed file to move after the commit: to `archive/` (landed) or `unprocessed/` (rejected)."""

    relpath: str
    path: str  # where it is now: local path or s3:// URL
    folder: str  # ARCHIVE_DIR or UNPROCESSED_DIR


def move_destination(root: str, move: Move, when: datetime, archive_root: str | None = None) -> str:
    """`<root>/<archive|unprocessed>/<yyyy>/<mm>/<relpath>` (or under `archive_root` when configured)."""
    base = (archive_root or root).rstrip("/")
    return f"{base}/{move.folder}/{when:%Y}/{when:%m}/{move.relpath}"


def move_files(
    root: str, moves: Sequence[Move], when: datetime, archive_root: str | None = None
) -> list[str]:
    """Move processed files out of the inbox; a file already gone (moved by an earlier try) is skipped.

    Local: rename (copy + delete across devices). S3: copy + delete. Repeating it is harmless.
    """
    done = []
    for m in moves:
        dest = move_destination(root, m, when, archive_root)
        if m.path.startswith("s3://"):
            try:
                lakefs.move(m.path, dest)  # the one S3 move: server-side copy, then delete, with retries
            except Exception as exc:
                if error_code(exc) in ("NoSuchKey", "404") or "NoSuchKey" in str(exc) or "404" in str(exc):
                    continue
                raise SourceError(
                    f"cannot move {m.path} to {dest}: {exc}", hint="check s3:PutObject and s3:DeleteObject"
                ) from None
        else:
            src = Path(m.path)
            if not src.exists():
                continue
            if not src.parent.resolve().is_relative_to(Path(root).resolve()):
                raise SourceError(
                    f"refusing to move {src}: it is not inside the inbox {root}",
                    hint="this is a tidemark bug: please report it",
                )
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, dest)
            except OSError:
                shutil.move(str(src), dest)
        done.append(dest)
    return done


def locate(path: str, options: CsvOptions, rejects: Sequence[Reject]) -> list[Reject]:
    """Fill in physical line numbers: from byte offsets when the engine gave them, else by a file scan."""
    by_offset = lines_at_offsets(
        path, [r.offset for r in rejects if r.offset is not None], _decoder_name(options)
    )
    scan = record_lines(path, options, [r.record for r in rejects if r.offset is None])
    located = [
        replace(r, line=by_offset[r.offset] if r.offset is not None else scan.get(r.record)) for r in rejects
    ]
    # An undecodable record keeps its bytes: the line as read, bad bytes escaped (`caf\xe9`).
    bad = {r.line for r in located if r.code == INVALID_ENCODING and r.line}
    if not bad:
        return located
    raw = raw_lines(path, options, bad)
    return [replace(r, raw=raw.get(r.line, r.raw)) if r.code == INVALID_ENCODING else r for r in located]


def raw_lines(path: str, options: CsvOptions, lines: set[int]) -> dict[int | None, str]:
    """Physical lines (1-based) of a file, decoded with undecodable bytes escaped as `\\xNN`."""
    out: dict[int | None, str] = {}
    last = max(lines)
    with lakefs.open_input(path) as fh:
        for n, data in enumerate(fh, start=1):
            if n in lines:
                out[n] = data.rstrip(b"\r\n").decode(_decoder_name(options), errors="backslashreplace")
            if n >= last:
                break
    return out
