"""The DuckDB engine at scale (issue 20): its memory settings, a file larger than its memory limit, a wide file.

Speed lives in bench/ (scenarios 1, 7 and 8); these check that the work is done right under the limits.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingestion.config import parse_config
from ingestion.engines import get_engine
from ingestion.engines.duckdb.engine import DuckDBEngine, limit_bytes, reader_line_limit
from ingestion.errors import ConfigError, EngineError
from ingestion.plan.rejects import MAX_LINE_BYTES
from ingestion.run.pipeline import run_pipeline


def _doc(inbox: Path, lake: Path, duck: dict[str, Any] | None = None, **table: Any) -> dict[str, Any]:
    return {
        "pipeline": "scale",
        "lake": {"root": str(lake)},
        **({"duckdb": duck} if duck is not None else {}),
        "sources": [
            {
                "name": "drops",
                "kind": "csv",
                "path": str(inbox),
                "archive": {"enabled": False},
                "tables": [{"name": "t", "pattern": "t_*.csv", **table}],
            }
        ],
    }


def _landed(lake: Path) -> str:
    return f"read_parquet('{lake}/landing/drops/t/**/*.parquet')"


def test_the_memory_settings_reach_duckdb_and_its_spill_folder_goes_at_close(tmp_path):
    cfg_dir = tmp_path / "conf"
    cfg_dir.mkdir()
    doc = _doc(
        tmp_path, tmp_path / "lake", {"memory_limit": "300MB", "temp_directory": "spill", "threads": 1}
    )
    cfg = parse_config(doc).model_copy(update={"config_path": cfg_dir / "ingestion.yml"})
    engine = get_engine("duckdb", cfg)
    assert isinstance(engine, DuckDBEngine)
    try:
        con = engine.db.cursor()  # the batches' connections are cursors of this database
        limit, temp, threads = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
            "current_setting('threads')"
        ).fetchone()  # type: ignore[misc]
        # DuckDB reports the limit in MiB: 300 MB is 286.1 MiB
        assert limit == "286.1 MiB"
        assert threads == 1
        # a folder of the run's own inside the configured one, resolved next to the config file
        assert Path(temp).parent == cfg_dir / "spill"
        assert Path(temp).is_dir()
    finally:
        engine.close()
    assert not Path(temp).exists()
    assert (cfg_dir / "spill").is_dir() and not any((cfg_dir / "spill").iterdir())


def test_memory_settings_defaults_and_errors(tmp_path):
    engine = DuckDBEngine()
    try:
        limit = engine.db.execute("SELECT current_setting('memory_limit')").fetchone()[0]  # type: ignore[index]
        assert limit != "" and engine.line_limit == MAX_LINE_BYTES
    finally:
        engine.close()
    assert limit_bytes("64MB") == 64 * 10**6 and limit_bytes("1.5 GiB") == 3 * 2**29
    assert reader_line_limit("64MB") == 8 * 10**6  # a small limit shrinks the reader's buffers
    assert reader_line_limit("8GB") == MAX_LINE_BYTES
    with pytest.raises(ConfigError, match="memory_limit"):
        parse_config(_doc(tmp_path, tmp_path / "lake", {"memory_limit": "lots"}))
    with pytest.raises(EngineError, match="not a size"):
        limit_bytes("12 parsecs")


@pytest.mark.slow
def test_a_file_larger_than_the_memory_limit_lands_by_spilling(tmp_path):
    """~150 MB of CSV under a 64 MB memory limit: every row lands (dedup included), DuckDB spilled under
    the configured temp_directory, and nothing of it is left afterwards."""
    inbox, lake, spill = tmp_path / "inbox", tmp_path / "lake", tmp_path / "spill"
    inbox.mkdir()
    src = inbox / "t_1.csv"
    n = 300_000
    # every 10th id is delivered twice: the later updated_at wins
    duckdb.execute(
        f"COPY (SELECT i % {n - n // 10} AS id, TIMESTAMP '2026-01-01' + to_seconds(i) AS updated_at, "
        "CAST(i AS DECIMAL(12,2)) / 100 AS amount, repeat(md5(CAST(i AS VARCHAR)), 13) AS note "
        f"FROM range({n}) AS r(i)) TO '{src}' (HEADER, DELIMITER ',')"
    )
    assert src.stat().st_size > 2 * 64 * 10**6
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:  # the biggest the spill folder got during the run
        while not done.is_set():
            seen.append(
                sum(p.stat().st_size for p in spill.rglob("*") if p.is_file()) if spill.exists() else 0
            )
            done.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        doc = _doc(
            inbox,
            lake,
            {"memory_limit": "64MB", "temp_directory": str(spill)},
            primary_key=["id"],
            cursor="updated_at",
            cursor_timezone="UTC",
        )
        report = run_pipeline(parse_config(doc))
    finally:
        done.set()
        watcher.join()
    t = report.tables[0]
    assert t.error is None, t.error
    assert (t.rows_read, t.rows_landed, t.rows_rejected) == (n, n - n // 10, 0)
    assert max(seen) > 0, "DuckDB never spilled: the test does not test spilling"
    assert not any(p.is_file() for p in spill.rglob("*"))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")  # the landed cursor is a UTC instant
    truth = (
        f"SELECT id, max(updated_at) AS updated_at FROM read_csv('{src}', header = true, "
        "columns = {'id': 'BIGINT', 'updated_at': 'TIMESTAMP', 'amount': 'DECIMAL(12,2)', 'note': 'VARCHAR'}) "
        "GROUP BY id"
    )
    landed = f"SELECT id, CAST(updated_at AS TIMESTAMP) AS updated_at FROM {_landed(lake)}"
    diff = con.execute(f"SELECT count(*) FROM (({truth}) EXCEPT ALL ({landed}))").fetchone()[0]  # type: ignore[index]
    assert diff == 0
    # the winning row is landed whole: its amount and note are those of the later delivery
    i = n - 1
    row = con.execute(f"SELECT amount, note FROM {_landed(lake)} WHERE id = {i % (n - n // 10)}").fetchone()
    assert row == (Decimal(i) / 100, con.execute(f"SELECT repeat(md5('{i}'), 13)").fetchone()[0])  # type: ignore[index]


def test_a_500_column_file_lands_typed(tmp_path):
    inbox, lake = tmp_path / "inbox", tmp_path / "lake"
    inbox.mkdir()
    kinds = [
        (lambda r, c: str(r * 1000 + c), "int64"),
        (lambda r, c: f"{r}.{c % 100:02d}", "decimal128(38, 18)"),
        (lambda r, c: f"2026-01-{r + 1:02d}", "date32[day]"),
        (lambda r, c: f"text {r} {c}", "string"),
        (lambda r, c: "true" if (r + c) % 2 else "false", "bool"),
    ]
    names = ["id"] + [f"c{c}" for c in range(1, 500)]
    lines = [",".join(names)]
    for r in range(20):
        lines.append(",".join([str(r)] + [kinds[c % 5][0](r, c) for c in range(1, 500)]))
    (inbox / "t_1.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = run_pipeline(parse_config(_doc(inbox, lake, primary_key=["id"])))
    t = report.tables[0]
    assert t.error is None, t.error
    assert (t.rows_read, t.rows_landed) == (20, 20)
    files = sorted((lake / "landing" / "drops" / "t").glob("**/*.parquet"))
    table = pq.read_table(files).sort_by("id")
    for c in range(1, 500):
        fn, arrow_type = kinds[c % 5]
        assert str(table.schema.field(f"c{c}").type) == arrow_type, c
        got = [str(v).lower() if isinstance(v, bool) else str(v) for v in table.column(f"c{c}").to_pylist()]
        want = [fn(r, c) for r in range(20)]
        if arrow_type.startswith("decimal"):
            got = [str(Decimal(v).normalize()) for v in got]
            want = [str(Decimal(v).normalize()) for v in want]
        assert got == want, c


_NUMBERS = st.one_of(
    st.from_regex(r"[+-]?[0-9]{1,21}(\.[0-9]{0,19})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.integers(min_value=-(10**21), max_value=10**21).map(str),
    st.text(alphabet="0123456789+-.eE ", max_size=22),
)
_TIMES = st.one_of(
    st.from_regex(
        r"20[0-9]{2}-[01][0-9]-[0-3][0-9]([ T][0-2][0-9]:[0-5][0-9](:[0-5][0-9](\.[0-9]{1,7})?)?)?"
        r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?",
        fullmatch=True,
    ),
    st.text(alphabet="0123456789-: TZ+.", max_size=32),
)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), _NUMBERS, _TIMES), min_size=1, max_size=40))
# decimal but no double (19 and 20 digits), both, timestamps with and without a zone
@example(values=["12345678901234567890", "1234567890123456789", "-1.5", "7", "1e3", None])
@example(values=["2026-01-02 10:00:00", "2026-01-02T10:00:00.5+01:00", "2026-01-02 10:00Z", "2026-01-02"])
def test_the_shortcuts_of_type_inference_count_what_every_rule_would(values):
    """The full inference pass checks decimal and double only where the bigint rule fails, double only
    where decimal fails too, timestamptz only where the ISO timestamp rule fails: its counts equal those
    of every rule checked on every value."""
    from ingestion.config import CsvOptions
    from ingestion.engines.base import CsvBatch
    from ingestion.engines.duckdb.engine import _DuckDBCsv
    from ingestion.plan.normalize import TYPE_RULES

    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE t (a VARCHAR, b VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?, ?)", [(v, v) for v in values])
    batch = CsvBatch("s", "t", (), CsvOptions(), (), None, "r", datetime.now(timezone.utc), "x", "y")
    ops = _DuckDBCsv(con, batch)
    shortcut = ops._rule_counts("t", {"a": TYPE_RULES})
    every = ops._rule_counts_long("t", ["b"], TYPE_RULES)
    assert shortcut["a"] == every["b"]
