"""A Redshift Data API double that enforces what Redshift documents and moto does not, executing on PostgreSQL.

A `redshift-data` client stand-in (`DataApi(settings, client=PostgresRedshiftData(...))`) whose
`batch_execute_statement` refuses more than 40 statements, whose statements refuse more than 100 KB of
SQL text (both as the ValidationException the service returns), whose statements go through
SUBMITTED → STARTED → FINISHED/FAILED as `describe_statement` is polled, and whose batch descriptions
carry `SubStatements` with `ResultRows` (rows a DML statement changed), as Redshift's do. The SQL runs on
PostgreSQL, a batch in one transaction; Redshift's `COPY … FORMAT AS PARQUET MANIFEST` is simulated by
reading the manifest and its files from S3 (moto). Every S3 GET is counted, with its Range header.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from datetime import datetime
from typing import Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

MAX_STATEMENTS = 40  # BatchExecuteStatement's Sqls: 1..40 items
MAX_SQL_BYTES = 100_000  # "The maximum query statement size is 100 KB"
_COPY = re.compile(r"copy (\S+) from '([^']+)' iam_role '[^']+' format as parquet manifest$")


def _invalid(op: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": "ValidationException", "Message": message}}, op)


class PostgresRedshiftData:
    """`execute_statement`, `batch_execute_statement`, `describe_statement`, `get_statement_result`."""

    def __init__(self, dbname: str, s3: Any) -> None:
        import psycopg

        self.conn = psycopg.connect(host="127.0.0.1", user="postgres", dbname=dbname, autocommit=True)
        self.s3 = s3
        self.statements: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.batches: list[list[str]] = []
        self.copies: list[str] = []
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.conn.close()

    # -- the client's calls --------------------------------------------------------------------------

    def execute_statement(self, *, Sql: str, Database: str, **_: Any) -> dict[str, Any]:
        self._check_sql("ExecuteStatement", Sql)
        return self._submit([Sql], batch=False)

    def batch_execute_statement(self, *, Sqls: list[str], Database: str, **_: Any) -> dict[str, Any]:
        if not 1 <= len(Sqls) <= MAX_STATEMENTS:
            raise _invalid(
                "BatchExecuteStatement",
                f"1 validation error detected: Value at 'sqls' failed to satisfy constraint: Member must have "
                f"length less than or equal to {MAX_STATEMENTS} (got {len(Sqls)})",
            )
        for sql in Sqls:
            self._check_sql("BatchExecuteStatement", sql)
        self.batches.append(list(Sqls))
        return self._submit(Sqls, batch=True)

    def describe_statement(self, *, Id: str) -> dict[str, Any]:
        st = self.statements[Id]
        # Statements are seen running before they are done, as on Redshift.
        n = self.polls[Id] = self.polls.get(Id, 0) + 1
        status = "SUBMITTED" if n == 1 else "STARTED" if n == 2 else st["final"]
        out = {"Id": Id, "Status": status, "CreatedAt": datetime(2026, 1, 1), "HasResultSet": False}
        if status == "FINISHED":
            out["HasResultSet"] = st["rows"] is not None
            if st["batch"]:
                out["SubStatements"] = [
                    {"Id": f"{Id}:{i + 1}", "Status": "FINISHED", "ResultRows": n_rows}
                    for i, n_rows in enumerate(st["counts"])
                ]
        if status == "FAILED":
            out["Error"] = st["error"]
        return out

    def get_statement_result(self, *, Id: str, NextToken: str | None = None) -> dict[str, Any]:
        rows = self.statements[Id]["rows"] or []
        return {"Records": [[self._field(v) for v in row] for row in rows]}

    def cancel_statement(self, *, Id: str) -> dict[str, Any]:
        return {"Status": True}

    # -- execution -------------------------------------------------------------------------------------

    @staticmethod
    def _check_sql(op: str, sql: str) -> None:
        if len(sql.encode()) > MAX_SQL_BYTES:
            raise _invalid(op, f"the query statement is {len(sql.encode())} bytes; the maximum is 100 KB")

    @staticmethod
    def _field(v: Any) -> dict[str, Any]:
        if v is None:
            return {"isNull": True}
        if isinstance(v, bool):
            return {"booleanValue": v}
        if isinstance(v, int):
            return {"longValue": v}
        if isinstance(v, float):
            return {"doubleValue": v}
        return {"stringValue": str(v)}

    def _submit(self, sqls: list[str], batch: bool) -> dict[str, Any]:
        import psycopg

        statement_id = f"st-{next(self._ids)}"
        record: dict[str, Any] = {"batch": batch, "rows": None, "counts": [], "final": "FINISHED"}
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                for sql in sqls:
                    if sql.startswith("copy "):
                        record["counts"].append(self._copy(cur, sql))
                        continue
                    cur.execute(sql)
                    record["rows"] = cur.fetchall() if cur.description else None
                    record["counts"].append(max(cur.rowcount, 0))
        except psycopg.Error as exc:
            record.update(final="FAILED", error=f"ERROR: {exc}".strip(), rows=None)
        self.statements[statement_id] = record
        return {"Id": statement_id, "CreatedAt": datetime(2026, 1, 1)}

    def _copy(self, cur: Any, sql: str) -> int:
        m = _COPY.match(sql)
        assert m, sql
        self.copies.append(sql)
        bucket, key = m.group(2)[5:].split("/", 1)
        manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        total = 0
        for entry in manifest["entries"]:
            b, k = entry["url"][5:].split("/", 1)
            body = self.s3.get_object(Bucket=b, Key=k)["Body"].read()
            assert len(body) == entry["meta"]["content_length"]
            table = pq.read_table(io.BytesIO(body))
            buf = io.BytesIO()
            pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
            with cur.copy(f"copy {m.group(1)} from stdin (format csv)") as copy:
                copy.write(buf.getvalue())
            total += table.num_rows
        return total


class CountingS3:
    """A boto3 S3 client wrapper that records each call (operation, key, Range) for assertions."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, str, str | None]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr) or name.startswith("get_paginator"):
            if name == "get_paginator":

                def paginator(op: str) -> Any:
                    self.calls.append((op, "", None))
                    return attr(op)

                return paginator
            return attr

        def call(**kw: Any) -> Any:
            self.calls.append((name, kw.get("Key", kw.get("Prefix", "")), kw.get("Range")))
            return attr(**kw)

        return call
