"""Checks shared by the end-to-end suites: dbt on the repository's project, and the demo's truth."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from ingestion.demo.billing import COLUMNS, KEYS, truth
from ingestion.lake.layout import run_id_of
from ingestion.lake.state import StateStore

REPO = Path(__file__).resolve().parent.parent
DBT = Path(sys.executable).parent / "dbt"
# The demo source's column names as they land (customers' headers are cleaned).
LANDED_NAME = {"email": "e_mail"}


class Dbt:
    """dbt on the repository's project with lake, warehouse and output under `work`."""

    def __init__(self, work: Path, lake: Path, warehouse: Path, target: Path | None = None) -> None:
        self.work = work
        (work / "profiles").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "profiles.yml.example", work / "profiles" / "profiles.yml")
        self.target = target or work / "target"
        self.warehouse = warehouse
        self.env = {
            **os.environ,
            "TIDEMARK_LAKE": str(lake),
            "DBT_DUCKDB_PATH": str(warehouse),
            "DBT_TARGET": "local",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        }

    def paths(self) -> list[str]:
        """The options that point dbt at the repository's project and this test's folders."""
        return [
            "--project-dir",
            str(REPO),
            "--profiles-dir",
            str(self.work / "profiles"),
            "--target-path",
            str(self.target),
            "--log-path",
            str(self.work / "logs"),
        ]

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            [str(DBT), *args, *self.paths()],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=self.work,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        return proc.stdout


def curated(warehouse: Path, table: str) -> dict[int, dict]:
    """A CDC table of the warehouse by key."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rel = con.sql(f"select * from main.{table}")
        key = rel.columns.index(KEYS[table])
        return {r[key]: dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()}
    finally:
        con.close()


def as_source_text(value: object) -> str:
    """A curated value as the source's text, at full precision: a decimal reads as the float text the
    demo source writes only when that text is exactly its value (else as its exact digits, which then
    differ from the source's); a timestamp keeps its microseconds when it has any."""
    if isinstance(value, Decimal):
        short = str(float(value))
        return short if Decimal(short) == value else format(value.normalize(), "f")
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return f"{text}.{value.microsecond:06d}" if value.microsecond else text
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else str(value)


def assert_curated_matches_truth(warehouse: Path, day: int) -> None:
    """Every CDC table holds exactly the source's current rows, every column equal."""
    for table, expected in truth(day).items():
        got = curated(warehouse, table)
        assert set(got) == set(expected), table
        for key, row in expected.items():
            for col in COLUMNS[table]:
                want = "" if row.get(col) is None else str(row[col])
                assert as_source_text(got[key][LANDED_NAME.get(col, col)]) == want, (table, key, col)


def assert_lake_is_consistent(lake: Path, pipeline: str, source: str, day: int) -> None:
    """No leases left, no files of uncommitted runs, and the latest landed version of every key is the truth's."""
    store = StateStore(str(lake), pipeline)
    for table, expected in truth(day).items():
        state = store.read(source, table)
        assert state is not None and state.lease is None, f"{table} is still leased"
        files = list((lake / "landing" / source / table).glob("**/*.parquet"))
        orphans = [f.name for f in files if run_id_of(f) not in state.committed_runs]
        assert not orphans, f"{table}: files of uncommitted runs left: {orphans}"
        key = KEYS[table]
        latest = dict(
            duckdb.sql(
                f"select {key}, strftime(max(updated_at), '%Y-%m-%d %H:%M:%S') "
                f"from read_parquet({[str(f) for f in files]}, union_by_name = true) group by all"
            ).fetchall()
        )
        assert latest == {k: str(r["updated_at"]) for k, r in expected.items()}, table


class InProcessDbt(Dbt):
    """dbt through its Python API with one parsed manifest, for loops that run dbt many times on the
    same paths (the crash suite): no interpreter start-up, no re-parse per call."""

    def __init__(self, work: Path, lake: Path, warehouse: Path, target: Path | None = None) -> None:
        super().__init__(work, lake, warehouse, target)
        self.manifest = None
        self.manifest = self._invoke("parse").result

    def _invoke(self, *args: str):  # type: ignore[no-untyped-def]
        from dbt.cli.main import dbtRunner

        keys = ("TIDEMARK_LAKE", "DBT_DUCKDB_PATH", "DBT_TARGET", "DBT_SEND_ANONYMOUS_USAGE_STATS")
        saved = {k: os.environ.get(k) for k in keys}
        os.environ.update({k: self.env[k] for k in keys})
        try:
            res = dbtRunner(manifest=self.manifest).invoke([*args, *self.paths(), "--quiet"])
        finally:
            # dbt-duckdb keeps its database open between invocations; close it so the file can be
            # read, replaced or copied before the next call.
            from dbt.adapters.duckdb.connections import DuckDBConnectionManager

            env = DuckDBConnectionManager._ENV
            DuckDBConnectionManager.close_all_connections()
            if env is not None and hasattr(env, "close"):
                env.close()
            gc.collect()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        assert res.success, f"dbt {' '.join(args)} failed: {res.exception or res.result}"
        return res

    def __call__(self, *args: str) -> str:
        self._invoke(*args)
        return ""


def abandon_lease(store, source: str, table: str, run_id: str) -> None:
    """Leave `run_id`'s lease in the table's state, already lapsed: what a killed run leaves behind."""
    from datetime import datetime, timedelta, timezone

    ttl = timedelta(minutes=5)
    store.acquire(source, table, run_id, datetime.now(timezone.utc) - 2 * ttl, ttl)
