"""The Glue entry script with a stand-in `awsglue` (getResolvedOptions, GlueContext, Job) in sys.modules."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import ClassVar

import boto3
import duckdb
import pytest
import yaml

from ingestion import glue_job
from ingestion.errors import ConfigError
from ingestion.lake.state import StateStore

GOOD = "id,name,updated_at\n1,a,2026-01-01 10:00:00\n2,b,2026-01-02 10:00:00\n"


def get_resolved_options(argv: list[str], names: list[str]) -> dict[str, str]:
    """Glue's contract: every asked-for `--name value` must be present, else it exits."""
    out = {}
    for name in names:
        flag = f"--{name}"
        if flag not in argv:
            raise SystemExit(f"argument {flag} is required")
        out[name] = argv[argv.index(flag) + 1]
    return out


class GlueContext:
    instances: ClassVar[list[GlueContext]] = []

    def __init__(self, sc) -> None:
        from pyspark.sql import SparkSession

        self.spark_session = SparkSession(sc)
        GlueContext.instances.append(self)


class Job:
    calls: ClassVar[list[tuple]] = []

    def __init__(self, context: GlueContext) -> None:
        assert isinstance(context, GlueContext)

    def init(self, name: str, args: dict) -> None:
        Job.calls.append(("init", name, dict(args)))

    def commit(self) -> None:
        Job.calls.append(("commit",))


@pytest.fixture
def awsglue(monkeypatch):
    """Stand-in awsglue modules; `with_context=False` plays a Python shell job (no GlueContext)."""
    pkg = types.ModuleType("awsglue")
    utils = types.ModuleType("awsglue.utils")
    utils.getResolvedOptions = get_resolved_options  # type: ignore[attr-defined]
    context = types.ModuleType("awsglue.context")
    context.GlueContext = GlueContext  # type: ignore[attr-defined]
    job = types.ModuleType("awsglue.job")
    job.Job = Job  # type: ignore[attr-defined]
    for name, mod in {
        "awsglue": pkg,
        "awsglue.utils": utils,
        "awsglue.context": context,
        "awsglue.job": job,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    Job.calls.clear()
    GlueContext.instances.clear()
    return Job


def config_doc(inbox: Path, engine: str = "duckdb") -> dict:
    return {
        "pipeline": "p",
        "engine": engine,
        "lake": {"root": "./lake-from-config"},
        "sources": [
            {
                "name": "s",
                "kind": "csv",
                "path": str(inbox),
                "tables": [
                    {"name": "t", "primary_key": ["id"], "cursor": "updated_at", "cursor_timezone": "UTC"},
                    {"name": "u", "primary_key": ["id"], "cursor": "updated_at", "cursor_timezone": "UTC"},
                ],
            }
        ],
        "environments": {"prod": {"max_parallel_tables": 1}},
    }


SEED_ARGUMENTS = {
    "JOB_NAME": "tidemark-billing",
    "config": "s3://cfg/ingestion.yml",
    "environment": "prod",
    "engine": "spark",
    "load_type": "cdc",
    "tables": "s.t, u ,",
    "pause": "TRUE",
    "s3_output_path": "s3://lake-bucket/lake/",
    "athena_database_name": "Sales-DB.prod",
    "primary_key_s3_prefix": "s3://cfg/pk_registry/",
    "register_database": "landing_{source}",
    "cdc_path": "s3://seed/cdc/",
    "timestamp_s3_path": "s3://seed/ts/",
    "csv_file_name": "max_timestamps.csv",
    "log_folder_path": "s3://seed/logs",
}


def test_every_seed_argument_is_mapped_to_its_seed_meaning():
    args = glue_job.map_arguments(SEED_ARGUMENTS)
    # every argument tidemark knows is here (the short names are checked below)
    assert set(SEED_ARGUMENTS) | {"env", "output_path", "database_name"} == set(glue_job.KNOWN)
    assert args.job_name == "tidemark-billing" and args.config == "s3://cfg/ingestion.yml"
    assert (args.env, args.engine, args.load_type, args.pause) == ("prod", "spark", "incremental", True)
    assert args.tables == ("s.t", "u")
    assert args.lake_root == "s3://lake-bucket/lake/"
    assert args.source_database == "Sales-DB.prod"  # the SOURCE catalog database
    assert args.pk_registry == "s3://cfg/pk_registry/"
    assert args.glue_database == "landing_{source}"  # registration has its own argument
    assert args.seeds == (("s3://seed/cdc/", "per-table"), ("s3://seed/ts/max_timestamps.csv", "auto"))
    assert args.log_folder == "s3://seed/logs"
    assert any("cdc is incremental" in n for n in args.notes)
    # The short names mean the same; two names for one thing must agree.
    short = glue_job.map_arguments(
        {"JOB_NAME": "j", "env": "dev", "output_path": "s3://a/l", "database_name": "db"}
    )
    assert (short.env, short.lake_root, short.source_database) == ("dev", "s3://a/l", "db")
    with pytest.raises(ConfigError, match="disagree"):
        glue_job.map_arguments({"JOB_NAME": "j", "output_path": "s3://a/l", "s3_output_path": "s3://b/l"})
    assert glue_job.map_arguments({"JOB_NAME": "j", "csv_file_name": "s3://x/last.csv"}).seeds == (
        ("s3://x/last.csv", "auto"),
    )
    bare = glue_job.map_arguments({"JOB_NAME": "j"})
    assert (bare.config, bare.lake_root, bare.glue_database, bare.source_database, bare.seeds) == (
        "ingestion.yml",
        None,
        None,
        None,
        (),
    )
    for bad in ({"engine": "pandas"}, {"load_type": "sometimes"}, {"pause": "maybe"}):
        with pytest.raises(ConfigError):
            glue_job.map_arguments({"JOB_NAME": "j", **bad})


def test_unknown_arguments_are_an_error_listing_the_known_and_glues_own_are_ignored(awsglue):
    glue_own = ["--JOB_ID", "j_1", "--JOB_RUN_ID", "jr_1", "--job-bookmark-option", "job-bookmark-disable"]
    glue_own += ["--TempDir", "s3://t/", "--enable-metrics", "true", "--extra-py-files", "x.whl"]
    glue_own += ["--additional-python-modules", "tidemark", "--job-language", "python", "--conf", "a=b"]
    argv = ["script.py", "--JOB_NAME", "j", "--environment", "prod", *glue_own]
    assert glue_job.resolved_options(argv) == {"JOB_NAME": "j", "environment": "prod"}
    with pytest.raises(ConfigError) as exc:
        glue_job.resolved_options([*argv, "--databse_name", "sales", "--output-path", "s3://x"])
    assert "--databse_name, --output-path" in exc.value.message
    for name in glue_job.KNOWN:
        assert f"--{name}" in (exc.value.hint or "")
    assert glue_job.main([*argv, "--databse_name", "sales"]) == 2  # a job run with a typo fails, clearly


def catalog_config(tmp_path: Path, catalogs: list[dict]) -> str:
    doc = config_doc(tmp_path / "in")
    doc["sources"] += catalogs
    path = tmp_path / "ingestion.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_database_name_is_the_catalog_sources_database(tmp_path):
    args = glue_job.map_arguments(
        {
            "JOB_NAME": "j",
            "database_name": "Sales-DB.prod",
            "primary_key_s3_prefix": "s3://cfg/pk/",
            "register_database": "landing",
            "output_path": "s3://lake/root",
        }
    )
    # No glue_catalog source in the config: one is added, named after the database.
    added = glue_job.build_config(args, catalog_config(tmp_path, []))
    (source,) = added.catalog_sources()
    assert (source.name, source.database, source.pk_registry) == (
        "sales_db_prod",
        "Sales-DB.prod",
        "s3://cfg/pk/",
    )
    assert source.cursor == "updated_at" and source.tables is None  # the kind's defaults
    assert [s.name for s in added.sources] == ["s", "sales_db_prod"]
    assert added.catalog.glue_database == "landing" and added.lake_root == "s3://lake/root"
    # Exactly one: it reads the job's database, its other settings stay.
    one = {"name": "crm", "kind": "glue_catalog", "database": "old", "exclude": ["tmp_*"]}
    (source,) = glue_job.build_config(args, catalog_config(tmp_path, [one])).catalog_sources()
    assert (source.name, source.database, source.exclude, source.pk_registry) == (
        "crm",
        "Sales-DB.prod",
        ("tmp_*",),
        "s3://cfg/pk/",
    )
    # Several: the job can't tell which.
    two = [one, {**one, "name": "erp"}]
    with pytest.raises(ConfigError, match="2 glue_catalog sources"):
        glue_job.build_config(args, catalog_config(tmp_path, two))
    assert glue_job.source_name("2024 Raw") == "db_2024_raw"
    with pytest.raises(ConfigError, match="no glue_catalog source"):
        glue_job.build_config(
            glue_job.map_arguments({"JOB_NAME": "j", "primary_key_s3_prefix": "s3://p/"}),
            catalog_config(tmp_path, []),
        )


def test_seed_watermark_files_are_imported_before_the_run(awsglue, tmp_path, monkeypatch):
    """--timestamp_s3_path + --csv_file_name: the seed's max_timestamps.csv seeds tables without state."""
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    monkeypatch.setitem(sys.modules, "awsglue.context", None)
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    (inbox / "u_1.csv").write_text(GOOD)
    config = tmp_path / "ingestion.yml"
    config.write_text(yaml.safe_dump(config_doc(inbox)))
    seeds = tmp_path / "seed"
    seeds.mkdir()
    (seeds / "max_timestamps.csv").write_text("table_name,max_timestamp\nt,2026-01-02 10:00:00\n")
    lake, logs = tmp_path / "lake", tmp_path / "logs"
    argv = ["glue_job.py", "--JOB_NAME", "shell", "--config", str(config), "--s3_output_path", str(lake)]
    argv += ["--timestamp_s3_path", str(seeds), "--csv_file_name", "max_timestamps.csv"]
    argv += ["--load_type", "cdc", "--tables", "t", "--log_folder_path", str(logs)]
    assert glue_job.main(argv) == 0
    landed = duckdb.sql(f"select id from read_parquet('{lake}/landing/s/t/**/*.parquet')").fetchall()
    assert landed == [(2,)]  # incremental from the seed's watermark: row 1 is older
    state = StateStore(str(lake), "p").read("s", "t")
    assert state.watermark is not None and state.watermark.value.startswith("2026-01-02T10:00:00")
    (log,) = logs.glob("*/*.jsonl")  # a copy of the run's log in the seeds' log folder
    assert "imported the seed's watermark" in log.read_text()
    assert list((lake / "_logs").glob("*/*.jsonl"))  # and the lake keeps its own


def test_python_shell_job_downloads_the_config_and_lands_to_the_output_path(
    awsglue, s3_bucket, tmp_path, monkeypatch
):
    """DuckDB engine (a Python shell job): config from S3, lake from --output_path, env and tables applied."""
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    monkeypatch.setitem(sys.modules, "awsglue.context", None)  # no GlueContext on a Python shell job
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    (inbox / "u_1.csv").write_text(GOOD)
    boto3.client("s3").put_object(
        Bucket=s3_bucket, Key="conf/ingestion.yml", Body=yaml.safe_dump(config_doc(inbox)).encode()
    )
    lake = tmp_path / "lake"
    argv = ["glue_job.py", "--JOB_NAME", "shell", "--config", f"s3://{s3_bucket}/conf/ingestion.yml"]
    argv += ["--output_path", str(lake), "--env", "prod", "--tables", "s.t"]
    assert glue_job.main(argv) == 0
    store = StateStore(str(lake), "p")
    assert store.read("s", "t") is not None and store.read("s", "u") is None  # only the chosen table
    assert list((lake / "_logs").glob("*/*.jsonl"))
    assert awsglue.calls == []  # no Glue job object on a Python shell job

    missing = ["glue_job.py", "--JOB_NAME", "shell", "--config", f"s3://{s3_bucket}/conf/nope.yml"]
    assert glue_job.main(missing) == 2


@pytest.mark.slow
@pytest.mark.spark
def test_spark_job_uses_the_glue_session_and_commits_only_on_success(awsglue, spark, tmp_path, monkeypatch):
    monkeypatch.delenv("TIDEMARK_LAKE", raising=False)
    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "t_1.csv").write_text(GOOD)
    (inbox / "u_1.csv").write_text(GOOD)
    config = tmp_path / "ingestion.yml"
    config.write_text(yaml.safe_dump(config_doc(inbox, engine="spark")))
    argv = [
        "glue_job.py",
        "--JOB_NAME",
        "etl",
        "--config",
        str(config),
        "--output_path",
        str(tmp_path / "lake"),
    ]

    monkeypatch.setenv("TIDEMARK_FAULTS", "batch_written@t=raise")  # table t fails, u lands
    assert glue_job.main(argv) == 1
    assert awsglue.calls == [
        ("init", "etl", {"JOB_NAME": "etl", "config": str(config), "output_path": str(tmp_path / "lake")})
    ]
    assert GlueContext.instances and GlueContext.instances[0].spark_session.sparkContext is spark.sparkContext
    monkeypatch.delenv("TIDEMARK_FAULTS")

    awsglue.calls.clear()
    assert glue_job.main(argv) == 0
    assert [c[0] for c in awsglue.calls] == ["init", "commit"]
    store = StateStore(str(tmp_path / "lake"), "p")
    assert store.read("s", "t").committed_runs and store.read("s", "u").committed_runs
