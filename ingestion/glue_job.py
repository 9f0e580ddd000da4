"""AWS Glue entry script: Glue job arguments → the same `run_pipeline` as `python -m ingestion run`.

Use this file as the job's ScriptLocation and install the package with `--additional-python-modules`
(see docs/aws.md). It takes the seed Glue scripts' own arguments with their meanings, so a job switches
to tidemark by changing its script. All optional but `--JOB_NAME` (which Glue always passes):

| Glue argument                                 | tidemark meaning                                                  |
|-----------------------------------------------|-------------------------------------------------------------------|
| `--config`                                    | the pipeline config: a local path or `s3://bucket/key`            |
| `--env`, `--environment`                      | `environments.<env>` of the config (like `--env`)                 |
| `--engine`                                    | `spark` (Spark ETL job) or `duckdb` (Python shell job); default: config |
| `--load_type`                                 | `auto`, `full`, `incremental`, or the seeds' `cdc` (= incremental) |
| `--tables`                                    | comma-separated `table` or `source.table` names; default: all     |
| `--pause`                                     | `true`: land but commit no watermark (like `--pause`)             |
| `--output_path`, `--s3_output_path`           | the lake root (`lake.root`), e.g. `s3://bucket/lake`              |
| `--database_name`, `--athena_database_name`   | the SOURCE Glue catalog database: the config's one `glue_catalog` source reads it (none: one is added, named after the database) |
| `--primary_key_s3_prefix`                     | that source's `pk_registry`: the latest CSV under the prefix      |
| `--register_database`                         | the database landed tables are registered into (`catalog.glue_database`; `{source}` → source name) |
| `--cdc_path`                                  | the seeds' per-table CDC tracker files (`<prefix>/<table>.csv`)   |
| `--timestamp_s3_path` [+ `--csv_file_name`]   | the seeds' `max_timestamps.csv` or `last_load_timestamp.csv` (folder + file name, or the file) |
| `--log_folder_path`                           | a copy of the run's JSON log goes to `<folder>/<yyyy-mm-dd>/<run_id>.jsonl` |

tidemark keeps watermarks in `<lake>/_state`. The seeds' watermark files (`--cdc_path`,
`--timestamp_s3_path`, `--csv_file_name`) are imported as initial watermarks for tables that have none
yet (`python -m ingestion import-watermarks`, with a log line per table); tables with a committed
watermark keep it, so the arguments can stay on the job after the switch.

Glue's own arguments (`--JOB_ID`, `--JOB_RUN_ID`, `--TempDir`, `--job-bookmark-option`, `--enable-…`,
`--extra-…`, `--additional-python-modules`, `--conf`, …) are ignored; any other unknown argument is an
error listing the known ones.

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
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

OPTIONAL = (
    "config",
    "env",
    "environment",
    "engine",
    "load_type",
    "tables",
    "pause",
    "output_path",
    "s3_output_path",
    "database_name",
    "athena_database_name",
    "register_database",
    "primary_key_s3_prefix",
    "cdc_path",
    "timestamp_s3_path",
    "csv_file_name",
    "log_folder_path",
)
KNOWN = ("JOB_NAME", *OPTIONAL)
# Arguments AWS Glue itself passes or reads (its documented job parameters): never ours to refuse.
GLUE_OWN = frozenset(
    {
        "JOB_ID",
        "JOB_RUN_ID",
        "TempDir",
        "RedshiftTempDir",
        "SECURITY_CONFIGURATION",
        "WORKFLOW_NAME",
        "WORKFLOW_RUN_ID",
        "additional-python-modules",
        "auto-scale-within-microbatch",
        "class",
        "conf",
        "datalake-formats",
        "disable-proxy-v2",
        "encryption-type",
        "executor-cores",
        "job-bookmark-option",
        "job-language",
        "python-modules-installer-option",
        "scriptLocation",
        "use-postgres-driver",
        "user-jars-first",
        "library-set",
        "pip-install",
        "s3-py-modules",
        "working-dir",
    }
)
GLUE_OWN_PREFIXES = ("enable-", "extra-", "continuous-log-", "customer-", "spark-", "glue-")
LOAD_TYPES = {"auto": "auto", "full": "full", "incremental": "incremental", "cdc": "incremental"}


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
    source_database: str | None = None  # the catalog database the glue_catalog source reads
    pk_registry: str | None = None
    glue_database: str | None = None  # where landed tables are registered
    seeds: tuple[tuple[str, str], ...] = ()  # (path, layout) of the seeds' watermark files
    log_folder: str | None = None
    notes: tuple[str, ...] = ()  # mapping decisions worth a log line


def is_glue_own(name: str) -> bool:
    """Is `name` (without `--`) one of the arguments AWS Glue passes or reads itself?"""
    return name in GLUE_OWN or name.startswith(GLUE_OWN_PREFIXES)


def unknown_arguments(argv: Sequence[str]) -> list[str]:
    """The `--name` arguments in argv that are neither tidemark's nor Glue's own."""
    names = [a[2:].split("=", 1)[0] for a in argv[1:] if a.startswith("--") and len(a) > 2]
    return [n for n in dict.fromkeys(names) if n not in KNOWN and not is_glue_own(n)]


def resolved_options(argv: Sequence[str]) -> dict[str, str]:
    """Glue's own parsing (`awsglue.utils.getResolvedOptions`) of JOB_NAME and the optional arguments given.

    An argument that is neither tidemark's nor Glue's own is a ConfigError listing the known ones (a typo
    would otherwise silently change what the job does).
    """
    from awsglue.utils import getResolvedOptions

    from ingestion.errors import ConfigError

    unknown = unknown_arguments(argv)
    if unknown:
        raise ConfigError(
            f"unknown job argument{'s' if len(unknown) > 1 else ''}: {', '.join('--' + n for n in unknown)}",
            hint=f"the arguments tidemark knows: {', '.join('--' + n for n in KNOWN)} (Glue's own, e.g. "
            "--TempDir or --enable-metrics, are ignored)",
        )
    # getResolvedOptions fails on any name it is asked for that is absent: ask only for those present.
    present = [name for name in OPTIONAL if f"--{name}" in argv]
    return dict(getResolvedOptions(list(argv), ["JOB_NAME", *present]))


def source_name(database: str) -> str:
    """A source name from a catalog database name: `Sales-DB.prod` → `sales_db_prod`."""
    name = re.sub(r"[^a-z0-9_]+", "_", database.lower()).strip("_")
    name = re.sub(r"_+", "_", name)
    if not name or not name[0].isalpha():
        name = f"db_{name}".rstrip("_")
    return name[:63]


def map_arguments(opts: Mapping[str, str]) -> GlueRunArgs:
    """Map resolved Glue arguments (names without `--`) to a run (see the module docstring's table)."""
    from ingestion.errors import ConfigError

    def get(name: str) -> str | None:
        value = (opts.get(name) or "").strip()
        return value or None

    def either(a: str, b: str) -> str | None:
        first, second = get(a), get(b)
        if first and second and first.rstrip("/") != second.rstrip("/"):
            raise ConfigError(
                f"--{a} {first} and --{b} {second} disagree: they name the same thing",
                hint=f"give only --{a}",
            )
        return first or second

    notes = []
    pause = (get("pause") or "false").lower()
    if pause not in ("true", "false"):
        raise ConfigError(f"--pause {opts.get('pause')!r}: expected true or false")
    engine = get("engine")
    if engine is not None and engine not in ("duckdb", "spark"):
        raise ConfigError(f"--engine {engine!r}: expected spark or duckdb", hint="spark for a Spark ETL job")
    raw_load = get("load_type")
    load_type = LOAD_TYPES.get(raw_load.lower()) if raw_load else None
    if raw_load is not None and load_type is None:
        raise ConfigError(f"--load_type {raw_load!r}: expected auto, full, incremental or cdc")
    if raw_load and raw_load.lower() == "cdc":
        notes.append("--load_type cdc is incremental: each table reads from its committed watermark")
    seeds: list[tuple[str, str]] = []
    if get("cdc_path"):
        seeds.append((get("cdc_path") or "", "per-table"))
    folder, file_name = get("timestamp_s3_path"), get("csv_file_name")
    if folder and file_name:
        seeds.append((f"{folder.rstrip('/')}/{file_name.lstrip('/')}", "auto"))
    elif folder or file_name:
        seeds.append((folder or file_name or "", "auto"))
    for path, _ in seeds:
        notes.append(
            f"seed watermarks {path}: imported for tables without a watermark (state lives in <lake>/_state)"
        )
    return GlueRunArgs(
        job_name=opts["JOB_NAME"],
        config=get("config") or "ingestion.yml",
        env=either("env", "environment"),
        engine=engine,
        load_type=load_type,
        tables=tuple(t.strip() for t in (get("tables") or "").split(",") if t.strip()),
        pause=pause == "true",
        lake_root=either("output_path", "s3_output_path"),
        source_database=either("database_name", "athena_database_name"),
        pk_registry=get("primary_key_s3_prefix"),
        glue_database=get("register_database"),
        seeds=tuple(seeds),
        log_folder=get("log_folder_path"),
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
    """Load the config and apply the job's overrides (lake root, source database, registration database)."""
    from ingestion.config import CatalogConfig, GlueCatalogSourceConfig, LakeConfig, load_config
    from ingestion.errors import ConfigError

    cfg = load_config(config_path, env=args.env)
    update: dict[str, Any] = {}
    if args.lake_root:
        update["lake"] = LakeConfig(root=args.lake_root)
    if args.glue_database:
        update["catalog"] = CatalogConfig(glue_database=args.glue_database, glue_table=cfg.catalog.glue_table)
    if args.source_database or args.pk_registry:
        catalogs = cfg.catalog_sources()
        if len(catalogs) > 1:
            raise ConfigError(
                f"--database_name/--primary_key_s3_prefix: the config has {len(catalogs)} glue_catalog sources "
                f"({', '.join(s.name for s in catalogs)}); the job can't tell which one they mean",
                hint="set database and pk_registry on each source in the config and drop these arguments",
            )
        changes: dict[str, Any] = {}
        if args.source_database:
            changes["database"] = args.source_database
        if args.pk_registry:
            changes["pk_registry"] = args.pk_registry
        if catalogs:
            new = catalogs[0].model_copy(update=changes)
        elif args.source_database:
            name = source_name(args.source_database)
            if name in {s.name for s in cfg.sources}:
                raise ConfigError(
                    f"--database_name {args.source_database}: the config already has a source named {name}",
                    hint="add a glue_catalog source for the database to the config under another name",
                )
            new = GlueCatalogSourceConfig.model_validate({"name": name, "kind": "glue_catalog", **changes})
        else:
            raise ConfigError(
                "--primary_key_s3_prefix: the config has no glue_catalog source for it to key",
                hint="give --database_name too, or set pk_registry on a source in the config",
            )
        old = catalogs[0] if catalogs else None
        update["sources"] = tuple(new if s is old else s for s in cfg.sources) if old else (*cfg.sources, new)
    return cfg.model_copy(update=update) if update else cfg


def import_seed_watermarks(cfg: Any, args: GlueRunArgs) -> None:
    """Import the seeds' watermark files for tables without a watermark, one log line per table."""
    from ingestion.observe.logs import event
    from ingestion.run.seeds import import_watermarks

    for path, layout in args.seeds:
        result = import_watermarks(cfg, [path], layout=layout)  # type: ignore[arg-type]
        for d in result.decisions:
            if d.writes:
                event(
                    "imported the seed's watermark",
                    table=d.name,
                    watermark=d.new.value if d.new else None,
                    seed=path,
                )
            elif d.action == "kept":
                event(
                    "seed watermark not imported: the table has one", logging.DEBUG, table=d.name, seed=path
                )
            else:
                event(f"seed watermark not imported: {d.action}", logging.WARNING, table=d.name, note=d.note)


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
    log_path = None
    cfg = None
    args = None
    try:
        opts = resolved_options(argv)
        args = map_arguments(opts)
        with tempfile.TemporaryDirectory(prefix="tidemark-config-") as tmp:
            cfg = build_config(args, fetch_config(args.config, tmp))
        engine_name = args.engine or cfg.engine
        run_id = new_run_id(datetime.now(timezone.utc))
        log_path = setup_logging(run_id, cfg.lake_root)
        for note in args.notes:
            event(note)
        if args.seeds:
            import_seed_watermarks(cfg, args)
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
            publish_log(cfg.lake_root, log_path, also=args.log_folder if args else None)


if __name__ == "__main__":
    sys.exit(main())
