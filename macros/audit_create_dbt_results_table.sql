{% macro audit_create_dbt_results_table() -%}
    {#- Create the dbt results table if it does not exist yet (adapter-neutral DDL). Returns the SQL, so it
        serves as a pre-hook; `audit_record_dbt_results` runs it too. -#}
    {%- set text = audit_text_type() -%}
    {%- set ts = dbt.type_timestamp() -%}
    {%- set num = dbt.type_numeric() -%}
    {%- set int = dbt.type_bigint() -%}
create table if not exists {{ audit_dbt_results_relation() }} (
    invocation_id {{ text }},
    invocation_started_at {{ ts }},
    target_name {{ text }},
    target_type {{ text }},
    node_unique_id {{ text }},
    node_name {{ text }},
    resource_type {{ text }},
    materialized {{ text }},
    relation_name {{ text }},
    tags {{ text }},
    upstream_sources {{ text }},
    status {{ text }},
    started_at {{ ts }},
    completed_at {{ ts }},
    execution_seconds {{ num }},
    rows_affected {{ int }},
    rows_inserted {{ int }},
    rows_updated {{ int }},
    failures {{ int }},
    message {{ text }},
    recorded_at {{ ts }}
)
{%- endmacro %}
