"""The one S3 client: boto3 for S3 (and the other AWS services tidemark calls), `s3://` URLs, retries.

Endpoint and region come from the usual AWS environment: `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (how
tests reach moto, and how MinIO is used) and `AWS_REGION` / `AWS_DEFAULT_REGION`. pyarrow's S3 filesystem
(`lake/fs`) reads the same settings through `s3_endpoint()` and `aws_region()`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tenacity import before_sleep_log, retry, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ingestion.errors import SourceError

log = logging.getLogger("tidemark")

S3 = "s3://"

# S3 error codes worth retrying: throttling, server-side hiccups, and concurrent conditional writes
# racing inside S3 itself (409 ConditionalRequestConflict: "retry the request").
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "ConditionalRequestConflict",
    }
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError (`NoSuchKey`, `SlowDown`, …); '' for anything else."""
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def is_transient(exc: BaseException) -> bool:
    """Is this S3 failure worth retrying (throttling, a 5xx, a dropped connection)?"""
    from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError, ReadTimeoutError

    if isinstance(exc, ClientError):
        return error_code(exc) in TRANSIENT_CODES
    return isinstance(exc, (ConnectionError, EndpointConnectionError, ReadTimeoutError))


s3_retry = retry(
    retry=retry_if_exception(is_transient),
    stop=stop_after_attempt(5),
    wait=wait_exponential_jitter(initial=0.2, max=5),
    before_sleep=before_sleep_log(log, logging.WARNING),
    reraise=True,
)
"""Retry a call on transient S3 errors (5 attempts, jittered backoff); a decorator or `s3_retry(fn)(…)`."""


def s3_endpoint() -> str | None:
    """The S3 endpoint override from the environment (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def aws_region() -> str | None:
    """The AWS region from the environment (`AWS_REGION`, else `AWS_DEFAULT_REGION`)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def aws_client(service: str, **config: Any) -> Any:
    """A boto3 client for `service`; botocore reads the endpoint (`AWS_ENDPOINT_URL_<SERVICE>`), region
    and credentials from the environment. `config` goes to botocore's Config (e.g. `retries`)."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, config=Config(**config) if config else None)


def s3_client() -> Any:
    """The boto3 S3 client every S3 call in tidemark goes through (standard retry mode, 3 attempts)."""
    return aws_client("s3", retries={"mode": "standard", "max_attempts": 3})


def split_s3(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → (`bucket`, `a/b`); a SourceError for anything that is not an `s3://bucket` URL."""
    bucket, _, key = url.removeprefix(S3).partition("/")
    if not url.startswith(S3) or not bucket:
        raise SourceError(f"{url} is not an s3://bucket/prefix URL")
    return bucket, key.lstrip("/")
