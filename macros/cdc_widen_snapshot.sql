{% macro cdc_widen_snapshot(source_relation) -%}
    {#- A snapshot's pre-hook: widen the snapshot table's columns whose type grew in `source_relation`
        (cdc_widen_columns' rules), so a snapshot never rounds or truncates a value dbt copies in. dbt's
        snapshots add new columns but never widen them. Renders no SQL. -#}
    {%- if execute and not var("tidemark_offline", false) and flags.WHICH in ["snapshot", "build", "retry"] -%}
        {%- set existing = load_relation(this) -%}
        {%- if existing is not none -%}
            {%- do tidemark.cdc_widen_columns(
                adapter.get_columns_in_relation(source_relation),
                adapter.get_columns_in_relation(existing),
                existing
            ) -%}
        {%- endif -%}
    {%- endif -%}
{%- endmacro %}
