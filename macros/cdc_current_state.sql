{% macro cdc_current_state(relation, cursor, lookback_hours=none) -%}
    {#- The body of a CDC model: one current row per unique_key from the landed history in `relation`.

        - reads only rows landed since the newest `_ingested_at` already merged, minus a lookback
          (filtering on landing time, not on the source cursor, never skips late-arriving rows);
        - keeps one row per key: latest cursor, then latest `_ingested_at`, then latest `_run_id`;
        - never lets an older version (by cursor) overwrite the row the model already holds.
      The model's config supplies unique_key (one column or a list); merge does the rest. -#}
    {%- set keys = config.get("unique_key") -%}
    {%- if keys is string -%}{%- set keys = [keys] -%}{%- endif -%}
    {%- if not keys -%}
        {{ exceptions.raise_compiler_error("cdc_current_state: set unique_key in the model's config") }}
    {%- endif -%}
    {%- set lookback = lookback_hours if lookback_hours is not none else var("cdc_lookback_hours", 3) -%}
    {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute="name") | list if execute else [] -%}
    {%- set quoted = [] -%}
    {%- for column in columns -%}{%- do quoted.append(adapter.quote(column)) -%}{%- endfor -%}
    {%- set column_list = quoted | join(", ") if quoted else "*" -%}

with

batch as (

    select {{ column_list }}
    from {{ relation }}
    {%- if is_incremental() %}
    where _ingested_at >= (
        select {{ dbt.dateadd("hour", -lookback, "max(_ingested_at)") }}
        from {{ this }}
    )
    {%- endif %}

),

ranked as (

    select
        batch.*,
        row_number() over (
            partition by {{ keys | join(", ") }}
            order by {{ cursor }} desc nulls last, _ingested_at desc, _run_id desc
        ) as cdc_rank
    from batch

),

latest as (

    select {{ column_list }}
    from ranked
    where cdc_rank = 1

)

{%- if is_incremental() %}

select latest.*{{ audit_cdc_stamps("current_row", "latest") }}
from latest
left join {{ this }} as current_row
    on {% for key in keys %}latest.{{ key }} = current_row.{{ key }}{% if not loop.last %} and {% endif %}{% endfor %}
where
    current_row.{{ keys[0] }} is null
    or current_row.{{ cursor }} is null
    or latest.{{ cursor }} >= current_row.{{ cursor }}

{%- else %}

select latest.*{{ audit_cdc_stamps() }} from latest

{%- endif %}
{%- endmacro %}
