{% macro column_or_null(relation, column_name, data_type) -%}
    {#- The column cast to data_type when relation has it yet, else a typed null under the same name.
        Lets a staging view declare a column that only newer landed files carry (schema drift). -#}
    {#- var tidemark_offline (set by .sqlfluff for lint): no lake to probe, assume the column exists. -#}
    {%- set present = var("tidemark_offline", false) -%}
    {%- if execute and not present -%}
        {%- set probe = run_query("select * from " ~ relation ~ " where 1 = 0") -%}
        {%- set present = column_name | lower in (probe.column_names | map("lower") | list) -%}
    {%- endif -%}
    {%- if present -%}
        cast({{ adapter.quote(column_name) }} as {{ data_type }}) as {{ adapter.quote(column_name) }}
    {%- else -%}
        cast(null as {{ data_type }}) as {{ adapter.quote(column_name) }}
    {%- endif -%}
{%- endmacro %}
