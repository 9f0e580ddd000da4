"""The lake's file operations on a local folder or on `s3://`, behind one small interface.

Landing, quarantine and logs call these functions with plain path strings; a path that starts with
`s3://` goes through pyarrow's S3 filesystem (credentials, region and endpoint from the AWS environment
as `lake/s3` reads them: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` is how tests reach moto), any other
path through the local filesystem exactly as before (renames are atomic there). The DuckDB engine writes
to a local scratch folder and `place` renames (local lake) or uploads (S3 lake) each file; the Spark
engine writes on the lake's own filesystem (`<lake>/_tmp/<run_id>/`) and `move` publishes server-side
(a rename locally, a copy inside S3), so nothing in its data path touches the driver's disk.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ingestion.lake.s3 import S3, aws_region, s3_client, s3_endpoint, s3_retry

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

def is_remote(path: str) -> bool:
    """Is this lake path on object storage (`s3://…`)?"""
    return "://" in path


def join(base: str, *parts: str) -> str:
    """Join path parts with `/` for URIs and the OS separator for local paths."""
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def scratch_root(lake_root: str) -> str:
    """The local folder holding `_tmp/` scratch files: the lake itself, or a temp folder for an S3 lake.

    `TIDEMARK_SCRATCH` overrides the temp folder (a bigger disk on a Glue Python shell job, say).
    """
    if not is_remote(lake_root):
        return lake_root
    base = os.environ.get("TIDEMARK_SCRATCH") or os.path.join(tempfile.gettempdir(), "tidemark")
    # One folder per lake, so two pipelines on one machine never tidy each other's scratch.
    return os.path.join(base, hashlib.sha256(lake_root.encode()).hexdigest()[:12])


@lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None) -> pafs.FileSystem:
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or endpoint, scheme=scheme if host else "https")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem for a lake path and the path inside it (`bucket/key` on S3)."""
    import pyarrow.fs as pafs

    if path.startswith(S3):
        return _s3(s3_endpoint(), aws_region()), path[len(S3) :].rstrip("/")
    if is_remote(path):
        from ingestion.errors import ConfigError

        raise ConfigError(
            f"lake path {path}: only local folders and s3:// are supported", hint="use s3://bucket/prefix"
        )
    return pafs.LocalFileSystem(), os.path.abspath(path)


def glob(root: str, pattern: str) -> list[str]:
    """Files under `root` whose path relative to it matches `pattern` (`*` within one path segment), sorted."""
    if not is_remote(root):
        return sorted(str(p) for p in Path(root).glob(pattern))
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    want = pattern.split("/")
    out = []
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base) + 1 :].split("/")
        if len(rel) == len(want) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(rel, want, strict=False)):
            out.append(S3 + info.path)
    return sorted(out)


def children(root: str, pattern: str = "*") -> list[str]:
    """Immediate sub-folders of `root` whose name matches `pattern`, as full paths."""
    if not is_remote(root):
        return sorted(str(p) for p in Path(root).glob(pattern) if p.is_dir())
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
    return sorted(
        S3 + i.path
        for i in infos
        if i.type == pafs.FileType.Directory and fnmatch.fnmatchcase(i.path.rsplit("/", 1)[-1], pattern)
    )


def remove(path: str) -> None:
    """Delete one file; a file already gone is fine."""
    if not is_remote(path):
        Path(path).unlink(missing_ok=True)
        return
    # boto3, not pyarrow: pyarrow's delete_file PUTs an empty "folder/" marker for the parent.
    bucket, _, key = filesystem(path)[1].partition("/")
    s3_retry(s3_client().delete_object)(Bucket=bucket, Key=key)


def remove_tree(path: str) -> None:
    """Delete a folder and everything under it; a folder already gone is fine."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    import pyarrow.fs as pafs

    fs, base = filesystem(path)
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:  # S3 "folders" are prefixes: removing the files is all
            remove(S3 + info.path)


def place(local: str, dest: str) -> None:
    """Move a finished local file to its lake path: a rename locally, an upload then delete on S3.

    On S3 a PUT is atomic (readers see the whole object or none), so no half-written file is ever seen.
    """
    if not is_remote(dest):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, dest)
        return
    fs, key = filesystem(dest)
    # A plain stream, not copy_files: that would also PUT empty "folder/" marker objects.
    with open(local, "rb") as src, fs.open_output_stream(key) as out:
        shutil.copyfileobj(src, out, 8 << 20)
    os.unlink(local)


def move(src: str, dest: str) -> None:
    """Move a finished file to its lake path on the same filesystem: a rename locally, a server-side copy
    then delete on S3 (no byte passes through this process). A local source for an S3 dest is uploaded."""
    if not is_remote(src):
        place(src, dest)
        return
    src_bucket, _, src_key = filesystem(src)[1].partition("/")
    dst_bucket, _, dst_key = filesystem(dest)[1].partition("/")
    client = s3_client()
    s3_retry(client.copy_object)(
        Bucket=dst_bucket, Key=dst_key, CopySource={"Bucket": src_bucket, "Key": src_key}
    )
    s3_retry(client.delete_object)(Bucket=src_bucket, Key=src_key)


def move_all(pairs: list[tuple[str, str]], workers: int = 8) -> None:
    """`move` each (src, dest) pair, several at a time (S3 copies are one request each)."""
    if len(pairs) <= 1 or not any(is_remote(s) for s, _ in pairs):
        for src, dest in pairs:
            move(src, dest)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(pairs))) as pool:
        for _ in pool.map(lambda pair: move(*pair), pairs):
            pass


def files_under(root: str, suffix: str = "") -> list[str]:
    """Every file below `root` (any depth) whose name ends with `suffix`, as full paths, sorted."""
    if not is_remote(root):
        return sorted(str(p) for p in Path(root).rglob(f"*{suffix}") if p.is_file())
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(S3 + i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


def size(path: str) -> int:
    """A file's size in bytes (a HEAD request on S3)."""
    if not is_remote(path):
        return os.path.getsize(path)
    fs, key = filesystem(path)
    return int(fs.get_file_info(key).size or 0)


class _Stream(io.RawIOBase):
    """A pyarrow input file as a Python raw stream (for `io.BufferedReader`, `TextIOWrapper`, `zipfile`)."""

    def __init__(self, native: Any) -> None:
        self._f = native

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self._f.seek(offset, whence))

    def tell(self) -> int:
        return int(self._f.tell())

    def close(self) -> None:
        self._f.close()
        super().close()


def open_input(path: str) -> BinaryIO:
    """A file of the lake or an inbox opened for reading as bytes: local, or streamed from S3 by ranged
    GETs (seekable, buffered), never downloaded to the local disk."""
    if not is_remote(path):
        return open(path, "rb")
    fs, key = filesystem(path)
    return io.BufferedReader(_Stream(fs.open_input_file(key)), buffer_size=8 << 20)


def open_output(path: str) -> BinaryIO:
    """A new file of the lake opened for writing as bytes (on S3 a streamed multipart upload)."""
    if not is_remote(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb")
    fs, key = filesystem(path)
    return fs.open_output_stream(key)


# A local replacement being written, `.<name>.replacing` beside the file: hidden (Athena, Spectrum and
# Spark skip dot files) and never matching `*.parquet`.
REPLACE_SUFFIX = ".replacing"


class _S3Replacement(io.RawIOBase):
    """A writable stream that replaces one S3 object when `finish` is called, and never before.

    Small content is one PUT; content past `part_size` goes up as a multipart upload, completed by
    `finish` and aborted by `abort` (pyarrow's own S3 streams complete on close, even after an error).
    """

    def __init__(self, bucket: str, key: str, part_size: int = 8 << 20) -> None:
        self.bucket, self.key, self.part_size = bucket, key, part_size
        self._buf = bytearray()
        self._written = 0
        self._upload: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._client = s3_client()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._buf += data
        self._written += len(data)
        while len(self._buf) >= self.part_size:
            self._send(bytes(self._buf[: self.part_size]))
            del self._buf[: self.part_size]
        return len(data)

    def _send(self, body: bytes) -> None:
        if self._upload is None:
            made = s3_retry(self._client.create_multipart_upload)(Bucket=self.bucket, Key=self.key)
            self._upload = made["UploadId"]
        n = len(self._parts) + 1
        resp = s3_retry(self._client.upload_part)(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload, PartNumber=n, Body=body
        )
        self._parts.append({"PartNumber": n, "ETag": resp["ETag"]})

    def finish(self) -> None:
        if self._upload is None:
            s3_retry(self._client.put_object)(Bucket=self.bucket, Key=self.key, Body=bytes(self._buf))
            return
        if self._buf:
            self._send(bytes(self._buf))
        s3_retry(self._client.complete_multipart_upload)(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload, MultipartUpload={"Parts": self._parts}
        )

    def abort(self) -> None:
        if self._upload is not None:
            s3_retry(self._client.abort_multipart_upload)(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload
            )


@contextmanager
def replacing(path: str) -> Iterator[BinaryIO]:
    """A stream whose content replaces the file at `path` whole when the block ends without an error.

    Locally a file beside it, renamed over it; on S3 one PUT of the same key (a multipart upload for
    large content, completed at the end). An error or a crash inside the block leaves the old file.
    """
    if not is_remote(path):
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}{REPLACE_SUFFIX}")
        f = open(tmp, "wb")
        try:
            yield f
            f.close()
            os.replace(tmp, path)
        finally:
            f.close()
            Path(tmp).unlink(missing_ok=True)
        return
    bucket, _, key = filesystem(path)[1].partition("/")
    out = _S3Replacement(bucket, key)
    try:
        yield out  # type: ignore[misc]
    except BaseException:
        out.abort()
        raise
    out.finish()


def read_parquet_columns(paths: list[str], columns: list[str]) -> pa.Table:
    """The named columns of Parquet files in the lake as one Arrow table (a column a file lacks is null).

    Files are read in parallel (S3 GETs overlap); types that differ between files are widened.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    def one(path: str) -> pa.Table:
        fs, key = filesystem(path)
        with fs.open_input_file(key) as f:
            pf = pq.ParquetFile(f)
            present = [c for c in columns if c in pf.schema_arrow.names]
            return pf.read(columns=present)

    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = list(pool.map(one, paths))
    out = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    for c in columns:
        if c not in out.column_names:
            out = out.append_column(c, pa.nulls(out.num_rows))
    return out.select(columns)


def write_parquet(table: pa.Table, dest: str) -> None:
    """Write an Arrow table as one Parquet file at `dest` (written beside it then renamed, or one PUT)."""
    import pyarrow.parquet as pq

    if not is_remote(dest):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
        return
    fs, key = filesystem(dest)
    pq.write_table(table, key, filesystem=fs)


def read_schema(path: str) -> pa.Schema:
    """The Arrow schema of a Parquet file in the lake (reads its footer only)."""
    import pyarrow.parquet as pq

    fs, key = filesystem(path)
    return pq.read_schema(key, filesystem=fs)


def reach_lake(lake_root: str, *, write: bool) -> None:
    """Raise LakeError, naming the lake and what to do, when it cannot be reached (or written).

    Locally: the root (or the folder it would be made in) must be a folder, writable when `write`. On S3:
    the bucket must answer (credentials, endpoint and bucket name are what usually go wrong).
    """
    from ingestion.errors import LakeError

    if lake_root.startswith(S3):
        from ingestion.lake.s3 import split_s3

        bucket, prefix = split_s3(lake_root)
        try:
            # A one-key listing under the lake's prefix: what a prefix-scoped s3:ListBucket allows
            # (HeadBucket would need the whole bucket).
            s3_retry(s3_client().list_objects_v2)(Bucket=bucket, Prefix=f"{prefix.rstrip('/')}/", MaxKeys=1)
        except Exception as exc:
            raise LakeError(
                f"the lake {lake_root} cannot be reached: {type(exc).__name__}: {exc}",
                hint="check the bucket name, the AWS credentials and region, and AWS_ENDPOINT_URL_S3 if you "
                "use an S3-compatible store",
            ) from None
        return
    if is_remote(lake_root):
        return  # an unsupported scheme: `filesystem` says so with its own hint
    path = Path(lake_root)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise LakeError(
            f"the lake {lake_root} cannot be created: {existing} is a file, not a folder",
            hint="point lake.root (or TIDEMARK_LAKE) at a folder",
        )
    if write and existing is not None and not os.access(existing, os.W_OK):
        raise LakeError(
            f"the lake {lake_root} is read-only for this user ({existing} cannot be written)",
            hint="run as a user who can write there, or point lake.root (or TIDEMARK_LAKE) elsewhere",
        )


def check_lake(cfg: Any) -> None:
    """Refuse, before anything runs, a lake that can't be reached or written (or has an unsupported scheme)."""
    if is_remote(cfg.lake_root):
        filesystem(cfg.lake_root)  # an unsupported scheme fails here, with its hint
    reach_lake(cfg.lake_root, write=True)
