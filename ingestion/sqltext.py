"""SQL text, once: string literals and identifier quoting for DuckDB, Spark SQL, PostgreSQL and Redshift.

Identifiers reaching SQL come from configs, CSV headers or a database catalog: they are always quoted
here, never pasted in.
"""

from __future__ import annotations


def sql_string(value: str, *, backslash_escapes: bool = False) -> str:
    """A SQL string literal; `backslash_escapes` for dialects that read `\\` as an escape (Redshift)."""
    if backslash_escapes:
        value = value.replace("\\", "\\\\")
    return "'" + value.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    """A double-quoted identifier: DuckDB, PostgreSQL and Redshift."""
    return '"' + name.replace('"', '""') + '"'


def quote_spark(name: str) -> str:
    """A back-quoted Spark SQL identifier."""
    return "`" + name.replace("`", "``") + "`"
