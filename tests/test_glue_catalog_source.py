"""The glue_catalog source kind against moto's Glue and S3 servers: a database with a Parquet table
partitioned by date whose schema gains a column in a later partition, a CSV table with an OpenCSVSerde
(key from the registry), a header-less LazySimpleSerDe table without cursor or key, and a JSON-lines
table without a cursor; a full run then an incremental one, the lake compared with the source by key."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingestion.errors import SchemaError
from ingestion.lake.state import StateStore
from ingestion.plan.catalog import GlueTable, csv_options, fold_types, landed_type, widen_type
from ingestion.run.pipeline import run_pipeline
from ingestion.sources.jdbc import read_pk_registry


def test_serde_options_and_widening_rules() -> None:
    open_csv = GlueTable(
        "t",
        "s3://b/t",
        (),
        parameters={"skip.header.line.count": "1"},
        serde="org.apache.hadoop.hive.serde2.OpenCSVSerde",
        serde_parameters={"separatorChar": ";", "quoteChar": "'", "escapeChar": "\\"},
    )
    o = csv_options(open_csv)
    assert (o.delimiter, o.quote, o.escape, o.header) == (";", "'", "\\", True)
    lazy = GlueTable(
        "t",
        "s3://b/t",
        (),
        serde="org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
        serde_parameters={"field.delim": "|"},
    )
    o = csv_options(lazy)
    assert (o.delimiter, o.header, o.null_values) == ("|", False, ("", "\\N"))
    assert landed_type("struct<a:int,b:array<string>>") == landed_type("map<string,int>") == "string"
    with pytest.raises(SchemaError, match="binary"):
        landed_type("binary")
    assert widen_type("bigint", "decimal(12,2)") == "decimal(21,2)"
    assert widen_type("decimal(12,2)", "decimal(10,4)") == "decimal(14,4)"
    assert widen_type("date", "timestamp") == "timestamp"
    assert widen_type("string", "bigint") == "string"
    assert widen_type("bigint", "date") is None
    assert fold_types("s.t", {"a": "bigint"}, [("f1", {"a": "double", "b": "string"})]) == {
        "a": "double",
        "b": "string",
    }
    with pytest.raises(Exception, match="only widens"):
        fold_types("s.t", {"a": "date"}, [("f1", {"a": "boolean"})])


@pytest.fixture
def glue(s3_bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", moto_endpoint)
    return boto3.client("glue")


def _put(bucket: str, key: str, body: bytes) -> None:
    import boto3

    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def _parquet(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


ORDERS = pa.schema(
    [
        ("id", pa.int64()),
        ("amount", pa.decimal128(12, 2)),
        ("status", pa.string()),
        ("updated_at", pa.timestamp("us")),
    ]
)
ORDERS_V2 = ORDERS.append(pa.field("channel", pa.string()))  # a column gained in a later partition


def _table(glue: Any, db: str, name: str, location: str, columns: list[tuple[str, str]], **kw: Any) -> None:
    sd = {
        "Columns": [{"Name": n, "Type": t} for n, t in columns],
        "Location": location,
        "InputFormat": kw.pop("input_format", "org.apache.hadoop.mapred.TextInputFormat"),
    }
    serde = kw.pop("serde")
    if serde:
        sd["SerdeInfo"] = {"SerializationLibrary": serde, "Parameters": kw.pop("serde_params", {})}
    glue.create_table(
        DatabaseName=db,
        TableInput={
            "Name": name,
            "StorageDescriptor": sd,
            "PartitionKeys": [{"Name": n, "Type": t} for n, t in kw.pop("partition_keys", [])],
            "Parameters": kw.pop("parameters", {}),
            "TableType": "EXTERNAL_TABLE",
        },
    )


def _partition(glue: Any, db: str, table: str, values: list[str], location: str) -> None:
    glue.create_partition(
        DatabaseName=db,
        TableName=table,
        PartitionInput={"Values": values, "StorageDescriptor": {"Location": location}},
    )


def _latest(lake: Path, source: str, table: str, key: str, order: str) -> dict[Any, dict[str, Any]]:
    """The lake's current version of each key (latest cursor, then landing time)."""
    glob = str(lake / "landing" / source / table / "**" / "*.parquet")
    rel = duckdb.sql(
        f"select * exclude (_run_id, _ingested_at, _source_file, _op, _ingest_date) from read_parquet("
        f"'{glob}', hive_partitioning = true, union_by_name = true) qualify row_number() over "
        f"(partition by {key} order by {order} desc nulls last, _ingested_at desc) = 1"
    )
    return {r[rel.columns.index(key)]: dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()}


def _count(lake: Path, source: str, table: str) -> int:
    glob = str(lake / "landing" / source / table / "**" / "*.parquet")
    return int(
        duckdb.sql(f"select count(*) from read_parquet('{glob}', union_by_name = true)").fetchall()[0][0]
    )


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]
)
def test_catalog_tables_land_full_then_incremental(
    engine: str, glue: Any, s3_bucket: str, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    """On both engines (Spark's executors read the catalog's files through S3A): the same rows land."""
    db = f"shop_{uuid.uuid4().hex[:8]}"  # moto's catalog lives as long as the test session
    glue.create_database(DatabaseInput={"Name": db})
    root = f"s3://{s3_bucket}/data"

    # orders: Parquet, partitioned by dt, key in the table's parameters, cursor updated_at.
    _table(
        glue,
        db,
        "orders",
        f"{root}/orders/",
        [("id", "bigint"), ("amount", "decimal(12,2)"), ("status", "string"), ("updated_at", "timestamp")],
        serde="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
        input_format="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
        partition_keys=[("dt", "string")],
        parameters={"classification": "parquet", "primary_key": "id"},
    )
    truth_orders: dict[int, dict[str, Any]] = {}
    day1 = [
        {"id": i, "amount": Decimal(f"{i}.25"), "status": "new", "updated_at": datetime(2024, 1, 1, 10, i)}
        for i in (1, 2, 3)
    ]
    _put(s3_bucket, "data/orders/dt=2024-01-01/part-0.parquet", _parquet(day1, ORDERS))
    _partition(glue, db, "orders", ["2024-01-01"], f"{root}/orders/dt=2024-01-01/")
    for r in day1:
        truth_orders[r["id"]] = {**r, "dt": "2024-01-01", "channel": None}

    # customers: CSV through OpenCSVSerde (';', a header line), key from the registry prefix.
    _table(
        glue,
        db,
        "customers",
        f"{root}/customers/",
        [("customer_id", "string"), ("name", "string"), ("updated_at", "string")],
        serde="org.apache.hadoop.hive.serde2.OpenCSVSerde",
        serde_params={"separatorChar": ";", "quoteChar": '"'},
        parameters={"classification": "csv", "skip.header.line.count": "1"},
    )
    _put(
        s3_bucket,
        "data/customers/c1.csv",
        b'customer_id;name;updated_at\n1;"Ann; Jr";2024-01-01 09:00:00\n2;Bob;2024-01-01 09:00:00\n',
    )
    _put(s3_bucket, "registry/2024-01-01/pk.csv", b"table,primary_key\ncustomers,name\n")
    _put(s3_bucket, "registry/2024-02-01/pk.csv", b"table,primary_key\ncustomers,customer_id\n")

    # logs: header-less LazySimpleSerDe ('|'), partitioned by day, no cursor and no key.
    _table(
        glue,
        db,
        "logs",
        f"{root}/logs/",
        [("level", "string"), ("message", "string")],
        serde="org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
        serde_params={"field.delim": "|"},
        partition_keys=[("day", "string")],
        parameters={"classification": "csv"},
    )
    _put(s3_bucket, "data/logs/day=1/a.txt", b"INFO|started\nWARN|slow disk\n")
    _partition(glue, db, "logs", ["1"], f"{root}/logs/day=1/")

    # events: JSON lines, no cursor: incremental by new files; key from the config.
    _table(
        glue,
        db,
        "events",
        f"{root}/events/",
        [("event_id", "bigint"), ("kind", "string")],
        serde="org.openx.data.jsonserde.JsonSerDe",
        parameters={"classification": "json"},
    )
    _put(
        s3_bucket,
        "data/events/e1.json",
        b'{"event_id": 1, "kind": "click"}\n{"event_id": 2, "kind": "view"}\n',
    )
    _put(s3_bucket, "data/events/_SUCCESS", b"")

    lake = tmp_path / "lake"
    cfg = write_config(
        {
            "pipeline": "glue_src",
            "lake": {"root": str(lake)},
            "sources": [
                {
                    "name": "shop",
                    "kind": "glue_catalog",
                    "database": db,
                    "pk_registry": f"s3://{s3_bucket}/registry/",
                    "exclude": ["tmp_*"],
                    "tables": [
                        "orders",
                        "logs",
                        {"name": "customers", "cursor_timezone": "UTC"},
                        {"name": "events", "primary_key": ["event_id"]},
                    ],
                }
            ],
        }
    )
    assert read_pk_registry(f"s3://{s3_bucket}/registry/") == {"customers": ("customer_id",)}

    def run() -> dict[str, Any]:
        if engine == "spark":
            from ingestion.config import SparkConfig
            from ingestion.engines.spark.engine import SparkEngine

            report = run_pipeline(
                cfg, engine=SparkEngine(SparkConfig(), spark=request.getfixturevalue("s3a_spark"))
            )
        else:
            report = run_pipeline(cfg)
        assert report.ok, [(t.name, t.error) for t in report.tables]
        return {t.table: t for t in report.tables}

    first = run()
    assert {t: o.load_type for t, o in first.items()} == dict.fromkeys(
        ("orders", "customers", "logs", "events"), "full"
    )
    assert _latest(lake, "shop", "orders", "id", "updated_at") == {
        k: {c: v for c, v in r.items() if c != "channel"} for k, r in truth_orders.items()
    }
    customers = _latest(lake, "shop", "customers", "customer_id", "updated_at")
    assert {k: r["name"] for k, r in customers.items()} == {1: "Ann; Jr", 2: "Bob"}
    logs = duckdb.sql(
        f"select level, message, day from read_parquet('{lake}/landing/shop/logs/**/*.parquet') order by message"
    ).fetchall()
    assert logs == [("WARN", "slow disk", 1), ("INFO", "started", 1)]
    assert _count(lake, "shop", "events") == 2

    store = StateStore(str(lake), "glue_src")
    orders_state = store.read("shop", "orders")
    assert orders_state is not None and orders_state.primary_key == ("id",)
    assert orders_state.watermark is not None and orders_state.watermark.value.startswith("2024-01-01T10:03")
    events_state = store.read("shop", "events")
    assert events_state is not None and events_state.watermark is None
    assert list(events_state.files) == [f"s3://{s3_bucket}/data/events/e1.json"]

    # Nothing new: every table is up to date and nothing lands again.
    again = run()
    assert {t: o.status for t, o in again.items()} == dict.fromkeys(
        ("orders", "customers", "logs", "events"), "up_to_date"
    )

    # A later partition gains a column; an old order changes; new files for the other tables.
    day2 = [
        {
            "id": 1,
            "amount": Decimal("10.50"),
            "status": "paid",
            "updated_at": datetime(2024, 1, 2, 8, 0),
            "channel": "web",
        },
        {
            "id": 4,
            "amount": Decimal("4.00"),
            "status": "new",
            "updated_at": datetime(2024, 1, 2, 9, 0),
            "channel": None,
        },
    ]
    _put(s3_bucket, "data/orders/dt=2024-01-02/part-0.parquet", _parquet(day2, ORDERS_V2))
    _partition(glue, db, "orders", ["2024-01-02"], f"{root}/orders/dt=2024-01-02/")
    for r in day2:
        truth_orders[r["id"]] = {**r, "dt": "2024-01-02"}
    _put(s3_bucket, "data/customers/c2.csv", b"customer_id;name;updated_at\n2;Bobby;2024-01-02 09:00:00\n")
    _put(s3_bucket, "data/logs/day=2/a.txt", b"ERROR|\\N\n")
    _partition(glue, db, "logs", ["2"], f"{root}/logs/day=2/")
    e2 = [{"event_id": 3, "kind": "buy"}, {"event_id": None, "kind": "keyless"}]
    _put(s3_bucket, "data/events/e2.json", b"".join(json.dumps(e).encode() + b"\n" for e in e2))

    second = run()
    assert {t: o.load_type for t, o in second.items()} == dict.fromkeys(
        ("orders", "customers", "logs", "events"), "incremental"
    )
    # orders: every file is read, rows below the watermark are filtered (the bound is inclusive).
    assert second["orders"].rows_read == 5
    assert second["orders"].rows_filtered == 2 and second["orders"].rows_landed == 3
    assert _latest(lake, "shop", "orders", "id", "updated_at") == truth_orders
    customers = _latest(lake, "shop", "customers", "customer_id", "updated_at")
    assert {k: r["name"] for k, r in customers.items()} == {1: "Ann; Jr", 2: "Bobby"}
    # events and logs: only the new files.
    assert second["events"].rows_read == 2 and _count(lake, "shop", "events") == 3
    # A row without its key is rejected with its reason, never landed.
    assert second["events"].rows_rejected == 1
    rejected = duckdb.sql(
        f"select * from read_parquet('{lake}/_rejected/shop/events/**/*.parquet')"
    ).fetchall()
    assert len(rejected) == 1 and "primary key column event_id is null" in str(rejected[0])
    assert second["logs"].rows_landed == 1
    assert duckdb.sql(
        f"select level, message, day from read_parquet('{lake}/landing/shop/logs/**/*.parquet', "
        "union_by_name = true) where day = 2"
    ).fetchall() == [("ERROR", None, 2)]
    state = store.read("shop", "orders")
    assert state is not None and state.columns["channel"] == "string"
    assert state.watermark is not None and state.watermark.value.startswith("2024-01-02T09:00")


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]
)
def test_a_jdbc_connection_table_is_read_through_postgres(
    engine: str,
    glue: Any,
    s3_bucket: str,
    tmp_path: Path,
    write_config,
    pg_db: Any,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """A crawled PostgreSQL table (location db.schema.table, a Glue connection with URL, user and
    password) lands through the PostgreSQL path (on Spark through Spark's JDBC reader), full then
    incremental; the password is never printed. A connection to another database kind fails that table
    only, with what to do."""
    import logging

    db = f"mixed_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": db})
    pg_db.con.execute(
        "create table orders (id int primary key, amount numeric(12,2), updated_at timestamptz not null)"
    )
    pg_db.con.execute(
        "insert into orders values (1, 1.50, '2024-01-01 10:00+00'), (2, 2.50, '2024-01-01 11:00+00')"
    )
    conn_name = f"pg-{uuid.uuid4().hex[:8]}"
    glue.create_connection(
        ConnectionInput={
            "Name": conn_name,
            "ConnectionType": "JDBC",
            "ConnectionProperties": {
                "JDBC_CONNECTION_URL": f"jdbc:postgresql://127.0.0.1:5432/{pg_db.name}",
                "USERNAME": pg_db.role,
                "PASSWORD": pg_db.password,
            },
        }
    )
    other = f"my-{uuid.uuid4().hex[:8]}"
    glue.create_connection(
        ConnectionInput={
            "Name": other,
            "ConnectionType": "JDBC",
            "ConnectionProperties": {"JDBC_CONNECTION_URL": "jdbc:mysql://h:3306/x", "USERNAME": "u"},
        }
    )
    _table(
        glue,
        db,
        "postgres_db_public_orders",
        f"{pg_db.name}.public.orders",
        [("id", "int"), ("amount", "decimal(12,2)"), ("updated_at", "timestamp")],
        serde="",
        parameters={"classification": "postgresql", "connectionName": conn_name},
    )
    _table(
        glue,
        db,
        "mysql_x_items",
        "x.items",
        [("id", "int")],
        serde="",
        parameters={"classification": "mysql", "connectionName": other},
    )
    _table(
        glue,
        db,
        "notes",
        f"s3://{s3_bucket}/notes/",
        [("id", "bigint")],
        serde="org.openx.data.jsonserde.JsonSerDe",
    )
    _put(s3_bucket, "notes/n.json", b'{"id": 7}\n')
    lake = tmp_path / "lake"
    cfg = write_config(
        {
            "pipeline": "glue_mixed",
            "lake": {"root": str(lake)},
            "sources": [{"name": "mixed", "kind": "glue_catalog", "database": db}],
        }
    )
    caplog.set_level(logging.DEBUG)
    report = _run(cfg, engine, request)
    by = {t.table: t for t in report.tables}
    assert by["notes"].status == "landed" and by["notes"].rows_landed == 1
    assert by["mysql_x_items"].status == "failed"
    assert "not a PostgreSQL connection" in (by["mysql_x_items"].error or "")
    assert not report.ok
    orders = by["postgres_db_public_orders"]
    assert orders.status == "landed" and orders.load_type == "full" and orders.rows_landed == 2, orders.error

    def lake_rows() -> dict[int, tuple[Any, ...]]:
        return {
            r[0]: r[1:]
            for r in duckdb.sql(
                "select id, amount, updated_at from read_parquet("
                f"'{lake}/landing/mixed/postgres_db_public_orders/**/*.parquet') "
                "qualify row_number() over (partition by id order by updated_at desc, _ingested_at desc) = 1"
            ).fetchall()
        }

    def source_rows() -> dict[int, tuple[Any, ...]]:
        return {
            r[0]: r[1:] for r in pg_db.con.execute("select id, amount, updated_at from orders").fetchall()
        }

    assert lake_rows() == source_rows()
    pg_db.con.execute("update orders set amount = 9.99, updated_at = '2024-01-02 10:00+00' where id = 2")
    pg_db.con.execute("insert into orders values (3, 3.00, '2024-01-02 11:00+00')")
    again = {t.table: t for t in _run(cfg, engine, request).tables}["postgres_db_public_orders"]
    assert again.load_type == "incremental" and again.rows_landed == 2, again.error
    assert lake_rows() == source_rows()
    state = StateStore(str(lake), "glue_mixed").read("mixed", "postgres_db_public_orders")
    assert state is not None and state.primary_key == ("id",) and state.cursor == "updated_at"
    ours = "\n".join(
        r.getMessage() + str(r.__dict__) for r in caplog.records if r.name.startswith("tidemark")
    )
    assert "postgres_db_public_orders" in ours and pg_db.password not in ours
    assert all(pg_db.password not in (t.error or "") for t in report.tables)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def test_curated_catalog_tables_equal_the_source_after_dbt_build(
    engine: str,
    glue: Any,
    s3_bucket: str,
    tmp_path: Path,
    write_config,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Full then incremental runs, dbt-sources and scaffolded models for the discovered tables, `dbt
    build`: the curated tables equal the source by key and every column, through a gained column."""
    import sys

    from ingestion.dbt_gen import generate_source_files, scaffold

    from .dbt_support import FastDbt, read_duckdb
    from .helpers import DBT
    from .test_dbt_scaffold import copy_project

    if not DBT.exists():
        pytest.skip(f"dbt is not installed next to {sys.executable}")
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    db = f"curated_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": db})
    root = f"s3://{s3_bucket}/cur"
    _table(
        glue,
        db,
        "orders",
        f"{root}/orders/",
        [("id", "bigint"), ("amount", "decimal(12,2)"), ("status", "string"), ("updated_at", "timestamp")],
        serde="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
        partition_keys=[("dt", "string")],
        parameters={"classification": "parquet", "primaryKey": "id"},
    )
    _table(
        glue,
        db,
        "shoppers",
        f"{root}/shoppers/",
        [("shopper_id", "string"), ("name", "string"), ("updated_at", "string")],
        serde="org.apache.hadoop.hive.serde2.OpenCSVSerde",
        serde_params={"separatorChar": ";"},
        parameters={"classification": "csv", "skip.header.line.count": "1", "primary_key": "shopper_id"},
    )
    orders: dict[int, dict[str, Any]] = {}
    shoppers: dict[int, dict[str, Any]] = {}

    def add_orders(day: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
        _put(s3_bucket, f"cur/orders/dt={day}/part-0.parquet", _parquet(rows, schema))
        _partition(glue, db, "orders", [day], f"{root}/orders/dt={day}/")
        for r in rows:
            orders[r["id"]] = {**r, "dt": day}
        if "channel" in schema.names:  # the gained column: null in the versions landed before it
            for row in orders.values():
                row.setdefault("channel", None)

    def add_shoppers(name: str, rows: list[tuple[int, str, datetime]]) -> None:
        text = "shopper_id;name;updated_at\n" + "".join(
            f'{i};"{n}";{t:%Y-%m-%d %H:%M:%S}\n' for i, n, t in rows
        )
        _put(s3_bucket, f"cur/shoppers/{name}.csv", text.encode())
        for i, n, t in rows:
            shoppers[i] = {"shopper_id": i, "name": n, "updated_at": t}

    add_orders(
        "2024-01-01",
        [
            {
                "id": i,
                "amount": Decimal(f"{i}.10"),
                "status": "new",
                "updated_at": datetime(2024, 1, 1, 10, i),
            }
            for i in (1, 2, 3)
        ],
        ORDERS,
    )
    add_shoppers("s1", [(1, "Ann; Jr", datetime(2024, 1, 1, 9)), (2, "Bob", datetime(2024, 1, 1, 9))])
    lake = tmp_path / "lake"
    cfg = write_config(
        {
            "pipeline": "glue_curated",
            "lake": {"root": str(lake)},
            "sources": [{"name": "cat", "kind": "glue_catalog", "database": db}],
        }
    )

    def run() -> None:
        if engine == "spark":
            from ingestion.config import SparkConfig
            from ingestion.engines.spark.engine import SparkEngine

            spark = request.getfixturevalue("s3a_spark")
            report = run_pipeline(cfg, engine=SparkEngine(SparkConfig(), spark=spark))
        else:
            report = run_pipeline(cfg)
        assert report.ok, [(t.name, t.error) for t in report.tables]

    run()
    project = copy_project(tmp_path / "project")
    files, specs = generate_source_files(cfg, project)
    for f in files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        f.path.write_text(f.text)
    assert {(s.table, s.primary_key, s.cursor) for s in specs if s.source == "cat"} == {
        ("orders", ("id",), "updated_at"),
        ("shoppers", ("shopper_id",), "updated_at"),
    }
    sources_text = next(f.text for f in files if f.path.name == "_cat__sources.yml")
    written = scaffold([s for s in specs if s.source == "cat"], sources_text, project)
    assert {t for t, _, s in written if s == "written"} == {"cat.orders", "cat.shoppers"}, written
    warehouse = tmp_path / "wh.duckdb"
    dbt = FastDbt(tmp_path, lake, warehouse, project=project)

    def check() -> None:
        dbt("build", "--select", "stg_cat__orders+", "stg_cat__shoppers+")
        for relation, truth, key in (("orders", orders, "id"), ("shoppers", shoppers, "shopper_id")):
            got = {r[key]: r for r in read_duckdb(warehouse, f"main.{relation}")}
            assert set(got) == set(truth), relation
            for k, row in truth.items():
                for col, want in row.items():
                    assert got[k][col] == want, (relation, k, col, got[k][col], want)

    check()
    # A later partition gains a column and changes an order; a new CSV file updates a shopper.
    add_orders(
        "2024-01-02",
        [
            {
                "id": 2,
                "amount": Decimal("20.00"),
                "status": "paid",
                "updated_at": datetime(2024, 1, 2, 8),
                "channel": "web",
            },
            {
                "id": 4,
                "amount": Decimal("4.40"),
                "status": "new",
                "updated_at": datetime(2024, 1, 2, 9),
                "channel": "app",
            },
        ],
        ORDERS_V2,
    )
    add_shoppers("s2", [(2, "Bobby", datetime(2024, 1, 2, 9)), (3, "Cy", datetime(2024, 1, 2, 9))])
    run()
    # The gained column reaches the sources file: regenerated, as a run's dbt-sources step would.
    files, _ = generate_source_files(cfg, project)
    for f in files:
        f.path.write_text(f.text)
    dbt = FastDbt(tmp_path, lake, warehouse, project=project)
    check()


def _spec(cursor: str | None, *, full_load: bool = False) -> Any:
    from ingestion.plan.catalog import CatalogSpec

    return CatalogSpec(
        source="s",
        source_name="t",
        name="t",
        format="parquet",
        location="s3://b/t",
        columns={"id": "bigint", "updated_at": "timestamp"},
        raw_columns=("id", "updated_at"),
        partition_keys=(),
        partitions=(),
        primary_key=("id",),
        cursor=cursor,
        cursor_timezone="UTC",
        lookback="1h",
        load_type="auto",
        full_load=full_load,
    )


def test_plans_by_cursor_bound_or_by_new_files() -> None:
    from dataclasses import replace as copy

    from ingestion.lake.model import FileEntry, TableState, Watermark
    from ingestion.plan.catalog import CatalogFile, plan_catalog_table
    from ingestion.plan.csv import FileFacts, NoState

    a = CatalogFile(FileFacts("s3://b/t/a", "s3://b/t/a", 10, 1, "e1"))
    b = CatalogFile(FileFacts("s3://b/t/b", "s3://b/t/b", 20, 2, "e2"))
    state = TableState(
        "p",
        "s",
        "t",
        watermark=Watermark("2024-01-01T10:00:00.000000+00:00", "timestamp", "UTC"),
        files={"s3://b/t/a": FileEntry(10, 1, "r1", etag="e1")},
    )
    # No state: full, every file, no bound (either way).
    for cursor in ("updated_at", None):
        p = plan_catalog_table(_spec(cursor), None, [a, b])
        assert (p.load_type, p.files, p.lower_bound) == ("full", (a, b), None)
        with pytest.raises(NoState):
            plan_catalog_table(_spec(cursor), None, [a], load_type="incremental")
    # A cursor: every file, rows from watermark - lookback, in the column's own (UTC wall clock) terms.
    p = plan_catalog_table(_spec("updated_at"), state, [a, b])
    assert p.load_type == "incremental" and p.files == (a, b)
    assert p.lower_bound is not None and p.lower_bound.value == "2024-01-01T09:00:00.000000"
    # No cursor: only what the ledger has not seen; a rewritten file (another ETag) again.
    p = plan_catalog_table(_spec(None), state, [a, b])
    assert (p.load_type, p.files, p.lower_bound) == ("incremental", (b,), None)
    rewritten = CatalogFile(copy(a.facts, size=11, etag="e3"))
    assert plan_catalog_table(_spec(None), state, [rewritten]).files == (rewritten,)
    # full_load: every file, every run.
    assert plan_catalog_table(_spec(None, full_load=True), state, [a, b]).files == (a, b)
    # A cursor whose type changed since the watermark: re-land, says the error.
    changed = copy(state, watermark=Watermark("5", "bigint"))
    with pytest.raises(Exception, match="re-land"):
        plan_catalog_table(_spec("updated_at"), changed, [a])


def test_utc_adjusted_parquet_timestamps_keep_their_type_across_runs(
    glue: Any, s3_bucket: str, tmp_path: Path, write_config
) -> None:
    """Spark and Glue write UTC-adjusted Parquet timestamps that the catalog calls `timestamp`: the cursor
    lands as timestamptz, and the next run's bound is compared in the lake's type, not the catalog's."""
    from datetime import timezone

    db = f"utc_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": db})
    _table(
        glue,
        db,
        "visits",
        f"s3://{s3_bucket}/visits/",
        [("id", "bigint"), ("updated_at", "timestamp")],
        serde="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
        parameters={"primary_key": "id"},
    )
    schema = pa.schema([("id", pa.int64()), ("updated_at", pa.timestamp("us", tz="UTC"))])
    at = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
    _put(s3_bucket, "visits/a.parquet", _parquet([{"id": 1, "updated_at": at}], schema))
    lake = tmp_path / "lake"
    cfg = write_config(
        {
            "pipeline": "utc",
            "lake": {"root": str(lake)},
            "sources": [{"name": "v", "kind": "glue_catalog", "database": db, "lookback": "1h"}],
        }
    )
    assert run_pipeline(cfg).ok
    state = StateStore(str(lake), "utc").read("v", "visits")
    assert state is not None and state.watermark is not None
    assert (state.watermark.type, state.watermark.value) == (
        "timestamptz",
        "2024-03-01T12:00:00.000000+00:00",
    )
    _put(s3_bucket, "visits/b.parquet", _parquet([{"id": 2, "updated_at": at.replace(hour=13)}], schema))
    report = run_pipeline(cfg)
    assert report.ok, [(t.name, t.error) for t in report.tables]
    outcome = report.tables[0]
    # Both files are read; the first's row is within the lookback, so it lands again (harmless).
    assert (outcome.load_type, outcome.rows_read, outcome.rows_landed) == ("incremental", 2, 2)


def test_pk_registry_prefix_takes_the_latest_csv(tmp_path: Path) -> None:
    import os

    old, new = tmp_path / "reg" / "2024-01" / "keys.csv", tmp_path / "reg" / "2024-02" / "keys.csv"
    for path, key in ((old, "a"), (new, "b|c")):
        path.parent.mkdir(parents=True)
        path.write_text(f"table,primary_key\nschema.t,{key}\n")
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    assert read_pk_registry(f"{tmp_path / 'reg'}/") == {"t": ("b", "c")}
    with pytest.raises(Exception, match="no CSV file under it"):
        read_pk_registry(f"{tmp_path / 'empty'}/")


def _run(cfg: Path, engine: str, request: pytest.FixtureRequest) -> Any:
    if engine == "spark":
        from ingestion.config import SparkConfig
        from ingestion.engines.spark.engine import SparkEngine

        return run_pipeline(
            cfg, engine=SparkEngine(SparkConfig(), spark=request.getfixturevalue("s3a_spark"))
        )
    return run_pipeline(cfg)


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]
)
def test_bad_json_lines_and_misfit_values_are_rejected_with_their_line(
    engine: str, glue: Any, s3_bucket: str, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    """A malformed JSON line, a value that doesn't fit the catalog's type (never nulled, rounded or
    widened) and a null key are row rejects with file, line and reason; the rest of the file lands, nested
    columns as JSON text. A Parquet file's null-key reject names its 1-based row number. Same on both
    engines."""
    db = f"bad_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": db})
    _table(
        glue,
        db,
        "events",
        f"s3://{s3_bucket}/bad/events/",
        [
            ("id", "bigint"),
            ("kind", "string"),
            ("amount", "decimal(12,2)"),
            ("n", "int"),
            ("on_day", "date"),
            ("tags", "array<string>"),
            ("meta", "struct<k:int,v:string>"),
        ],
        serde="org.openx.data.jsonserde.JsonSerDe",
        parameters={"classification": "json", "primary_key": "id"},
    )
    lines = [
        '{"id": 1, "kind": "a", "amount": 1.5, "n": 7, "on_day": "2024-01-02", "tags": ["x", "y"], '
        '"meta": {"k": 1, "v": "q"}}',
        '{"id": 2, "kind": "broken',
        "",
        '{"id": "abc", "kind": "text id"}',
        '{"id": 3, "amount": 1.234}',
        '{"id": 4, "n": 1.5}',
        '{"id": null, "kind": "no key"}',
        '{"id": 5, "kind": 5, "amount": "2.25", "extra": true}',
        "[1, 2]",
    ]
    bad = f"s3://{s3_bucket}/bad/events/a.json"
    _put(s3_bucket, "bad/events/a.json", ("\n".join(lines) + "\n").encode())
    good = f"s3://{s3_bucket}/bad/events/b.json"  # every line parses: DuckDB's fast path
    _put(s3_bucket, "bad/events/b.json", b'{"id": 6, "kind": "b"}\n{"kind": "keyless"}\n')
    _table(
        glue,
        db,
        "things",
        f"s3://{s3_bucket}/bad/things/",
        [("id", "bigint"), ("attrs", "struct<a:bigint,b:string>"), ("names", "array<string>")],
        serde="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
        parameters={"classification": "parquet", "primary_key": "id"},
    )
    things = pa.schema(
        [
            ("id", pa.int64()),
            ("attrs", pa.struct([("a", pa.int64()), ("b", pa.string())])),
            ("names", pa.list_(pa.string())),
        ]
    )
    rows = [
        {"id": 1, "attrs": {"a": 1, "b": None}, "names": ["p", "q"]},
        {"id": 2, "attrs": None, "names": []},
        {"id": None, "attrs": {"a": 3, "b": "z"}, "names": None},
    ]
    _put(s3_bucket, "bad/things/t.parquet", _parquet(rows, things))
    lake = tmp_path / "lake"
    cfg = write_config(
        {
            "pipeline": "bad_json",
            "lake": {"root": str(lake)},
            "sources": [{"name": "bad", "kind": "glue_catalog", "database": db}],
        }
    )
    report = _run(cfg, engine, request)
    assert report.ok, [(t.name, t.error) for t in report.tables]
    by = {t.table: t for t in report.tables}
    assert (by["events"].rows_read, by["events"].rows_rejected, by["events"].rows_landed) == (10, 7, 3)
    landed = duckdb.sql(
        "select id, kind, amount, n, on_day, tags, meta, _source_file from read_parquet("
        f"'{lake}/landing/bad/events/**/*.parquet') order by id"
    ).fetchall()
    assert landed == [
        (1, "a", Decimal("1.50"), 7, datetime(2024, 1, 2).date(), '["x","y"]', '{"k":1,"v":"q"}', bad),
        (5, "5", Decimal("2.25"), None, None, None, None, bad),
        (6, "b", None, None, None, None, None, good),
    ]
    rejected = duckdb.sql(
        "select _source_file, _line, _record, _reason_code, _column, _raw, _reason from read_parquet("
        f"'{lake}/_rejected/bad/events/**/*.parquet') order by _source_file, _line"
    ).fetchall()
    assert [r[:5] for r in rejected] == [
        (bad, 2, 1, "malformed_json", None),
        (bad, 4, 3, "type_mismatch", "id"),
        (bad, 5, 4, "type_mismatch", "amount"),
        (bad, 6, 5, "type_mismatch", "n"),
        (bad, 7, 6, "null_key", "id"),
        (bad, 9, 8, "malformed_json", None),
        (good, 2, 1, "null_key", "id"),
    ]
    assert [r[5] for r in rejected[:4]] == [lines[1], lines[3], lines[4], lines[5]]
    assert "'1.234' is not a valid decimal(12,2)" in rejected[2][6]
    assert "'1.5' is not a valid bigint" in rejected[3][6]

    assert (by["things"].rows_read, by["things"].rows_rejected, by["things"].rows_landed) == (3, 1, 2)
    assert duckdb.sql(
        f"select id, attrs, names from read_parquet('{lake}/landing/bad/things/**/*.parquet') order by id"
    ).fetchall() == [(1, '{"a":1,"b":null}', '["p","q"]'), (2, None, "[]")]
    assert duckdb.sql(
        f"select _line, _record, _reason_code from read_parquet('{lake}/_rejected/bad/things/**/*.parquet')"
    ).fetchall() == [(3, 2, "null_key")]
    state = StateStore(str(lake), "bad_json").read("bad", "events")
    assert state is not None and state.columns["tags"] == "string" and state.columns["n"] == "bigint"


def test_sdk_debug_logging_never_prints_the_glue_connection_password(glue: Any, tmp_path: Path) -> None:
    """With botocore and urllib3 at DEBUG, neither tidemark's log file and console nor a handler someone
    else put on the root logger shows a Glue connection's password: the SDK logs no body of the call that
    fetches it, and every record through those handlers has registered secrets masked."""
    import logging

    from ingestion.config import GlueCatalogSourceConfig
    from ingestion.observe.logs import log, setup_logging
    from ingestion.redact import SDK_LOGGERS
    from ingestion.sources.catalog import glue_connection

    password = f"Pw {uuid.uuid4().hex}, x"  # a space and a comma: beyond what key=value patterns mask
    name = f"pg-{uuid.uuid4().hex[:8]}"
    glue.create_connection(
        ConnectionInput={
            "Name": name,
            "ConnectionType": "JDBC",
            "ConnectionProperties": {
                "JDBC_CONNECTION_URL": "jdbc:postgresql://127.0.0.1:5432/shop",
                "USERNAME": "loader",
                "PASSWORD": password,
            },
        }
    )
    theirs = io.StringIO()
    root_handler = logging.StreamHandler(theirs)
    root = logging.getLogger()
    root.addHandler(root_handler)
    levels = {n: logging.getLogger(n).level for n in ("botocore", "urllib3")}
    path = setup_logging("run-redact", str(tmp_path / "lake"))
    assert path is not None
    try:
        for n in levels:
            logging.getLogger(n).setLevel(logging.DEBUG)
        source = GlueCatalogSourceConfig.model_validate(
            {"name": "s", "kind": "glue_catalog", "database": "d"}
        )
        conn = glue_connection(source, name, None, glue)
        assert conn.password == password and conn.user == "loader"
        # Now registered: a raw call that logs the response body is masked in every handler.
        glue.get_connection(Name=name, HidePassword=False)
        glue.get_connection(Name=name, HidePassword=False)  # once more: a record per call, not a cache
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)
        root.removeHandler(root_handler)
        for h in list(log.handlers):
            log.removeHandler(h)
            for n in SDK_LOGGERS:
                logging.getLogger(n).removeHandler(h)
            h.close()
    ours = path.read_text()
    body = [json.loads(line)["event"] for line in ours.splitlines() if "Response body" in line]
    assert len(body) == 2 and all("PASSWORD" in b and "***" in b for b in body)  # only the raw calls
    assert password not in ours and password not in theirs.getvalue()
    assert "Response body" in theirs.getvalue()


_REJECT = "type_mismatch"


@pytest.mark.parametrize(
    ("value", "ltype", "expected"),
    [
        ("1.5", "bigint", _REJECT),
        ("1E2", "bigint", _REJECT),
        ("-0", "bigint", 0),
        ("99999999999999999999", "bigint", _REJECT),
        ('"12"', "bigint", _REJECT),
        ("true", "bigint", _REJECT),
        ("1e2", "double", 100.0),
        ('"NaN"', "double", _REJECT),
        ("1.500", "decimal(12,2)", Decimal("1.50")),
        ("1.234", "decimal(12,2)", _REJECT),
        ("12345678901.5", "decimal(12,2)", _REJECT),
        ('"+1.5"', "decimal(12,2)", Decimal("1.50")),
        ('" 1.5"', "decimal(12,2)", _REJECT),
        ('"2024-01-01T10"', "timestamp", datetime(2024, 1, 1, 10)),
        ('"2024-01-01 10:00"', "timestamp", datetime(2024, 1, 1, 10)),
        ('"2024-01-01T10:00:00+0200"', "timestamp", datetime(2024, 1, 1, 8)),
        ('"2024-01-01T10:00:00.1234567"', "timestamp", _REJECT),
        ('"20240101"', "timestamp", _REJECT),
        ('"2024-01-02"', "date", datetime(2024, 1, 2).date()),
        ('"2024-02-30"', "date", _REJECT),
        ("5", "string", "5"),
        ('{"x": [1, 2.50]}', "string", '{"x":[1,2.50]}'),
        ("1", "boolean", _REJECT),
    ],
)
def test_the_json_line_rule_and_duckdbs_fast_path_agree(value: str, ltype: str, expected: Any) -> None:
    """A value lands exactly or its row is rejected (the line rule: the Spark engine's, and DuckDB's for a
    file with a bad line); whatever pyarrow's reader (DuckDB's fast path for good files) lands, the rule
    lands the same value."""
    import pyarrow.json as pj

    from ingestion.plan.json_lines import parse_line
    from ingestion.sources.catalog import _decimals_fit, arrow_type

    line = f'{{"a": {value}}}'
    row, bad = parse_line(line, [("a", "a", ltype)])
    if expected == _REJECT:
        assert row is None and bad is not None and bad[0] == _REJECT and bad[2] == "a"
    else:
        assert bad is None and row == (expected,)
    try:
        fast = pj.read_json(
            pa.BufferReader(line.encode() + b"\n"),
            parse_options=pj.ParseOptions(explicit_schema=pa.schema([("a", arrow_type(ltype))])),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return  # the fast path refuses the file: the line rule decides
    if _decimals_fit(fast):
        assert row == (fast.column(0)[0].as_py(),)


def test_an_imported_seed_watermark_makes_a_catalog_tables_first_run_incremental(
    glue: Any, s3_bucket: str, tmp_path: Path, write_config
) -> None:
    """A team coming from a Glue script keeps its `max_timestamps.csv`: the catalog table's first run
    reads from that watermark (inclusive), so rows the script already landed are not landed again."""
    from ingestion.run.seeds import import_watermarks

    db = f"seed_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": db})
    _table(
        glue,
        db,
        "orders",
        f"s3://{s3_bucket}/seeded/",
        [
            (f.name, t)
            for f, t in zip(ORDERS, ["bigint", "decimal(12,2)", "string", "timestamp"], strict=True)
        ],
        serde="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
        parameters={"primary_key": "id"},
    )
    rows = [
        {"id": n, "amount": Decimal("1.50"), "status": "s", "updated_at": datetime(2024, 5, n, 8)}
        for n in range(1, 6)
    ]
    _put(s3_bucket, "seeded/a.parquet", _parquet(rows, ORDERS))
    lake = tmp_path / "lake"
    cfg = write_config(
        {
            "pipeline": "seeded",
            "lake": {"root": str(lake)},
            "sources": [{"name": "c", "kind": "glue_catalog", "database": db}],
        }
    )
    seed = tmp_path / "max_timestamps.csv"
    seed.write_text("table_name,max_timestamp\norders,2024-05-03 08:00:00\n")
    (decision,) = import_watermarks(cfg, [str(seed)]).decisions
    assert (decision.name, decision.action) == ("c.orders", "set"), decision
    state = StateStore(str(lake), "seeded").read("c", "orders")
    assert state is not None and state.watermark is not None
    # The canonical form of a naive cursor: the instant in UTC, read in the cursor zone (UTC by default).
    assert (state.watermark.type, state.watermark.value) == ("timestamp", "2024-05-03T08:00:00.000000+00:00")
    report = run_pipeline(cfg)
    assert report.ok, [(t.name, t.error) for t in report.tables]
    (outcome,) = report.tables
    assert (outcome.load_type, outcome.rows_landed) == ("incremental", 3)
    assert sorted(_latest(lake, "c", "orders", "id", "updated_at")) == [3, 4, 5]


def test_header_line_counts_above_one_skip_the_lines_before_the_header() -> None:
    """skip.header.line.count = N: the N-th line is the header line, the N - 1 before it are skipped; a
    count that is not a whole number is an error naming the table."""
    from ingestion.config import GlueCatalogSourceConfig
    from ingestion.plan.catalog import GlueColumn, header_lines, resolve_table

    def table(count: str) -> GlueTable:
        return GlueTable(
            "t",
            "s3://b/t",
            (GlueColumn("id", "bigint"),),
            parameters={"skip.header.line.count": count, "classification": "csv"},
            serde="org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
            serde_parameters={"field.delim": ","},
        )

    source = GlueCatalogSourceConfig(name="s", kind="glue_catalog", database="d")
    for count, skip, header in (("0", 0, False), ("1", 0, True), ("2", 1, True), ("3", 2, True)):
        spec, _ = resolve_table(source, table(count), {})
        assert header_lines(table(count)) == int(count)
        assert spec.csv is not None and (spec.skip_lines, spec.csv.header) == (skip, header)
    with pytest.raises(SchemaError, match="not a whole number"):
        csv_options(table("-1"))


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]
)
def test_csv_tables_skip_their_header_lines_and_rejects_keep_the_files_line_numbers(
    engine: str, glue: Any, s3_bucket: str, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    """skip.header.line.count 2 (a title line, then the header line) and 3 (two comment lines): the lines
    are neither rows nor rejects, the catalog's column names are used, a bad row's reject carries its
    line in the file as stored, and a file shorter than the count is an empty file."""
    db = f"hdr_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": db})
    for name, count in (("report", "2"), ("noted", "3")):
        _table(
            glue,
            db,
            name,
            f"s3://{s3_bucket}/hdr/{name}/",
            [("id", "bigint"), ("label", "string"), ("amount", "double")],
            serde="org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe",
            serde_params={"field.delim": ","},
            parameters={"classification": "csv", "skip.header.line.count": count, "primary_key": "id"},
        )
    report_csv = f"s3://{s3_bucket}/hdr/report/r1.csv"
    _put(s3_bucket, "hdr/report/r1.csv", b"Sales report, 2024\nID,Label,Amount\n1,a,1.5\n2,b,2,x\n3,c,3.5\n")
    _put(s3_bucket, "hdr/report/short.csv", b"Sales report, empty\n")  # shorter than 2 lines
    # gzip: the header lines are skipped in the decompressed text
    _put(s3_bucket, "hdr/report/r2.csv.gz", gzip.compress(b"Sales report, Q2\nid,label,amount\n4,d,4.5\n"))
    noted_csv = f"s3://{s3_bucket}/hdr/noted/n1.csv"
    _put(
        s3_bucket,
        "hdr/noted/n1.csv",
        b"# exported by tool\n# 2024-01-01\nid,label,amount\n10,p,1\n11,q\n12,r,3\n13,s,4\n",
    )
    lake = tmp_path / "lake"
    cfg = write_config(
        {
            "pipeline": "hdr",
            "lake": {"root": str(lake)},
            "sources": [{"name": "hdr", "kind": "glue_catalog", "database": db}],
        }
    )
    report = _run(cfg, engine, request)
    assert report.ok, [(t.name, t.error) for t in report.tables]
    by = {t.table: t for t in report.tables}
    assert (by["report"].rows_read, by["report"].rows_rejected, by["report"].rows_landed) == (4, 1, 3)
    assert (by["noted"].rows_read, by["noted"].rows_rejected, by["noted"].rows_landed) == (4, 1, 3)
    assert duckdb.sql(
        f"select id, label, amount from read_parquet('{lake}/landing/hdr/report/**/*.parquet') order by id"
    ).fetchall() == [(1, "a", 1.5), (3, "c", 3.5), (4, "d", 4.5)]
    assert duckdb.sql(
        f"select id, label, amount from read_parquet('{lake}/landing/hdr/noted/**/*.parquet') order by id"
    ).fetchall() == [(10, "p", 1.0), (12, "r", 3.0), (13, "s", 4.0)]
    rejected = duckdb.sql(
        "select _source_file, _line, _reason_code, _raw from read_parquet("
        f"'{lake}/_rejected/hdr/**/*.parquet') order by _source_file"
    ).fetchall()
    assert rejected == [
        (noted_csv, 5, "missing_columns", "11,q"),
        (report_csv, 4, "extra_columns", "2,b,2,x"),
    ]


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("spark", marks=[pytest.mark.slow, pytest.mark.spark])]
)
def test_a_typed_file_past_max_rejected_fraction_is_refused_and_retried_until_it_lands(
    engine: str, glue: Any, s3_bucket: str, tmp_path: Path, write_config, request: pytest.FixtureRequest
) -> None:
    """A JSON-lines file with 60% malformed lines under max_rejected_fraction 0.5 (the table's setting,
    over the source's 0.9) is refused: none of its rows land, its rejects are kept, the outcome and the
    ledger say why, the good file beside it lands. A cursor table's watermark does not move past the
    refused file's rows. Once the file is rewritten, the next run lands it (and all of its rows)."""
    db = f"frac_{uuid.uuid4().hex[:8]}"
    glue.create_database(DatabaseInput={"Name": db})
    for name, cols in (
        ("events", [("id", "bigint"), ("kind", "string")]),
        ("ticks", [("id", "bigint"), ("seq", "bigint")]),
    ):
        _table(
            glue,
            db,
            name,
            f"s3://{s3_bucket}/frac/{name}/",
            cols,
            serde="org.openx.data.jsonserde.JsonSerDe",
            parameters={"classification": "json", "primary_key": "id"},
        )
    bad, good = f"s3://{s3_bucket}/frac/events/bad.json", f"s3://{s3_bucket}/frac/events/good.json"
    broken = b'{"id": 1, "kind": "a"}\n{"id": 2, "kind\n{"id": 3\nnot json\n{"id": 5, "kind": "e"}\n'
    _put(s3_bucket, "frac/events/bad.json", broken)
    _put(s3_bucket, "frac/events/good.json", b'{"id": 10, "kind": "x"}\n{"id": 11, "kind": "y"}\n')
    # ticks: cursor seq; the refused file holds the older rows.
    _put(s3_bucket, "frac/ticks/old.json", b'{"id": 1, "seq": 1}\n{"id": 2, "seq":\n[3]\n{"id": 4,\n')
    _put(s3_bucket, "frac/ticks/new.json", b'{"id": 10, "seq": 10}\n{"id": 11, "seq": 11}\n')
    lake = tmp_path / "lake"
    cfg = write_config(
        {
            "pipeline": "frac",
            "lake": {"root": str(lake)},
            "sources": [
                {
                    "name": "frac",
                    "kind": "glue_catalog",
                    "database": db,
                    "max_rejected_fraction": 0.9,
                    "tables": [
                        {"name": "events", "max_rejected_fraction": 0.5},
                        {"name": "ticks", "cursor": "seq", "max_rejected_fraction": 0.5},
                    ],
                }
            ],
        }
    )

    def landed(table: str) -> list[tuple[Any, ...]]:
        return duckdb.sql(
            f"select id, _source_file from read_parquet('{lake}/landing/frac/{table}/**/*.parquet') "
            "where id is not null order by id"
        ).fetchall()

    first = _run(cfg, engine, request)
    assert not first.ok and {t.table for t in first.failed} == {"events", "ticks"}
    by = {t.table: t for t in first.tables}
    assert list(by["events"].files_refused) == [bad]
    why = by["events"].files_refused[bad]
    assert "3 of 5 rows rejected (60%), more than max_rejected_fraction 50%" in why
    assert "malformed_json: 3" in why
    assert (by["events"].rows_read, by["events"].rows_rejected, by["events"].rows_landed) == (2, 0, 2)
    assert landed("events") == [(10, good), (11, good)]
    rejected = duckdb.sql(
        "select _source_file, _line, _reason_code from read_parquet("
        f"'{lake}/_rejected/frac/events/**/*.parquet') order by _line"
    ).fetchall()
    assert rejected == [(bad, 2, "malformed_json"), (bad, 3, "malformed_json"), (bad, 4, "malformed_json")]
    store = StateStore(str(lake), "frac")
    events = store.read("frac", "events")
    assert events is not None
    assert (events.files[bad].status, events.files[bad].reason) == ("rejected", why)
    assert events.files[good].status == "landed"
    assert landed("ticks") == [
        (10, f"s3://{s3_bucket}/frac/ticks/new.json"),
        (11, f"s3://{s3_bucket}/frac/ticks/new.json"),
    ]
    ticks = store.read("frac", "ticks")
    assert ticks is not None and ticks.watermark is None  # not 11: old.json's rows are still to land

    # Unchanged, the refused files are read (and refused) again: never taken for landed.
    again = _run(cfg, engine, request)
    by = {t.table: t for t in again.tables}
    assert list(by["events"].files_refused) == [bad] and by["events"].files == 1
    assert by["events"].rows_landed == 0 and landed("events") == [(10, good), (11, good)]
    assert by["ticks"].status == "landed" and by["ticks"].files_refused
    ticks = store.read("frac", "ticks")
    assert ticks is not None and ticks.watermark is None

    # The writer fixes its files in place: the next run lands them, and only them.
    _put(s3_bucket, "frac/events/bad.json", b"".join(b'{"id": %d, "kind": "k"}\n' % i for i in range(1, 6)))
    _put(s3_bucket, "frac/ticks/old.json", b'{"id": 1, "seq": 1}\n{"id": 2, "seq": 2}\n')
    second = _run(cfg, engine, request)
    assert second.ok, [(t.name, t.error) for t in second.tables]
    by = {t.table: t for t in second.tables}
    assert by["events"].rows_landed == 5 and not by["events"].files_refused
    assert landed("events") == [*((i, bad) for i in range(1, 6)), (10, good), (11, good)]
    events = store.read("frac", "events")
    assert events is not None and events.files[bad].status == "landed"
    assert sorted({i for i, _ in landed("ticks")}) == [1, 2, 10, 11]
    ticks = store.read("frac", "ticks")
    assert ticks is not None and ticks.watermark is not None and ticks.watermark.value == "11"


def test_refused_files_are_left_out_of_the_ledger_that_plans_the_next_run() -> None:
    """`refuse_files` refuses past the fraction (never at it) with the reason and reject summary;
    `retry_refused` hides a refused file from the ledger, so the plan reads it again."""
    from ingestion.lake.model import FileEntry, TableState
    from ingestion.plan.catalog import CatalogFile, plan_catalog_table, retry_refused
    from ingestion.plan.csv import FileFacts
    from ingestion.plan.rejects import MALFORMED_JSON, FileCounts, Quarantine, Reject, refuse_files

    q = Quarantine(
        [Reject("a", i, MALFORMED_JSON, "not JSON", line=i + 1) for i in range(3)]
        + [Reject("b", 0, MALFORMED_JSON, "not JSON", line=1)],
        {"a": FileCounts("a", 5, 2, 3, 2), "b": FileCounts("b", 2, 1, 1, 1)},
    )
    assert refuse_files(q, 0.5) == {"a"}
    assert q.refused == {
        "a": "3 of 5 rows rejected (60%), more than max_rejected_fraction 50% "
        "(malformed_json: 3; rows kept in _rejected/)"
    }
    assert q.rows_rejected == 1
    files = [CatalogFile(FileFacts(n, f"/d/{n}", 10, 1)) for n in ("a", "b")]
    state = TableState(
        "p",
        "s",
        "t",
        files={"a": FileEntry(10, 1, "r1", status="rejected", reason="x"), "b": FileEntry(10, 1, "r1")},
    )
    held = retry_refused(state)
    assert held is not None and list(held.files) == ["b"] and list(state.files) == ["a", "b"]
    plan = plan_catalog_table(_spec(None), state, files)
    assert [f.facts.relpath for f in plan.files] == ["a"] and plan.load_type == "incremental"
