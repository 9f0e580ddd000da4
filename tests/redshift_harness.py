"""SQL shims that make a PostgreSQL database answer the Redshift-only catalog calls dbt-redshift makes.

Together with tests/redshift_proxy.py (wire-level fixes), the real dbt-redshift adapter can build the
project against PostgreSQL. What they stand in for, and what they don't:

- `pg_get_late_binding_view_cols()`: no rows. PostgreSQL views are always bound, so information_schema
  already lists their columns. The late-binding clause of `bind: false` views (`with no schema binding`)
  is removed by the proxy: PostgreSQL has none, so late binding itself is not exercised.
- `pg_catalog.svv_external_columns`: empty (no Spectrum tables here).
- `getdate()`: the current UTC time as `timestamp`, like Redshift's.
- `dateadd(text, bigint, timestamp…)`: Redshift's date arithmetic (the proxy quotes the bare date part).
- `svv_table_info`: an empty view, so `dbt docs generate` takes the extended-catalog path.
- `redshift_refuses(text)`: raises its argument; the proxy calls it in place of a statement Redshift
  refuses and PostgreSQL would run (`redshift_proxy.redshift_refusal`: ALTER COLUMN TYPE beyond a varchar
  length, or inside a transaction block).
"""

from __future__ import annotations

SHIMS = [
    """create function public.pg_get_late_binding_view_cols() returns setof record language sql as $$
        select null::name, null::name, null::name, null::varchar, null::int where false
    $$""",
    "create function public.getdate() returns timestamp language sql stable as"
    " $$ select (now() at time zone 'utc')::timestamp $$",
    """create function public.dateadd(part text, n bigint, ts timestamp) returns timestamp
        language sql immutable as $$ select ts + (n || ' ' || part)::interval $$""",
    """create function public.dateadd(part text, n bigint, ts timestamptz) returns timestamptz
        language sql stable as $$ select ts + (n || ' ' || part)::interval $$""",
    """create view public.svv_table_info as select
        null::text as database, null::name as schema, null::oid as table_id, null::name as "table",
        null::text as encoded, null::text as diststyle, null::text as sortkey1, null::int as max_varchar,
        null::text as sortkey1_enc, null::int as sortkey_num, null::bigint as size, null::numeric as pct_used,
        null::numeric as unsorted, null::numeric as stats_off, null::numeric as tbl_rows,
        null::numeric as skew_sortkey1, null::numeric as skew_rows, null::numeric as estimated_visible_rows,
        null::text as risk_event, null::numeric as vacuum_sort_benefit
        where false""",
    """create function public.redshift_refuses(message text) returns void language plpgsql as $$
        begin raise exception '%', message using errcode = '0A000'; end $$""",
    # pg_catalog objects need allow_system_table_mods (a superuser setting, this session only).
    "set allow_system_table_mods = on",
    """create view pg_catalog.svv_external_columns as select
        null::name as schemaname, null::name as tablename, null::name as columnname,
        null::text as external_type, null::int as columnnum, null::int as part_key, null::int as is_nullable
        where false""",
    "grant select on pg_catalog.svv_external_columns to public",
]


def install_shims(conn) -> None:  # type: ignore[no-untyped-def]
    """Create the shims in the connected database (connect as a superuser, autocommit)."""
    for sql in SHIMS:
        conn.execute(sql)
