"""Deterministic bench data: an orders table (14 columns) as CSV, a duplicates variant, 1 % deltas.

Every value is arithmetic on the row number, so the same size gives the same bytes on any machine and
any DuckDB version (no random generator, no hash function). DuckDB writes the CSV: 1M rows take ~1 s.

    python bench/gen.py --size 1m --out bench/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb

SIZES = {"100k": 100_000, "1m": 1_000_000, "5m": 5_000_000, "10m": 10_000_000}
BASE_TIME = "2025-01-01 00:00:00"
# Base rows are stamped up to 2026-01-11; the duplicates variant's updates on 2026-01-15;
# delta k on day k after DELTA_TIME: every change is later than what it changes.
UPDATE_TIME = "2026-01-15 00:00:00"
DELTA_TIME = "2026-02-01 00:00:00"

COLUMNS = {
    "order_id": "BIGINT",
    "customer_id": "BIGINT",
    "status": "VARCHAR",
    "channel": "VARCHAR",
    "country": "VARCHAR",
    "currency": "VARCHAR",
    "sku": "VARCHAR",
    "quantity": "INTEGER",
    "unit_price": "DOUBLE",
    "discount": "DOUBLE",
    "amount": "DOUBLE",
    "is_gift": "BOOLEAN",
    "note": "VARCHAR",
    "created_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
}


def _row_sql(i: str, key: str, stamp: str, status_shift: str = "0") -> str:
    """SELECT list of one orders row from row number `i`, its key and its updated_at expression."""
    return f"""
        {key} AS order_id,
        ({i} * 7919) % 100000 + 1 AS customer_id,
        ['new', 'paid', 'shipped', 'delivered', 'cancelled'][({i} * 13 + {status_shift}) % 5 + 1] AS status,
        ['web', 'store', 'phone', 'partner'][({i} * 17) % 4 + 1] AS channel,
        ['DE', 'FR', 'NL', 'BE', 'ES', 'IT', 'PL', 'SE', 'GB', 'US', 'CA', 'JP'][({i} * 29) % 12 + 1] AS country,
        ['EUR', 'USD', 'GBP'][({i} * 5) % 3 + 1] AS currency,
        'SKU-' || lpad((({i} * 31) % 50000)::VARCHAR, 6, '0') AS sku,
        ({i} * 11) % 20 + 1 AS quantity,
        (({i} * 7907) % 100000) / 100.0 AS unit_price,
        (({i} * 53) % 30) / 100.0 AS discount,
        round((({i} * 11) % 20 + 1) * (({i} * 7907) % 100000) / 100.0 * (1 - (({i} * 53) % 30) / 100.0), 2)
            AS amount,
        {i} % 17 = 0 AS is_gift,
        CASE WHEN {i} % 97 = 0 THEN 'gift wrap, "fragile"' WHEN {i} % 7 = 0 THEN 'leave at door' END AS note,
        TIMESTAMP '{BASE_TIME}' + to_seconds(({i} * 37) % 31536000) AS created_at,
        {stamp} AS updated_at"""


def _base_stamp(i: str) -> str:
    return f"TIMESTAMP '{BASE_TIME}' + to_seconds(({i} * 37) % 31536000 + ({i} * 101) % 864000)"


def orders_query(n: int, *, duplicates: bool) -> str:
    """n rows; with `duplicates`, the last 10 % repeat earlier keys with a later updated_at (updates)."""
    if not duplicates:
        return f"SELECT {_row_sql('i', 'i', _base_stamp('i'))} FROM range(1, {n + 1}) t(i)"
    unique = n - n // 10
    key = f"CASE WHEN i <= {unique} THEN i ELSE (i * 7) % {unique} + 1 END"
    stamp = f"CASE WHEN i <= {unique} THEN {_base_stamp('i')} ELSE TIMESTAMP '{UPDATE_TIME}' + to_seconds(i % 86400) END"
    return f"SELECT {_row_sql('i', key, stamp, 'CASE WHEN i > ' + str(unique) + ' THEN 1 ELSE 0 END')} FROM range(1, {n + 1}) t(i)"


def delta_query(n: int, k: int) -> str:
    """Delta k of a table of n keys: 0.5 % changed rows (existing keys) and 0.5 % new keys, stamped on day k."""
    half = max(n // 200, 1)
    stamp = f"TIMESTAMP '{DELTA_TIME}' + INTERVAL ({k}) DAY + to_seconds(j)"
    unique = n - n // 10  # keys of the base table and of the duplicates variant alike
    changed = f"SELECT {_row_sql('j', f'(j * 199 + {k} * 7) % {unique} + 1', stamp, str(k))} FROM range(1, {half + 1}) t(j)"
    new_keys = f"{n} * 10 + {k} * {half} + j"  # never a base key, never another delta's key
    added = f"SELECT {_row_sql('j', new_keys, stamp, str(k))} FROM range(1, {half + 1}) t(j)"
    return f"{changed} UNION ALL {added}"


def delta_rows(n: int) -> int:
    """Rows of a delta of a table of n keys (half changed, half new)."""
    return 2 * max(n // 200, 1)


def write_csv(query: str, path: Path) -> Path:
    """Write the query's rows as a CSV with a header; timestamps as 'YYYY-MM-DD HH:MM:SS'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY ({query}) TO '{tmp}' (FORMAT csv, HEADER true, TIMESTAMPFORMAT '%Y-%m-%d %H:%M:%S')"
        )
    finally:
        con.close()
    tmp.replace(path)
    return path


def generate(size: str, out: Path) -> dict[str, Path]:
    """The base files of one size (reused when present): orders.csv and orders_dups.csv."""
    n = SIZES[size]
    folder = out / size
    files = {"orders": folder / "orders.csv", "orders_dups": folder / "orders_dups.csv"}
    for name, path in files.items():
        if not path.exists():
            write_csv(orders_query(n, duplicates=name == "orders_dups"), path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="1m")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--delta", type=int, metavar="K", help="also write delta K (1 %% of the size)")
    args = parser.parse_args()
    for name, path in generate(args.size, args.out).items():
        print(f"{name}: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    if args.delta is not None:
        path = write_csv(
            delta_query(SIZES[args.size], args.delta), args.out / args.size / f"delta_{args.delta}.csv"
        )
        print(f"delta {args.delta}: {path}")


if __name__ == "__main__":
    main()
