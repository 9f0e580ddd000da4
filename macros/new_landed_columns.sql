{% macro new_landed_columns(relation, known, exclude=["_ingest_date"]) -%}
    {#- The columns `relation` has beyond the `known` ones a model lists, each followed by a comma, in
        the relation's order: a column that appears at the source flows through staging, the CDC table
        and the consumer view on the next build with no hand edits. Call it inside a select list just
        before the columns that end it (the metadata columns).
        var tidemark_offline (lint): nothing is probed, nothing is added. -#}
    {%- if execute and not var("tidemark_offline", false) -%}
        {%- set probe = run_query("select * from " ~ relation ~ " where 1 = 0") -%}
        {%- set listed = (known + exclude) | map("lower") | list -%}
        {%- for name in probe.column_names if name | lower not in listed %}
        {{ adapter.quote(name) }},
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
