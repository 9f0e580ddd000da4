"""Deterministic demo data: a small billing domain sharing `account_id`, in two daily CSV drops.

Day 1 is an initial extract. Day 2 is a CDC drop: updates and inserts only, one customer updated twice
in the same file, and a new `segment` column on accounts. `truth()` is the source's current state,
the oracle the demo check and the tests compare curated tables with.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

SOURCE = "billing"
TABLES = ("accounts", "customers", "subscriptions", "invoices")
KEYS = {
    "accounts": "account_id",
    "customers": "customer_id",
    "subscriptions": "subscription_id",
    "invoices": "invoice_id",
}
DAYS = {1: date(2026, 1, 1), 2: date(2026, 1, 2)}
# customers arrive with the headers of a hand-made export; tidemark cleans them.
CUSTOMER_HEADERS = {
    "customer_id": "Customer ID",
    "account_id": "Account ID",
    "first_name": "First Name",
    "last_name": "Last Name",
    "email": "E-mail",
    "signup_date": "Signup Date",
    "updated_at": "Updated At",
}
COLUMNS = {
    "accounts": ["account_id", "account_name", "plan_tier", "country", "created_at", "updated_at"],
    "customers": list(CUSTOMER_HEADERS),
    "subscriptions": [
        "subscription_id",
        "account_id",
        "product",
        "status",
        "monthly_amount",
        "started_on",
        "updated_at",
    ],
    "invoices": [
        "invoice_id",
        "account_id",
        "subscription_id",
        "amount",
        "currency",
        "status",
        "issued_on",
        "due_on",
        "updated_at",
    ],
}
NEW_COLUMNS = {2: {"accounts": ["segment"]}}

Row = dict[str, object]


def _ts(rng: random.Random, day: date) -> str:
    t = datetime(day.year, day.month, day.day) + timedelta(seconds=rng.randrange(1, 86_000))
    return t.strftime("%Y-%m-%d %H:%M:%S")


def build() -> dict[int, dict[str, list[Row]]]:
    """Both days' rows per table; the same on every machine and every call."""
    rng = random.Random(20260101)
    d1, d2 = DAYS[1], DAYS[2]
    names = [
        "Acme",
        "Globex",
        "Initech",
        "Umbrella",
        "Stark",
        "Wayne",
        "Hooli",
        "Vandelay",
        "Soylent",
        "Tyrell",
    ]
    first = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Linus"]
    last = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton"]
    day1: dict[str, list[Row]] = {t: [] for t in TABLES}
    day2: dict[str, list[Row]] = {t: [] for t in TABLES}

    def account(i: int, day: date) -> Row:
        suffix = rng.choice([", Inc.", " GmbH", " Ltd", " & Sons", ""])
        return {
            "account_id": i,
            "account_name": f"{rng.choice(names)} {i}{suffix}",
            "plan_tier": rng.choice(["free", "team", "business", "enterprise"]),
            "country": rng.choice(["US", "DE", "FR", "GB", "JP", "BR"]),
            "created_at": _ts(rng, day - timedelta(days=rng.randrange(1, 900))),
            "updated_at": _ts(rng, day),
        }

    def customer(i: int, account_id: int, day: date) -> Row:
        fn, ln = rng.choice(first), rng.choice(last)
        return {
            "customer_id": i,
            "account_id": account_id,
            "first_name": fn,
            "last_name": ln,
            "email": "" if rng.random() < 0.05 else f"{fn}.{ln}{i}@example.com".lower(),
            "signup_date": (day - timedelta(days=rng.randrange(0, 700))).isoformat(),
            "updated_at": _ts(rng, day),
        }

    def subscription(i: int, account_id: int, day: date) -> Row:
        return {
            "subscription_id": i,
            "account_id": account_id,
            "product": rng.choice(["core", "analytics", "support", "storage"]),
            "status": "active",
            "monthly_amount": round(rng.uniform(9, 2500), 2),
            "started_on": (day - timedelta(days=rng.randrange(0, 600))).isoformat(),
            "updated_at": _ts(rng, day),
        }

    def invoice(i: int, sub: Row, day: date) -> Row:
        issued = day - timedelta(days=rng.randrange(0, 90))
        return {
            "invoice_id": i,
            "account_id": sub["account_id"],
            "subscription_id": sub["subscription_id"],
            "amount": sub["monthly_amount"],
            "currency": rng.choice(["USD", "EUR", "GBP"]),
            "status": rng.choice(["open", "open", "paid", "paid", "paid", "void"]),
            "issued_on": issued.isoformat(),
            "due_on": (issued + timedelta(days=30)).isoformat(),
            "updated_at": _ts(rng, day),
        }

    day1["accounts"] = [account(i, d1) for i in range(1, 301)]
    day1["customers"] = [customer(i, rng.randrange(1, 301), d1) for i in range(1, 901)]
    day1["subscriptions"] = [subscription(i, rng.randrange(1, 301), d1) for i in range(1, 601)]
    day1["invoices"] = [invoice(i, rng.choice(day1["subscriptions"]), d1) for i in range(1, 2401)]

    # Day 2: a CDC drop. Changed rows carry a later updated_at; accounts gain a `segment` column.
    segments = ["smb", "mid-market", "enterprise"]
    for a in rng.sample(day1["accounts"], 30):
        day2["accounts"].append(
            {**a, "plan_tier": "enterprise", "segment": rng.choice(segments), "updated_at": _ts(rng, d2)}
        )
    for i in range(301, 321):
        day2["accounts"].append({**account(i, d2), "segment": rng.choice(segments)})
    for c in rng.sample(day1["customers"], 60):
        day2["customers"].append(
            {**c, "email": f"new.{c['customer_id']}@example.com", "updated_at": _ts(rng, d2)}
        )
    twice = day2["customers"][0]
    # The same key twice in one drop: the later updated_at must win.
    day2["customers"].append(
        {
            **twice,
            "last_name": "Twice-Updated",
            "updated_at": (datetime.fromisoformat(str(twice["updated_at"])) + timedelta(minutes=5)).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
        }
    )
    day2["customers"] += [customer(i, rng.randrange(1, 321), d2) for i in range(901, 941)]
    for s in rng.sample(day1["subscriptions"], 25):
        day2["subscriptions"].append({**s, "status": "cancelled", "updated_at": _ts(rng, d2)})
    day2["subscriptions"] += [subscription(i, rng.randrange(1, 321), d2) for i in range(601, 631)]
    for inv in rng.sample([i for i in day1["invoices"] if i["status"] == "open"], 150):
        day2["invoices"].append({**inv, "status": "paid", "updated_at": _ts(rng, d2)})
    day2["invoices"] += [invoice(i, rng.choice(day1["subscriptions"]), d2) for i in range(2401, 2601)]
    return {1: day1, 2: day2}


def truth(through_day: int = 2) -> dict[str, dict[int, Row]]:
    """The source's current state after `through_day`: per table, key → latest row (by updated_at)."""
    days = build()
    state: dict[str, dict[int, Row]] = {t: {} for t in TABLES}
    for day in range(1, through_day + 1):
        for table, rows in days[day].items():
            key = KEYS[table]
            for row in rows:
                k = int(row[key])  # type: ignore[call-overload]
                old = state[table].get(k)
                if old is None or str(row["updated_at"]) >= str(old["updated_at"]):
                    state[table][k] = row
    return state


def render(day: int, table: str) -> str:
    """The CSV text of one table's drop for `day`."""
    cols = COLUMNS[table] + NEW_COLUMNS.get(day, {}).get(table, [])
    header = [CUSTOMER_HEADERS.get(c, c) if table == "customers" else c for c in cols]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in build()[day][table]:
        w.writerow([row.get(c, "") for c in cols])
    return buf.getvalue()


def file_name(day: int, table: str) -> str:
    return f"{table}_{DAYS[day].isoformat()}.csv"


def write_day(day: int, inbox: Path) -> Iterator[tuple[Path, str]]:
    """Write day `day`'s files under `<inbox>/billing/`; files already holding the same bytes are kept."""
    folder = inbox / SOURCE
    folder.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        path = folder / file_name(day, table)
        text = render(day, table)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            yield path, "unchanged"
            continue
        path.write_text(text, encoding="utf-8")
        yield path, "written"


@dataclass(frozen=True)
class CheckRow:
    table: str
    landed: int
    curated: int
    expected: int

    @property
    def ok(self) -> bool:
        return self.curated == self.expected


def check_warehouse(warehouse: Path, lake_root: str, schema: str = "main") -> list[CheckRow]:
    """Row counts of the landed and curated demo tables against the source's distinct keys."""
    import duckdb

    expected = truth(2)
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = []
        for table in TABLES:
            glob = f"{lake_root}/landing/{SOURCE}/{table}/**/*.parquet"
            landed = con.execute(
                "SELECT count(*) FROM read_parquet(?, union_by_name = true)", [glob]
            ).fetchone()
            curated = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
            rows.append(CheckRow(table, int(landed[0]), int(curated[0]), len(expected[table])))  # type: ignore[index]
        return rows
    finally:
        con.close()
