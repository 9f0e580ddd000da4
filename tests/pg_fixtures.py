"""PostgreSQL fixtures: the local server (skip when unreachable), one throwaway database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PG_HOST = os.environ.get("TIDEMARK_TEST_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TIDEMARK_TEST_PGPORT", "5432"))
PG_ADMIN = os.environ.get("TIDEMARK_TEST_PGUSER", "postgres")


@dataclass
class PgDb:
    """A test database, its owner role (with a password) and an autocommit connection as that role."""

    name: str
    con: Any  # psycopg.Connection
    role: str
    password: str

    @property
    def url(self) -> str:
        return f"jdbc:postgresql://{PG_HOST}:{PG_PORT}/{self.name}"

    def connect(self, **kw: Any) -> Any:
        """A connection as the test role (owner of what the test creates)."""
        import psycopg

        return psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=self.role, password=self.password, dbname=self.name, **kw
        )

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A fresh database `<prefix>_<uuid8>` on the local server, dropped afterwards; skips when unreachable."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin_kw: dict[str, Any] = {"host": PG_HOST, "port": PG_PORT, "user": PG_ADMIN, "dbname": "postgres"}
    try:
        with psycopg.connect(**admin_kw, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'create database "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {PG_HOST}:{PG_PORT} as {PG_ADMIN}: {exc}".splitlines()[0])
    try:
        yield name
    finally:
        with psycopg.connect(**admin_kw, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def scratch_db() -> Iterator[str]:
    """The name of a fresh database `tm_test_<uuid8>` (see scratch_database)."""
    with scratch_database("tm_test") as name:
        yield name


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Any]:
    """An autocommit admin connection to the local server's `postgres` database; skips when unreachable."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    try:
        con = psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_ADMIN, dbname="postgres", autocommit=True, connect_timeout=3
        )
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {PG_HOST}:{PG_PORT} as {PG_ADMIN}: {exc}".splitlines()[0])
    yield con
    con.close()


@pytest.fixture
def pg_db(pg_admin: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[PgDb]:
    """A fresh database `tm_jdbc_<uuid8>` with a login role `tm_jdbc_<uuid8>` whose password is in $PGPASSWORD."""
    tag = uuid.uuid4().hex[:8]
    name = role = f"tm_jdbc_{tag}"
    password = f"Pw-{uuid.uuid4().hex}"
    pg_admin.execute(f"create role {role} login password '{password}'")
    pg_admin.execute(f"create database {name} owner {role}")
    # The pipeline's horizon query must see every session's transactions.
    pg_admin.execute(f"grant pg_read_all_stats to {role}")
    monkeypatch.setenv("TM_TEST_PGPASSWORD", password)
    db = PgDb(name, None, role, password)
    db.con = db.connect(autocommit=True)
    try:
        yield db
    finally:
        db.con.close()
        pg_admin.execute(f"drop database if exists {name} with (force)")
        pg_admin.execute(f"drop role if exists {role}")


def jdbc_source(db: PgDb, **extra: Any) -> dict[str, Any]:
    """A `kind: jdbc` source reading `db` as its password-holding role."""
    return {
        "name": "pg",
        "kind": "jdbc",
        "url": db.url,
        "user": db.role,
        "password_env": "TM_TEST_PGPASSWORD",
        "connect_timeout": 3,
        "retries": 1,
        **extra,
    }


def pipeline_doc(lake: Path, source: dict[str, Any], engine: str = "duckdb") -> dict[str, Any]:
    return {
        "pipeline": "pg_test",
        "engine": engine,
        "lake": {"root": str(lake)},
        "spark": {"master": "local[2]"},
        "sources": [source],
    }
