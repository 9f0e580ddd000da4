{% macro audit_dbt_results_relation() -%}
    {#- The table every dbt invocation appends its node results to: `dbt_node_runs` in the target's schema.
        Spark/Glue targets have no database (two-level names): none there. -#}
    {{ return(api.Relation.create(
        database=(target.database if target.database is defined else none),
        schema=target.schema,
        identifier=var("audit_dbt_results_table", "dbt_node_runs"),
        type="table",
    )) }}
{%- endmacro %}
