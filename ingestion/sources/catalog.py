"""Glue Data Catalog edge: the database's tables and partitions (boto3 `glue`), their files on S3, and
Parquet / JSON-lines files read as Arrow through the lake's S3 filesystem.

What to read is decided by `ingestion.plan.catalog`; CSV tables go through the CSV landing flow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingestion.config import GlueCatalogSourceConfig
from ingestion.errors import SchemaError, SourceError
from ingestion.lake import fs as lakefs
from ingestion.lake.s3 import aws_client, s3_client, s3_retry, split_s3
from ingestion.plan.catalog import (
    CatalogFile,
    CatalogSpec,
    GlueColumn,
    GluePartition,
    GlueTable,
    partition_columns,
)
from ingestion.plan.csv import FileFacts
from ingestion.plan.json_lines import json_text, parse_line, split_lines
from ingestion.plan.rejects import NULL_KEY, FileCounts, Quarantine, Reject, refuse_files
from ingestion.redact import redact, register_secret, sdk_bodies_unlogged
from ingestion.sources.jdbc import PgConnection, parse_jdbc_url, secret_password

if TYPE_CHECKING:
    import pyarrow as pa

LINE = "_line"  # a read row's line in its file (JSON lines), or its 1-based row number (Parquet)


def glue_client(source: GlueCatalogSourceConfig) -> Any:
    """The Glue client of a source (its region, else the environment's)."""
    import boto3
    from botocore.config import Config

    if source.region:
        return boto3.client("glue", region_name=source.region, config=Config(retries={"mode": "standard"}))
    return aws_client("glue", retries={"mode": "standard"})


def glue_connection(
    source: GlueCatalogSourceConfig, name: str, database: str | None, glue: Any | None = None
) -> PgConnection:
    """The PostgreSQL connection a Glue connection describes: JDBC_CONNECTION_URL, and USERNAME with
    PASSWORD, or SECRET_ID (a Secrets Manager secret holding username and password). The password is
    registered with the masker before anything can print it; `database` overrides the URL's."""
    import json
    from dataclasses import replace
    from urllib.parse import quote

    glue = glue or glue_client(source)
    try:
        with sdk_bodies_unlogged():  # the response holds the password, not yet registered
            doc = glue.get_connection(Name=name, HidePassword=False, **_ids(source))["Connection"]
    except Exception as exc:
        raise SourceError(
            f"source {source.name}: cannot read the Glue connection {name!r}: {type(exc).__name__}: {exc}",
            hint="check the connection's name and glue:GetConnection for this role",
        ) from None
    props = doc.get("ConnectionProperties") or {}
    password = props.get("PASSWORD")
    register_secret(password)
    url = str(props.get("JDBC_CONNECTION_URL") or "")
    if not url.startswith("jdbc:postgresql://"):
        raise SourceError(
            f"source {source.name}: the Glue connection {name!r} is not a PostgreSQL connection "
            f"({redact(url.split('//')[0]) or 'no JDBC_CONNECTION_URL'})",
            hint="tidemark reads PostgreSQL connections; exclude the table",
        )
    user = props.get("USERNAME")
    if props.get("SECRET_ID"):
        secret = props["SECRET_ID"]
        password = password or secret_password(secret, source.name)
        if not user:
            try:
                with sdk_bodies_unlogged():
                    value = aws_client("secretsmanager").get_secret_value(SecretId=secret).get("SecretString")
                user = json.loads(value).get("username")
            except Exception:
                user = None
    if not user:
        raise SourceError(
            f"source {source.name}: the Glue connection {name!r} names no user",
            hint="set USERNAME on the connection, or a SECRET_ID whose JSON has a username",
        )
    register_secret(password)
    if password:
        register_secret(quote(password, safe=""))
    host, port, db, params = parse_jdbc_url(url)
    conn = PgConnection(host, port, db, str(user), password, params)
    return replace(conn, dbname=database) if database else conn


def _ids(source: GlueCatalogSourceConfig) -> dict[str, str]:
    return {"CatalogId": source.catalog_id} if source.catalog_id else {}


def _columns(cols: Sequence[Mapping[str, Any]]) -> tuple[GlueColumn, ...]:
    return tuple(GlueColumn(str(c["Name"]), str(c.get("Type") or "string")) for c in cols)


def _table(doc: Mapping[str, Any]) -> GlueTable:
    sd = doc.get("StorageDescriptor") or {}
    serde = sd.get("SerdeInfo") or {}
    return GlueTable(
        name=str(doc["Name"]),
        location=str(sd.get("Location") or ""),
        columns=_columns(sd.get("Columns") or []),
        partition_keys=_columns(doc.get("PartitionKeys") or []),
        parameters={**(sd.get("Parameters") or {}), **(doc.get("Parameters") or {})},
        input_format=str(sd.get("InputFormat") or ""),
        serde=str(serde.get("SerializationLibrary") or ""),
        serde_parameters=dict(serde.get("Parameters") or {}),
        table_type=str(doc.get("TableType") or ""),
    )


def catalog_tables(source: GlueCatalogSourceConfig, glue: Any | None = None) -> list[GlueTable]:
    """Every table of the source's database (paginated), without partitions."""
    glue = glue or glue_client(source)
    try:
        out = []
        for page in glue.get_paginator("get_tables").paginate(DatabaseName=source.database, **_ids(source)):
            out += [_table(t) for t in page.get("TableList", [])]
        return out
    except Exception as exc:
        raise SourceError(
            f"source {source.name}: cannot list the tables of Glue database {source.database}: "
            f"{type(exc).__name__}: {exc}",
            hint="check the database name, catalog_id, region, and glue:GetTables for this role",
        ) from None


def with_partitions(source: GlueCatalogSourceConfig, table: GlueTable, glue: Any | None = None) -> GlueTable:
    """The table with its partitions (paginated `get_partitions`); an unpartitioned table as it is."""
    if not table.partition_keys:
        return table
    glue = glue or glue_client(source)
    parts = []
    try:
        pages = glue.get_paginator("get_partitions").paginate(
            DatabaseName=source.database, TableName=table.name, **_ids(source)
        )
        for page in pages:
            for p in page.get("Partitions", []):
                sd = p.get("StorageDescriptor") or {}
                parts.append(
                    GluePartition(tuple(str(v) for v in p.get("Values", [])), str(sd.get("Location") or ""))
                )
    except Exception as exc:
        raise SourceError(
            f"source {source.name}: cannot list the partitions of {source.database}.{table.name}: "
            f"{type(exc).__name__}: {exc}",
            hint="check glue:GetPartitions for this role",
        ) from None
    parts.sort(key=lambda p: p.values)
    return replace(table, partitions=tuple(parts))


def _s3_url(location: str) -> str:
    """`s3a://` and `s3n://` locations (Hadoop's spellings) as `s3://`."""
    for scheme in ("s3a://", "s3n://"):
        if location.startswith(scheme):
            return "s3://" + location[len(scheme) :]
    return location


def _data_file(name: str) -> bool:
    """Hadoop and Spark markers (`_SUCCESS`, `_metadata`, `.crc`, `_$folder$`) are not data."""
    base = name.rsplit("/", 1)[-1]
    return bool(base) and not base.startswith(("_", ".")) and not base.endswith(("_$folder$", ".crc"))


def list_location(location: str) -> list[FileFacts]:
    """Data files under a table or partition location (an `s3://` prefix or a folder), with the facts the
    file ledger keeps: path, size, last-modified and ETag. `relpath` is the file's full URL or path."""
    root = _s3_url(location).rstrip("/")
    if not root:
        return []
    if not root.startswith("s3://"):
        base = Path(root.removeprefix("file://"))
        if not base.is_dir():
            raise SourceError(f"catalog location {location} is not a folder")
        out = []
        for p in sorted(base.rglob("*")):
            if p.is_file() and _data_file(p.relative_to(base).as_posix()):
                st = p.stat()
                out.append(FileFacts(str(p), str(p), st.st_size, st.st_mtime_ns))
        return out
    bucket, prefix = split_s3(root + "/")
    out = []
    try:
        paginator = s3_client().get_paginator("list_objects_v2")
        for page in s3_retry(lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix)))():
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/") or not _data_file(key[len(prefix) :]):
                    continue
                url = f"s3://{bucket}/{key}"
                mtime = int(obj["LastModified"].timestamp() * 1_000_000_000)
                etag = str(obj.get("ETag", "")).strip('"') or None
                out.append(FileFacts(url, url, int(obj["Size"]), mtime, etag))
    except Exception as exc:
        raise SourceError(
            f"cannot list the files under {location}: {type(exc).__name__}: {exc}",
            hint="check the bucket, the credentials and s3:ListBucket on the table's location",
        ) from None
    return sorted(out)


def list_table_files(spec: CatalogSpec) -> list[CatalogFile]:
    """Every data file of a table: under its location, or under each partition's with the partition's
    values (a partition listed twice, or a file under two partitions, is read once)."""
    if not spec.partitioned:
        return [CatalogFile(f) for f in list_location(spec.location)]
    seen: dict[str, CatalogFile] = {}
    for part in spec.partitions:
        values = partition_columns(spec, part)
        for f in list_location(part.location):
            seen.setdefault(f.relpath, CatalogFile(f, values))
    return sorted(seen.values(), key=lambda f: f.facts.relpath)


# --- reading ---------------------------------------------------------------------------------------------


def arrow_type(ltype: str) -> pa.DataType:
    """The Arrow type of a landed type."""
    import pyarrow as pa

    if ltype.startswith("decimal("):
        p, _, s = ltype[len("decimal(") : -1].partition(",")
        return pa.decimal128(int(p), int(s or 0))
    return {
        "bigint": pa.int64(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        "timestamptz": pa.timestamp("us", tz="UTC"),
        "string": pa.string(),
    }[ltype]


def lake_type(t: pa.DataType, where: str) -> str:
    """The landed type of an Arrow type read from a file (no value changes on the way)."""
    import pyarrow.types as pt

    if pt.is_integer(t) and not pt.is_uint64(t):
        return "bigint"
    if pt.is_floating(t):
        return "double"
    if pt.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pt.is_boolean(t):
        return "boolean"
    if pt.is_date(t):
        return "date"
    if pt.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    if pt.is_string(t) or pt.is_large_string(t) or (hasattr(pt, "is_string_view") and pt.is_string_view(t)):
        return "string"
    if pt.is_null(t):
        return "string"
    raise SchemaError(
        f"{where}: Arrow type {t} has no landed equivalent",
        hint="exclude the table, or store the column as a string, number or time",
    )


def read_file(spec: CatalogSpec, f: CatalogFile) -> tuple[pa.Table, list[Reject]]:
    """One Parquet or JSON-lines file as Arrow, columns cleaned to the landed names, partition values
    added as columns (typed as the catalog declares the key), `_source_file` the file's path and `_line`
    the row's line (JSON lines: the physical 1-based line; Parquet: the 1-based row number in the file);
    and the file's rejected lines (`plan.json_lines`: malformed JSON, values that don't fit the catalog's
    type). Nested Parquet columns land as their JSON text."""
    import pyarrow as pa

    from ingestion.plan.normalize import clean_header

    path = f.facts.path
    rejects: list[Reject] = []
    try:
        if spec.format == "parquet":
            data = _read_parquet(path)
        else:
            data, rejects = _read_json_lines(spec, f)
    except Exception as exc:
        raise SourceError(
            f"{spec.source}.{spec.name}: cannot read {path} as {spec.format}: {type(exc).__name__}: {exc}",
            hint="check the file and the table's format in the catalog",
        ) from None
    lines = data.column(LINE)
    data = data.drop_columns([LINE])
    names = clean_header(data.column_names, file=path)
    data = data.rename_columns(names)
    n = data.num_rows
    for key, value in f.partition:
        ptype = arrow_type(spec.columns[key])
        column = pa.array([value] * n, pa.string())
        try:
            typed = column.cast(ptype) if ptype != pa.string() else column
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise SchemaError(
                f"{spec.source}.{spec.name}: partition value {key}={value!r} is not a {spec.columns[key]}",
                hint="fix the partition or the partition key's type in the catalog",
            ) from None
        if key in data.column_names:
            data = data.drop_columns([key])
        data = data.append_column(key, typed)
    data = data.append_column("_source_file", pa.array([f.facts.relpath] * n, pa.string()))
    return data.append_column(LINE, lines), rejects


def _read_parquet(path: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyarrow.types as pt

    fs, key = lakefs.filesystem(path)
    with fs.open_input_file(key) as fh:
        data = pq.read_table(fh)
    for i, fld in enumerate(data.schema):
        if (
            pt.is_struct(fld.type)
            or pt.is_list(fld.type)
            or pt.is_large_list(fld.type)
            or pt.is_map(fld.type)
        ):
            text = [None if v is None else json_text(_plain(v, fld.type)) for v in data.column(i).to_pylist()]
            data = data.set_column(i, fld.name, pa.array(text, pa.string()))
    return data.append_column(LINE, pa.array(range(1, data.num_rows + 1), pa.int64()))


def _plain(value: Any, t: pa.DataType) -> Any:
    """A nested Parquet value as JSON-ready Python (maps as objects, times as ISO text), as Spark's
    `to_json` writes it."""
    import datetime as dt

    import pyarrow.types as pt

    if value is None:
        return None
    if pt.is_struct(t):
        return {
            t.field(i).name: _plain(value.get(t.field(i).name), t.field(i).type) for i in range(t.num_fields)
        }
    if pt.is_map(t):
        return {str(k): _plain(v, t.item_type) for k, v in value}
    if pt.is_list(t) or pt.is_large_list(t):
        return [_plain(v, t.value_type) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _decimals_fit(data: pa.Table) -> bool:
    """Every decimal value of the table within its column's precision."""
    from decimal import Decimal

    import pyarrow.compute as pc
    import pyarrow.types as pt

    for col in data.columns:
        if pt.is_decimal(col.type) and col.null_count < len(col):
            limit = Decimal(10) ** (col.type.precision - col.type.scale)
            low, high = pc.min_max(col).values()
            if abs(low.as_py()) >= limit or abs(high.as_py()) >= limit:
                return False
    return True


def _read_json_lines(spec: CatalogSpec, f: CatalogFile) -> tuple[pa.Table, list[Reject]]:
    """A JSON-lines file: pyarrow's reader when every line is good (and each is a row), else line by line
    with `plan.json_lines` (the same rule the Spark engine applies), keeping each bad line as a reject."""
    import pyarrow as pa
    import pyarrow.json as pj

    fields = [
        (raw, name, spec.columns[name]) for raw, name in zip(spec.raw_columns, spec.columns, strict=False)
    ]
    schema = pa.schema([(raw, arrow_type(t)) for raw, _, t in fields])
    with lakefs.open_input(f.facts.path) as fh:
        body = fh.read()
    lines = split_lines(body)
    try:
        data = pj.read_json(
            pa.BufferReader(body),
            parse_options=pj.ParseOptions(
                explicit_schema=schema,
                unexpected_field_behavior="ignore",  # the catalog's columns, as Athena and Spark read it
            ),
        )
        # No blank line (row i is line i + 1), and no decimal past its precision (pyarrow's reader lets
        # 12345678901.5 into a decimal(12,2)): else line by line, which rejects it.
        if data.num_rows == len(lines) and _decimals_fit(data):
            return data.append_column(LINE, pa.array(range(1, len(lines) + 1), pa.int64())), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    rows: list[tuple[Any, ...]] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    for number, text in enumerate(lines, 1):
        row, bad = parse_line(text, fields)
        if bad is not None:
            code, reason, column = bad
            rejects.append(Reject(f.facts.relpath, number - 1, code, reason, column, text, line=number))
        elif row is not None:
            rows.append(row)
            numbers.append(number)
    columns = [pa.array([r[i] for r in rows], schema.field(i).type) for i in range(len(fields))]
    data = pa.Table.from_arrays([*columns, pa.array(numbers, pa.int64())], names=[*schema.names, LINE])
    return data, rejects


def conform(tables: Sequence[tuple[str, pa.Table]], types: Mapping[str, str]) -> pa.Table:
    """The files' rows as one table of `types` (columns a file lacks are null; widened types cast, never
    narrowed: `fold_types` chose only widenings)."""
    import pyarrow as pa

    schema = pa.schema(
        [(c, arrow_type(t)) for c, t in types.items()] + [("_source_file", pa.string()), (LINE, pa.int64())]
    )
    out = []
    for path, t in tables:
        cols = []
        for fld in schema:
            if fld.name in t.column_names:
                col = t.column(fld.name)
                if fld.name == LINE:
                    cols.append(col)
                    continue
                try:
                    cols.append(col.cast(fld.type, safe=True) if col.type != fld.type else col)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise SchemaError(
                        f"{path}: column {fld.name} cannot widen to {types[fld.name]}: {exc}"
                    ) from None
            else:
                cols.append(pa.nulls(t.num_rows, fld.type))
        out.append(pa.Table.from_arrays(cols, schema=schema))
    return pa.concat_tables(out) if out else schema.empty_table()


def file_types(data: pa.Table, where: str) -> dict[str, str]:
    """The landed type of each data column of a read file."""
    return {
        name: lake_type(data.schema.field(name).type, f"{where}: column {name}")
        for name in data.column_names
        if name not in ("_source_file", LINE)
    }


def null_key_rejects(
    files: Sequence[tuple[str, pa.Table]],
    keys: Sequence[str],
    parsed: Mapping[str, Sequence[Reject]],
    max_fraction: float = 1.0,
) -> tuple[pa.Table | None, Quarantine]:
    """The files' rows without those whose key has a null column (rejected, with the row as JSON: a NULL
    key is never a merge group), and the quarantine that records them, the lines the reader rejected
    (`parsed`) and each file's counts (read = landable + rejected). A file whose share of rejected rows
    exceeds `max_fraction` is refused: none of its rows are returned, its rejects are kept."""
    import json

    import pyarrow as pa
    import pyarrow.compute as pc

    q = Quarantine()
    kept: list[tuple[str, pa.Table]] = []
    for path, data in files:
        bad_lines = list(parsed.get(path, ()))
        q.rejects += bad_lines
        counts = q.files[path] = FileCounts(
            path, read=data.num_rows + len(bad_lines), accepted=data.num_rows, rejected=len(bad_lines)
        )
        if keys and data.num_rows:
            nulls = [pc.is_null(data.column(k)) for k in keys]
            bad = nulls[0]
            for more in nulls[1:]:
                bad = pc.or_(bad, more)
            rows = [i for i, b in enumerate(bad.to_pylist()) if b]
            for i in rows:
                row = data.slice(i, 1).to_pylist()[0]
                column = next(k for k in keys if row.get(k) is None)
                row.pop("_source_file", None)
                line = row.pop(LINE)
                raw = json.dumps(row, default=str)
                q.rejects.append(
                    Reject(
                        path, line - 1, NULL_KEY, f"primary key column {column} is null", column, raw, line
                    )
                )
            if rows:
                data = data.filter(pc.invert(bad))
            counts.rejected += len(rows)
        counts.landable = data.num_rows
        kept.append((path, data))
    refused = refuse_files(q, max_fraction)
    landing = [data for path, data in kept if path not in refused]
    return (pa.concat_tables(landing) if landing else None), q
