"""The Glue entry script with a stand-in `awsglue` (getResolvedOptions, GlueContext, Job) in sys.modules."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import ClassVar

import boto3
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


def test_argument_mapping_uses_the_seeds_names():
    args = glue_job.map_arguments(
        {
            "JOB_NAME": "tidemark-billing",
            "config": "s3://cfg/ingestion.yml",
            "env": "prod",
            "engine": "spark",
            "load_type": "full",
            "tables": "s.t, u ,",
            "pause": "TRUE",
            "timestamp_s3_path": "s3://lake-bucket/lake/",
            "database_name": "landing_{source}",
        }
    )
    assert args.job_name == "tidemark-billing" and args.config == "s3://cfg/ingestion.yml"
    assert (args.env, args.engine, args.load_type, args.pause) == ("prod", "spark", "full", True)
    assert args.tables == ("s.t", "u")
    assert args.lake_root == "s3://lake-bucket/lake/"  # timestamp_s3_path stands in for the lake root
    assert args.glue_database == "landing_{source}"
    # output_path wins; a different timestamp_s3_path is reported, not silently dropped
    both = glue_job.map_arguments(
        {"JOB_NAME": "j", "output_path": "s3://a/lake", "timestamp_s3_path": "s3://b/ts"}
    )
    assert both.lake_root == "s3://a/lake" and "ignored" in both.notes[0]
    bare = glue_job.map_arguments({"JOB_NAME": "j"})
    assert (bare.config, bare.lake_root, bare.glue_database, bare.tables, bare.pause) == (
        "ingestion.yml",
        None,
        None,
        (),
        False,
    )
    for bad in ({"engine": "pandas"}, {"load_type": "sometimes"}, {"pause": "maybe"}):
        with pytest.raises(ConfigError):
            glue_job.map_arguments({"JOB_NAME": "j", **bad})


def test_resolved_options_asks_glue_only_for_arguments_present(awsglue):
    argv = ["script.py", "--JOB_NAME", "j", "--env", "prod", "--extra-py-files", "x"]
    assert glue_job.resolved_options(argv) == {"JOB_NAME": "j", "env": "prod"}


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
