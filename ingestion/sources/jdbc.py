"""PostgreSQL edge: URL parsing, connections with retries, catalog discovery, horizon facts, reads.

Everything that talks to the database lives here; what to read is decided by `ingestion.plan.jdbc`.
Every error leaving this module is a `SourceError` whose text went through `redact()`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlsplit

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from ingestion.config import JdbcSourceConfig
from ingestion.errors import ConfigError, SourceError
from ingestion.plan.jdbc import CatalogColumn, CatalogTable
from ingestion.redact import redact, register_secret, sdk_bodies_unlogged

if TYPE_CHECKING:
    import psycopg
    import pyarrow as pa

T = TypeVar("T")
DRIVER_CLASS = "org.postgresql.Driver"


@dataclass(frozen=True)
class PgConnection:
    """Where and as whom to connect; `password` is never printed (repr hides it)."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(default=None, repr=False)
    params: tuple[tuple[str, str], ...] = ()
    connect_timeout: int = 10
    retries: int = 3

    @property
    def jdbc_url(self) -> str:
        """The JDBC URL without credentials (Spark gets user and password as separate options)."""
        query = "&".join(f"{k}={v}" for k, v in self.params if k.lower() not in ("user", "password"))
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.dbname}" + (f"?{query}" if query else "")

    @property
    def cx_url(self) -> str:
        """A libpq URL with credentials for connectorx; never log it."""
        auth = quote(self.user, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        extra = [(k, v) for k, v in self.params if k in ("sslmode", "application_name")]
        query = "&".join(
            f"{k}={quote(v, safe='')}" for k, v in [*extra, ("connect_timeout", str(self.connect_timeout))]
        )
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(self.dbname, safe='')}?{query}"

    def kwargs(self) -> dict[str, Any]:
        """psycopg connection arguments."""
        kw: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "connect_timeout": self.connect_timeout,
            "application_name": "tidemark",
        }
        if self.password:
            kw["password"] = self.password
        kw.update({k: v for k, v in self.params if k in ("sslmode",)})
        return kw

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}/{self.dbname}"


def parse_jdbc_url(url: str) -> tuple[str, int, str, tuple[tuple[str, str], ...]]:
    """`jdbc:postgresql://host[:port]/db[?k=v&…]` → host, port, database, options."""
    if not url.startswith("jdbc:postgresql://"):
        raise ConfigError(
            f"{redact(url)} is not a PostgreSQL JDBC URL", hint="jdbc:postgresql://host:5432/db"
        )
    parts = urlsplit(url.removeprefix("jdbc:"))
    db = parts.path.lstrip("/")
    if not parts.hostname or not db:
        raise ConfigError(
            f"{redact(url)}: the URL needs a host and a database", hint="jdbc:postgresql://host:5432/db"
        )
    return parts.hostname, parts.port or 5432, db, tuple(parse_qsl(parts.query))


def connection_for(source: JdbcSourceConfig) -> PgConnection:
    """The connection settings of a source; the password comes from the environment or Secrets Manager."""
    host, port, db, params = parse_jdbc_url(source.url)
    password = source.password
    if password is None and source.password_env:
        password = os.environ.get(source.password_env)
    if password is None and source.password_secret:
        password = secret_password(source.password_secret, source.name)
    for k, v in params:
        if k.lower() == "password":  # a password in the URL works, but is masked like any other
            password = password or v
    register_secret(password)
    if password:
        register_secret(quote(password, safe=""))
    return PgConnection(host, port, db, source.user, password, params, source.connect_timeout, source.retries)


def secret_password(secret_id: str, source: str) -> str:
    """The password in an AWS Secrets Manager secret: its string, or the "password" of a JSON secret.

    Glue jobs cannot fill environment variables from Secrets Manager; the job's role reads the secret.
    """
    import json

    from ingestion.lake.s3 import aws_client

    try:
        with sdk_bodies_unlogged():  # the response is the secret
            value = aws_client("secretsmanager").get_secret_value(SecretId=secret_id).get("SecretString")
    except Exception as exc:
        raise SourceError(
            f"source {source}: cannot read the password secret {secret_id!r}: {type(exc).__name__}: {exc}",
            hint="check the secret's name or ARN, the region, and secretsmanager:GetSecretValue for this role",
        ) from None
    if not value:
        raise SourceError(
            f"source {source}: the secret {secret_id!r} holds no string", hint="store the password as text"
        )
    try:
        doc = json.loads(value)
    except ValueError:
        return str(value)
    if isinstance(doc, dict):
        if "password" not in doc:
            raise SourceError(
                f'source {source}: the JSON secret {secret_id!r} has no "password" key',
                hint='store {"password": "..."} (the RDS secret format) or the bare password',
            )
        return str(doc["password"])
    return str(value)


def _is_connection_error(exc: BaseException) -> bool:
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        w in text for w in ("connection refused", "could not connect", "timed out", "connection reset")
    )


def with_retries(conn: PgConnection, what: str, fn: Callable[[], T]) -> T:
    """Run `fn`, retrying connection failures with exponential backoff; other errors fail at once.

    The final error is a `SourceError` with the password masked and no chained driver exception (whose
    text or locals might carry the connection string).
    """
    retrying = retry(
        retry=retry_if_exception(_is_connection_error),
        stop=stop_after_attempt(conn.retries + 1),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    try:
        return retrying(fn)()
    except SourceError:
        raise
    except Exception as exc:
        hint = (
            "check that the server is up and reachable, and the URL, user and password (env var) are right"
            if _is_connection_error(exc)
            else None
        )
        raise SourceError(
            f"PostgreSQL {conn.where}: {what} failed: {redact(type(exc).__name__ + ': ' + str(exc)).strip()}",
            hint=hint,
        ) from None


@contextmanager
def connect(conn: PgConnection) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit psycopg connection (each statement sees fresh committed data), retried on failure."""
    import psycopg

    pg = with_retries(conn, "connecting", lambda: psycopg.connect(**conn.kwargs(), autocommit=True))
    try:
        yield pg
    finally:
        pg.close()


def query(
    conn: PgConnection, pg: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()
) -> list[tuple]:
    """Run one statement and fetch its rows; errors are redacted `SourceError`s."""
    return with_retries(conn, "a query", lambda: pg.execute(sql, params).fetchall())


# --- discovery -------------------------------------------------------------------------------------------


_COLUMNS_SQL = """
select c.relname, c.relkind, a.attname, t.typname, format_type(a.atttypid, a.atttypmod), a.atttypmod
from pg_catalog.pg_class c
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
join pg_catalog.pg_type t on t.oid = a.atttypid
where n.nspname = %s and c.relkind in ('r', 'p', 'v', 'm', 'f')
  and not c.relispartition
order by c.relname, a.attnum
"""
_PK_SQL = """
select c.relname, a.attname
from pg_catalog.pg_index i
join pg_catalog.pg_class c on c.oid = i.indrelid
join pg_catalog.pg_namespace n on n.oid = c.relnamespace
cross join lateral unnest(i.indkey) with ordinality as k(attnum, pos)
join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum
where n.nspname = %s and i.indisprimary
order by c.relname, k.pos
"""


def discover(conn: PgConnection, pg: psycopg.Connection[Any], schema: str) -> list[CatalogTable]:
    """Tables, views, columns with types and primary keys of one schema, from pg_catalog."""
    cols: dict[str, list[CatalogColumn]] = {}
    kinds: dict[str, str] = {}
    for rel, kind, name, typname, declared, typmod in query(conn, pg, _COLUMNS_SQL, (schema,)):
        precision = scale = None
        if typname == "numeric" and typmod is not None and typmod >= 4:
            precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        cols.setdefault(rel, []).append(CatalogColumn(name, typname, declared, precision, scale))
        kinds[rel] = kind
    pks: dict[str, list[str]] = {}
    for rel, name in query(conn, pg, _PK_SQL, (schema,)):
        pks.setdefault(rel, []).append(name)
    return [CatalogTable(t, tuple(c), tuple(pks.get(t, ())), kinds[t]) for t, c in cols.items()]


def latest_csv(prefix: str) -> str:
    """The most recently modified `.csv` file under a folder or `s3://` prefix (any depth)."""
    if prefix.startswith("s3://"):
        from ingestion.lake.s3 import s3_client, split_s3

        bucket, key = split_s3(prefix)
        found: list[tuple[Any, str]] = []
        try:
            for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                found += [
                    (o["LastModified"], o["Key"])
                    for o in page.get("Contents", [])
                    if o["Key"].endswith(".csv")
                ]
        except Exception as exc:
            raise SourceError(
                f"pk_registry {prefix}: cannot list it: {type(exc).__name__}: {exc}",
                hint="check the prefix and s3:ListBucket",
            ) from None
        if found:
            return f"s3://{bucket}/{max(found)[1]}"
    else:
        files = [p for p in Path(prefix).rglob("*.csv") if p.is_file()] if Path(prefix).is_dir() else []
        if files:
            return str(max(files, key=lambda p: (p.stat().st_mtime_ns, p.name)))
    raise ConfigError(
        f"pk_registry {prefix}: no CSV file under it", hint="give a CSV with columns table,primary_key"
    )


def read_pk_registry(path: str) -> dict[str, tuple[str, ...]]:
    """A primary-key registry CSV (`table,primary_key`; several key columns separated by `|` or `;`).

    `path` is a file (local or `s3://`), or a prefix ending in `/`: the latest CSV under it (the seeds
    keep dated copies of their registry under one prefix).
    """
    import io

    if path.endswith("/"):
        path = latest_csv(path)
    if path.startswith("s3://"):
        from ingestion.lake import fs as lakefs

        try:
            with lakefs.open_input(path) as raw:
                text = raw.read().decode("utf-8-sig")
        except Exception as exc:
            raise ConfigError(
                f"pk_registry {path}: cannot read it: {type(exc).__name__}: {exc}",
                hint="give a CSV with columns table,primary_key; check s3:GetObject",
            ) from None
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"pk_registry {path} not found", hint="give a CSV with columns table,primary_key"
            )
        text = p.read_text(encoding="utf-8-sig")
    out: dict[str, tuple[str, ...]] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "table" not in fields or "primary_key" not in fields:
        raise ConfigError(
            f"pk_registry {path}: expected a header with the columns table,primary_key (got {fields})"
        )
    for row in reader:
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if not row.get("table"):
            continue
        keys = [k.strip() for k in row["primary_key"].replace(";", "|").split("|") if k.strip()]
        out[row["table"].split(".")[-1]] = tuple(keys)
    return out


# --- horizon ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HorizonFacts:
    """What the server says about time and open transactions, read in one statement."""

    now: datetime  # clock_timestamp(), tz-aware
    oldest_xact_start: datetime | None  # oldest transaction start of another client backend here
    open_transactions: int  # other client backends of this database inside a transaction
    writing_transactions: int  # … of which already hold a transaction id (have written)
    hidden_backends: int  # backends whose activity this role may not see (no pg_read_all_stats)
    server_timezone: str


_HORIZON_SQL = """
select
    clock_timestamp(),
    min(a.xact_start) filter (where a.xact_start is not null),
    count(a.pid) filter (where a.xact_start is not null),
    count(a.pid) filter (where a.backend_xid is not null),
    count(a.pid) filter (where a.state is null),
    current_setting('TimeZone')
from (select 1) as one
left join pg_catalog.pg_stat_activity a
    on a.datname = current_database()
    and a.pid <> pg_backend_pid()
    and a.backend_type = 'client backend'
"""


def horizon_facts(conn: PgConnection, pg: psycopg.Connection[Any]) -> HorizonFacts:
    """Server time and the oldest in-flight transaction of this database, from one statement."""
    # pg_stat_activity is a per-transaction snapshot; autocommit makes each call fresh.
    row = query(conn, pg, _HORIZON_SQL)[0]
    return HorizonFacts(row[0], row[1], int(row[2]), int(row[3]), int(row[4]), str(row[5]))


# --- reads -----------------------------------------------------------------------------------------------


def read_arrow(conn: PgConnection, queries: Sequence[str]) -> pa.Table:
    """Run one or several (partition) queries with connectorx, in parallel, as one Arrow table."""
    import connectorx as cx

    sql: list[str] | str = list(queries) if len(queries) > 1 else queries[0]
    return with_retries(conn, "reading rows", lambda: cx.read_sql(conn.cx_url, sql, return_type="arrow"))
