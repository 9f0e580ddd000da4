"""The dbt project built by the real dbt-redshift adapter (redshift_connector on the wire) against PostgreSQL
through the Redshift harness (tests/redshift_proxy.py + tests/redshift_harness.py): two demo days landed,
loaded into raw tables by load-warehouse's PostgresLoader, `dbt build --target redshift` (models, CDC
merges, snapshots, data and unit tests), and every CDC table and snapshot compared with the truth.

Not covered (PostgreSQL can't run it): late binding itself (`with no schema binding` is stripped, views
stay bound), dist/sort keys (the project sets none), Spectrum external schemas, COPY from S3.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestion.config import parse_config
from ingestion.demo.billing import KEYS, write_day
from ingestion.run.pipeline import run_pipeline

from .conftest import demo_config_doc
from .dbt_support import PG, FastDbt, land_rows, read_postgres, tombstones
from .helpers import DBT
from .pg_fixtures import scratch_database
from .redshift_harness import install_shims
from .redshift_proxy import RedshiftProxy, rewrite_parameter_status, rewrite_sql, rewrite_startup
from .test_dbt_cdc import DELETES_DAY2, PIPELINE, SOURCE, Oracle, assert_cdc_matches, assert_snapshots_match


def test_proxy_rewrites_startup_server_version_and_redshift_only_sql() -> None:
    pairs = (
        b"user\0postgres\0database\0db\0client_protocol_version\x002\0driver_version\0x\0os_version\0y\0\0"
    )
    body = struct.pack("!i", 196608) + pairs
    assert rewrite_startup(body) == struct.pack("!i", 196608) + b"user\0postgres\0database\0db\0\0"
    debian = b"server_version\x0015.20 (Debian 15.20-0+deb12u1)\0"
    assert rewrite_parameter_status(debian) == b"server_version\x0015.20\0"
    assert rewrite_parameter_status(b"TimeZone\0UTC\0") == b"TimeZone\0UTC\0"
    assert (
        rewrite_sql(b"select dateadd(hour, -3, max(x)) from t")
        == b"select dateadd('hour', -3, max(x)) from t"
    )
    assert (
        rewrite_sql(b"create view v as (select 1) with no schema binding;")
        == b"create view v as (select 1) ;"
    )


@pytest.fixture
def rs_database() -> Iterator[str]:
    """A database `tm_rs_<uuid8>` with the Redshift shims; skips without a PostgreSQL server."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    with scratch_database("tm_rs") as name:
        with psycopg.connect(dbname=name, autocommit=True, **PG) as conn:
            install_shims(conn)
        yield name


class RedshiftBackend:
    """Raw tables loaded by PostgresLoader; dbt-redshift reaches the database through the proxy."""

    def __init__(self, tmp: Path, lake: Path, dbname: str, port: int) -> None:
        self.lake, self.dbname = lake, dbname
        env = {
            "DBT_TARGET": "redshift",
            "REDSHIFT_HOST": "127.0.0.1",
            "REDSHIFT_PORT": str(port),
            "REDSHIFT_USER": PG["user"],
            "REDSHIFT_PASSWORD": "",
            "REDSHIFT_DATABASE": dbname,
            "REDSHIFT_SSLMODE": "disable",
            "DBT_SCHEMA": "tidemark",
        }
        self.dbt = FastDbt(tmp, lake, tmp / "unused.duckdb", env)

    def load(self, cfg: Any) -> None:
        from ingestion.warehouse.loader import load_all
        from ingestion.warehouse.postgres import PostgresLoader

        loader = PostgresLoader(f"host={PG['host']} port={PG['port']} user={PG['user']} dbname={self.dbname}")
        try:
            load_all(cfg, loader)  # raw tables and the ingestion ledger (lake_audit.ingestion_runs)
        finally:
            loader.close()

    def rows(self, relation: str) -> list[dict[str, Any]]:
        return read_postgres(self.dbname, f"tidemark.{relation}")


@pytest.mark.slow
def test_dbt_redshift_builds_the_project_through_the_harness(
    rs_database: str, tmp_path: Path, monkeypatch
) -> None:
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    pytest.importorskip("dbt.adapters.redshift", reason="dbt-redshift is not installed (tidemark[redshift])")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    doc = demo_config_doc(inbox, lake)
    oracle = Oracle()
    with RedshiftProxy(PG["host"], int(PG["port"])) as proxy:
        backend = RedshiftBackend(tmp_path, lake, rs_database, proxy.port)

        def build() -> None:
            backend.load(parse_config(doc))
            backend.dbt("build")  # raises unless every model, snapshot and test succeeded
            oracle.end_round()
            assert_cdc_matches(backend, oracle)  # type: ignore[arg-type]
            assert_snapshots_match(backend, oracle)  # type: ignore[arg-type]

        list(write_day(1, inbox))
        assert run_pipeline(parse_config(doc)).ok
        oracle.set_day(1)
        build()

        # Day 2: updates, inserts, a key changed twice, a new column (ALTERs), then delete tombstones.
        list(write_day(2, inbox))
        assert run_pipeline(parse_config(doc)).ok
        oracle.set_day(2)
        for table, keys in DELETES_DAY2.items():
            land_rows(lake, PIPELINE, SOURCE, table, tombstones(KEYS[table], keys))
            oracle.delete(table, keys)
        build()
        assert "segment" in backend.rows("accounts")[0]

        # Nothing new: the merges change nothing; and it was dbt-redshift that ran every node.
        backend.dbt("build", "--select", "tag:cdc")
        assert_cdc_matches(backend, oracle)  # type: ignore[arg-type]
        adapters = {r["target_type"] for r in backend.rows("dbt_node_runs")}
        assert adapters == {"redshift"}, adapters
