"""The Redshift Data API edge: where statements run (`RedshiftSettings`) and `DataApi` to run them.

`DataApi` submits a statement (or a batch = one transaction), polls `describe_statement` until it is
done with a growing interval, cancels it after a timeout, and retries throttled calls; both loops are
tenacity's.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
)

from ingestion.errors import ConfigError, StatementFailed
from ingestion.lake.s3 import aws_client, error_code

_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
# Data API statuses after which a statement no longer changes.
DONE = {"FINISHED", "FAILED", "ABORTED"}
THROTTLED = {"ThrottlingException", "TooManyRequestsException", "Throttling", "RequestLimitExceeded"}


def check_iam_role(role: str, name: str = "TIDEMARK_REDSHIFT_IAM_ROLE") -> str:
    """`role` when it is an IAM role ARN, else a ConfigError naming the setting."""
    if not _ROLE.match(role):
        raise ConfigError(
            f"{name} is {role or 'unset'!r}, not an IAM role ARN",
            hint="set it to the role Redshift assumes to read the lake: arn:aws:iam::<account>:role/<name>",
        )
    return role


@dataclass(frozen=True)
class RedshiftSettings:
    """Where the Data API runs statements and the role Redshift reads the lake with."""

    iam_role: str
    database: str
    cluster_identifier: str | None = None
    workgroup_name: str | None = None
    secret_arn: str | None = None
    db_user: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> RedshiftSettings:
        """Read `TIDEMARK_REDSHIFT_*` variables; errors name the variable to set."""
        e = os.environ if env is None else env
        s = cls(
            iam_role=e.get("TIDEMARK_REDSHIFT_IAM_ROLE", ""),
            database=e.get("TIDEMARK_REDSHIFT_DATABASE", ""),
            cluster_identifier=e.get("TIDEMARK_REDSHIFT_CLUSTER") or None,
            workgroup_name=e.get("TIDEMARK_REDSHIFT_WORKGROUP") or None,
            secret_arn=e.get("TIDEMARK_REDSHIFT_SECRET_ARN") or None,
            db_user=e.get("TIDEMARK_REDSHIFT_DB_USER") or None,
        )
        s.validate()
        return s

    def validate(self) -> None:
        """Raise ConfigError unless exactly one target and a usable role and database are set."""
        check_iam_role(self.iam_role)
        if not self.database:
            raise ConfigError("TIDEMARK_REDSHIFT_DATABASE is unset", hint="set it to the Redshift database")
        if bool(self.cluster_identifier) == bool(self.workgroup_name):
            raise ConfigError(
                "set exactly one of TIDEMARK_REDSHIFT_CLUSTER (provisioned) and TIDEMARK_REDSHIFT_WORKGROUP "
                "(Serverless)",
                hint="the Data API needs to know which warehouse runs the statements",
            )
        if self.cluster_identifier and not (self.secret_arn or self.db_user):
            raise ConfigError(
                "a provisioned cluster needs TIDEMARK_REDSHIFT_SECRET_ARN or TIDEMARK_REDSHIFT_DB_USER",
                hint="a Secrets Manager secret with the user's password, or a database user for temporary "
                "credentials (redshift:GetClusterCredentials)",
            )

    def target(self) -> dict[str, str]:
        """The Data API keyword arguments naming the warehouse, database and credentials."""
        out = {"Database": self.database}
        if self.cluster_identifier:
            out["ClusterIdentifier"] = self.cluster_identifier
        if self.workgroup_name:
            out["WorkgroupName"] = self.workgroup_name
        if self.secret_arn:
            out["SecretArn"] = self.secret_arn
        elif self.db_user:
            out["DbUser"] = self.db_user
        return out


def is_throttled(exc: BaseException) -> bool:
    """Did the Data API refuse a call for its rate limit (worth retrying after a pause)?"""
    return error_code(exc) in THROTTLED


def not_done(description: dict[str, Any]) -> bool:
    """Is a described statement still queued or running?"""
    return description.get("Status") not in DONE


class DataApi:
    """Statements through the Redshift Data API: submit, poll until done, read results; throttling retried."""

    def __init__(
        self,
        settings: RedshiftSettings,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout_s: float = 3600.0,
    ) -> None:
        self.settings = settings
        self.client = client or aws_client("redshift-data")
        self.sleep = sleep
        self.timeout_s = timeout_s

    def _call(self, name: str, **kw: Any) -> dict[str, Any]:
        retrying = Retrying(
            retry=retry_if_exception(is_throttled),
            wait=wait_exponential(multiplier=0.5, max=20),
            stop=stop_after_attempt(8),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(getattr(self.client, name), **kw)

    def run(self, sql: str | Sequence[str]) -> dict[str, Any]:
        """Run one statement, or several as one transaction (batch); wait for it and return its description."""
        if isinstance(sql, str):
            resp = self._call("execute_statement", Sql=sql, **self.settings.target())
        else:
            resp = self._call("batch_execute_statement", Sqls=list(sql), **self.settings.target())
        return self.wait(resp["Id"])

    def _timed_out(self, state: RetryCallState) -> bool:
        # The time spent waiting between polls, not the clock: a test's fake `sleep` waits no real time.
        return state.idle_for >= self.timeout_s

    def wait(self, statement_id: str) -> dict[str, Any]:
        """Poll `describe_statement` with a growing interval (0.25 s … 10 s) until the statement is done.

        A statement still running after `timeout_s` of waiting is cancelled; FAILED, ABORTED and
        cancelled statements raise StatementFailed.
        """
        waited = 0.0

        def gave_up(state: RetryCallState) -> dict[str, Any]:
            nonlocal waited
            waited = state.idle_for
            return state.outcome.result()  # type: ignore[union-attr]

        polling = Retrying(
            retry=retry_if_result(not_done),
            wait=wait_exponential(multiplier=0.25, max=10),
            stop=self._timed_out,
            sleep=self.sleep,
            retry_error_callback=gave_up,
        )
        desc = polling(self._call, "describe_statement", Id=statement_id)
        status = desc.get("Status")
        if status == "FINISHED":
            return desc
        if status in DONE:
            raise StatementFailed(
                f"Redshift statement {statement_id} {status}: {desc.get('Error', 'no error text')}",
                hint="look the statement up with: aws redshift-data describe-statement --id " + statement_id,
            )
        self._call("cancel_statement", Id=statement_id)
        raise StatementFailed(
            f"Redshift statement {statement_id} still {status} after {waited:.0f}s; cancelled",
            hint="a lock or a busy queue holds it: check STV_LOCKS / the WLM queue, then rerun",
        )

    def rows(self, sql: str) -> list[list[Any]]:
        """The result rows of a query (every page), each a list of Python values."""
        desc = self.run(sql)
        if not desc.get("HasResultSet"):
            return []
        out: list[list[Any]] = []
        token: str | None = None
        while True:
            kw = {"Id": desc["Id"], **({"NextToken": token} if token else {})}
            page = self._call("get_statement_result", **kw)
            for record in page.get("Records", []):
                out.append([None if f.get("isNull") else next(iter(f.values())) for f in record])
            token = page.get("NextToken")
            if not token:
                return out
