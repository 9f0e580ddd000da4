"""Several processes on the same pipeline at once: each table is landed by exactly one of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import pytest
import yaml

from ingestion.demo.billing import write_day
from ingestion.lake.state import StateStore

from .conftest import DEMO_TABLES, REPO, demo_config_doc
from .helpers import assert_lake_is_consistent

pytestmark = pytest.mark.slow


def _events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    ("engine", "processes"),
    [("duckdb", 3), pytest.param("spark", 2, marks=pytest.mark.spark)],
)
def test_concurrent_runs_land_each_table_once(tmp_path: Path, engine: str, processes: int):
    if engine == "spark":
        from ingestion.engines.spark.engine import java_available

        if not java_available():
            pytest.skip("no Java runtime: the Spark engine needs Java 17 or 21")
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    list(write_day(1, inbox))
    list(write_day(2, inbox))
    doc = demo_config_doc(inbox, lake, engine)
    doc["max_parallel_tables"] = 4
    # Each process is a short-lived JVM on tiny tables: fewer tasks and the quick-start C1 compiler (as
    # test_crash.py).
    doc["spark"]["conf"] = {
        "spark.sql.shuffle.partitions": "2",
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    }
    cfg = tmp_path / "ingestion.yml"
    cfg.write_text(yaml.safe_dump(doc))
    env = {k: v for k, v in os.environ.items() if k != "TIDEMARK_LAKE"}
    # Hold each lease a moment so the runs really overlap.
    env["TIDEMARK_FAULTS"] = "lease_acquired=sleep:2"
    cmd = [sys.executable, "-m", "ingestion", "run", "--config", str(cfg)]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]

    landed: dict[str, list[str]] = defaultdict(list)
    statuses: Counter[str] = Counter()
    for code, out, err in results:
        events = _events(err)
        assert events, err[-3000:]
        run_id = events[0]["run_id"]
        mine = {e["table"]: e["event"] for e in events if e["event"].startswith("table ")}
        assert set(mine) == {f"billing.{t}" for t in DEMO_TABLES}, err[-3000:]
        for table, what in mine.items():
            statuses[what] += 1
            assert what in ("table landed", "table locked", "table up_to_date"), err[-3000:]
            if what == "table landed":
                landed[table].append(run_id)
        locked = [t for t, what in mine.items() if what == "table locked"]
        # Locked by the other run and nothing else wrong: the distinct "locked" exit code (3), not 1.
        assert code == (3 if locked else 0), out + err
        for table in locked:
            assert f"{table} locked: {table} is locked by run" in " ".join(err.split())
    assert statuses["table locked"] >= 1, "the runs never overlapped"
    assert {t: len(runs) for t, runs in landed.items()} == {f"billing.{t}": 1 for t in DEMO_TABLES}

    # No state document was corrupted; every file was landed by exactly one run.
    store = StateStore(str(lake), "billing_demo")
    for table in DEMO_TABLES:
        state = store.read("billing", table)
        assert state.lease is None and len(state.committed_runs) == 1
        assert set(state.files) == {f"{table}_2026-01-01.csv", f"{table}_2026-01-02.csv"}
        per_file = duckdb.sql(
            f"select _source_file, count(distinct _run_id) from read_parquet('{lake}/landing/billing/{table}/**/*.parquet') "
            "group by all"
        ).fetchall()
        assert sorted(per_file) == [(f"{table}_2026-01-01.csv", 1), (f"{table}_2026-01-02.csv", 1)]
    assert_lake_is_consistent(lake, "billing_demo", "billing", 2)

    rerun = subprocess.run(
        cmd, cwd=REPO, env={**env, "TIDEMARK_FAULTS": ""}, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert {e["event"] for e in _events(rerun.stderr) if e["event"].startswith("table ")} == {
        "table up_to_date"
    }
