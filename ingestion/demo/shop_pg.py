"""The demo's optional PostgreSQL part: a small shop database in two days, and a check of the landed lake.

The server comes from the standard libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD; default
127.0.0.1:5432 as postgres). Day 1 (re)creates the database $TIDEMARK_PG_DEMO_DB (default `tidemark_demo`;
`make demo` sets one per checkout) with products and orders;
day 2 updates, inserts, deletes orders (landed as tombstones) and adds a column to products.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb

DEMO_DB = os.environ.get("TIDEMARK_PG_DEMO_DB", "tidemark_demo")
SOURCE = "shop"
TABLES = {"products": "product_id", "orders": "order_id"}


def _connect(dbname: str, **kw: Any) -> Any:
    import psycopg

    return psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=int(os.environ.get("PGPORT", "5432")),
        user=os.environ.get("PGUSER", "postgres"),
        dbname=dbname,
        connect_timeout=3,
        autocommit=True,
        **kw,
    )


def where() -> str:
    return f"{os.environ.get('PGHOST', '127.0.0.1')}:{os.environ.get('PGPORT', '5432')}"


def probe() -> str | None:
    """None when the server answers, else why not (one line)."""
    try:
        _connect("postgres").close()
    except Exception as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def seed(day: int) -> None:
    """Write day 1 (fresh database) or day 2 (changes) of the shop demo."""
    if day == 1:
        from psycopg import sql

        admin = _connect("postgres")
        db = sql.Identifier(DEMO_DB)  # the name comes from the environment: quoted, never pasted
        try:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(db))
            admin.execute(sql.SQL("create database {}").format(db))
        finally:
            admin.close()
    con = _connect(DEMO_DB)
    try:
        if day == 1:
            con.execute(
                "create table products (product_id int primary key, name varchar(40) not null, "
                "price numeric(10,2) not null, updated_at timestamptz not null default now())"
            )
            con.execute(
                "create table orders (order_id int primary key, product_id int not null, quantity int not null, "
                "status text not null, updated_at timestamptz not null default now())"
            )
            con.execute(
                "insert into products (product_id, name, price) "
                "select g, 'product ' || g, round((g * 3.17)::numeric, 2) from generate_series(1, 20) g"
            )
            con.execute(
                "insert into orders (order_id, product_id, quantity, status) "
                "select g, 1 + g % 20, 1 + g % 4, 'open' from generate_series(1, 200) g"
            )
        else:
            con.execute("alter table products add column category text")
            con.execute(
                "update products set price = price * 1.1, category = 'sale', updated_at = now() where product_id <= 5"
            )
            con.execute("update orders set status = 'shipped', updated_at = now() where order_id % 3 = 0")
            con.execute("delete from orders where order_id % 50 = 0")
            con.execute(
                "insert into orders (order_id, product_id, quantity, status) "
                "select g, 1 + g % 20, 2, 'open' from generate_series(201, 230) g"
            )
    finally:
        con.close()


def check(lake: str) -> list[str]:
    """Compare the latest landed row of every key with the source; return the differences."""
    problems = []
    src = _connect(DEMO_DB)
    try:
        for table, key in TABLES.items():
            cur = src.execute(f"select * from {table}")
            names = [d.name for d in cur.description]
            truth = {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
            files = str(Path(lake, "landing", SOURCE, table, "**", "*.parquet"))
            rel = duckdb.sql(
                f"select * from read_parquet('{files}', union_by_name = true) "
                f"qualify row_number() over (partition by {key} order by updated_at desc, _ingested_at desc, "
                "_run_id desc) = 1"
            )
            assert rel is not None  # a SELECT always gives a relation
            landed = {
                r[rel.columns.index(key)]: dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()
            }
            live = {k for k, r in landed.items() if r["_op"] != "d"}
            if live != set(truth):
                problems.append(
                    f"{table}: keys differ: missing {sorted(set(truth) - live)[:5]}, extra {sorted(live - set(truth))[:5]}"
                )
            for k, row in truth.items():
                for col, want in row.items():
                    if k in landed and landed[k].get(col) != want:
                        problems.append(
                            f"{table}.{col} of {key}={k}: landed {landed[k].get(col)!r}, source {want!r}"
                        )
    finally:
        src.close()
    return problems
