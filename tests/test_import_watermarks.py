"""`import-watermarks`: the Glue seeds' watermark files become tables' initial watermarks.

Each seed layout round-trips (local and on moto's S3), the values are the canonical text the engines
commit, `--dry-run` writes nothing, and the next run of a table is incremental from the imported value.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ingestion.cli import app
from ingestion.engines.duckdb.common import max_cursor
from ingestion.errors import ConfigError
from ingestion.lake.model import Watermark
from ingestion.lake.state import StateStore
from ingestion.plan.csv import canonical_watermark
from ingestion.plan.seeds import Target, single_timestamp, table_timestamps, to_watermark
from ingestion.run.pipeline import run_pipeline
from ingestion.run.seeds import import_watermarks
from tests.pg_fixtures import PgDb, jdbc_source, pipeline_doc

ROWS = "id,name,updated_at\n1,a,2026-01-01 10:00:00\n2,b,2026-01-02 10:00:00\n3,c,2026-01-03 10:00:00\n"


def csv_doc(inbox: Path, lake: Path, **table: Any) -> dict:
    spec = {"primary_key": ["id"], "cursor": "updated_at", "cursor_timezone": "UTC", **table}
    return {
        "pipeline": "p",
        "lake": {"root": str(lake)},
        "sources": [
            {
                "name": "s",
                "kind": "csv",
                "path": str(inbox),
                "tables": [{"name": "orders", **spec}, {"name": "customers", **spec}],
            }
        ],
    }


def engine_text(value: str, sql_type: str, zone: str | None) -> Watermark:
    """What the DuckDB engine commits for a cursor holding `value` (its max-cursor text, made canonical)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE TABLE t AS SELECT CAST('{value}' AS {sql_type.upper()}) AS c")
    ctype = {"timestamp with time zone": "timestamptz"}.get(sql_type, sql_type)
    raw = max_cursor(con, "t", "c", ctype)
    wm = canonical_watermark(raw, zone, "t")
    assert wm is not None
    return wm


@pytest.mark.parametrize(
    ("seed", "column", "zone", "same_as"),
    [
        ("2024-05-01 12:34:56", "timestamp", "UTC", "2024-05-01 12:34:56"),
        ("2024-05-01T12:34:56.123456789", "timestamp", "UTC", "2024-05-01 12:34:56.123456"),
        ("2024-05-01 14:34:56", "timestamp", "Europe/Berlin", "2024-05-01 14:34:56"),
        ("2024-05-01T12:34:56+02:00", "timestamp with time zone", None, "2024-05-01 10:34:56+00"),
        ("2024-05-01T10:34:56Z", "timestamp with time zone", None, "2024-05-01 10:34:56+00"),
        ("2024-05-01 10:34:56.5", "timestamp with time zone", None, "2024-05-01 10:34:56.5+00"),
        ("2024-05-01 00:00:00", "date", None, "2024-05-01"),
    ],
)
def test_seed_text_becomes_the_engines_canonical_watermark(seed, column, zone, same_as):
    ctype = {"timestamp with time zone": "timestamptz"}.get(column, column)
    target = Target("s", "t", "updated_at", ctype, zone)
    got = to_watermark(
        table_timestamps(f"table_name,max_timestamp\nt,{seed}\n", "m.csv")[0], target, ctype, None
    )
    assert got == engine_text(same_as, column, zone)


def test_layouts_parse_with_header_variants_and_refuse_what_they_cannot_read():
    for header in ("table_name,max_timestamp", "Table Name,Max Timestamp", "TABLE,watermark", ""):
        text = (header + "\n" if header else "") + "orders,2024-05-01 12:00:00\ncustomers,\n"
        rows = table_timestamps(text, "m.csv")
        assert [(r.table, r.text, r.line) for r in rows] == [
            ("orders", "2024-05-01 12:00:00", 2 if header else 1),
            ("customers", None, 3 if header else 2),
        ]
    with pytest.raises(ConfigError) as bad_header:
        table_timestamps("tbl,when\norders,yesterday\n", "s3://b/max_timestamps.csv")
    assert "max_timestamps.csv: line 1" in bad_header.value.message
    assert "table_name,max_timestamp" in (bad_header.value.hint or "")
    # A tracker: optional header, the latest of several lines; a bad value names the file and line.
    tracker = single_timestamp(
        "max_ts\n2024-05-01 12:00:00\n2024-05-03 08:00:00\n2024-05-02 00:00:00\n", "o.csv", "o"
    )
    assert [(v.table, v.text, v.line) for v in tracker] == [("o", "2024-05-03 08:00:00", 3)]
    with pytest.raises(ConfigError) as bad_value:
        single_timestamp("2024-05-01 12:00:00\n05/02/2024 noon\n", "last_load_timestamp.csv")
    assert "last_load_timestamp.csv: line 2" in bad_value.value.message
    with pytest.raises(
        ConfigError, match=re.escape("cdc/o.csv: line 1: '05/02/2024 12:00' is not a timestamp")
    ):
        single_timestamp("05/02/2024 12:00\n", "cdc/o.csv", "o")


def _state(lake: Path, table: str):
    return StateStore(str(lake), "p").read("s", table)


def _write(root: Path | str, rel: str, text: str) -> str:
    """A seed file under a local folder or an s3:// prefix; returns its path."""
    if isinstance(root, str) and root.startswith("s3://"):
        bucket, _, prefix = root[5:].partition("/")
        boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=text.encode())
        return f"{root}/{rel}"
    path = Path(root) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_each_seed_layout_round_trips(where, tmp_path, write_config, request):
    root: Path | str = tmp_path / "seeds"
    if where == "s3":
        root = f"s3://{request.getfixturevalue('s3_bucket')}/seeds"
    expect = {
        "orders": engine_text("2026-01-02 10:00:00", "timestamp", "UTC"),
        "customers": engine_text("2026-01-02 09:00:00", "timestamp", "UTC"),
    }
    layouts = {
        "max-timestamps": _write(
            root,
            "max_timestamps.csv",
            "table_name,max_timestamp\norders,2026-01-02 10:00:00\ncustomers,2026-01-02 09:00:00\n",
        ),
        # Trackers: `<prefix>/<table>.csv` and a Spark output folder `<prefix>/<table>/part-….csv`.
        "per-table": (
            _write(root, "cdc/orders.csv", "last_timestamp\n2026-01-02T10:00:00Z\n"),
            _write(root, "cdc/customers/part-00000-abc.csv", "2026-01-02 09:00:00\n"),
            _write(root, "cdc/customers/_SUCCESS", ""),
        )[0].rsplit("/", 1)[0],
    }
    for layout, path in layouts.items():
        lake = tmp_path / f"lake-{layout}"
        cfg = write_config(csv_doc(tmp_path / "in", lake))
        result = import_watermarks(cfg, [path])
        assert result.layout == layout
        assert {d.name: d.action for d in result.decisions} == {"s.orders": "set", "s.customers": "set"}
        for table, wm in expect.items():
            assert _state(lake, table).watermark == wm, (layout, table)
            assert _state(lake, table).lease is None
    # last_load_timestamp.csv: one value, for every table or the tables named.
    single = _write(root, "last_load_timestamp.csv", "last_load_timestamp\n2026-01-02 10:00:00\n")
    lake = tmp_path / "lake-single"
    cfg = write_config(csv_doc(tmp_path / "in", lake))
    assert [d.name for d in import_watermarks(cfg, [single], tables=["orders"]).decisions] == ["s.orders"]
    assert _state(lake, "orders").watermark == expect["orders"] and _state(lake, "customers") is None
    assert import_watermarks(cfg, [single]).layout == "single"
    assert _state(lake, "customers").watermark == expect["orders"]


def test_cli_dry_run_writes_nothing_and_kept_watermarks_need_force(tmp_path, write_config, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    lake = tmp_path / "lake"
    write_config(csv_doc(tmp_path / "in", lake))
    config = str(tmp_path / "ingestion.yml")
    seed = _write(
        tmp_path,
        "max_timestamps.csv",
        "table_name,max_timestamp\norders,2026-01-02 10:00:00\nrefunds,2026-01-01 00:00:00\n",
    )
    runner = CliRunner()

    dry = runner.invoke(app, ["import-watermarks", seed, "--config", config, "--dry-run"])
    assert dry.exit_code == 1, dry.output  # refunds matches no table: reported, not dropped
    assert "would set" in dry.output and "2026-01-02T10:00:00.000000+00:00" in dry.output
    assert "no table refunds" in dry.output
    assert not (lake / "_state").exists()

    done = runner.invoke(app, ["import-watermarks", seed, "--config", config, "--table", "orders"])
    assert done.exit_code == 0, done.output
    first = _state(lake, "orders").watermark

    later = _write(tmp_path, "later.csv", "table_name,max_timestamp\norders,2026-02-01 00:00:00\n")
    kept = runner.invoke(app, ["import-watermarks", later, "--config", config])
    assert kept.exit_code == 0 and "kept" in kept.output and "--force" in kept.output
    assert _state(lake, "orders").watermark == first
    forced = runner.invoke(app, ["import-watermarks", later, "--config", config, "--force"])
    assert forced.exit_code == 0, forced.output
    assert _state(lake, "orders").watermark == engine_text("2026-02-01 00:00:00", "timestamp", "UTC")

    bad = _write(tmp_path, "bad.csv", "table_name,max_timestamp\norders,soon\n")
    refused = runner.invoke(app, ["import-watermarks", bad, "--config", config, "--force"])
    assert refused.exit_code == 2 and "bad.csv: line 2" in refused.output


@given(
    when=st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
    ),
    offset_minutes=st.integers(-14 * 60, 14 * 60),
    style=st.sampled_from(["T", " "]),
    zulu=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_any_seed_spelling_of_an_instant_is_that_instant_in_canonical_utc(when, offset_minutes, style, zulu):
    """Spellings differ (offset, `Z`, `T` or space, nanoseconds); the watermark is the instant, in UTC."""
    local = when.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.isoformat(sep=style)
    if zulu and offset_minutes == 0:
        text = text.replace("+00:00", "Z")
    if local.microsecond:
        text = text.replace(f".{local.microsecond:06d}", f".{local.microsecond:06d}789")  # nanoseconds
    target = Target("s", "t", "updated_at", "timestamptz", None)
    (value,) = single_timestamp(text + "\n", "last.csv")
    got = to_watermark(value, target, "timestamptz", None)
    assert got == Watermark(when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00", "timestamptz")


def test_a_table_leased_by_a_run_is_reported_locked(tmp_path, write_config):
    cfg = write_config(csv_doc(tmp_path / "in", tmp_path / "lake"))
    store = StateStore(str(tmp_path / "lake"), "p")
    held = store.acquire(
        "s", "orders", "20260101T000000000000Z-abcdef", datetime.now(timezone.utc), timedelta(hours=1)
    )
    seed = _write(tmp_path, "m.csv", "table_name,max_timestamp\norders,2026-01-02 10:00:00\n")
    (locked,) = import_watermarks(cfg, [seed]).decisions
    assert locked.action == "locked" and "locked by run 20260101T000000000000Z-abcdef" in locked.note
    assert store.read("s", "orders").watermark is None
    store.release(held)
    (done,) = import_watermarks(cfg, [seed]).decisions
    assert done.action == "set" and store.read("s", "orders").watermark == done.new


def test_a_bare_name_of_several_sources_needs_source(tmp_path, write_config):
    doc = csv_doc(tmp_path / "in", tmp_path / "lake")
    doc["sources"].append({**doc["sources"][0], "name": "other"})
    cfg = write_config(doc)
    seed = _write(tmp_path, "m.csv", "table_name,max_timestamp\norders,2026-01-02 10:00:00\n")
    (ambiguous,) = import_watermarks(cfg, [seed], dry_run=True).decisions
    assert ambiguous.action == "unknown" and "--source" in ambiguous.note
    (chosen,) = import_watermarks(cfg, [seed], source="other").decisions
    assert (chosen.name, chosen.action) == ("other.orders", "set")
    assert StateStore(str(tmp_path / "lake"), "p").read("other", "orders").watermark is not None


def test_next_csv_run_is_incremental_from_the_imported_watermark(tmp_path, write_config):
    inbox, lake = tmp_path / "in", tmp_path / "lake"
    inbox.mkdir()
    (inbox / "orders_1.csv").write_text(ROWS)
    cfg = write_config(csv_doc(inbox, lake))
    seed = _write(tmp_path, "m.csv", "table_name,max_timestamp\norders,2026-01-02 10:00:00\n")
    import_watermarks(cfg, [seed])
    report = run_pipeline(cfg, tables=["orders"])
    assert report.ok, [(t.name, t.error) for t in report.tables]
    (outcome,) = report.tables
    assert outcome.load_type == "incremental"
    ids = duckdb.sql(
        f"select id from read_parquet('{lake}/landing/s/orders/**/*.parquet') order by id"
    ).fetchall()
    assert [i for (i,) in ids] == [2, 3]  # at and after the watermark; row 1 was landed by the seed


def test_next_jdbc_run_lands_only_rows_at_or_after_the_imported_watermark(
    pg_db: PgDb, tmp_path, write_config
):
    pg_db.con.execute("create table orders (id int primary key, v text, updated_at timestamptz not null)")
    stamps = [datetime(2026, 1, d, 10, tzinfo=timezone.utc) for d in (1, 2, 3, 4)]
    with pg_db.con.cursor() as cur:
        cur.executemany(
            "insert into orders values (%s, %s, %s)", [(i + 1, f"v{i}", ts) for i, ts in enumerate(stamps)]
        )
    lake = tmp_path / "lake"
    cfg = write_config(pipeline_doc(lake, jdbc_source(pg_db)))
    seed = _write(
        tmp_path, "cdc/orders.csv", "max_timestamp\n2026-01-03 11:00:00+01:00\n"
    )  # = day 3, 10:00 UTC
    result = import_watermarks(cfg, [str(tmp_path / "cdc")])
    assert result.layout == "per-table" and [d.action for d in result.decisions] == ["set"]
    state = StateStore(str(lake), "pg_test").read("pg", "orders")
    assert state.watermark == engine_text("2026-01-03 10:00:00+00", "timestamp with time zone", None)
    assert state.cursor == "updated_at" and state.primary_key == ("id",)
    assert seed.endswith("orders.csv")

    report = run_pipeline(cfg)
    assert report.ok, [(t.name, t.error) for t in report.tables]
    assert report.tables[0].load_type == "incremental"
    landed = duckdb.sql(
        f"select id from read_parquet('{lake}/landing/pg/orders/**/*.parquet') order by id"
    ).fetchall()
    assert [i for (i,) in landed] == [3, 4]
