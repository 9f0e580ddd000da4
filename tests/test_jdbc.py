"""PostgreSQL sources: planning rules (pure), discovery, pushdown seen by the server, secrets, late commits."""

from __future__ import annotations

import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingestion.config import parse_config
from ingestion.errors import ConfigError, SourceError
from ingestion.lake.model import TableState, Watermark
from ingestion.plan.jdbc import (
    CatalogColumn,
    CatalogTable,
    JdbcPlan,
    cap_watermark,
    literal,
    logical_type,
    partition_ranges,
    plan_jdbc_table,
    resolve_tables,
    safe_horizon,
    select_sql,
    where_clause,
)
from ingestion.redact import redact, register_secret
from ingestion.run.pipeline import run_pipeline
from ingestion.sources.jdbc import connect, connection_for, parse_jdbc_url
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc

UTC = timezone.utc


def _source(**kw: Any):  # type: ignore[no-untyped-def]
    doc = {
        "pipeline": "p",
        "sources": [{"name": "pg", "kind": "jdbc", "url": "jdbc:postgresql://h/db", "user": "u", **kw}],
    }
    return parse_config(doc).jdbc_sources()[0]


def _catalog() -> list[CatalogTable]:
    cols = (
        CatalogColumn("ID", "int4", "integer"),
        CatalogColumn("amount", "numeric", "numeric(12,2)", 12, 2),
        CatalogColumn("updated_at", "timestamp", "timestamp without time zone"),
    )
    return [
        CatalogTable("orders", cols, ("ID",)),
        CatalogTable("audit_log", (CatalogColumn("line", "text", "text"),)),
        CatalogTable("tmp_x", (CatalogColumn("a", "int8", "bigint"),)),
    ]


# --- pure rules ------------------------------------------------------------------------------------------


def test_types_map_to_landed_types() -> None:
    assert logical_type(CatalogColumn("a", "int4", "integer")) == "bigint"  # int → bigint widening is a no-op
    assert logical_type(CatalogColumn("a", "numeric", "numeric(12,2)", 12, 2)) == "decimal(12,2)"
    assert logical_type(CatalogColumn("a", "numeric", "numeric")) == "string"  # exact, never rounded
    assert logical_type(CatalogColumn("a", "varchar", "character varying(10)")) == "string"
    assert logical_type(CatalogColumn("a", "timestamptz", "timestamp with time zone")) == "timestamptz"
    assert logical_type(CatalogColumn("a", "jsonb", "jsonb")) == "string"


def test_discovery_resolves_keys_cursor_and_globs() -> None:
    source = _source(exclude=["tmp_*"], cursor_timezone="Europe/Berlin")
    tables, warnings = resolve_tables(source, _catalog(), {"audit_log": ("line",)}, "UTC")
    by = {t.name: t for t in tables}
    assert set(by) == {"orders", "audit_log"}
    orders = by["orders"]
    assert orders.primary_key == ("id",) and orders.cursor == "updated_at"
    assert orders.cursor_timezone == "Europe/Berlin"
    assert orders.columns[0].source_name == "ID"
    assert by["audit_log"].primary_key == ("line",)  # from the registry
    assert by["audit_log"].cursor is None
    assert any("audit_log has no usable cursor" in w for w in warnings)


def test_listed_table_missing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not in schema"):
        resolve_tables(_source(tables=["nope"]), _catalog(), {}, "UTC")


def test_naive_cursor_defaults_to_server_zone_and_predicate_is_session_independent() -> None:
    (orders, *_), _ = resolve_tables(_source(tables=["orders"]), _catalog(), {}, "Europe/Berlin")
    wm = Watermark("2026-01-01T09:00:00.000001+00:00", "timestamp", "Europe/Berlin")
    state = TableState("p", "pg", "orders", watermark=wm)
    horizon = datetime(2026, 1, 1, 11, 0, 0, 5, tzinfo=UTC)
    plan = plan_jdbc_table(orders, state, horizon)
    where = where_clause(orders, plan)
    # Berlin wall clock (UTC+1), microseconds kept, typed literals: no session time zone involved.
    assert where == (
        "\"updated_at\" >= '2026-01-01T10:00:00.000001'::timestamp and "
        "\"updated_at\" < '2026-01-01T12:00:00.000005'::timestamp"
    )
    assert 'to_char("updated_at", ' in select_sql(orders, where)


def test_horizon_is_the_oldest_open_transaction() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert safe_horizon(now, None) == now
    assert safe_horizon(now, now - timedelta(minutes=5)) == now - timedelta(minutes=5)
    assert safe_horizon(now, now + timedelta(seconds=1)) == now


def test_watermark_never_passes_the_horizon() -> None:
    cap = Watermark("2026-01-01T10:00:00.000000+00:00", "timestamptz")
    plan = JdbcPlan("pg", "t", "full", None, None, cap)
    later = TableState("p", "pg", "t", watermark=Watermark("2026-01-01T11:00:00.000000+00:00", "timestamptz"))
    earlier = TableState(
        "p", "pg", "t", watermark=Watermark("2026-01-01T09:00:00.000000+00:00", "timestamptz")
    )
    assert cap_watermark(later, plan).watermark == cap
    assert cap_watermark(earlier, plan) is earlier


def test_literals_are_typed() -> None:
    assert literal(Watermark("5", "bigint")) == "5"
    assert literal(Watermark("2026-01-01", "date")) == "'2026-01-01'::date"


@given(lo=st.integers(-1000, 1000), width=st.integers(0, 5000), n=st.integers(1, 16))
def test_partition_ranges_cover_every_key_once(lo: int, width: int, n: int) -> None:
    hi = lo + width
    ranges = partition_ranges(lo, hi, n)
    assert 1 <= len(ranges) <= n
    for key in (lo, hi, (lo + hi) // 2, lo - 7, hi + 7):
        hits = [r for r in ranges if (r[0] is None or key >= r[0]) and (r[1] is None or key < r[1])]
        assert len(hits) == 1


def test_url_parsing_and_redaction() -> None:
    assert parse_jdbc_url("jdbc:postgresql://db.example:6543/sales?sslmode=require") == (
        "db.example",
        6543,
        "sales",
        (("sslmode", "require"),),
    )
    with pytest.raises(ConfigError):
        parse_jdbc_url("jdbc:postgresql://hostonly")
    register_secret("hunter2-secret")
    assert "hunter2" not in redact("auth failed for hunter2-secret")
    assert redact("postgresql://bob:abc%2Fdef@h:5/db") == "postgresql://bob:***@h:5/db"
    assert redact("password=xyz host=h") == "password=*** host=h"


# --- against the server ----------------------------------------------------------------------------------


def _seed_orders(db: PgDb, rows: int = 20) -> None:
    db.con.execute(
        "create table orders (id int primary key, note varchar(10), updated_at timestamptz not null default now())"
    )
    db.con.execute(
        f"insert into orders select g, 'n' || g, timestamptz '2026-01-01 00:00:00.000001+00' + g * interval '1 minute' "
        f"from generate_series(1, {rows}) g"
    )


def _server_log(admin: Any) -> tuple[str, int] | None:
    """The server log file the admin can read, and its current size; None when there is none."""
    candidates = [admin.execute("select pg_current_logfile()").fetchone()[0]]
    major = admin.execute("show server_version_num").fetchone()[0][:2]
    candidates.append(f"/var/log/postgresql/postgresql-{major}-main.log")
    for path in filter(None, candidates):
        try:
            size = admin.execute("select (pg_stat_file(%s)).size", (path,)).fetchone()[0]
        except Exception:
            continue
        return path, int(size)
    return None


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]
)
def test_incremental_query_reaching_postgres_carries_the_cursor_predicate(
    engine: str, pg_db: PgDb, pg_admin: Any, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    log = _server_log(pg_admin)
    if log is None:
        pytest.skip(
            "the server's log file is not readable through pg_read_file (no logging_collector, no Debian log)"
        )
    _seed_orders(pg_db)
    cfg = write_config(pipeline_doc(tmp_path / "lake", jdbc_source(pg_db, tables=["orders"]), engine))
    eng = None
    if engine == "spark":
        from ingestion.config import DEFAULT_DRIVER_JAR
        from ingestion.engines.spark.engine import SparkEngine

        if not Path(DEFAULT_DRIVER_JAR).is_file():
            pytest.skip(f"the PostgreSQL JDBC driver is not installed at {DEFAULT_DRIVER_JAR}")
        eng = SparkEngine(cfg.spark, spark=request.getfixturevalue("spark"))
    assert run_pipeline(cfg, engine=eng).ok  # full load
    pg_db.con.execute("update orders set note = 'changed', updated_at = now() where id = 3")
    # Only this role's statements are logged, and only from now on.
    pg_admin.execute(f"alter role {pg_db.role} set log_statement = 'all'")
    path, start = _server_log(pg_admin) or log
    try:
        report = run_pipeline(cfg, engine=eng)
    finally:
        pg_admin.execute(f"alter role {pg_db.role} reset log_statement")
    assert report.ok and report.tables[0].load_type == "incremental"
    assert report.tables[0].rows_landed == 1 + 1  # the changed row and the tie at the old watermark
    size = pg_admin.execute("select (pg_stat_file(%s)).size", (path,)).fetchone()[0]
    text = pg_admin.execute("select pg_read_file(%s, %s, %s)", (path, start, size - start)).fetchone()[0]
    reads = [line for line in text.splitlines() if pg_db.role in line and '"public"."orders"' in line]
    assert reads, "the data query never reached the server log"
    assert all(
        "\"updated_at\" >= '2026-01-01T00:20:00.000001+00:00'::timestamptz" in line
        and '"updated_at" < ' in line
        for line in reads
    ), reads


def _everything_written(lake: Path) -> str:
    """Every text-ish byte the run left behind: logs, state, and Parquet files' raw bytes."""
    chunks = []
    for f in lake.rglob("*"):
        if f.is_file():
            chunks.append(f.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


def test_password_never_in_logs_state_outcomes_or_errors(
    pg_db: PgDb, tmp_path: Path, write_config, capsys
) -> None:
    from ingestion.observe.logs import setup_logging

    _seed_orders(pg_db, 5)
    lake = tmp_path / "lake"
    cfg = write_config(pipeline_doc(lake, jdbc_source(pg_db, tables=["orders"])))
    setup_logging("ok-run", str(lake))
    report = run_pipeline(cfg)
    assert report.ok and report.tables[0].rows_landed == 5

    # The same source, unreachable: a closed port on the same host.
    bad = jdbc_source(pg_db, url=pg_db.url.replace(":5432/", ":1/"), tables=["orders"])
    cfg_bad = write_config(pipeline_doc(lake, bad), name="bad.yml")
    setup_logging("failed-run", str(lake))
    failed = run_pipeline(cfg_bad)
    assert not failed.ok
    (outcome,) = failed.failed
    assert "connection" in outcome.error.lower() or "connect" in outcome.error.lower()

    # Errors raised straight from the edge, with the password inside the driver's conninfo.
    conn = connection_for(cfg_bad.jdbc_sources()[0])
    with pytest.raises(SourceError) as info, connect(conn):
        pass
    rendered = "".join(traceback.format_exception(info.value))

    logs = list((lake / "_logs").rglob("*.jsonl"))
    assert len(logs) == 2
    haystack = "\n".join(
        [
            _everything_written(lake),
            repr(report.tables),
            repr(failed.tables),
            str(info.value),
            rendered,
            repr(conn),
            *capsys.readouterr(),
        ]
    )
    assert pg_db.password not in haystack
    assert "discovery failed" in _everything_written(lake)


def test_late_commit_is_landed_by_the_next_run(pg_db: PgDb, tmp_path: Path, write_config) -> None:
    _seed_orders(pg_db, 3)
    cfg = write_config(pipeline_doc(tmp_path / "lake", jdbc_source(pg_db, tables=["orders"])))
    assert run_pipeline(cfg).ok
    late = pg_db.connect()  # a transaction open across the next run, stamping rows with its start time
    try:
        late.execute("insert into orders (id, note) values (100, 'late')")  # updated_at = now() = its start
        pg_db.con.execute(
            "insert into orders (id, note) values (101, 'after')"
        )  # commits at once, later stamp
        second = run_pipeline(cfg)
        assert second.ok
        held = second.tables[0].watermark
        late_start = late.execute("select now()").fetchone()[0]
        assert datetime.fromisoformat(held.value) < late_start  # held below the open transaction
        late.commit()
    finally:
        late.close()
    third = run_pipeline(cfg)
    assert third.ok
    landed = duckdb.sql(
        f"select distinct id from read_parquet('{tmp_path}/lake/landing/pg/orders/**/*.parquet')"
    ).fetchall()
    assert {r[0] for r in landed} == {1, 2, 3, 100, 101}


def test_connection_failures_are_retried_then_reported_without_the_password() -> None:
    import psycopg

    from ingestion.sources.jdbc import PgConnection, with_retries

    conn = PgConnection("h", 5432, "db", "u", "Sekret-Value-1", retries=2)
    register_secret(conn.password)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise psycopg.OperationalError("connection refused password=Sekret-Value-1")
        return "ok"

    assert with_retries(conn, "probe", flaky) == "ok" and len(calls) == 3

    def broken() -> str:
        raise psycopg.OperationalError("could not connect with Sekret-Value-1")

    with pytest.raises(SourceError) as info:
        with_retries(conn, "probe", broken)
    assert "Sekret-Value-1" not in "".join(traceback.format_exception(info.value))
    assert info.value.hint and "reachable" in info.value.hint

    def bad_sql() -> str:
        raise ValueError("syntax error")  # not a connection problem: no retry

    calls.clear()
    with pytest.raises(SourceError):
        with_retries(conn, "probe", lambda: calls.append(1) or bad_sql())
    assert len(calls) == 1


@pytest.mark.slow
@pytest.mark.spark
def test_spark_jdbc_failure_hides_the_password(spark, tmp_path: Path) -> None:
    from ingestion.config import DEFAULT_DRIVER_JAR, SparkConfig
    from ingestion.engines.base import JdbcBatch
    from ingestion.engines.spark.engine import SparkEngine
    from ingestion.errors import EngineError
    from ingestion.sources.jdbc import PgConnection

    if not Path(DEFAULT_DRIVER_JAR).is_file():
        pytest.skip(f"the PostgreSQL JDBC driver is not installed at {DEFAULT_DRIVER_JAR}")
    secret = "Spark-Sekret-42"
    register_secret(secret)
    batch = JdbcBatch(
        source="pg",
        table="t",
        connection=PgConnection("127.0.0.1", 1, "nodb", "nobody", secret, connect_timeout=2),
        query="select 1::int8 as id",
        columns={"id": "bigint"},
        primary_key=("id",),
        cursor=None,
        run_id="r1",
        ingested_at=datetime(2026, 1, 1, tzinfo=UTC),
        target=str(tmp_path / "landing"),
        lake_root=str(tmp_path),
    )
    with pytest.raises(EngineError) as info:
        SparkEngine(SparkConfig(), spark=spark).land_jdbc(batch)
    assert "Spark JDBC failed" in str(info.value)
    assert secret not in "".join(traceback.format_exception(info.value))


def test_jdbc_config_errors_name_the_key() -> None:
    doc = {
        "pipeline": "p",
        "sources": [{"name": "pg", "kind": "jdbc", "url": "postgres://h/db", "user": "u"}],
    }
    with pytest.raises(ConfigError, match=r"sources\[0\]\(pg\)\.url: .*jdbc:postgresql://"):
        parse_config(doc)
    doc["sources"][0].update(url="jdbc:postgresql://h/db", tables=[{"name": "t", "num_partitions": 0}])
    with pytest.raises(ConfigError, match=r"tables\[0\]\(t\)\.num_partitions"):
        parse_config(doc)
    doc["sources"][0].update(tables="*", cursor_timezone="Mars/Base")
    with pytest.raises(ConfigError, match="IANA"):
        parse_config(doc)


def test_discovery_on_the_server_with_registry_globs_and_fallbacks(
    pg_db: PgDb, tmp_path: Path, write_config
) -> None:
    from ingestion.run.jdbc_job import discover_tables

    pg_db.con.execute('create table "Customers" (id int primary key, "E-Mail" text, updated_at timestamptz)')
    pg_db.con.execute("create table nopk (code text, label varchar(5), updated_at timestamp)")
    pg_db.con.execute("create table lookup (k int primary key, v text)")  # no cursor column
    pg_db.con.execute("create table tmp_scratch (x int)")
    pg_db.con.execute("create view v_lookup as select k, v from lookup")
    registry = tmp_path / "keys.csv"
    registry.write_text("table,primary_key\nnopk,code\n")
    source = jdbc_source(pg_db, exclude=["tmp_*", "v_*"], pk_registry=str(registry), cursor_timezone="UTC")
    cfg = write_config(pipeline_doc(tmp_path / "lake", source))
    tasks, failed = discover_tables(cfg)
    assert not failed
    by = {t.jdbc_table.name: t.jdbc_table for t in tasks}
    assert set(by) == {"customers", "nopk", "lookup"}
    assert [c.name for c in by["customers"].columns] == ["id", "e_mail", "updated_at"]
    assert by["customers"].primary_key == ("id",) and by["customers"].cursor == "updated_at"
    assert by["nopk"].primary_key == ("code",) and by["nopk"].types["updated_at"] == "timestamp"
    assert by["lookup"].cursor is None
    pg_db.con.execute("insert into \"Customers\" values (1, 'a@b', now()), (2, null, now())")
    pg_db.con.execute("insert into lookup values (1, 'one')")
    report = run_pipeline(cfg)
    assert report.ok, [(t.name, t.error) for t in report.tables]
    outcomes = {t.table: t for t in report.tables}
    assert outcomes["customers"].rows_landed == 2 and outcomes["lookup"].load_type == "full"
    rows = duckdb.sql(
        f"select id, e_mail from read_parquet('{tmp_path}/lake/landing/pg/customers/**/*.parquet') order by id"
    ).fetchall()
    assert rows == [(1, "a@b"), (2, None)]


_txn = st.tuples(st.integers(0, 50), st.integers(1, 30), st.integers(1, 3))  # start, duration, rows


@given(
    txns=st.lists(_txn, min_size=1, max_size=12), runs=st.lists(st.integers(0, 90), min_size=1, max_size=8)
)
def test_safe_horizon_never_loses_a_late_commit(txns: list[tuple[int, int, int]], runs: list[int]) -> None:
    """Transactions stamp rows with their start time and commit later; runs happen at arbitrary times.

    Whatever the interleaving, every row is read by some run once everything has committed.
    """
    base = datetime(2026, 1, 1, tzinfo=UTC)
    at = lambda s: base + timedelta(seconds=s)  # noqa: E731
    rows = [
        (i, j, at(s), at(s + d)) for i, (s, d, n) in enumerate(txns) for j in range(n)
    ]  # key, stamp, commit
    (table, *_), _ = resolve_tables(
        _source(tables=["t"]),
        [
            CatalogTable(
                "t",
                (
                    CatalogColumn("id", "int8", "bigint"),
                    CatalogColumn("updated_at", "timestamptz", "timestamptz"),
                ),
                ("id",),
            )
        ],
        {},
        "UTC",
    )
    state = TableState("p", "pg", "t")
    seen: set[tuple[int, int]] = set()
    for t in [*sorted(runs), 200]:  # the last run comes after every commit
        now = at(t)
        open_starts = [s for _, _, s, c in rows if s <= now < c]
        horizon = safe_horizon(now, min(open_starts, default=None))
        plan = plan_jdbc_table(table, state if state.watermark else None, horizon)
        lo = datetime.fromisoformat(plan.lower_bound.value) if plan.lower_bound else None
        hi = datetime.fromisoformat(plan.upper_bound.value) if plan.upper_bound else None
        read = [
            (k, j, s)
            for k, j, s, c in rows
            if c <= now and (lo is None or s >= lo) and (hi is None or s < hi)
        ]
        seen |= {(k, j) for k, j, _ in read}
        if read:
            top = max(s for *_, s in read)
            wm = Watermark(top.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"), "timestamptz")
            state = cap_watermark(TableState("p", "pg", "t", watermark=wm), plan)
    assert seen == {(k, j) for k, j, _, _ in rows}
