"""Small JSON documents with compare-and-swap writes: a local folder or an S3 prefix.

Every write is conditional on the token (local: a content hash; S3: the ETag) the writer last read,
or on the document not existing yet. A lost race raises `PreconditionFailed`; callers turn it into
`StateConflict` or `LeaseHeld`. This is the only place that knows how either backend does it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from ingestion.errors import SourceError, TidemarkError
from ingestion.lake.s3 import error_code, s3_client, s3_retry


class PreconditionFailed(TidemarkError):
    """The document changed (or appeared, or vanished) since the writer read it."""


@dataclass(frozen=True)
class Doc:
    """A document's bytes and the token a conditional write must present to replace it."""

    body: bytes
    token: str


class DocStore(Protocol):
    """Conditional get/put/delete of small documents by relative key (`a/b/c.json`)."""

    location: str

    def get(self, key: str) -> Doc | None: ...

    def put(self, key: str, body: bytes, *, token: str | None) -> str:
        """Write `body` if the document's token is still `token` (None: if it does not exist yet)."""
        ...

    def delete(self, key: str, *, token: str) -> None: ...

    def discard(self, key: str) -> None:
        """Delete a document nobody writes again (a history part), unconditionally; gone already is fine."""
        ...

    def list(self, prefix: str) -> list[str]: ...


def open_docstore(root: str) -> DocStore:
    """The store for a local folder or an `s3://bucket/prefix` URL."""
    if root.startswith("s3://"):
        return S3DocStore(root)
    if "://" in root:
        raise SourceError(
            f"{root}: unsupported storage scheme", hint="use a local folder or s3://bucket/prefix"
        )
    return LocalDocStore(root)


class LocalDocStore:
    """Documents as files; a per-document `flock` makes compare-and-swap atomic across processes."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    @staticmethod
    def _token(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The lock file sits beside the document and is never removed: removing it would let two
        # writers lock two different inodes.
        with open(path.parent / f".{path.name}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield path
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def get(self, key: str) -> Doc | None:
        try:
            body = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        return Doc(body, self._token(body))

    def put(self, key: str, body: bytes, *, token: str | None) -> str:
        with self._locked(key) as path:
            current = self.get(key)
            if (current.token if current else None) != token:
                raise PreconditionFailed(f"{path} changed since it was read")
            # Write-then-rename: a reader (or a crash) never sees half a document.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(body)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
            return self._token(body)

    def delete(self, key: str, *, token: str) -> None:
        with self._locked(key) as path:
            current = self.get(key)
            if current is None or current.token != token:
                raise PreconditionFailed(f"{path} changed since it was read")
            path.unlink()

    def discard(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Its lock file goes too: nobody writes this document again, so no writer can hold the lock.
        (path.parent / f".{path.name}.lock").unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*.json")
            if p.is_file() and not p.name.startswith(".")
        )


class S3DocStore:
    """Documents as S3 objects; conditional writes with `IfMatch` (ETag) and `IfNoneMatch='*'`."""

    def __init__(self, url: str, client=None) -> None:
        parsed = urlparse(url)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.location = url.rstrip("/")
        self.client = client or s3_client()

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @s3_retry
    def get(self, key: str) -> Doc | None:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.NoSuchKey:
            return None
        return Doc(obj["Body"].read(), obj["ETag"])

    @s3_retry
    def put(self, key: str, body: bytes, *, token: str | None) -> str:
        cond = {"IfMatch": token} if token else {"IfNoneMatch": "*"}
        try:
            out = self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=body, ContentType="application/json", **cond
            )
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "412"):
                raise PreconditionFailed(f"{self.location}/{key} changed since it was read") from None
            raise
        return out["ETag"]

    @s3_retry
    def delete(self, key: str, *, token: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=token)
        except Exception as exc:
            if error_code(exc) in ("PreconditionFailed", "412", "NoSuchKey"):
                raise PreconditionFailed(f"{self.location}/{key} changed since it was read") from None
            raise

    @s3_retry
    def discard(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    @s3_retry
    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        start = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            keys += [o["Key"][start:] for o in page.get("Contents", []) if o["Key"].endswith(".json")]
        return sorted(keys)
