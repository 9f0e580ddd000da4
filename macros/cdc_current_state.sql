{% macro cdc_current_state(relation, cursor, lookback_hours=none) -%}
    {#- The body of a CDC model: one current row per unique_key (from the model's config) out of the
        landed history in `relation`, with `_is_deleted` / `_deleted_at` from `_op = 'd'` tombstones.

        - reads only rows landed since the newest landing time already merged, minus a lookback
          (filtering on `_ingested_at`, not on the source cursor, never skips late-arriving rows);
        - versions: one per key, the latest cursor, then latest `_ingested_at`, `_run_id`, `_source_file`;
        - no regression: a batch version older (by cursor) than the row the model holds never replaces it;
        - tombstones are ordered by landing time: the row is deleted when the newest tombstone for its key
          landed with or after the version it holds (a run reads its rows before the source's key set, so
          a tombstone of the same run is the later fact); a newer version landed later revives it.
      Before the statement, columns whose landed type grew (every widening the lake does: varchar length,
      integer sizes, → decimal, → double, date → timestamp, → timestamptz) are widened in the model's
      table (cdc_widen_columns): append_new_columns only adds columns. -#}
    {#- dbt unit tests don't pass the model's config or columns: their YAML sets the vars
        cdc_unique_key and cdc_columns (overrides: vars). -#}
    {%- set keys = config.get("unique_key") or var("cdc_unique_key", none) -%}
    {%- if keys is string -%}{%- set keys = [keys] -%}{%- endif -%}
    {%- if not keys and execute -%}
        {{ exceptions.raise_compiler_error("cdc_current_state: set unique_key in the model's config") }}
    {%- endif -%}
    {%- set keys = keys or ["unknown_at_parse_time"] -%}
    {%- set lookback = lookback_hours if lookback_hours is not none else var("cdc_lookback_hours", 3) -%}
    {%- set incremental = is_incremental() -%}

    {#- Column names and types come from the database; unit tests (where `relation` and `this` are
        fixture CTE names, plain strings) set var cdc_columns; offline (lint: var tidemark_offline)
        they come from the model's YAML. -#}
    {%- set online = execute and not var("tidemark_offline", false) -%}
    {%- set source_columns = adapter.get_columns_in_relation(relation) if online and relation is not string else [] -%}
    {%- set target_columns = adapter.get_columns_in_relation(this) if online and incremental and this is not string else [] -%}
    {%- set names = source_columns | map(attribute="name") | list -%}
    {%- if not names -%}
        {%- set names = var("cdc_columns", []) or (model.columns.keys() | reject("in", ["_is_deleted", "_deleted_at"]) | list) -%}
    {%- endif -%}
    {#- Widening alters the table, so only commands that write (not compile, docs or lint) do it. -#}
    {%- if source_columns and target_columns and flags.WHICH in ["run", "build", "retry"] -%}
        {%- do tidemark.cdc_widen_columns(source_columns, target_columns, this) -%}
    {%- endif -%}
    {#- The landing time to read from, fetched first and written as a literal: a constant filter reaches
        the Parquet scan, whose row-group statistics skip every file landed before it; the same filter as
        a subquery reads the whole landed history on every merge. None: the table holds no row yet, so
        everything landed is new. -#}
    {%- set cutoff = none -%}
    {%- if target_columns -%}
        {%- set cutoff_sql -%}
            select cast({{ dbt.dateadd("hour", -lookback, "greatest(max(_ingested_at), coalesce(max(_deleted_at), max(_ingested_at)))") }} as {{ dbt.type_string() }}) from {{ this }}
        {%- endset -%}
        {%- set cutoff = run_query(cutoff_sql).columns[0].values()[0] -%}
    {%- endif -%}
    {%- set target_names = target_columns | map(attribute="name") | map("lower") | list -%}
    {%- set source_types = {} -%}
    {%- for c in source_columns -%}{%- do source_types.update({c.name: c.data_type}) -%}{%- endfor -%}
    {%- set key_match = [] -%}
    {%- for key in keys -%}{%- do key_match.append("{a}." ~ key ~ " = {b}." ~ key) -%}{%- endfor -%}
    {%- set key_match = key_match | join(" and ") -%}

with

batch as (

    select
        {%- for name in names %}
        {{ adapter.quote(name) }}{{ "," if not loop.last }}
        {%- endfor %}
    from {{ relation }}
    {%- if incremental and target_columns %}
    {%- if cutoff is not none %}
    where _ingested_at >= cast('{{ cutoff }}' as {{ source_types["_ingested_at"] }})
    {%- endif %}
    {%- elif incremental %}
    where _ingested_at >= (
        select {{ dbt.dateadd("hour", -lookback, "greatest(max(_ingested_at), coalesce(max(_deleted_at), max(_ingested_at)))") }}
        from {{ this }}
    )
    {#- A table built while the lake held no rows (files with a header only) has no landing time yet:
        everything landed is new. -#}
    or not exists (select 1 from {{ this }})
    {%- endif %}

),

versions as (

    select
        batch.*,
        row_number() over (
            partition by {{ keys | join(", ") }}
            order by
                {{ cursor }} desc nulls last,
                _ingested_at desc,
                _run_id desc,
                _source_file desc nulls last
        ) as cdc_rank
    from batch
    where _op is null or _op <> 'd'

),

{%- if incremental %}

current_rows as (

    select
        {%- for name in names %}
        {%- if not target_names or name | lower in target_names %}
        current_row.{{ adapter.quote(name) }},
        {%- else %}
        cast(null as {{ source_types[name] }}) as {{ adapter.quote(name) }},
        {%- endif %}
        {%- endfor %}
        {#- the run stamps too: the final select takes them from here, not from a second scan of the table #}
        {%- for stamp in ["_dbt_invocation_id", "_dbt_first_invocation_id"] %}
        {%- if stamp in target_names %}
        current_row.{{ stamp }},
        {%- endif %}
        {%- endfor %}
        current_row._is_deleted,
        current_row._deleted_at
    from {{ this }} as current_row
    where exists (
        select 1 from batch
        where {{ key_match.format(a="batch", b="current_row") }}
    )

),

{%- endif %}

tombstones as (

    select
        {{ keys | join(", ") }},
        _ingested_at as tombstoned_at
    from batch
    where _op = 'd'
    {%- if incremental %}

    union all

    select
        {{ keys | join(", ") }},
        _deleted_at as tombstoned_at
    from current_rows
    where _is_deleted
    {%- endif %}

),

last_tombstone as (

    select
        {{ keys | join(", ") }},
        max(tombstoned_at) as tombstoned_at
    from tombstones
    group by {{ keys | join(", ") }}

),

candidates as (

    select
        {%- for name in names %}
        {{ adapter.quote(name) }},
        {%- endfor %}
        1 as cdc_from_batch
    from versions
    where cdc_rank = 1
    {%- if incremental %}

    union all

    select
        {%- for name in names %}
        {{ adapter.quote(name) }},
        {%- endfor %}
        0 as cdc_from_batch
    from current_rows
    {%- endif %}

),

winners as (

    {#- The no-regression guard: the held row stays unless a batch version has a cursor at least as new. #}
    select
        candidates.*,
        row_number() over (
            partition by {{ keys | join(", ") }}
            order by {{ cursor }} desc nulls last, cdc_from_batch desc, _ingested_at desc
        ) as cdc_rank
    from candidates

)

select
    {%- for name in names %}
    winners.{{ adapter.quote(name) }},
    {%- endfor %}
    {#- A tombstone landed with the version it deletes (same run: the key set is read after the rows)
        is the later fact, so equal landing times delete. #}
    coalesce(last_tombstone.tombstoned_at >= winners._ingested_at, false) as _is_deleted,
    case
        when last_tombstone.tombstoned_at >= winners._ingested_at then last_tombstone.tombstoned_at
    end as _deleted_at
    {#- run stamps for the audit's inserted/updated counts (audit_cdc_stamps) #}
    {{ audit_cdc_stamps("current_row" if incremental else none, "winners") }}
from winners
left join last_tombstone
    on {{ key_match.format(a="winners", b="last_tombstone") }}
{%- if incremental %}
{#- Every winner's key is a batch key, so the rows the table holds for them are all in current_rows:
    the table is scanned once per merge, not twice. #}
left join current_rows as current_row
    on {{ key_match.format(a="winners", b="current_row") }}
{%- endif %}
where winners.cdc_rank = 1
{%- endmacro %}
