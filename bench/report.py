"""bench/RESULTS.md from one run's results (and a baseline's, for the before/after table)."""

from __future__ import annotations

import statistics
from typing import Any

SCENARIOS = {
    "1": "Full CSV load (orders, 10 % of keys repeated: every tool must keep the latest row per key or land all)",
    "2": "Incremental CSV run after a 1 % delta (½ changed rows, ½ new keys) vs the full run",
    "3": "JDBC full extract of the PostgreSQL orders table",
    "4": "JDBC incremental pull of a 1 % delta (upserted rows with a later updated_at)",
    "5": "dbt CDC merge of a 1 % delta into the curated DuckDB table vs --full-refresh",
    "6": "Spark on local-cluster[2,1,1024] (two executor JVMs): full CSV load, tidemark vs raw Spark",
    "7": "Larger than memory: the CSV under a DuckDB memory_limit of 40 % of its size",
    "8": "A wide file: 500 columns × 20 rows (DuckDB engine)",
}

# (scenario, what, numerator tool, denominator tool, target: the ratio should be at most this)
RATIOS: list[tuple[str, str, str, str, float | None]] = [
    ("1", "tidemark DuckDB / DuckDB COPY", "tidemark (duckdb)", "DuckDB COPY (CSV→Parquet)", 1.5),
    (
        "1",
        "tidemark DuckDB / DuckDB dedup",
        "tidemark (duckdb)",
        "DuckDB dedup (CSV→Parquet, latest per key)",
        1.3,
    ),
    ("1", "tidemark DuckDB / dlt CSV→Parquet", "tidemark (duckdb)", "dlt CSV→Parquet (pyarrow)", 1.0),
    ("1", "tidemark DuckDB / dlt merge", "tidemark (duckdb)", "dlt merge into DuckDB", 1.0),
    ("1", "tidemark Spark / raw Spark CSV→Parquet", "tidemark (spark)", "Spark CSV→Parquet (raw)", 1.25),
    ("1", "tidemark Spark / raw Spark dedup", "tidemark (spark)", "Spark dedup (raw)", None),
    (
        "2",
        "DuckDB engine: incremental 1 % / full",
        "tidemark (duckdb) incremental 1 %",
        "tidemark (duckdb) full",
        None,
    ),
    (
        "2",
        "Spark engine: incremental 1 % / full",
        "tidemark (spark) incremental 1 %",
        "tidemark (spark) full",
        None,
    ),
    ("3", "tidemark DuckDB / dlt sql_table", "tidemark (duckdb)", "dlt sql_table (connectorx)", 1.0),
    ("3", "tidemark Spark / dlt sql_table", "tidemark (spark)", "dlt sql_table (connectorx)", None),
    (
        "4",
        "DuckDB engine: incremental 1 % / full",
        "tidemark (duckdb) incremental 1 %",
        "tidemark (duckdb) full",
        None,
    ),
    (
        "4",
        "Spark engine: incremental 1 % / full",
        "tidemark (spark) incremental 1 %",
        "tidemark (spark) full",
        None,
    ),
    (
        "4",
        "dlt: incremental 1 % / full",
        "dlt sql_table (connectorx) incremental 1 %",
        "dlt sql_table (connectorx) full",
        None,
    ),
    (
        "4",
        "incremental: tidemark DuckDB / dlt",
        "tidemark (duckdb) incremental 1 %",
        "dlt sql_table (connectorx) incremental 1 %",
        1.0,
    ),
    (
        "5",
        "dbt: CDC merge of 1 % / --full-refresh",
        "dbt CDC merge of a 1 % delta",
        "dbt --full-refresh",
        None,
    ),
    (
        "6",
        "tidemark Spark / raw Spark dedup, both on local-cluster",
        "tidemark (spark)",
        "Spark dedup (raw)",
        None,
    ),
]

# What the profiled functions do, for the "where the time goes" paragraphs.
WHAT = {
    "_DuckDBCsv.read": "CSV parse into text columns with DuckDB's reject tracking",
    "_DuckDBCsv.stats": "type inference (every value against each type rule)",
    "_DuckDBCsv._rule_counts": "type inference (rules on a sample, then the surviving rules on every value)",
    "_rule_counts": "type inference (rules on a sample, then the surviving rules on every value)",
    "rule_ok_col": "type inference: building the rule expressions",
    "_DuckDBCsv.type_rejects": "rows whose values don't fit the column types",
    "_DuckDBCsv.write": "typed cast, watermark filter, dedup by key, Parquet write",
    "_SparkCsv.read": "Spark CSV read (permissive, corrupt-record column) and counting",
    "_SparkCsv.stats": "type inference (every value against each type rule)",
    "_SparkCsv.type_rejects": "rows whose values don't fit the column types",
    "_SparkCsv.write": "typed cast, filter, dedup window, Parquet write",
    "get_spark": "JVM and SparkSession start-up",
    "SparkEngine.__init__": "JVM and SparkSession start-up",
    "SparkEngine.close": "SparkSession stop",
    "sha256_file": "checksum of the file for the ledger",
    "(other: imports, start-up, libraries)": "interpreter start-up, imports, outside tidemark's code",
    "land_jdbc": "the extract itself (reading PostgreSQL, writing Parquet)",
    "Pipeline.extract": "dlt extract (reading the source into files)",
    "Pipeline.normalize": "dlt normalize",
    "Pipeline.load": "dlt load (moving files into the destination)",
}

# The functions type inference ran in, before and after the change the before/after table measures.
INFERENCE = {
    "DuckDB": ("_DuckDBCsv.stats", "_DuckDBCsv._rule_counts"),
    "Spark": ("_SparkCsv.stats", ":_rule_counts", ":rule_ok_col"),
}

PROFILE_INTRO = {
    "1": "One more full load of each engine ran under `bench/sampler.py` (wall-clock samples every 5 ms, "
    "charged to the innermost tidemark function on the stack; time inside DuckDB, the JVM or the network "
    "is charged to the function that called it).",
    "2": "The incremental run after the full one, sampled the same way: the delta file is all it reads, "
    "so the fixed costs (start-up, state, ledger) show.",
    "3": "The full extract, sampled the same way.",
    "4": "The incremental pull, sampled the same way.",
    "5": "From dbt's own `run_results.json` timings of the last repetition (execute phase per node) "
    "against the whole process.",
}


def fmt_s(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _median(runs: dict[str, Any]) -> float:
    return float(statistics.median(runs["seconds"]))


def scenario_table(runs: dict[str, dict[str, Any]]) -> list[str]:
    out = ["| tool | median s | min–max s | peak memory MB | rows |", "|---|---:|---:|---:|---:|"]
    for tool, r in runs.items():
        secs = r["seconds"]
        out.append(
            f"| {tool} | {fmt_s(_median(r))} | {fmt_s(min(secs))}–{fmt_s(max(secs))} | "
            f"{max(r['peak_mb']):.0f} | {r['rows'] if r['rows'] is not None else '–'} |"
        )
    return out


def ratio_rows(res: dict[str, Any]) -> list[str]:
    out = ["| scenario | ratio (medians) | value | target | |", "|---|---|---:|---:|---|"]
    for sc, what, num, den, target in RATIOS:
        runs = res["scenarios"].get(sc, {})
        if num not in runs or den not in runs:
            continue
        value = _median(runs[num]) / _median(runs[den])
        verdict = "" if target is None else ("met" if value <= target else "**not met**")
        out.append(f"| {sc} | {what} | {value:.2f} | {'' if target is None else f'≤ {target}'} | {verdict} |")
    return out


# (scenario, what, numerator tool, denominator tool, target) on peak memory
MEMORY_RATIOS: list[tuple[str, str, str, str, float | None]] = [
    (
        "1",
        "peak memory: tidemark DuckDB / DuckDB dedup",
        "tidemark (duckdb)",
        "DuckDB dedup (CSV→Parquet, latest per key)",
        1.5,
    ),
]


def memory_ratio_rows(res: dict[str, Any]) -> list[str]:
    out = []
    for sc, what, num, den, target in MEMORY_RATIOS:
        runs = res["scenarios"].get(sc, {})
        if num not in runs or den not in runs:
            continue
        value = max(runs[num]["peak_mb"]) / max(runs[den]["peak_mb"])
        verdict = "" if target is None else ("met" if value <= target else "**not met**")
        out.append(f"| {sc} | {what} | {value:.2f} | {'' if target is None else f'≤ {target}'} | {verdict} |")
    return out


def growth_table(others: list[dict[str, Any]]) -> list[str]:
    """Scenario 1 per size (each size is its own run: `--size 5m`), so the growth curve shows."""
    out = [
        "| size | rows | tool | median s | peak memory MB | run |",
        "|---|---:|---|---:|---:|---|",
    ]
    for res in sorted(others, key=lambda r: r["rows"]):
        for tool, r in res["scenarios"].get("1", {}).items():
            if tool.startswith("tidemark (duckdb)") or tool.startswith("DuckDB"):
                out.append(
                    f"| {res['size']} | {res['rows']:,} | {tool} | {fmt_s(_median(r))} | "
                    f"{max(r['peak_mb']):.0f} | {res['started']}, {res['commit']} |"
                )
    return out


def profile_lines(name: str, data: dict[str, Any]) -> list[str]:
    if "dbt" in data:
        timing = data["dbt"]
        return [f"  - {k}: {v:.2f} s" for k, v in sorted(timing.items(), key=lambda kv: -kv[1])]
    interval, counts = data["interval_s"], data["by_function"]
    busy = sum(counts.values()) * interval
    lines = [f"- `{name}`: process {data['process_s']:.2f} s, {busy:.2f} s of busy samples:"]
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
    for label, n in top:
        secs = n * interval
        if secs < 0.01:
            break
        func = label.rsplit(":", 1)[-1]
        what = WHAT.get(func) or WHAT.get(label)
        lines.append(
            f"  - {secs:.2f} s ({100 * secs / busy:.0f} %) `{label}`" + (f": {what}" if what else "")
        )
    return lines


def before_after(res: dict[str, Any], base: dict[str, Any]) -> list[str]:
    out = [
        f"Baseline: commit {base['commit']}, {base['started']} ({base['reps']} reps); "
        f"now: commit {res['commit']}, {res['started']}. Same data, same machine kind.",
        "",
        *(
            [
                f"Settings now: {res.get('settings', {})}; the baseline's: "
                f"{base.get('settings') or {'csv multiline': True}}. With `multiline: true` Spark reads a CSV "
                "file in one task, so the Spark rows of scenarios 1 and 2 show the setting and the code "
                "change together; the DuckDB rows and the type-inference profile lines show the code alone.",
                "",
            ]
            if res.get("settings") != (base.get("settings") or {"csv multiline": True})
            else []
        ),
        "| scenario | tool | before s | after s | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for sc, runs in res["scenarios"].items():
        for tool, r in runs.items():
            if not tool.startswith("tidemark"):
                continue
            b = base["scenarios"].get(sc, {}).get(tool)
            if b:
                before, after = _median(b), _median(r)
                out.append(f"| {sc} | {tool} | {fmt_s(before)} | {fmt_s(after)} | {before / after:.2f}× |")
    for name, data in res["profiles"].items():
        b = base.get("profiles", {}).get(name)
        if not b or "by_function" not in data:
            continue
        for engine, funcs in INFERENCE.items():
            before = sum(n for k, n in b["by_function"].items() if k.endswith(funcs)) * b["interval_s"]
            after = sum(n for k, n in data["by_function"].items() if k.endswith(funcs)) * data["interval_s"]
            if before:
                out.append(
                    f"| profile {name} | type inference ({engine}: {', '.join(f'`{f}`' for f in funcs)}) | "
                    f"{before:.2f} | {after:.2f} | {before / max(after, 1e-9):.2f}× |"
                )
    return out


def render(
    res: dict[str, Any], baseline: dict[str, Any] | None, sizes: list[dict[str, Any]] | None = None
) -> str:
    m = res["machine"]
    lines = [
        "# tidemark benchmarks",
        "",
        f"Written by `make bench` (bench/run.py) on {res['started']}, commit {res['commit']}: "
        f"{res['rows']:,} rows ({res['size']}), {res['reps']} repetitions per tool, every one a whole process "
        f"(interpreter, imports and JVM start-up included). The whole run took {res['seconds_total'] / 60:.1f} min. "
        "Peak memory is the largest resident set of the process tree (the JVM included), sampled every 0.1 s. "
        "Data: `bench/gen.py` (deterministic). How to read and rerun: bench/README.md.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in m.items()],
        "",
        "## Ratios",
        "",
        "Medians over medians; targets are the issue's (tidemark's DuckDB engine within 1.5× of DuckDB's own "
        "COPY and faster than dlt, JDBC at least as fast as dlt + connectorx, the Spark engine within 1.25× of "
        "raw Spark).",
        "",
        *ratio_rows(res),
        *memory_ratio_rows(res),
        "",
    ]
    for sc, title in SCENARIOS.items():
        runs = res["scenarios"].get(sc)
        if not runs:
            continue
        lines += [
            f"## Scenario {sc}: {title}",
            "",
            *scenario_table(runs),
            "",
        ]
        lines += [*res.get("notes", {}).get(sc, []), ""] if res.get("notes", {}).get(sc) else []
        if sc in PROFILE_INTRO and any(n.split("-", 1)[0] == sc for n in res["profiles"]):
            lines += ["Where the time goes. " + PROFILE_INTRO[sc], ""]
        for name, data in sorted(res["profiles"].items()):
            if name.split("-", 1)[0] != sc:
                continue
            if "dbt" in data:
                lines.append(f"- `{name}`:")
            lines += profile_lines(name, data)
        lines.append("")
    if sizes and len(sizes) > 1:
        lines += ["## Scenario 1 by size", "", *growth_table(sizes), ""]
    if res["skipped"]:
        lines += ["## Skipped", "", *[f"- {k}: {v}" for k, v in res["skipped"].items()], ""]
    if baseline:
        lines += ["## Before / after", "", *before_after(res, baseline), ""]
    return "\n".join(lines).rstrip() + "\n"
