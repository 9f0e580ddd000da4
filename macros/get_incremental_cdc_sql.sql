{% macro get_incremental_cdc_sql(arg_dict) -%}
    {#- The `cdc` incremental strategy of the CDC models: merge on the adapters that have it,
        delete+insert elsewhere. The CDC body already resolved each key's row, so both are equivalent. -#}
    {{ return(adapter.dispatch("cdc_incremental_sql", "tidemark")(arg_dict)) }}
{%- endmacro %}


{% macro default__cdc_incremental_sql(arg_dict) -%}
    {{ return(get_incremental_delete_insert_sql(arg_dict)) }}
{%- endmacro %}


{% macro duckdb__cdc_incremental_sql(arg_dict) -%}
    {{ return(get_incremental_merge_sql(arg_dict)) }}
{%- endmacro %}


{% macro postgres__cdc_incremental_sql(arg_dict) -%}
    {#- MERGE needs PostgreSQL 15 or later. -#}
    {{ return(get_incremental_merge_sql(arg_dict)) }}
{%- endmacro %}


{% macro redshift__cdc_incremental_sql(arg_dict) -%}
    {{ return(get_incremental_merge_sql(arg_dict)) }}
{%- endmacro %}
