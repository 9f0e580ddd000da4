"""Same-day widenings: cast a partition's earlier files to the wider types its newer files landed with.

The lake widens a column's type when a run brings values the old type can't hold (bigint → decimal →
double, date → timestamp; `ingestion.plan.normalize.widen`). A run on a new `_ingest_date` starts a new
partition, whose catalog schema is its own (per-partition schemas). A run that widens a column on a day
whose partition already holds files of the old type would leave two types under one partition schema,
which neither Spectrum nor Athena reads. So after such a run commits, the partition's earlier files are
rewritten with the widened column types: same file names, same rows in the same order and row groups,
every other column and key-value metadata as it was. Each file is replaced whole (locally a temporary
file beside it then a rename; on S3 one PUT of the same key, streamed row group by row group), so a reader
sees the old file or the new one. Rewriting is idempotent: a file already of the partition's types is
left alone, and a crash between files leaves a partition the next attempt finishes.

Only lossless casts happen: integers to decimal (38 digits hold every bigint) or to double (only while
every value is exact in a double), decimal to double, date to timestamp (midnight), and any column whose
values in that file are all null. Anything else is left as it is and reported: it is a change the lake's
rules never make, so it never comes from tidemark's own writers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ingestion.contract import PARTITION_COLUMN
from ingestion.lake import fs as lakefs
from ingestion.lake.layout import run_id_of

if TYPE_CHECKING:
    import pyarrow as pa

# Spark's copy of the schema in the footer (`org.apache.spark.sql.parquet.row.metadata`) names the old
# types; Spark falls back to the Parquet schema without it, so a rewritten file drops it.
STALE_METADATA = (b"org.apache.spark.sql.parquet.row.metadata",)


@dataclass
class PartitionRetype:
    """What retyping one `_ingest_date` partition did."""

    partition: str
    types: dict[str, pa.DataType] = field(default_factory=dict)  # the partition's column types now
    rewritten: list[str] = field(default_factory=list)
    # file → "column: type → type" casts the lake's rules don't allow (the file keeps that column's type)
    refused: dict[str, list[str]] = field(default_factory=dict)


def wider(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type of the two that holds the other's values by the lake's widening rules; None: neither."""
    import pyarrow as pa

    if a == b:
        return a
    for x, y in ((a, b), (b, a)):
        if pa.types.is_integer(x) and (pa.types.is_decimal(y) or pa.types.is_floating(y)):
            return y
        if pa.types.is_integer(x) and pa.types.is_integer(y):
            return x if x.bit_width > y.bit_width else y
        if pa.types.is_decimal(x) and pa.types.is_floating(y):
            return y
        if pa.types.is_date(x) and pa.types.is_timestamp(y) and y.tz is None:
            return y
    return None


def _cast(column: pa.ChunkedArray, to: pa.DataType) -> pa.ChunkedArray:
    """Cast one column losslessly (an all-null column to anything); ArrowInvalid when a value would change."""
    import pyarrow as pa

    if column.null_count == len(column):
        return pa.chunked_array([pa.nulls(len(column), to)], type=to)
    # safe=True: an integer a double can't hold exactly, or a decimal overflow, raises instead of rounding
    return column.cast(to, safe=True)


def partition_types(schemas: Sequence[pa.Schema]) -> dict[str, pa.DataType]:
    """Each column's type across a partition's files (oldest first): the wider one where the rules allow,
    else the newest file's (what the table's latest run landed)."""
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            current = types.get(f.name)
            types[f.name] = f.type if current is None else (wider(current, f.type) or f.type)
    return types


def _castable(path: str, column: str, to: pa.DataType) -> bool:
    """Does every value of the file's `column` survive the cast to `to` (all null: always)?

    The rules say which types may widen; this checks the values (an integer past 2**53 is no exact
    double), so that a rewrite never fails half-way and never rounds.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    with lakefs.open_input(path) as f:
        values = pq.ParquetFile(f).read(columns=[column]).column(0)
    if values.null_count == len(values):
        return True
    if wider(values.type, to) != to:
        return False
    try:
        _cast(values, to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def plan_file(
    path: str, schema: pa.Schema, types: dict[str, pa.DataType]
) -> tuple[dict[str, pa.DataType], list[str]]:
    """(column → type to cast to, casts refused) for one file of a partition whose types are `types`."""
    casts, refused = {}, []
    for f in schema:
        to = types.get(f.name)
        if to is None or to == f.type:
            continue
        if _castable(path, f.name, to):
            casts[f.name] = to
        else:
            refused.append(f"{f.name}: {f.type} → {to}")
    return casts, refused


def rewrite_file(path: str, casts: dict[str, pa.DataType], before_replace: Callable[[str], None]) -> None:
    """Replace a Parquet file by the same rows with `casts` applied, streamed row group by row group.

    The new file takes the old one's place whole (`lakefs.replacing`): a crash or an error before that
    leaves the old file. `before_replace` runs just before (fault injection). Raises ArrowInvalid, and
    replaces nothing, when a value would not survive a cast.
    """
    import pyarrow.parquet as pq

    with lakefs.open_input(path) as src:
        pf = pq.ParquetFile(src)
        old = pf.schema_arrow
        schema = old
        for name, to in casts.items():
            i = schema.get_field_index(name)
            schema = schema.set(i, schema.field(i).with_type(to))
        meta = {k: v for k, v in (old.metadata or {}).items() if k not in STALE_METADATA}
        schema = schema.with_metadata(meta or None)
        md = pf.metadata
        compression = md.row_group(0).column(0).compression.lower() if md.num_row_groups else "snappy"
        rows = 0
        with lakefs.replacing(path) as out:
            with pq.ParquetWriter(out, schema, compression=compression) as writer:
                for i in range(md.num_row_groups):
                    group = pf.read_row_group(i)
                    columns = [
                        _cast(group.column(f.name), f.type) if f.name in casts else group.column(f.name)
                        for f in schema
                    ]
                    writer.write_table(pa_table(columns, schema), row_group_size=max(group.num_rows, 1))
                    rows += group.num_rows
            if rows != md.num_rows:  # never replace a file by one with other rows
                raise ValueError(f"{path}: rewrote {rows} rows of {md.num_rows}")
            before_replace(path)


def pa_table(columns: list[pa.ChunkedArray], schema: pa.Schema) -> pa.Table:
    """An Arrow table of `columns` with exactly `schema` (field metadata and all)."""
    import pyarrow as pa

    return pa.Table.from_arrays(columns, schema=schema)


def retype_partition(
    target: str,
    partition: str,
    committed: set[str],
    before_replace: Callable[[str], None] = lambda _: None,
) -> PartitionRetype:
    """Cast the committed files of one `_ingest_date` partition of a table folder to one type per column.

    Files of runs not in `committed` are not the table's (an orphan the next leased run removes) and are
    left alone. Returns the partition's types, the files rewritten and the casts refused.
    """
    folder = lakefs.join(target, f"{PARTITION_COLUMN}={partition}")
    out = PartitionRetype(partition)
    if not lakefs.is_remote(folder):
        for stale in lakefs.glob(folder, f".*{lakefs.REPLACE_SUFFIX}"):
            lakefs.remove(stale)  # a local rewrite a crash interrupted: the file it was for is intact
    files = [f for f in lakefs.glob(folder, "part-*.parquet") if run_id_of(Path(f)) in committed]
    schemas = [lakefs.read_schema(f) for f in files]
    out.types = partition_types(schemas)
    for path, schema in zip(files, schemas, strict=True):
        casts, refused = plan_file(path, schema, out.types)
        if refused:
            out.refused[path] = refused
        if casts:
            rewrite_file(path, casts, before_replace)
            out.rewritten.append(path)
    return out

