"""The pipeline config (`ingestion.yml`): parsing, `${VAR}` interpolation, per-env overrides, validation."""

from __future__ import annotations

import copy
import fnmatch
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ingestion.errors import ConfigError

DEFAULT_CONFIG = "ingestion.yml"
ENV_CONFIG = "TIDEMARK_CONFIG"
ENV_ENV = "TIDEMARK_ENV"
ENV_LAKE = "TIDEMARK_LAKE"

# Names that end up in paths, SQL identifiers and dbt source names.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]*$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Engine = Literal["duckdb", "spark"]
LoadType = Literal["auto", "full", "incremental"]
# What a run does once `auto` is resolved against the table's state.
Effective = Literal["full", "incremental"]
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def _identifier(value: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use lowercase letters, digits and '_', starting with a letter"
        )
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=63)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Model):
    """How the CSV files of one table are written."""

    delimiter: str = Field(",", min_length=1, max_length=1)
    quote: str = Field('"', min_length=1, max_length=1)
    escape: str = Field('"', min_length=1, max_length=1)
    header: bool = True
    # utf-8 also reads files that start with a byte-order mark (utf-8-sig is accepted as a synonym).
    encoding: Literal["utf-8", "utf-8-sig", "latin-1", "utf-16"] = "utf-8"
    null_values: tuple[str, ...] = ("",)
    multiline: bool = Field(
        True,
        description="quoted fields may hold line breaks; on Spark, false lets big files split across tasks",
    )
    date_format: str | None = Field(None, description="strftime format of date columns, e.g. '%d/%m/%Y'")
    timestamp_format: str | None = Field(
        None, description="strftime format of timestamp columns, e.g. '%d/%m/%Y %H:%M:%S'"
    )
    timezone: str | None = Field(
        None,
        description="IANA zone of timestamps written without an offset: they land as UTC timestamptz",
    )

    @field_validator("date_format", "timestamp_format")
    @classmethod
    def _format(cls, v: str | None) -> str | None:
        if v is not None:
            from ingestion.formats import to_java_pattern

            to_java_pattern(v)  # raises ValueError naming the unsupported directive
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return _zone_name(v)


def _zone_name(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{v!r} is not an IANA time zone name (e.g. UTC, Europe/Berlin)") from None
    return v


# Types a table may declare for its columns (`columns:`); the landed Parquet types follow them.
DECLARABLE_TYPES = ("boolean", "bigint", "decimal", "double", "date", "timestamp", "timestamptz", "string")


class CsvTableConfig(_Model):
    """One table landed from the CSV files of a source that match `pattern`."""

    name: Identifier
    pattern: str | None = Field(None, description="glob relative to the source path; default '<name>*.csv'")
    primary_key: tuple[Identifier, ...] = ()
    cursor: Identifier | None = None
    load_type: LoadType = "auto"
    lookback: str | float = Field(
        0,
        description="re-read this much before the watermark: a duration ('90s', '15m', '2h', '1d') for "
        "time cursors, a number for numeric ones",
    )
    cursor_timezone: str | None = Field(None, description="IANA zone of a timestamp cursor without offset")
    csv: CsvOptions = CsvOptions()
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="declared types by cleaned column name (boolean, bigint, decimal, double, date, "
        "timestamp, timestamptz, string); other columns are inferred",
    )
    max_rejected_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="a file with a larger share of rejected rows is not landed and goes to unprocessed/",
    )
    double_as_decimal: bool = Field(
        True, description="land non-integer numbers as decimal(38,18) when they fit (key columns excepted)"
    )
    decimal_keys: bool = Field(False, description="also turn key columns holding doubles into decimal(38,18)")

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, v: str | float) -> str | float:
        if isinstance(v, str) and not DURATION.fullmatch(v.strip()):
            raise ValueError(f"{v!r} is not a duration: write e.g. '90s', '15m', '2h' or '1d'")
        if not isinstance(v, str) and v < 0:
            raise ValueError("lookback cannot be negative")
        return v

    @field_validator("cursor_timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return _zone_name(v)

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: dict[str, str]) -> dict[str, str]:
        for name, kind in v.items():
            _identifier(name)
            if kind not in DECLARABLE_TYPES:
                raise ValueError(f"column {name}: type {kind!r} is not one of {', '.join(DECLARABLE_TYPES)}")
        return v

    @field_validator("name", "cursor")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v)

    @field_validator("primary_key", mode="before")
    @classmethod
    def _key(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("primary_key")
    @classmethod
    def _key_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            _identifier(name)
        if len(set(v)) != len(v):
            raise ValueError(f"primary_key lists a column twice: {list(v)}")
        return v

    @property
    def glob(self) -> str:
        return self.pattern or f"{self.name}*.csv"


class ArchiveConfig(_Model):
    """Where processed files go after the commit: `archive/<yyyy>/<mm>/` or `unprocessed/<yyyy>/<mm>/`."""

    enabled: bool = Field(True, description="false for read-only inboxes: files stay, the ledger skips them")
    root: str | None = Field(
        None, description="folder or s3:// prefix holding archive/ and unprocessed/; default: the source path"
    )


class CsvSourceConfig(_Model):
    """A folder or `s3://bucket/prefix` of CSV drops."""

    name: Identifier
    kind: Literal["csv"]
    path: str
    archive: ArchiveConfig = ArchiveConfig()
    tables: tuple[CsvTableConfig, ...] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v)

    @model_validator(mode="after")
    def _unique_tables(self) -> CsvSourceConfig:
        names = [t.name for t in self.tables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"table names must be unique within a source; repeated: {dupes}")
        for a, b in overlapping_defaults(self.tables):
            logging.getLogger("tidemark").warning(
                "source %s: table %s's default pattern %r also matches table %s's files (%r); a file both "
                "match is refused. Give the tables explicit patterns that don't overlap",
                self.name,
                a.name,
                a.glob,
                b.name,
                b.glob,
            )
        return self


def overlapping_defaults(tables: tuple[CsvTableConfig, ...]) -> list[tuple[CsvTableConfig, CsvTableConfig]]:
    """Pairs (a, b) where a's default pattern `<a>*.csv` matches b's default file names (`order`, `orders`)."""
    return [
        (a, b)
        for a in tables
        for b in tables
        if a is not b and a.pattern is None and fnmatch.fnmatchcase(f"{b.name}_1.csv", a.glob)
    ]


DEFAULT_DRIVER_JAR = "/usr/share/java/postgresql.jar"


class _TableSettings(_Model):
    """What a discovered table (PostgreSQL, Glue catalog) may set for itself; the rest is the source's."""

    name: Identifier
    primary_key: tuple[Identifier, ...] | None = None
    cursor: Identifier | None = Field(
        None, description="default: the source's `cursor` when the table has it"
    )
    full_load: bool = Field(False, description="no cursor: every run lands the whole table")
    cursor_timezone: str | None = None
    lookback: str | float | None = None
    load_type: LoadType = "auto"

    @field_validator("cursor_timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return CsvTableConfig._zone(v)

    @field_validator("name", "cursor")
    @classmethod
    def _names(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v)

    @field_validator("primary_key", mode="before")
    @classmethod
    def _key(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, v: str | float | None) -> str | float | None:
        return v if v is None else CsvTableConfig._lookback(v)


class JdbcTableConfig(_TableSettings):
    """Settings for one PostgreSQL table; anything left out comes from the source's defaults."""

    primary_key: tuple[Identifier, ...] | None = Field(None, description="default: the table's PK constraint")
    detect_deletes: bool | None = None
    num_partitions: int | None = Field(None, ge=1, le=256)
    partition_column: Identifier | None = None
    fetchsize: int | None = Field(None, ge=1)

    @field_validator("partition_column")
    @classmethod
    def _partition_column(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v)


class JdbcSourceConfig(_Model):
    """A PostgreSQL database read through JDBC (Spark) or an Arrow-native reader (DuckDB engine).

    The password never sits in the config: it is read from the environment variable `password_env`
    (or written as `${VAR}`, which is interpolated from the environment when the config loads).
    """

    name: Identifier
    kind: Literal["jdbc"]
    url: str = Field(description="jdbc:postgresql://host[:port]/database[?options]")
    user: str
    password_env: str | None = Field("PGPASSWORD", description="environment variable holding the password")
    password: str | None = Field(None, repr=False, description="prefer password_env or ${VAR}")
    password_secret: str | None = Field(
        None,
        description="AWS Secrets Manager secret (name or ARN) holding the password: the secret string, or "
        'JSON with a "password" key (as RDS secrets are); read when password and password_env give none',
    )
    schema_: str = Field("public", alias="schema")
    tables: tuple[JdbcTableConfig, ...] | None = Field(None, description='"*" (None): every table found')
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    pk_registry: str | None = Field(None, description="CSV file with columns table,primary_key (seed 1)")
    # Defaults for every table of the source.
    cursor: Identifier = "updated_at"
    cursor_timezone: str | None = None
    lookback: str | float = "0s"
    detect_deletes: bool = False
    num_partitions: int = Field(1, ge=1, le=256)
    fetchsize: int = Field(10000, ge=1)
    connect_timeout: int = Field(10, ge=1, le=600, description="seconds per connection attempt")
    retries: int = Field(3, ge=0, le=20, description="extra attempts after a failed connection")
    driver_jar: str | None = Field(DEFAULT_DRIVER_JAR, description="PostgreSQL JDBC jar for the Spark engine")
    driver_packages: str | None = Field(None, description="Maven coordinates instead of a jar path")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("cursor_timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return CsvTableConfig._zone(v)

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, v: str | float) -> str | float:
        return CsvTableConfig._lookback(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith("jdbc:postgresql://"):
            raise ValueError("expected a PostgreSQL JDBC URL: jdbc:postgresql://host:5432/database")
        return v

    @field_validator("tables", mode="before")
    @classmethod
    def _tables(cls, v: Any) -> Any:
        # "*" is every table; a plain list of names is shorthand for [{name: …}, …].
        if v == "*":
            return None
        if isinstance(v, list):
            return [{"name": t} if isinstance(t, str) else t for t in v]
        return v

    @property
    def schema(self) -> str:  # type: ignore[override]
        """The PostgreSQL schema the tables live in."""
        return self.schema_

    def table_config(self, name: str) -> JdbcTableConfig | None:
        """The explicit settings of a table, if the config lists it."""
        if self.tables is None:
            return None
        return next((t for t in self.tables if t.name == name), None)


class CatalogTableConfig(_TableSettings):
    """Settings for one table of a Glue Data Catalog database; anything left out comes from the source."""

    primary_key: tuple[Identifier, ...] | None = Field(
        None, description="default: the table's parameters (primary_key), then the source's pk_registry"
    )
    cursor: Identifier | None = Field(
        None, description="default: the source's `cursor` when the table has it, else new files/partitions"
    )
    full_load: bool = Field(False, description="no cursor and no file tracking: every run lands all of it")
    max_rejected_fraction: float | None = Field(
        None, ge=0, le=1, description="default: the source's; a file with a larger share is refused"
    )


class GlueCatalogSourceConfig(_Model):
    """Every table of a Glue Data Catalog (Athena) database: S3 data a crawler registered, read from each
    table's location in the format the catalog gives (Parquet, CSV, JSON lines); a table whose entry is a
    JDBC connection is read through the PostgreSQL path."""

    name: Identifier
    kind: Literal["glue_catalog"]
    database: str = Field(min_length=1, description="the Glue database to read (seeds: --database_name)")
    catalog_id: str | None = Field(None, description="AWS account id of the catalog; default: the caller's")
    region: str | None = Field(None, description="default: the environment's AWS region")
    tables: tuple[CatalogTableConfig, ...] | None = Field(None, description='"*" (None): every table found')
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    pk_registry: str | None = Field(
        None,
        description="CSV with columns table,primary_key; an s3:// or folder prefix ending in '/' means the "
        "latest CSV under it (seeds: --primary_key_s3_prefix)",
    )
    # Defaults for every table of the source.
    cursor: Identifier = "updated_at"
    cursor_timezone: str | None = None
    lookback: str | float = "0s"
    max_rejected_fraction: float = Field(
        1.0,
        ge=0,
        le=1,
        description="a file (CSV, JSON lines, Parquet) with a larger share of rejected rows is refused: "
        "none of its rows land and it is retried next run; default 1: no file is refused",
    )

    @field_validator("cursor_timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        return CsvTableConfig._zone(v)

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, v: str | float) -> str | float:
        return CsvTableConfig._lookback(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v)

    @field_validator("tables", mode="before")
    @classmethod
    def _tables(cls, v: Any) -> Any:
        if v == "*":
            return None
        if isinstance(v, list):
            return [{"name": t} if isinstance(t, str) else t for t in v]
        return v

    def table_config(self, name: str) -> CatalogTableConfig | None:
        """The explicit settings of a table, if the config lists it."""
        if self.tables is None:
            return None
        return next((t for t in self.tables if t.name == name), None)


SourceConfig = Annotated[
    CsvSourceConfig | JdbcSourceConfig | GlueCatalogSourceConfig, Field(discriminator="kind")
]


class LakeConfig(_Model):
    """Where landed Parquet, state, rejected rows, audit rows and logs live."""

    root: str = "./lake"


class SparkConfig(_Model):
    """Spark session settings for `engine: spark` (ignored on Glue/EMR, where the session exists)."""

    master: str = "local[*]"
    app_name: str = "tidemark"
    conf: dict[str, str] = Field(default_factory=dict)
    one_pass: bool = Field(
        True,
        description="land a CSV batch in one read when every value bears out what its files' first rows "
        "show (the same result as the passes, which run instead when it does not); false: always in passes",
    )


class DuckDBConfig(_Model):
    """DuckDB settings for `engine: duckdb`: how much memory it may use, and where it spills beyond that."""

    memory_limit: str | None = Field(
        None,
        pattern=r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$",
        description="DuckDB's memory_limit (e.g. '4GB'); default: half the machine's RAM",
    )
    temp_directory: str | None = Field(
        None,
        description="where DuckDB spills what does not fit in memory_limit (a folder of its own is made "
        "inside and removed at the end of the run); default: the system's temporary folder",
    )
    threads: int | None = Field(None, ge=1, le=1024, description="DuckDB's threads; default: the CPU count")
    one_pass: bool = Field(
        True,
        description="land a CSV file in one read when every value bears out what its first rows show (the "
        "same result as the passes, which run instead when it does not); false: always land in passes",
    )


class CatalogConfig(_Model):
    """Glue Data Catalog registration of landed tables after each commit (off unless `glue_database` is set)."""

    glue_database: str | None = Field(
        None, description="database to register into; `{source}` is replaced by the source name"
    )
    glue_table: str = Field("{table}", description="table name; `{source}` and `{table}` are replaced")


class PipelineConfig(_Model):
    """The whole pipeline: what to land, where, and with which engine."""

    pipeline: Identifier
    env: str = "dev"
    engine: Engine = "duckdb"
    lake: LakeConfig = LakeConfig()
    spark: SparkConfig = SparkConfig()
    duckdb: DuckDBConfig = DuckDBConfig()
    catalog: CatalogConfig = CatalogConfig()
    max_parallel_tables: int = Field(2, ge=1, le=64, description="tables landed at the same time")
    lease_ttl_seconds: int = Field(3600, ge=10, description="a run's claim on a table lapses after this")
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    # Kept for reference only: overrides are merged before validation.
    environments: dict[str, dict[str, Any]] = Field(default_factory=dict)
    config_path: Path | None = Field(None, exclude=True)

    @field_validator("pipeline")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v)

    @model_validator(mode="after")
    def _unique_sources(self) -> PipelineConfig:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        return self

    @property
    def base_dir(self) -> Path:
        return self.config_path.parent if self.config_path else Path.cwd()

    def resolve(self, path: str) -> str:
        """Resolve a path from the config relative to the config file's folder; URLs pass through."""
        if "://" in path:
            return path
        p = Path(path).expanduser()
        return str(p if p.is_absolute() else (self.base_dir / p).resolve())

    @property
    def lake_root(self) -> str:
        return self.resolve(self.lake.root)

    def csv_tables(self) -> list[tuple[CsvSourceConfig, CsvTableConfig]]:
        """The configured CSV tables; PostgreSQL tables are in `ingestion.inventory.inventory`."""
        return [(s, t) for s in self.sources if isinstance(s, CsvSourceConfig) for t in s.tables]

    def jdbc_sources(self) -> list[JdbcSourceConfig]:
        """The PostgreSQL sources."""
        return [s for s in self.sources if isinstance(s, JdbcSourceConfig)]

    def catalog_sources(self) -> list[GlueCatalogSourceConfig]:
        """The Glue Data Catalog sources."""
        return [s for s in self.sources if isinstance(s, GlueCatalogSourceConfig)]


def interpolate(value: Any, where: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML document."""
    if isinstance(value, dict):
        return {k: interpolate(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{where}: environment variable {name} is not set",
            hint=f"export {name}=… or write ${{{name}:-default}} in the config",
        )

    return _VAR.sub(sub, value)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge `override` into a copy of `base`: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _location(loc: tuple[Any, ...], doc: dict[str, Any]) -> str:
    """Turn a pydantic error location into `sources[0](billing).tables[1](accounts).primary_key`."""
    parts: list[str] = []
    node: Any = doc
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item}]"]
            node = node[item] if isinstance(node, list) and item < len(node) else None
            if isinstance(node, dict) and "name" in node:
                parts[-1] += f"({node['name']})"
        elif item in ("csv", "jdbc", "glue_catalog") and parts and parts[-1].startswith("sources"):
            continue  # the discriminator tag pydantic adds for tagged unions
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


# Keys whose values are never echoed in an error (the value may be an interpolated secret).
_SECRET_KEY = re.compile(r"(?i)pass|secret|token|api_?key|access_key|private_key|credential|auth")


def _shown_input(err: Any) -> str:
    """` (got …)` for a scalar input of a key that is not a secret; nothing for mappings and lists
    (a whole source would echo every value in it, passwords included)."""
    value = err.get("input")
    if err["type"] == "missing" or isinstance(value, (dict, list, tuple)):
        return ""
    if any(isinstance(part, str) and _SECRET_KEY.search(part) for part in err["loc"]):
        return " (value hidden: a secret key)"
    return f" (got {value!r})"


def _is_cascade(err: Any, errors: list[Any]) -> bool:
    """A length error on a list whose own items failed: pydantic's echo of those failures."""
    loc = tuple(err["loc"])
    return err["type"] == "too_short" and any(
        len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc for other in errors
    )


def parse_config(doc: Any, *, source: str = DEFAULT_CONFIG, env: str | None = None) -> PipelineConfig:
    """Validate a parsed config document, applying `${VAR}` interpolation and the env's overrides."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(doc).__name__}")
    # The environment is chosen first and only its overrides are interpolated: a variable that only
    # another environment uses need not be set.
    chosen = env or os.environ.get(ENV_ENV) or interpolate(doc.get("env"), "env") or "dev"
    environments = doc.get("environments") or {}
    if not isinstance(environments, dict):
        raise ConfigError(f"{source}: environments: expected a mapping of env name to overrides")
    base = {k: v for k, v in doc.items() if k != "environments"}
    if chosen in environments:
        override = environments[chosen] or {}
        base = deep_merge(base, {k: v for k, v in override.items() if k != "environments"})
    elif environments and chosen != doc.get("env", "dev"):
        raise ConfigError(
            f"{source}: env {chosen!r} is not defined",
            hint=f"use one of {sorted(environments)} or add environments.{chosen} to the config",
        )
    doc = interpolate(base)
    doc["environments"] = environments  # kept for reference only, never interpolated
    doc["env"] = chosen
    if os.environ.get(ENV_LAKE):
        doc.setdefault("lake", {})
        doc["lake"] = {**(doc["lake"] or {}), "root": os.environ[ENV_LAKE]}
    try:
        return PipelineConfig.model_validate(doc)
    except ValidationError as exc:
        lines = []
        errors = exc.errors()
        for err in errors:
            if _is_cascade(err, errors):
                continue
            where = _location(err["loc"], doc) or "(top level)"
            lines.append(f"  {where}: {err['msg']}{_shown_input(err)}")
        raise ConfigError(
            f"{source} is not a valid tidemark config:\n" + "\n".join(lines),
            hint="see ingestion.yml in the tidemark repository for a complete example",
        ) from None


def load_config(path: str | Path | None = None, *, env: str | None = None) -> PipelineConfig:
    """Read, interpolate and validate a config file (default: `$TIDEMARK_CONFIG` or `./ingestion.yml`)."""
    cfg_path = Path(path or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG)
    if not cfg_path.is_file():
        raise ConfigError(
            f"config file {cfg_path} not found",
            hint="pass --config PATH, set TIDEMARK_CONFIG, or run from the folder holding ingestion.yml",
        )
    try:
        doc = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML: {exc}") from None
    cfg = parse_config(doc, source=str(cfg_path), env=env)
    return cfg.model_copy(update={"config_path": cfg_path.resolve()})
