{% macro audit_record_dbt_results(results) -%}
    {#- on-run-end: append one row per executed node (models, snapshots, seeds, tests) to the dbt results
        table (and commit), with timing, rows affected (where the adapter reports it), the message and, for CDC models
        (tag `cdc`), the rows this invocation inserted and updated, counted from `audit_cdc_stamps`. -#}
    {%- if not execute or not results -%}{{ return("") }}{%- endif -%}
    {%- set rows = [] -%}
    {%- for res in results -%}
        {%- set node = res.node -%}
        {%- set started = [] -%}{%- set completed = [] -%}
        {%- for t in res.timing -%}
            {%- if t.started_at -%}{%- do started.append(t.started_at) -%}{%- endif -%}
            {%- if t.completed_at -%}{%- do completed.append(t.completed_at) -%}{%- endif -%}
        {%- endfor -%}
        {%- set response = res.adapter_response or {} -%}
        {%- set affected = response.get("rows_affected") -%}
        {%- set counts = {"inserted": none, "updated": none} -%}
        {%- set materialized = node.config.get("materialized") -%}
        {%- if "cdc" in (node.tags or []) and res.status == "success" and node.resource_type == "model" -%}
            {%- set rel = adapter.get_relation(database=node.database, schema=node.schema, identifier=node.alias) -%}
            {%- if rel is not none -%}
                {%- set cols = adapter.get_columns_in_relation(rel) | map(attribute="name") | map("lower") | list -%}
                {%- if "_dbt_invocation_id" in cols and "_dbt_first_invocation_id" in cols -%}
                    {%- set me = "'" ~ invocation_id ~ "'" -%}
                    {%- set got = run_query(
                        "select sum(case when _dbt_first_invocation_id = " ~ me ~ " then 1 else 0 end), "
                        ~ "sum(case when _dbt_invocation_id = " ~ me ~ " and _dbt_first_invocation_id <> " ~ me
                        ~ " then 1 else 0 end) from " ~ rel
                    ) -%}
                    {%- do counts.update({"inserted": got.rows[0][0] or 0, "updated": got.rows[0][1] or 0}) -%}
                {%- endif -%}
            {%- endif -%}
        {%- endif -%}
        {%- set upstream = [] -%}
        {%- for parent in node.depends_on.nodes -%}
            {%- set grand = [parent] -%}
            {%- if parent in graph.nodes -%}{%- set grand = graph.nodes[parent].depends_on.nodes -%}{%- endif -%}
            {%- for p in grand if p in graph.sources -%}
                {%- set name = graph.sources[p].source_name ~ "." ~ graph.sources[p].name -%}
                {%- if name not in upstream -%}{%- do upstream.append(name) -%}{%- endif -%}
            {%- endfor -%}
        {%- endfor -%}
        {%- do rows.append([
            invocation_id,
            run_started_at,
            target.name,
            target.type,
            node.unique_id,
            node.name,
            node.resource_type,
            materialized,
            node.relation_name,
            (node.tags or []) | join(","),
            upstream | join(","),
            res.status,
            started | min if started else none,
            completed | max if completed else none,
            res.execution_time,
            affected if affected is number and affected >= 0 else none,
            counts.inserted,
            counts.updated,
            res.failures,
            res.message,
            modules.datetime.datetime.now(modules.pytz.utc),
        ]) -%}
    {%- endfor -%}
    {%- set kinds = ["s", "ts", "s", "s", "s", "s", "s", "s", "s", "s", "s", "s", "ts", "ts", "n", "n", "n", "n", "n", "s", "ts"] -%}
    {%- set values = [] -%}
    {%- for row in rows -%}
        {%- set cells = [] -%}
        {%- for v in row -%}
            {%- do cells.append(audit_sql_literal(v, kinds[loop.index0])) -%}
        {%- endfor -%}
        {%- do values.append("(" ~ cells | join(", ") ~ ")") -%}
    {%- endfor -%}
    {%- set insert -%}
insert into {{ audit_dbt_results_relation() }} (
    invocation_id, invocation_started_at, target_name, target_type, node_unique_id, node_name, resource_type,
    materialized, relation_name, tags, upstream_sources, status, started_at, completed_at,
    execution_seconds, rows_affected, rows_inserted, rows_updated, failures, message, recorded_at
)
values
{{ values | join(",\n") }}
    {%- endset -%}
    {#- Hooks run outside a transaction; open one (auto_begin) for both statements and commit it. -#}
    {%- call statement("audit_create_dbt_results_table", auto_begin=True) -%}
        {{ audit_create_dbt_results_table() }}
    {%- endcall -%}
    {%- call statement("audit_record_dbt_results", auto_begin=True) -%}
        {{ insert }}
    {%- endcall -%}
    {%- do adapter.commit() -%}
    {{ return("") }}
{%- endmacro %}
