"""tidemark's benchmark harness: `make bench` (or `python bench/run.py --help`).

Every measurement is a whole process (start-up, imports, JVM included), repeated `--reps` times;
RESULTS.md gets the median, min–max and the peak memory of the process tree (the JVM included).
After the timed repetitions each tidemark command runs once more under bench/sampler.py: that profile
is where the "where the time goes" paragraphs come from.

Scenarios (the default size is 1M rows; --size 5m / 10m for the bigger ones):
  1  full CSV load of the orders table with 10 % repeated keys: tidemark (DuckDB, Spark) vs DuckDB COPY,
     DuckDB dedup, raw Spark CSV→Parquet, Spark dedup, dlt CSV→Parquet and dlt merge into DuckDB
  2  incremental CSV run after a 1 % delta (new and changed rows) vs the full run, per engine
  3  JDBC full extract of a PostgreSQL table: tidemark (DuckDB via connectorx, Spark JDBC) vs dlt sql_table
  4  JDBC incremental pull of a 1 % delta, both tools
  5  dbt CDC merge of a 1 % delta into the curated DuckDB table vs dbt --full-refresh
  6  the Spark engine on local-cluster executors vs raw Spark dedup
  7  larger than memory: tidemark (DuckDB) lands the size's CSV under a memory_limit of 40 % of the
     file (≥ 2× smaller), beside the same process on a header-only file (its fixed overhead)
  8  a wide file: 500 columns × 20 rows, tidemark (DuckDB), whole process and the table's engine time
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

import gen  # noqa: E402
import report  # noqa: E402

PY = sys.executable
DBT = str(Path(PY).parent / "dbt")
PG_DB = "tidemark_bench"
# Bytecode is written (to the ignored __pycache__ folders; `main` compiles tidemark first): an installed
# tool runs from compiled modules, not from source compiled again in every timed process.
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "RUNTIME__DLTHUB_TELEMETRY": "false",
}


@dataclass
class Runs:
    """The timed repetitions of one tool in one scenario."""

    seconds: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    rows: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class Results:
    size: str
    rows: int
    reps: int
    started: str
    commit: str
    machine: dict[str, str]
    scenarios: dict[str, dict[str, Runs]] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds_total: float = 0.0
    # tidemark settings of the CSV runs (the before/after table says when they differ from the baseline's)
    settings: dict[str, Any] = field(default_factory=lambda: {"csv multiline": False})
    notes: dict[str, list[str]] = field(default_factory=dict)  # per scenario, lines under its table

    def add(self, scenario: str, tool: str, secs: float, peak: float, rows: int | None) -> None:
        runs = self.scenarios.setdefault(scenario, {}).setdefault(tool, Runs())
        runs.seconds.append(secs)
        runs.peak_mb.append(peak)
        runs.rows = rows if rows is not None else runs.rows

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------- measuring


def _tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants (the JVM pyspark starts, say), in MB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo, page = 0, [root], os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
        todo.extend(children.get(pid, ()))
    return total / 1e6


class Failed(RuntimeError):
    pass


def measure(
    cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, float, str]:
    """Run one whole process: (wall seconds, peak tree RSS in MB, its stdout). A failure raises Failed."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    peak = [0.0]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, errs = proc.communicate()
    secs = time.perf_counter() - start
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-2000:]}\n{errs[-3000:]}")
    return secs, peak[0], out


def rows_of(out: str) -> int | None:
    for line in reversed(out.splitlines()):
        if line.startswith("rows="):
            return int(line[5:])
    return None


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ fixtures


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def tidemark_csv_config(
    work: Path,
    engine: str,
    inbox: Path,
    lake: Path,
    master: str = "local[2]",
    *,
    duckdb: str = "",
    name: str = "",
    table: str = "orders",
    keys: str = "order_id",
) -> Path:
    cfg = work / f"csv-{name or engine}.yml"
    cfg.write_text(
        f"pipeline: bench\nengine: {engine}\nlake: {{root: '{lake}'}}\n"
        + (f"duckdb: {duckdb}\n" if duckdb else "")
        + f"spark:\n  master: '{master}'\n  conf: {{spark.driver.memory: 4g, spark.ui.enabled: 'false'}}\n"
        f"sources:\n  - name: bench\n    kind: csv\n    path: '{inbox}'\n    archive: {{enabled: false}}\n"
        f"    tables:\n      - name: {table}\n        pattern: '{table}_*.csv'\n        primary_key: [{keys}]\n"
        + ("        cursor: updated_at\n        cursor_timezone: UTC\n" if table == "orders" else "")
        +
        # no line breaks inside fields: Spark may split the file across tasks (the docs' advice for big files)
        "        csv: {multiline: false}\n",
        encoding="utf-8",
    )
    return cfg


def tidemark_pg_config(work: Path, engine: str, lake: Path, pg: dict[str, str]) -> Path:
    cfg = work / f"pg-{engine}.yml"
    cfg.write_text(
        f"pipeline: bench_pg\nengine: {engine}\nlake: {{root: '{lake}'}}\n"
        "spark:\n  master: local[2]\n  conf: {spark.driver.memory: 4g, spark.ui.enabled: 'false'}\n"
        f"sources:\n  - name: pg\n    kind: jdbc\n    url: 'jdbc:postgresql://{pg['host']}:{pg['port']}/{PG_DB}'\n"
        f"    user: {pg['user']}\n    schema: public\n    cursor: updated_at\n    cursor_timezone: UTC\n"
        "    num_partitions: 4\n    tables:\n      - name: orders\n",
        encoding="utf-8",
    )
    return cfg


def tidemark(cfg: Path, engine: str) -> list[str]:
    return [PY, "-m", "ingestion", "run", "--config", str(cfg), "--engine", engine]


def landed_rows(lake: Path, source: str, table: str = "orders") -> int:
    """Rows in the lake's landing Parquet of `source`.`table` (all runs)."""
    import duckdb

    files = list((lake / "landing" / source / table).rglob("*.parquet"))
    if not files:
        return 0
    con = duckdb.connect()
    try:
        listed = ", ".join(f"'{p}'" for p in files)
        return int(con.execute(f"SELECT count(*) FROM read_parquet([{listed}])").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def profile(
    name: str, cmd: list[str], focus: list[str], res: Results, work: Path, *, cwd: Path | None = None
) -> None:
    """One more run of `cmd` (`python -m X …` or `python script …`) under the sampler; kept in res.profiles."""
    out = work / f"profile-{name}.json"
    flags = [a for f in focus for a in ("--focus", f)]
    if cmd[1] == "-m":
        wrapped = [PY, str(BENCH / "sampler.py"), str(out), *flags, "-m", cmd[2], *cmd[3:]]
    else:
        wrapped = [PY, str(BENCH / "sampler.py"), str(out), *flags, "--script", cmd[1], *cmd[2:]]
    secs, _, _ = measure(wrapped, cwd=cwd)
    data = json.loads(out.read_text())
    data["process_s"] = secs
    res.profiles[name] = data


# ---------------------------------------------------------------------------------------- scenarios


def csv_scenarios(res: Results, files: dict[str, Path], work: Path, args: argparse.Namespace) -> None:
    """Scenarios 1 and 2: full CSV load (every tool), then a 1 % delta (tidemark, per engine)."""
    dups = files["orders_dups"]
    delta = gen.write_csv(gen.delta_query(res.rows, 1), work / "delta_1.csv")
    expect = int(res.rows * 0.9)
    tools: list[tuple[str, list[str]]] = [
        ("DuckDB COPY (CSV→Parquet)", ["duckdb-copy"]),
        ("DuckDB dedup (CSV→Parquet, latest per key)", ["duckdb-dedup"]),
    ]
    if "dlt" not in res.skipped:
        tools += [("dlt CSV→Parquet (pyarrow)", ["dlt-csv"]), ("dlt merge into DuckDB", ["dlt-merge"])]
    if "spark" in args.engines and "spark" not in res.skipped:
        tools += [("Spark CSV→Parquet (raw)", ["spark-copy"]), ("Spark dedup (raw)", ["spark-dedup"])]
    engines = [e for e in args.engines if e not in res.skipped]
    for rep in range(1, args.reps + 1):
        for label, task in tools:
            out = fresh(work / "out") / ("db.duckdb" if task[0] == "dlt-merge" else "data")
            say(f"scenario 1 rep {rep}: {label}")
            secs, peak, stdout = measure([PY, str(BENCH / "tasks.py"), *task, str(dups), str(out)])
            rows = rows_of(stdout)
            if task[0] not in ("duckdb-copy", "spark-copy", "dlt-csv") and rows != expect:
                raise Failed(f"{label} kept {rows} rows, expected {expect}")
            res.add("1", label, secs, peak, rows)
        for engine in engines:
            inbox, lake = fresh(work / f"inbox-{engine}"), fresh(work / f"lake-{engine}")
            os.link(dups, inbox / "orders_0000.csv")
            cfg = tidemark_csv_config(work, engine, inbox, lake)
            say(f"scenario 1 rep {rep}: tidemark {engine} full")
            secs, peak, _ = measure(tidemark(cfg, engine))
            rows = landed_rows(lake, "bench")
            if rows != expect:
                raise Failed(f"tidemark {engine} landed {rows} rows, expected {expect}")
            res.add("1", f"tidemark ({engine})", secs, peak, rows)
            if "2" in args.scenarios:
                shutil.copyfile(delta, inbox / "orders_0001.csv")
                say(f"scenario 2 rep {rep}: tidemark {engine} incremental (1 % delta)")
                secs, peak, _ = measure(tidemark(cfg, engine))
                added = landed_rows(lake, "bench") - rows
                if added != gen.delta_rows(res.rows):
                    raise Failed(
                        f"tidemark {engine} landed {added} delta rows, expected {gen.delta_rows(res.rows)}"
                    )
                res.add("2", f"tidemark ({engine}) full", *res_last(res, "1", f"tidemark ({engine})"), rows)
                res.add("2", f"tidemark ({engine}) incremental 1 %", secs, peak, added)
    if args.profile:
        for engine in engines:
            inbox, lake = fresh(work / f"inbox-{engine}"), fresh(work / f"lake-{engine}")
            os.link(dups, inbox / "orders_0000.csv")
            cfg = tidemark_csv_config(work, engine, inbox, lake)
            say(f"profile: tidemark {engine} CSV full and incremental")
            profile(f"1-tidemark-{engine}", tidemark(cfg, engine), ["/ingestion/"], res, work)
            shutil.copyfile(delta, inbox / "orders_0001.csv")
            profile(f"2-tidemark-{engine}", tidemark(cfg, engine), ["/ingestion/"], res, work)
        if "dlt" not in res.skipped:
            out = fresh(work / "out") / "data"
            say("profile: dlt CSV→Parquet")
            profile(
                "1-dlt",
                [PY, str(BENCH / "tasks.py"), "dlt-csv", str(dups), str(out)],
                ["bench/tasks.py", "dlt/pipeline/pipeline.py"],
                res,
                work,
            )


CLUSTER = "local-cluster[2,1,1024]"


def cluster_scenario(res: Results, files: dict[str, Path], work: Path, args: argparse.Namespace) -> None:
    """Scenario 6: the full CSV load on a Spark cluster of two executor JVMs (1 core, 1 GB each): raw
    Spark dedup and the tidemark Spark engine, which stages on the lake's filesystem and publishes."""
    if "spark" in res.skipped:
        return
    dups = files["orders_dups"]
    expect = int(res.rows * 0.9)
    for rep in range(1, args.reps + 1):
        out = fresh(work / "out") / "data"
        say(f"scenario 6 rep {rep}: raw Spark dedup on {CLUSTER}")
        secs, peak, stdout = measure(
            [PY, str(BENCH / "tasks.py"), "spark-dedup", str(dups), str(out)],
            env={"BENCH_SPARK_MASTER": CLUSTER},
        )
        if rows_of(stdout) != expect:
            raise Failed(f"raw Spark on {CLUSTER} kept {rows_of(stdout)} rows, expected {expect}")
        res.add("6", "Spark dedup (raw)", secs, peak, expect)
        inbox, lake = fresh(work / "inbox-cluster"), fresh(work / "lake-cluster")
        os.link(dups, inbox / "orders_0000.csv")
        cfg = tidemark_csv_config(work, "spark", inbox, lake, master=CLUSTER)
        say(f"scenario 6 rep {rep}: tidemark spark on {CLUSTER}")
        secs, peak, _ = measure(tidemark(cfg, "spark"))
        rows = landed_rows(lake, "bench")
        if rows != expect:
            raise Failed(f"tidemark spark on {CLUSTER} landed {rows} rows, expected {expect}")
        res.add("6", "tidemark (spark)", secs, peak, rows)


def res_last(res: Results, scenario: str, tool: str) -> tuple[float, float]:
    runs = res.scenarios[scenario][tool]
    return runs.seconds[-1], runs.peak_mb[-1]


def pg_settings() -> dict[str, str]:
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", "postgres"),
    }


def pg_connect(pg: dict[str, str], db: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(
        host=pg["host"], port=int(pg["port"]), user=pg["user"], dbname=db, autocommit=True, connect_timeout=5
    )


PG_TABLE = """
CREATE TABLE orders (
    order_id bigint PRIMARY KEY, customer_id bigint, status text, channel text, country text,
    currency text, sku text, quantity integer, unit_price numeric(12,2), discount numeric(4,2),
    amount numeric(14,2), is_gift boolean, note text, created_at timestamp, updated_at timestamp
)"""


def pg_load(pg: dict[str, str], csv: Path) -> None:
    """(Re)create the bench database with the orders table from `csv`; index the cursor as a source would."""
    with pg_connect(pg, "postgres") as con:
        con.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        con.execute(f"CREATE DATABASE {PG_DB}")
    with pg_connect(pg, PG_DB) as con:
        con.execute(PG_TABLE)
        with (
            con.cursor().copy("COPY orders FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
            open(csv, "rb") as fh,
        ):
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
        con.execute("CREATE INDEX orders_updated_at ON orders (updated_at)")
        con.execute("VACUUM ANALYZE orders")


def pg_apply_delta(pg: dict[str, str], csv: Path) -> int:
    """Upsert a delta file: its changed rows update existing keys, its new rows insert."""
    cols = [c for c in gen.COLUMNS]
    sets = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "order_id")
    with pg_connect(pg, PG_DB) as con:
        con.execute("CREATE TEMP TABLE delta (LIKE orders)")
        with con.cursor().copy("COPY delta FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            copy.write(csv.read_bytes())
        cur = con.execute(
            f"INSERT INTO orders SELECT * FROM delta ON CONFLICT (order_id) DO UPDATE SET {sets}"
        )
        return cur.rowcount


def jdbc_scenarios(res: Results, files: dict[str, Path], work: Path, args: argparse.Namespace) -> None:
    """Scenarios 3 and 4: full extract of a PostgreSQL table, then a 1 % delta pulled incrementally."""
    pg = pg_settings()
    try:
        pg_connect(pg, "postgres").close()
    except Exception as exc:
        res.skipped["pg"] = (
            f"PostgreSQL at {pg['host']}:{pg['port']} did not answer ({exc.__class__.__name__})"
        )
        say(f"scenarios 3 and 4 skipped: {res.skipped['pg']}")
        return
    say(f"loading {res.rows} rows into PostgreSQL database {PG_DB}")
    pg_load(pg, files["orders"])
    url = f"postgresql://{pg['user']}@{pg['host']}:{pg['port']}/{PG_DB}"
    engines = [e for e in args.engines if e not in res.skipped]
    if "spark" in engines and not Path("/usr/share/java/postgresql.jar").exists():
        res.skipped["spark-jdbc"] = (
            "the PostgreSQL JDBC jar (/usr/share/java/postgresql.jar) is missing: make jdbc-driver"
        )
        engines.remove("spark")
    delta_k = 100  # delta files of the JDBC scenarios: 101, 102, … (stamped after the CSV ones)
    for rep in range(1, args.reps + 1):
        table_rows = _pg_count(pg)
        lakes = {}
        for engine in engines:
            lake = lakes[engine] = fresh(work / f"pg-lake-{engine}")
            cfg = tidemark_pg_config(work, engine, lake, pg)
            say(f"scenario 3 rep {rep}: tidemark {engine} JDBC full")
            secs, peak, _ = measure(tidemark(cfg, engine))
            rows = landed_rows(lake, "pg")
            if rows != table_rows:
                raise Failed(f"tidemark {engine} landed {rows} of {table_rows} rows")
            res.add("3", f"tidemark ({engine})", secs, peak, rows)
        if "dlt" not in res.skipped:
            state, out = fresh(work / "dlt-sql-state"), fresh(work / "dlt-sql-out")
            say(f"scenario 3 rep {rep}: dlt sql_table (connectorx)")
            secs, peak, stdout = measure([PY, str(BENCH / "tasks.py"), "dlt-sql", url, str(out), str(state)])
            if rows_of(stdout) != table_rows:
                raise Failed(f"dlt sql_table extracted {rows_of(stdout)} of {table_rows} rows")
            res.add("3", "dlt sql_table (connectorx)", secs, peak, rows_of(stdout))
        if "4" not in args.scenarios:
            continue
        delta_k += 1
        delta = gen.write_csv(gen.delta_query(res.rows, delta_k), work / f"delta_{delta_k}.csv")
        # the watermark is inclusive (rows stamped at it are read again, so none with an equal stamp are
        # lost): an incremental pull reads the delta plus the rows at the previous maximum
        inclusive = _pg_count(pg, "updated_at >= (SELECT max(updated_at) FROM orders)")
        changed = pg_apply_delta(pg, delta)
        inclusive += changed
        for engine in engines:
            cfg = tidemark_pg_config(work, engine, lakes[engine], pg)
            before = landed_rows(lakes[engine], "pg")
            say(f"scenario 4 rep {rep}: tidemark {engine} JDBC incremental (1 % delta)")
            secs, peak, _ = measure(tidemark(cfg, engine))
            added = landed_rows(lakes[engine], "pg") - before
            if added != inclusive:
                raise Failed(f"tidemark {engine} pulled {added} delta rows, expected {inclusive}")
            res.add("4", f"tidemark ({engine}) full", *res_last(res, "3", f"tidemark ({engine})"), before)
            res.add("4", f"tidemark ({engine}) incremental 1 %", secs, peak, added)
        if "dlt" not in res.skipped:
            say(f"scenario 4 rep {rep}: dlt sql_table incremental")
            secs, peak, stdout = measure([PY, str(BENCH / "tasks.py"), "dlt-sql", url, str(out), str(state)])
            if rows_of(stdout) not in (changed, inclusive):
                raise Failed(f"dlt pulled {rows_of(stdout)} delta rows, expected {changed}")
            label = "dlt sql_table (connectorx)"
            res.add("4", f"{label} full", *res_last(res, "3", label), table_rows)
            res.add("4", f"{label} incremental 1 %", secs, peak, rows_of(stdout))
    if args.profile:
        for engine in engines:
            lake = fresh(work / f"pg-lake-{engine}")
            cfg = tidemark_pg_config(work, engine, lake, pg)
            say(f"profile: tidemark {engine} JDBC full and incremental")
            profile(f"3-tidemark-{engine}", tidemark(cfg, engine), ["/ingestion/"], res, work)
            delta_k += 1
            pg_apply_delta(
                pg, gen.write_csv(gen.delta_query(res.rows, delta_k), work / f"delta_{delta_k}.csv")
            )
            profile(f"4-tidemark-{engine}", tidemark(cfg, engine), ["/ingestion/"], res, work)
        if "dlt" not in res.skipped:
            state, out = fresh(work / "dlt-sql-state"), fresh(work / "dlt-sql-out")
            say("profile: dlt sql_table")
            profile(
                "3-dlt",
                [PY, str(BENCH / "tasks.py"), "dlt-sql", url, str(out), str(state)],
                ["bench/tasks.py", "dlt/pipeline/pipeline.py"],
                res,
                work,
            )


def _pg_count(pg: dict[str, str], where: str = "TRUE") -> int:
    with pg_connect(pg, PG_DB) as con:
        return int(con.execute(f"SELECT count(*) FROM orders WHERE {where}").fetchone()[0])  # type: ignore[index]


def write_dbt_project(project: Path, lake: Path) -> None:
    """A throwaway dbt project: the repository's macros, one staging view and the CDC model of orders."""
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(REPO / "macros", project / "macros")
    (project / "models" / "staging").mkdir(parents=True)
    (project / "models" / "cdc").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        # named tidemark: the CDC macros call their siblings as tidemark.<macro>. Lookback 0: the bench
        # lands everything within minutes, and the default 3 h lookback would re-read the whole table.
        "name: tidemark\nversion: '1.0'\nconfig-version: 2\nprofile: tidemark_bench\n"
        "model-paths: [models]\nmacro-paths: [macros]\nvars: {cdc_lookback_hours: 0}\n"
        "models:\n  tidemark:\n    staging: {+materialized: view}\n"
        "    cdc: {+materialized: incremental, +incremental_strategy: cdc, +on_schema_change: append_new_columns}\n",
        encoding="utf-8",
    )
    (project / "profiles.yml").write_text(
        "tidemark_bench:\n  target: local\n  outputs:\n    local:\n      type: duckdb\n"
        f"      path: '{project / 'warehouse.duckdb'}'\n      schema: main\n      threads: 2\n",
        encoding="utf-8",
    )
    (project / "models" / "staging" / "_sources.yml").write_text(
        "version: 2\nsources:\n  - name: bench\n    meta:\n      external_location: "
        f"\"read_parquet('{lake}/landing/bench/{{name}}/**/*.parquet', hive_partitioning = true, "
        'union_by_name = true)"\n    tables:\n      - name: orders\n',
        encoding="utf-8",
    )
    (project / "models" / "staging" / "stg_bench__orders.sql").write_text(
        "select * from {{ source('bench', 'orders') }}\n", encoding="utf-8"
    )
    (project / "models" / "cdc" / "orders.sql").write_text(
        "{{ config(unique_key=['order_id']) }}\n\n{{ cdc_current_state(ref('stg_bench__orders'), cursor='updated_at') }}\n",
        encoding="utf-8",
    )


def dbt_cmd(project: Path, *extra: str) -> list[str]:
    return [DBT, "run", "--project-dir", str(project), "--profiles-dir", str(project), *extra]


def curated_rows(project: Path) -> int:
    import duckdb

    con = duckdb.connect(str(project / "warehouse.duckdb"), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM main.orders").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def dbt_timing(project: Path) -> dict[str, float]:
    """Seconds per node from dbt's run_results.json (execute phase), plus dbt's own elapsed time."""
    data = json.loads((project / "target" / "run_results.json").read_text())
    out = {"dbt elapsed (parse, connect, all nodes)": float(data.get("elapsed_time", 0.0))}
    for r in data["results"]:
        for t in r.get("timing", []):
            if t["name"] in ("compile", "execute") and t.get("started_at") and t.get("completed_at"):
                a = datetime.fromisoformat(t["started_at"].replace("Z", "+00:00"))
                b = datetime.fromisoformat(t["completed_at"].replace("Z", "+00:00"))
                out[f"{r['unique_id'].split('.')[-1]} {t['name']}"] = (b - a).total_seconds()
    return out


def dbt_scenario(res: Results, files: dict[str, Path], work: Path, args: argparse.Namespace) -> None:
    """Scenario 5: land the table (tidemark DuckDB), build the CDC model, then per rep: land a 1 % delta,
    time the incremental merge, time a --full-refresh."""
    inbox, lake = fresh(work / "dbt-inbox"), fresh(work / "dbt-lake")
    os.link(files["orders_dups"], inbox / "orders_0000.csv")
    cfg = tidemark_csv_config(work, "duckdb", inbox, lake)
    project = work / "dbt"
    write_dbt_project(project, lake)
    say("scenario 5: landing the table and building the curated model")
    measure(tidemark(cfg, "duckdb"))
    measure(dbt_cmd(project), cwd=project)
    expect = curated_rows(project)
    # A warm-up delta, merged untimed: the first merge after the full load re-reads that whole load (the
    # model reads from its newest landing time, inclusive: a landing it saw only in part is completed by
    # the next run), so the timed merges are the steady state, each re-reading one earlier 1 % delta.
    shutil.copyfile(
        gen.write_csv(gen.delta_query(res.rows, 200), work / "delta_200.csv"), inbox / "orders_0200.csv"
    )
    measure(tidemark(cfg, "duckdb"))
    say("scenario 5: merging a warm-up delta (untimed)")
    measure(dbt_cmd(project), cwd=project)
    expect += gen.delta_rows(res.rows) // 2
    if curated_rows(project) != expect:
        raise Failed(f"the CDC model holds {curated_rows(project)} rows after the warm-up, expected {expect}")
    for rep in range(1, args.reps + 1):
        k = 200 + rep
        shutil.copyfile(
            gen.write_csv(gen.delta_query(res.rows, k), work / f"delta_{k}.csv"),
            inbox / f"orders_{k:04d}.csv",
        )
        measure(tidemark(cfg, "duckdb"))
        expect += gen.delta_rows(res.rows) // 2  # half the delta is new keys
        say(f"scenario 5 rep {rep}: dbt incremental merge of the 1 % delta")
        secs, peak, _ = measure(dbt_cmd(project), cwd=project)
        if curated_rows(project) != expect:
            raise Failed(
                f"the CDC model holds {curated_rows(project)} rows after the merge, expected {expect}"
            )
        res.add("5", "dbt CDC merge of a 1 % delta", secs, peak, expect)
        res.profiles["5-merge"] = {"dbt": {"whole process": secs, **dbt_timing(project)}}
        say(f"scenario 5 rep {rep}: dbt --full-refresh")
        secs, peak, _ = measure(dbt_cmd(project, "--full-refresh"), cwd=project)
        if curated_rows(project) != expect:
            raise Failed(
                f"the CDC model holds {curated_rows(project)} rows after the full refresh, expected {expect}"
            )
        res.add("5", "dbt --full-refresh", secs, peak, expect)
        res.profiles["5-full"] = {"dbt": {"whole process": secs, **dbt_timing(project)}}


def table_seconds(lake: Path) -> float:
    """The landed table's own seconds from the run's log (`table landed`): the engine's work, without the
    process start-up, imports and commit."""
    for log in sorted(lake.glob("_logs/*/*.jsonl")):
        for line in log.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event.get("event") == "table landed":
                return float(event["seconds"])
    raise Failed(f"no 'table landed' event in the logs under {lake}")


def spill_scenario(res: Results, files: dict[str, Path], work: Path, args: argparse.Namespace) -> None:
    """Scenario 7: the size's CSV under a DuckDB memory_limit of 40 % of the file, and the same process on a
    header-only file (the fixed overhead: interpreter, imports, DuckDB itself)."""
    dups = files["orders_dups"]
    limit_mb = max(48, int(dups.stat().st_size / 1e6 * 0.4))
    spill = work / "spill"
    settings = f"{{memory_limit: {limit_mb}MB, temp_directory: '{spill}'}}"
    res.settings["larger than memory"] = {
        "memory_limit MB": limit_mb,
        "CSV MB": round(dups.stat().st_size / 1e6),
    }
    expect = int(res.rows * 0.9)
    for rep in range(1, args.reps + 1):
        inbox, lake = fresh(work / "inbox-empty"), fresh(work / "lake-empty")
        (inbox / "orders_0000.csv").write_text(dups.open(encoding="utf-8").readline(), encoding="utf-8")
        cfg = tidemark_csv_config(work, "duckdb", inbox, lake, duckdb=settings, name="empty")
        say(f"scenario 7 rep {rep}: tidemark duckdb on a header-only file (fixed overhead)")
        secs, peak, _ = measure(tidemark(cfg, "duckdb"))
        res.add("7", "tidemark (duckdb) header-only file", secs, peak, 0)
        inbox, lake = fresh(work / "inbox-spill"), fresh(work / "lake-spill")
        os.link(dups, inbox / "orders_0000.csv")
        cfg = tidemark_csv_config(work, "duckdb", inbox, lake, duckdb=settings, name="spill")
        say(
            f"scenario 7 rep {rep}: tidemark duckdb, {dups.stat().st_size / 1e6:.0f} MB CSV under {limit_mb}MB"
        )
        secs, peak, _ = measure(tidemark(cfg, "duckdb"))
        rows = landed_rows(lake, "bench")
        if rows != expect:
            raise Failed(f"tidemark duckdb under {limit_mb}MB landed {rows} rows, expected {expect}")
        if spill.exists() and any(p.is_file() for p in spill.rglob("*")):
            raise Failed(f"spill files left under {spill}")
        res.add("7", f"tidemark (duckdb) memory_limit {limit_mb}MB", secs, peak, rows)
    overhead = max(res.scenarios["7"]["tidemark (duckdb) header-only file"].peak_mb)
    peak = max(res.scenarios["7"][f"tidemark (duckdb) memory_limit {limit_mb}MB"].peak_mb)
    res.notes["7"] = [
        f"The CSV is {dups.stat().st_size / 1e6:.0f} MB, {dups.stat().st_size / 1e6 / limit_mb:.1f}× the "
        f"memory_limit of {limit_mb} MB. Peak {peak:.0f} MB = the limit + {peak - limit_mb:.0f} MB; the same "
        f"process on a header-only file peaks at {overhead:.0f} MB (interpreter, imports, pyarrow, DuckDB): "
        f"peak − limit − that overhead = {peak - limit_mb - overhead:.0f} MB."
    ]


WIDE_COLUMNS, WIDE_ROWS = 500, 20


def write_wide_csv(path: Path) -> Path:
    """500 columns × 20 rows, five kinds of values in turn (integers, decimals, dates, text, booleans)."""
    kinds = [
        lambda r, c: str(r * 1000 + c),
        lambda r, c: f"{r}.{c % 100:02d}",
        lambda r, c: f"2026-01-{r + 1:02d}",
        lambda r, c: f"text {r} {c}",
        lambda r, c: "true" if (r + c) % 2 else "false",
    ]
    lines = [",".join(["id"] + [f"c{c}" for c in range(1, WIDE_COLUMNS)])]
    for r in range(WIDE_ROWS):
        lines.append(",".join([str(r)] + [kinds[c % 5](r, c) for c in range(1, WIDE_COLUMNS)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wide_scenario(res: Results, files: dict[str, Path], work: Path, args: argparse.Namespace) -> None:
    """Scenario 8: a 500-column file of 20 rows (tidemark DuckDB): whole process and the table's seconds."""
    engine_secs = []
    for rep in range(1, args.reps + 1):
        inbox, lake = fresh(work / "inbox-wide"), fresh(work / "lake-wide")
        write_wide_csv(inbox / "wide_0000.csv")
        cfg = tidemark_csv_config(work, "duckdb", inbox, lake, name="wide", table="wide", keys="id")
        say(f"scenario 8 rep {rep}: tidemark duckdb, {WIDE_COLUMNS} columns × {WIDE_ROWS} rows")
        secs, peak, _ = measure(tidemark(cfg, "duckdb"))
        rows = landed_rows(lake, "bench", "wide")
        if rows != WIDE_ROWS:
            raise Failed(f"the wide file landed {rows} rows, expected {WIDE_ROWS}")
        res.add("8", f"tidemark (duckdb) {WIDE_COLUMNS} columns × {WIDE_ROWS} rows", secs, peak, rows)
        engine_secs.append(table_seconds(lake))
    res.notes["8"] = [
        f"The table's own seconds (the run log's `table landed` event: read, type, write, commit; no start-up "
        f"or imports): median {statistics.median(engine_secs):.2f} s (target < 2 s)."
    ]


# ------------------------------------------------------------------------------------------ machine


def _version(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (p.stdout or p.stderr).strip().splitlines()
    return text[0] if text else "?"


def _pkg(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
        mem_gb = f"{int(mem.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        mem_gb = "?"
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "duckdb": _pkg("duckdb"),
        "pyspark": _pkg("pyspark"),
        "java": _version(["java", "-version"]),
        "dlt": _pkg("dlt"),
        "connectorx": _pkg("connectorx"),
        "dbt-core / dbt-duckdb": f"{_pkg('dbt-core')} / {_pkg('dbt-duckdb')}",
        "postgresql": _version(["psql", "--version"]),
        "disk free": f"{shutil.disk_usage(BENCH).free / 1e9:.0f} GB",
    }


def _commit() -> str:
    p = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "ingestion"], capture_output=True, text=True
    )
    return (p.stdout.strip() or "?") + (" (ingestion/ modified)" if dirty.stdout.strip() else "")


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", choices=sorted(gen.SIZES), default="1m", help="rows of the orders table (default 1m)"
    )
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per tool (default 3)")
    parser.add_argument(
        "--scenarios",
        default="1,2,3,4,5,6,7,8",
        help="comma-separated subset of 1-8 (6: Spark on local-cluster, 7: larger than memory, 8: wide file)",
    )
    parser.add_argument("--engines", default="duckdb,spark", help="tidemark engines (default duckdb,spark)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiled runs")
    parser.add_argument("--data", type=Path, default=BENCH / "data", help="generated CSVs (reused per size)")
    parser.add_argument(
        "--work", type=Path, default=BENCH / "work", help="scratch lakes, outputs, dbt project"
    )
    parser.add_argument("--results", type=Path, default=BENCH / "RESULTS.md", help="the report to rewrite")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a results JSON to compare against (default bench/results/baseline-<size>.json)",
    )
    parser.add_argument(
        "--save-baseline", action="store_true", help="also save these results as the baseline"
    )
    args = parser.parse_args(argv)
    args.scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    if not args.scenarios <= {"1", "2", "3", "4", "5", "6", "7", "8"}:
        parser.error("--scenarios takes numbers 1 to 8")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    res = Results(
        size=args.size,
        rows=gen.SIZES[args.size],
        reps=args.reps,
        started=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        commit=_commit(),
        machine=machine_facts(),
    )
    try:
        import dlt  # noqa: F401
    except ImportError:
        res.skipped["dlt"] = (
            "dlt is not installed: make bench installs the bench extra (pip install -e '.[bench]')"
        )
    if "spark" in args.engines and not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        res.skipped["spark"] = "no Java found: the Spark engine and raw Spark need Java 17 or 21"
    for why in res.skipped.values():
        say(f"skipping: {why}")
    say(f"generating data ({args.size} rows) under {args.data}")
    files = gen.generate(args.size, args.data)
    work = fresh(args.work / args.size)
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "ingestion"), str(BENCH)], env=ENV, check=True)
    if args.scenarios & {"1", "2"}:
        csv_scenarios(res, files, work, args)
    if args.scenarios & {"3", "4"}:
        jdbc_scenarios(res, files, work, args)
    if "5" in args.scenarios:
        dbt_scenario(res, files, work, args)
    if "6" in args.scenarios:
        cluster_scenario(res, files, work, args)
    if "7" in args.scenarios:
        spill_scenario(res, files, work, args)
    if "8" in args.scenarios:
        wide_scenario(res, files, work, args)
    res.seconds_total = time.perf_counter() - started
    results_dir = BENCH / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"latest-{args.size}.json").write_text(
        json.dumps(res.to_json(), indent=1), encoding="utf-8"
    )
    baseline_path = args.baseline or results_dir / f"baseline-{args.size}.json"
    if args.save_baseline:
        baseline_path.write_text(json.dumps(res.to_json(), indent=1), encoding="utf-8")
        say(f"saved the baseline {baseline_path}")
    baseline = (
        json.loads(baseline_path.read_text()) if baseline_path.exists() and not args.save_baseline else None
    )
    sizes = [json.loads(p.read_text()) for p in sorted(results_dir.glob("latest-*.json"))]
    args.results.write_text(report.render(res.to_json(), baseline, sizes), encoding="utf-8")
    say(f"wrote {args.results} ({res.seconds_total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        sys.exit(1)
