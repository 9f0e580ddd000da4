{% macro landed_columns(relation, columns, metadata=["_op", "_source_file", "_run_id", "_ingested_at"], exclude=["_ingest_date"]) -%}
    {#- A model's select list over `relation`, from one list of its columns: `columns` in order, then
        every column the relation has beyond the listed ones (in the relation's order: a column new at
        the source flows through staging, the CDC table and the consumer view with no hand edits), then
        `metadata`. A listed column the relation lacks yet (a table landed empty, a column only newer
        files carry) is a typed null under its name. `exclude`: columns never added.
        var tidemark_offline (lint): nothing is probed, the list is rendered as written. -#}
    {%- set present = none -%}
    {%- if execute and not var("tidemark_offline", false) -%}
        {%- set probe = run_query("select * from " ~ relation ~ " where 1 = 0") -%}
        {%- set present = probe.column_names | list -%}
    {%- endif -%}
    {%- set have = (present or []) | map("lower") | list -%}
    {%- set listed = (columns + metadata + exclude) | map("lower") | list -%}
    {%- set items = [] -%}
    {%- for name in columns -%}
        {%- do items.append(tidemark.landed_column(name, present is none or name | lower in have)) -%}
    {%- endfor -%}
    {%- for name in present or [] if name | lower not in listed -%}
        {%- do items.append(adapter.quote(name)) -%}
    {%- endfor -%}
    {%- for name in metadata -%}
        {%- do items.append(tidemark.landed_column(name, present is none or name | lower in have)) -%}
    {%- endfor -%}
    {{ items | join(",\n        ") }}
{%- endmacro %}


{% macro landed_column(name, present) -%}
    {#- A listed column as a select item: itself, or a typed null under its name while the relation lacks
        it (text: cdc_widen_columns gives a column that holds no value yet the type its values land with). -#}
    {%- if present -%}
        {{ return(name) }}
    {%- endif -%}
    {{ return("cast(null as " ~ dbt.type_string() ~ ") as " ~ adapter.quote(name)) }}
{%- endmacro %}
