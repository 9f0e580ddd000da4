"""Glue Data Catalog registration of landed tables and their `_ingest_date` partitions, after a commit.

Replaces the crawlers of the hand-written Glue jobs: after a table's run commits, its Glue table is
created (or updated when the landed schema grew a column or widened a type) from the Parquet footer
of the run's files, and the run's partitions are added. It runs after the commit and never undoes it:
a failure is logged and recorded in the table's outcome (and so in the ledger), and the next run that
lands the table registers again. Columns are only ever added or widened, never dropped, because older
files still hold them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ingestion.contract import PARTITION_COLUMN
from ingestion.errors import CatalogError
from ingestion.lake import fs as lakefs
from ingestion.lake.s3 import aws_client
from ingestion.observe.logs import event

if TYPE_CHECKING:
    import pyarrow as pa

    from ingestion.config import CatalogConfig

PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"

Column = tuple[str, str]  # (name, Hive type)


def hive_type(t: pa.DataType) -> str:
    """The Hive type Athena, Redshift Spectrum and Glue Spark read an Arrow/Parquet column as."""
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return "bigint"  # landed integers are bigint on both engines; smaller ones widen losslessly
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return "string"


def schema_columns(schema: pa.Schema) -> list[Column]:
    """A Parquet schema as Glue columns, without the partition column (it lives in the path)."""
    return [(f.name, hive_type(f.type)) for f in schema if f.name != PARTITION_COLUMN]


def merge_columns(existing: Sequence[Column], landed: Sequence[Column]) -> list[Column]:
    """Existing columns in their order, their types replaced by the landed ones, new columns appended.

    Nothing is dropped: a column missing from this run's files is still in older ones.
    """
    types = dict(landed)
    merged = [(name, types.get(name, t)) for name, t in existing]
    known = {name for name, _ in existing}
    return merged + [(name, t) for name, t in landed if name not in known]


def partition_values(files: Sequence[str]) -> list[str]:
    """The `_ingest_date` values of landed file paths (`…/_ingest_date=<v>/part-….parquet`)."""
    prefix = f"{PARTITION_COLUMN}="
    values = {
        seg.removeprefix(prefix)
        for f in files
        for seg in f.replace("\\", "/").split("/")
        if seg.startswith(prefix)
    }
    return sorted(values)


def storage(location: str, columns: Sequence[Column]) -> dict[str, Any]:
    """A Parquet StorageDescriptor for a table or partition location."""
    return {
        "Columns": [{"Name": n, "Type": t} for n, t in columns],
        "Location": location.rstrip("/") + "/",
        "InputFormat": PARQUET_INPUT,
        "OutputFormat": PARQUET_OUTPUT,
        "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
    }


def table_input(name: str, location: str, columns: Sequence[Column], run_id: str) -> dict[str, Any]:
    """The Glue TableInput of a landed table: external Parquet, partitioned by `_ingest_date`."""
    return {
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE", "tidemark_last_run_id": run_id},
        "PartitionKeys": [{"Name": PARTITION_COLUMN, "Type": "string"}],
        "StorageDescriptor": storage(location, columns),
    }


def names(cfg: CatalogConfig, source: str, table: str) -> tuple[str, str]:
    """The Glue database and table names of a landed table (lowercase: Glue folds names anyway)."""
    assert cfg.glue_database is not None
    database = cfg.glue_database.replace("{source}", source).lower()
    return database, cfg.glue_table.replace("{source}", source).replace("{table}", table).lower()


def glue_client() -> Any:
    """A boto3 Glue client from the usual AWS environment (`AWS_ENDPOINT_URL_GLUE` reaches moto in tests)."""
    return aws_client("glue", retries={"max_attempts": 8, "mode": "adaptive"})


def register_run(
    cfg: CatalogConfig,
    target: str,
    source: str,
    table: str,
    run_id: str,
    client: Any = None,
    partition: str | None = None,
    files: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Create or update the Glue table of a landed table and add the partitions a committed run wrote.

    `files`: the run's files as its commit recorded them (nothing is listed); else `partition`, the run's
    `_ingest_date` (a run writes one, its UTC date): only that folder is listed, never the table's whole
    `landing/` history. Returns what was done (`table`: created | updated |
    unchanged, `partitions`: the new ones). Raises CatalogError with the AWS error code when Glue refuses.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if files is None:
        files = []
        if partition is not None:
            folder = lakefs.join(target, f"{PARTITION_COLUMN}={partition}")
            files = lakefs.glob(folder, f"part-{run_id}-*.parquet")
        if not files:  # no partition given, or the run wrote elsewhere: look through the whole table once
            files = lakefs.glob(target, f"{PARTITION_COLUMN}=*/part-{run_id}-*.parquet")
    if not files:
        return {"table": "unchanged", "partitions": []}
    database, name = names(cfg, source, table)
    glue = client or glue_client()
    try:
        landed = schema_columns(lakefs.read_schema(files[0]))
        with contextlib.suppress(glue.exceptions.AlreadyExistsException):
            glue.create_database(DatabaseInput={"Name": database, "Description": "tables landed by tidemark"})
        try:
            current = glue.get_table(DatabaseName=database, Name=name)["Table"]
        except glue.exceptions.EntityNotFoundException:
            current = None
        if current is None:
            glue.create_table(DatabaseName=database, TableInput=table_input(name, target, landed, run_id))
            done, columns = "created", landed
        else:
            existing = [(c["Name"], c["Type"]) for c in current["StorageDescriptor"].get("Columns", [])]
            columns = merge_columns(existing, landed)
            if columns != existing:
                glue.update_table(
                    DatabaseName=database, TableInput=table_input(name, target, columns, run_id)
                )
                done = "updated"
            else:
                done = "unchanged"
        added = _add_partitions(glue, database, name, target, columns, partition_values(files))
    except (ClientError, BotoCoreError) as exc:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
        raise CatalogError(
            f"{source}.{table}: Glue catalog registration in {database}.{name} failed ({code}): {exc}",
            hint="the data is landed and committed; check the role's glue:* permissions, then rerun "
            "(the next run that lands the table registers it again)",
        ) from None
    event(
        "registered in the Glue catalog",
        table=f"{source}.{table}",
        glue=f"{database}.{name}",
        change=done,
        partitions=added or None,
    )
    return {"table": done, "partitions": added}


def _add_partitions(
    glue: Any, database: str, name: str, target: str, columns: Sequence[Column], values: Sequence[str]
) -> list[str]:
    """Add the partitions Glue doesn't hold yet (batches of 100, Glue's limit); returns the new ones."""
    added: list[str] = []
    for i in range(0, len(values), 100):
        chunk = values[i : i + 100]
        entries = [
            {
                "Values": [v],
                "StorageDescriptor": storage(lakefs.join(target, f"{PARTITION_COLUMN}={v}"), columns),
            }
            for v in chunk
        ]
        resp = glue.batch_create_partition(DatabaseName=database, TableName=name, PartitionInputList=entries)
        errors = {tuple(e["PartitionValues"]): e["ErrorDetail"] for e in resp.get("Errors", [])}
        real = {k: e for k, e in errors.items() if e.get("ErrorCode") != "AlreadyExistsException"}
        if real:
            (values_, detail), *_ = real.items()
            raise CatalogError(
                f"Glue refused partition {PARTITION_COLUMN}={values_[0]} of {database}.{name}: "
                f"{detail.get('ErrorCode')}: {detail.get('ErrorMessage')}",
                hint="check the role's glue:BatchCreatePartition permission, then rerun",
            )
        added += [v for v in chunk if (v,) not in errors]
    return added


def update_partition_columns(
    cfg: CatalogConfig,
    target: str,
    source: str,
    table: str,
    partitions: dict[str, list[Column]],
    client: Any = None,
) -> list[str]:
    """Give registered `_ingest_date` partitions the column types their files now hold (after a same-day
    widening rewrote them, `ingestion.lake.retype`); returns the partitions changed.

    A partition's columns keep their order; the types of the columns its files hold are replaced and
    columns new to it appended (`merge_columns`). A table or partition not registered yet is left to the
    registration, which creates it with the table's (widened) columns. Raises CatalogError when Glue refuses.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    database, name = names(cfg, source, table)
    glue = client or glue_client()
    changed = []
    try:
        for value, landed in sorted(partitions.items()):
            try:
                part = glue.get_partition(DatabaseName=database, TableName=name, PartitionValues=[value])
            except glue.exceptions.EntityNotFoundException:
                continue
            sd = part["Partition"]["StorageDescriptor"]
            existing = [(c["Name"], c["Type"]) for c in sd.get("Columns", [])]
            columns = merge_columns(existing, landed)
            if columns == existing:
                continue
            location = sd.get("Location") or lakefs.join(target, f"{PARTITION_COLUMN}={value}")
            glue.update_partition(
                DatabaseName=database,
                TableName=name,
                PartitionValueList=[value],
                PartitionInput={"Values": [value], "StorageDescriptor": storage(location, columns)},
            )
            changed.append(value)
    except (ClientError, BotoCoreError) as exc:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
        raise CatalogError(
            f"{source}.{table}: updating the columns of partitions {', '.join(sorted(partitions))} of "
            f"{database}.{name} failed ({code}): {exc}",
            hint="the files are rewritten; check the role's glue:UpdatePartition permission, then rerun "
            "(the table's next run updates them before anything else)",
        ) from None
    if changed:
        event("partition columns updated in the Glue catalog", table=f"{source}.{table}", partitions=changed)
    return changed


def register_outcome(cfg: Any, outcome: Any, run_id: str, paused: bool, partition: str | None = None) -> None:
    """After a table's run: register it when it landed and committed; a failure goes into the outcome.

    The outcome keeps its status (the commit stands) and gets `error`/`error_class`, which the ledger
    records; the log says what to do.
    """
    if cfg.catalog.glue_database is None or outcome.status != "landed" or paused:
        return
    from ingestion.lake.layout import table_dir

    try:
        register_run(
            cfg.catalog,
            table_dir(cfg.lake_root, outcome.source, outcome.table),
            outcome.source,
            outcome.table,
            run_id,
            partition=partition,
            files=outcome.landed_files,
        )
    except Exception as exc:  # never undo or fail the landed table: record, log, carry on
        message = exc.message if isinstance(exc, CatalogError) else f"{type(exc).__name__}: {exc}"
        outcome.error, outcome.error_class = message, "CatalogError"
        event(
            "Glue catalog registration failed; the data is committed",
            logging.ERROR,
            table=outcome.name,
            error=message,
        )
