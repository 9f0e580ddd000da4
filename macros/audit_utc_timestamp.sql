{% macro audit_utc_timestamp(column) -%}
    {#- A UTC timestamp column as a plain (zone-less) timestamp in UTC, the way dbt's results are stored. -#}
    {{ return(adapter.dispatch("audit_utc_timestamp")(column)) }}
{%- endmacro %}

{% macro default__audit_utc_timestamp(column) -%}
    cast({{ column }} as {{ dbt.type_timestamp() }})
{%- endmacro %}

{% macro duckdb__audit_utc_timestamp(column) -%}
    timezone('UTC', {{ column }})
{%- endmacro %}

{% macro postgres__audit_utc_timestamp(column) -%}
    ({{ column }} at time zone 'UTC')
{%- endmacro %}
