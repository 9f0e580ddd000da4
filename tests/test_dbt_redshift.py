"""The dbt project built by the real dbt-redshift adapter (redshift_connector on the wire) against PostgreSQL
through the Redshift harness (tests/redshift_proxy.py + tests/redshift_harness.py): two demo days landed,
loaded into raw tables by load-warehouse's PostgresLoader, `dbt build --target redshift` (models, CDC
merges, snapshots, data and unit tests), and every CDC table and snapshot compared with the truth; and every
widening the lake does, through dbt-redshift, into the CDC tables and snapshots (issue 16).

Not covered (PostgreSQL can't run it): late binding itself (`with no schema binding` is stripped, views
stay bound), dist/sort keys (the project sets none), Spectrum external schemas, COPY from S3.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingestion.config import parse_config
from ingestion.demo.billing import COLUMNS, KEYS, write_day
from ingestion.run.pipeline import run_pipeline

from .conftest import demo_config_doc
from .dbt_support import (
    PG,
    FastDbt,
    land_rows,
    pg_database,  # noqa: F401  (the fixture, for the PostgreSQL run)
    read_postgres,
    tombstones,
)
from .helpers import DBT, as_source_text
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
    # Redshift's ALTER COLUMN TYPE: a varchar length only, outside a transaction block.
    widen = b'alter table "s"."t" alter column "c" type varchar(64)'
    assert rewrite_sql(widen) == widen
    assert b"redshift_refuses" in rewrite_sql(widen, in_transaction=True)
    assert b"redshift_refuses" in rewrite_sql(b'alter table t alter column "c" type numeric(38,18)')
    assert rewrite_sql(b"alter table t add column c numeric; alter table t rename column x to c") == (
        b"alter table t add column c numeric; alter table t rename column x to c"
    )


@pytest.fixture
def rs_database() -> Iterator[str]:
    """A database `tm_rs_<uuid8>` with the Redshift shims; skips without a PostgreSQL server."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    with scratch_database("tm_rs") as name:
        with psycopg.connect(dbname=name, autocommit=True, **PG) as conn:
            install_shims(conn)
        yield name


# The lake's types as PostgreSQL (and the harness's Redshift) name them; the DuckDB warehouse's names.
PG_TYPES = {
    "timestamp": "timestamp without time zone",
    "timestamptz": "timestamp with time zone",
    "bigint": "bigint",
    "double": "double precision",
    "decimal(38,18)": "numeric(38,18)",
    "decimal(12,2)": "numeric(12,2)",
    "decimal(18,4)": "numeric(18,4)",
    "varchar(64)": "character varying(64)",
}
DUCKDB_TYPES = {
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMP WITH TIME ZONE",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "decimal(38,18)": "DECIMAL(38,18)",
    "decimal(12,2)": "DECIMAL(12,2)",
    "decimal(18,4)": "DECIMAL(18,4)",
    "varchar(64)": "",  # DuckDB's VARCHAR has no length
}


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


def column_types(dbname: str, relation: str) -> dict[str, str]:
    """Column name → full type (`numeric(38,18)`, `timestamp without time zone`) of `schema.table`."""
    import psycopg

    with psycopg.connect(dbname=dbname, **PG) as conn:
        rows = conn.execute(
            "select attname, format_type(atttypid, atttypmod) from pg_attribute"
            " where attrelid = %s::regclass and attnum > 0 and not attisdropped",
            (relation,),
        ).fetchall()
    return dict(rows)


@pytest.mark.slow
def test_dbt_redshift_widens_cdc_tables_and_snapshots_through_the_harness(
    rs_database: str, tmp_path: Path, monkeypatch
) -> None:
    """Issue 16 on Redshift: each widening the lake does for CSV (date → timestamp, bigint → decimal,
    decimal → double) reaches the CDC table and the snapshot through dbt-redshift's own path (add a column,
    copy, drop, rename in the model's transaction), values exact: 15:30 not truncated, 100.75 not 101."""
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    pytest.importorskip("dbt.adapters.redshift", reason="dbt-redshift is not installed (tidemark[redshift])")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    doc = demo_config_doc(inbox, lake)
    with RedshiftProxy(PG["host"], int(PG["port"])) as proxy:
        backend = RedshiftBackend(tmp_path, lake, rs_database, proxy.port)
        widening_rounds(
            backend, lambda rel, col: column_types(rs_database, f"tidemark.{rel}")[col], PG_TYPES, doc, inbox
        )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_every_widening_reaches_cdc_tables_and_snapshots_on_duckdb_and_postgres(
    kind: str, tmp_path: Path, monkeypatch, request: pytest.FixtureRequest
) -> None:
    """The same widening rounds as on Redshift, on the DuckDB and PostgreSQL targets: every step's values
    exact in the CDC table, the view and each snapshot version (Decimal, microseconds)."""
    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    from .dbt_support import read_duckdb_types
    from .test_dbt_cdc import Backend

    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    dbname = request.getfixturevalue("pg_database") if kind == "postgres" else None
    backend = Backend(kind, tmp_path, lake, dbname)
    if kind == "postgres":
        widening_rounds(
            backend,
            lambda rel, col: column_types(dbname or "", f"tidemark.{rel}")[col],
            PG_TYPES,
            demo_config_doc(inbox, lake),
            inbox,
        )
    else:
        widening_rounds(
            backend,
            lambda rel, col: read_duckdb_types(backend.warehouse, f"main.{rel}")[col],
            DUCKDB_TYPES,
            demo_config_doc(inbox, lake),
            inbox,
        )


def widening_rounds(
    backend: Any, type_of: Callable[[str, str], str], names: dict[str, str], doc: dict, inbox: Path
) -> None:
    """The widening rounds of issue 16 on one backend: `type_of(relation, column)` reads a column's type
    from the warehouse, `names` maps the lake's types to the backend's own names ('' = not checked)."""
    lake = backend.lake
    oracle = Oracle()
    header = [*COLUMNS["subscriptions"], "seats"]

    def land(day: str, rows: list[dict[str, str]]) -> None:
        lines = [",".join(header)] + [",".join(r[c] for c in header) for r in rows]
        (inbox / SOURCE / f"subscriptions_{day}.csv").write_text("\n".join(lines) + "\n")
        report = run_pipeline(parse_config(doc))
        assert report.ok, [t.error for t in report.failed]
        for r in rows:
            oracle.upsert("subscriptions", r)

    built: list[bool] = []

    def build() -> tuple[dict[int, dict[str, Any]], dict[int, list[dict[str, Any]]]]:
        backend.load(parse_config(doc))
        # Raises unless every model, snapshot and test succeeded. The whole project in round 1; then only
        # what subscriptions feed, the one table the later rounds change (the other tables' merges and
        # snapshots would change nothing; the oracle below still checks every table).
        backend.dbt("build", *(["--select", "stg_billing__subscriptions+"] if built else []))
        built.append(True)
        oracle.end_round()
        assert_cdc_matches(backend, oracle)  # type: ignore[arg-type]
        assert_snapshots_match(backend, oracle)  # type: ignore[arg-type]
        cdc = {r["subscription_id"]: r for r in backend.rows("subscriptions")}
        snap: dict[int, list[dict[str, Any]]] = {}
        for r in sorted(backend.rows("subscriptions_snapshot"), key=lambda r: r["dbt_valid_from"]):
            snap.setdefault(r["subscription_id"], []).append(r)
        return cdc, snap

    def types(column: str) -> tuple[str, ...]:
        return tuple(
            type_of(rel, column) for rel in ("subscriptions", "vw_subscriptions", "subscriptions_snapshot")
        )

    def expect(kind: str) -> tuple[str, ...]:
        return (names[kind],) * 3

    list(write_day(1, inbox))
    assert run_pipeline(parse_config(doc)).ok
    oracle.set_day(1)
    build()
    a, b = sorted(oracle.rows["subscriptions"])[:2]
    row_a, row_b = oracle.rows["subscriptions"][a], oracle.rows["subscriptions"][b]

    # Round 2: a new integer column `seats` (bigint), a time of day in `started_on` (the lake widens
    # date → timestamp) and a product name longer than the raw table's varchar(32): the CDC table,
    # the view and the snapshot widen too.
    oracle.added["subscriptions"].append("seats")
    for row in oracle.rows["subscriptions"].values():
        row["seats"] = ""
        row["started_on"] = f"{row['started_on']} 00:00:00" if row["started_on"] else ""
    product = "an enterprise product name beyond thirty-two bytes"
    a2 = {
        **row_a,
        "product": product,
        "updated_at": "2026-01-02 09:00:00",
        "started_on": "2026-01-02 15:30:00",
        "seats": "7",
    }
    b2 = {**row_b, "updated_at": "2026-01-02 09:00:00", "seats": "12"}
    land("2026-01-02", [a2, b2])
    cdc, snap = build()
    assert types("started_on") == expect("timestamp")
    assert types("seats") == expect("bigint")
    if names["varchar(64)"]:
        assert types("product") == expect("varchar(64)")
    assert cdc[a]["product"] == snap[a][-1]["product"] == product
    assert cdc[a]["started_on"] == datetime(2026, 1, 2, 15, 30) and cdc[a]["seats"] == 7
    assert snap[a][-1]["started_on"] == datetime(2026, 1, 2, 15, 30)
    assert [r["started_on"].time() for r in snap[a]] == [time(0, 0), time(15, 30)]  # history kept

    # Round 3: `100.75` in the bigint column: the lake widens to decimal(38,18); the CDC table and the
    # snapshot hold 100.75 (not 101), and the integers already there stay exact.
    a3 = {**a2, "updated_at": "2026-01-03 09:00:00", "seats": "100.75"}
    land("2026-01-03", [a3])
    for row in oracle.rows["subscriptions"].values():
        row["seats"] = str(float(row["seats"])) if row["seats"] else ""  # as_source_text of a Decimal
    cdc, snap = build()
    assert types("seats") == expect("decimal(38,18)")
    assert (cdc[a]["seats"], cdc[b]["seats"]) == (Decimal("100.75"), Decimal(12))
    assert [r["seats"] for r in snap[a]] == [None, Decimal(7), Decimal("100.75")]
    assert snap[b][-1]["seats"] == Decimal(12)
    assert cdc[a]["started_on"] == datetime(2026, 1, 2, 15, 30)  # the rebuilt column kept its values

    # Round 4: a value no decimal(38,18) holds: the lake widens decimal → double, and so do the CDC
    # table and the snapshot; every value landed before is still there.
    a4 = {**a3, "updated_at": "2026-01-04 09:00:00", "seats": "1.5e+300"}
    land("2026-01-04", [a4])
    cdc, snap = build()
    assert types("seats") == expect("double")
    assert (cdc[a]["seats"], cdc[b]["seats"]) == (1.5e300, 12.0)
    assert [r["seats"] for r in snap[a]] == [None, 7.0, 100.75, 1.5e300]
    assert snap[b][-1]["seats"] == 12.0

    # Rounds 5 and 6, from a typed source (Parquet as a JDBC run lands it): decimal(12,2) →
    # decimal(18,4) and timestamp → timestamptz, values at full precision.
    def typed(row: dict[str, str], extra: dict[str, tuple[Any, pa.DataType]]) -> pa.Table:
        ts = pa.timestamp("us")
        cols: dict[str, pa.Array] = {
            "subscription_id": pa.array([int(row["subscription_id"])], pa.int64()),
            "account_id": pa.array([int(row["account_id"])], pa.int64()),
            "product": pa.array([row["product"]], pa.string()),
            "status": pa.array([row["status"]], pa.string()),
            "monthly_amount": pa.array([Decimal(row["monthly_amount"])], pa.decimal128(38, 18)),
            "started_on": pa.array([datetime.fromisoformat(row["started_on"])], ts),
            "updated_at": pa.array([datetime.fromisoformat(row["updated_at"])], ts),
            "seats": pa.array([float(row["seats"])], pa.float64()),
        }
        cols.update({name: pa.array([value], kind) for name, (value, kind) in extra.items()})
        cols["_op"], cols["_source_file"] = pa.array(["u"]), pa.array([None], pa.string())
        return pa.table(cols)

    oracle.added["subscriptions"] += ["discount", "renewed_at"]
    for row in oracle.rows["subscriptions"].values():
        row["discount"] = row["renewed_at"] = ""
    renewed = datetime(2026, 1, 5, 10, 0, 0, 123456)
    a5 = {**a4, "updated_at": "2026-01-05 09:00:00"}
    five = {
        "discount": (Decimal("1.25"), pa.decimal128(12, 2)),
        "renewed_at": (renewed, pa.timestamp("us")),
    }
    land_rows(
        lake,
        PIPELINE,
        SOURCE,
        "subscriptions",
        typed(a5, five),
        columns={"discount": "decimal(12,2)", "renewed_at": "timestamp"},
    )
    oracle.upsert("subscriptions", {**a5, "discount": "1.25", "renewed_at": as_source_text(renewed)})
    cdc, snap = build()
    assert types("discount") == expect("decimal(12,2)")
    assert (cdc[a]["discount"], cdc[a]["renewed_at"]) == (Decimal("1.25"), renewed)

    renewed_tz = datetime(2026, 1, 6, 10, 0, 0, 654321, tzinfo=timezone.utc)
    a6 = {**a5, "updated_at": "2026-01-06 09:00:00"}
    six = {
        "discount": (Decimal("12345678901234.5678"), pa.decimal128(18, 4)),
        "renewed_at": (renewed_tz, pa.timestamp("us", tz="UTC")),
    }
    land_rows(
        lake,
        PIPELINE,
        SOURCE,
        "subscriptions",
        typed(a6, six),
        columns={"discount": "decimal(18,4)", "renewed_at": "timestamptz"},
    )
    oracle.upsert(
        "subscriptions",
        {
            **a6,
            "discount": "12345678901234.5678",  # exact: the oracle compares decimals at full precision
            "renewed_at": as_source_text(renewed_tz),
        },
    )
    cdc, snap = build()
    assert types("discount") == expect("decimal(18,4)")
    assert types("renewed_at") == expect("timestamptz")
    assert cdc[a]["discount"] == snap[a][-1]["discount"] == Decimal("12345678901234.5678")
    assert cdc[a]["renewed_at"] == snap[a][-1]["renewed_at"] == renewed_tz
    # The version before keeps its values: the naive timestamp read as UTC, not shifted.
    assert snap[a][-2]["discount"] == Decimal("1.25")
    assert snap[a][-2]["renewed_at"] == renewed.replace(tzinfo=timezone.utc)

    # Nothing new: the merges and snapshots change nothing.
    before = sorted(map(str, backend.rows("subscriptions_snapshot")))
    backend.dbt("build", "--select", "stg_billing__subscriptions+")
    assert sorted(map(str, backend.rows("subscriptions_snapshot"))) == before
    assert_cdc_matches(backend, oracle)  # type: ignore[arg-type]
