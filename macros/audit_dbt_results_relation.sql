{% macro audit_dbt_results_relation() -%}
    {#- The table every dbt invocation appends its node results to: `dbt_node_runs` in the target's schema. -#}
    {{ return(api.Relation.create(
        database=target.database,
        schema=target.schema,
        identifier=var("audit_dbt_results_table", "dbt_node_runs"),
        type="table",
    )) }}
{%- endmacro %}
