"""AWS Glue entry script: Glue job arguments → the same `run_pipeline` as `python -m ingestion run`.

Use this file as the job's ScriptLocation and install the package with `--additional-python-modules`
(see docs/aws.md). Arguments, all optional but `--JOB_NAME` (which Glue always passes):

| Glue argument         | tidemark meaning                                                                   |
|-----------------------|------------------------------------------------------------------------------------|
| `--config`            | the pipeline config: a local path or `s3://bucket/key` (downloaded with boto3)      |
| `--env`               | `environments.<env>` of the config (like `--env`)                                  |
| `--engine`            | `spark` (Glue Spark ETL job) or `duckdb` (Glue Python shell job); default: config   |
| `--load_type`         | `auto`, `full` or `incremental` (like `--load-type`)                               |
| `--tables`            | comma-separated `table` or `source.table` names (like `--table`); default: all     |
| `--pause`             | `true`: land but commit no watermark (like `--pause`)                              |
| `--output_path`       | seeds' name: the lake root (`lake.root`), e.g. `s3://bucket/lake`                  |
| `--timestamp_s3_path` | seeds' name for where watermarks live: the lake root when `--output_path` is absent |
|                       | (tidemark keeps state in `<lake>/_state/`, next to the data it describes)          |
| `--database_name`     | seeds' name: the Glue catalog database to register landed tables into              |
|                       | (`catalog.glue_database`; `{source}` in it is replaced by the source name)         |

With `--engine spark` on a Spark ETL job the Glue-provided Spark session is used (GlueContext) and the
Glue job is initialised and committed (`Job.init` / `job.commit()`) only when every table succeeded. With
`--engine duckdb` (a Python shell job, or a Spark ETL job whose Spark stays idle) no Glue job object is
made: tidemark keeps its own watermarks, so there is no bookmark to commit. Either way a failed table
makes the script exit 1, which fails the job run; a config or argument error exits 2. awsglue is imported only here and
only when this script runs.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

OPTIONAL = (
    "config",
    "env",
    "engine",
    "load_type",
    "tables",
    "pause",
    "output_path",
    "timestamp_s3_path",
    "database_name",
)


@dataclass(frozen=True)
class GlueRunArgs:
    """What a Glue job run asks for, in tidemark's terms."""

    job_name: str
    config: str = "ingestion.yml"
    env: str | None = None
    engine: str | None = None
    load_type: str | None = None
    tables: tuple[str, ...] = ()
    pause: bool = False
    lake_root: str | None = None
    glue_database: str | None = None
    notes: tuple[str, ...] = ()  # mapping decisions worth a log line


def resolved_options(argv: Sequence[str]) -> dict[str, str]:
    """Glue's own parsing (`awsglue.utils.getResolvedOptions`) of JOB_NAME and the optional arguments given."""
    from awsglue.utils import getResolvedOptions

    # getResolvedOptions fails on any name it is asked for that is absent: ask only for those present.
    present = [name for name in OPTIONAL if f"--{name}" in argv]
    return dict(getResolvedOptions(list(argv), ["JOB_NAME", *present]))


def map_arguments(opts: Mapping[str, str]) -> GlueRunArgs:
    """Map resolved Glue arguments (names without `--`) to a run (see the module docstring's table)."""
    from ingestion.errors import ConfigError

    def get(name: str) -> str | None:
        value = (opts.get(name) or "").strip()
        return value or None

    notes = []
    lake = get("output_path")
    timestamps = get("timestamp_s3_path")
    if lake is None and timestamps is not None:
        lake = timestamps
        notes.append(f"--timestamp_s3_path {timestamps} is the lake root (state lives in <lake>/_state)")
    elif lake is not None and timestamps is not None and timestamps.rstrip("/") != lake.rstrip("/"):
        notes.append(
            f"--timestamp_s3_path {timestamps} ignored: watermarks live in {lake.rstrip('/')}/_state "
            "(with the data they describe)"
        )
    pause = (get("pause") or "false").lower()
    if pause not in ("true", "false"):
        raise ConfigError(f"--pause {opts.get('pause')!r}: expected true or false")
    engine = get("engine")
    if engine is not None and engine not in ("duckdb", "spark"):
        raise ConfigError(f"--engine {engine!r}: expected spark or duckdb", hint="spark for a Spark ETL job")
    load_type = get("load_type")
    if load_type is not None and load_type not in ("auto", "full", "incremental"):
        raise ConfigError(f"--load_type {load_type!r}: expected auto, full or incremental")
    return GlueRunArgs(
        job_name=opts["JOB_NAME"],
        config=get("config") or "ingestion.yml",
        env=get("env"),
        engine=engine,
        load_type=load_type,
        tables=tuple(t.strip() for t in (get("tables") or "").split(",") if t.strip()),
        pause=pause == "true",
        lake_root=lake,
        glue_database=get("database_name"),
        notes=tuple(notes),
    )


def fetch_config(location: str, into: str) -> str:
    """A local path to the config: `s3://bucket/key` is downloaded into `into`, anything else is as given."""
    if not location.startswith("s3://"):
        return location
    from ingestion.errors import ConfigError
    from ingestion.lake.s3 import s3_client, split_s3

    bucket, key = split_s3(location)
    path = os.path.join(into, os.path.basename(key) or "ingestion.yml")
    try:
        s3_client().download_file(bucket, key, path)
    except Exception as exc:
        raise ConfigError(
            f"--config {location}: could not download it: {exc}",
            hint="check the object exists and the job's role has s3:GetObject on it",
        ) from None
    return path


def build_config(args: GlueRunArgs, config_path: str) -> Any:
    """Load the config and apply the job's overrides (lake root, catalog database)."""
    from ingestion.config import CatalogConfig, LakeConfig, load_config

    cfg = load_config(config_path, env=args.env)
    update: dict[str, Any] = {}
    if args.lake_root:
        update["lake"] = LakeConfig(root=args.lake_root)
    if args.glue_database:
        update["catalog"] = CatalogConfig(glue_database=args.glue_database, glue_table=cfg.catalog.glue_table)
    return cfg.model_copy(update=update) if update else cfg


def glue_context() -> tuple[Any, Any] | None:
    """The GlueContext and its Spark session on a Spark ETL job; None where awsglue has no context."""
    try:
        from awsglue.context import GlueContext
    except ImportError:  # a Python shell job, or not on Glue at all
        return None
    from pyspark import SparkContext

    context = GlueContext(SparkContext.getOrCreate())
    return context, context.spark_session


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline as a Glue job; 0 when every table landed or was up to date, else 1."""
    from ingestion.errors import TidemarkError
    from ingestion.lake.layout import new_run_id
    from ingestion.observe.logs import event, publish_log, setup_logging
    from ingestion.run.pipeline import run_pipeline

    argv = list(sys.argv if argv is None else argv)
    opts = resolved_options(argv)
    log_path = None
    cfg = None
    try:
        args = map_arguments(opts)
        with tempfile.TemporaryDirectory(prefix="tidemark-config-") as tmp:
            cfg = build_config(args, fetch_config(args.config, tmp))
        engine_name = args.engine or cfg.engine
        run_id = new_run_id(datetime.now(timezone.utc))
        log_path = setup_logging(run_id, cfg.lake_root)
        for note in args.notes:
            event(note)
        engine, job = None, None
        if engine_name == "spark":
            glue = glue_context()
            if glue is not None:
                from awsglue.job import Job

                from ingestion.engines.spark.engine import SparkEngine

                context, session = glue
                engine = SparkEngine(cfg.spark, session)  # the session Glue made, not a new one
                job = Job(context)
                job.init(args.job_name, opts)
        report = run_pipeline(
            cfg,
            engine_name=engine_name,
            engine=engine,
            tables=args.tables or None,
            load_type=args.load_type,  # type: ignore[arg-type]
            pause=args.pause,
            run_id=run_id,
        )
        if not report.ok:
            failed = {t.name: t.error or t.status for t in report.failed}
            event("glue job run failed; job not committed", logging.ERROR, job=args.job_name, failed=failed)
            return 1
        if job is not None:
            job.commit()
        event("glue job run finished", job=args.job_name, run_id=report.run_id)
        return 0
    except TidemarkError as exc:
        print(f"error: {exc}", file=sys.stderr)  # Glue shows stderr in the error log
        return 2
    finally:
        if cfg is not None and log_path is not None:
            publish_log(cfg.lake_root, log_path)


if __name__ == "__main__":
    sys.exit(main())
