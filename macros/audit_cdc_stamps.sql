{% macro audit_cdc_stamps(current_alias=none, latest_alias="latest") -%}
    {#- Run-stamp columns appended to a CDC model's select, from which the audit counts inserted and
        updated rows per dbt invocation:
        - `_dbt_invocation_id`: the invocation that last changed the row (a row re-read in the lookback
          with the same `_run_id` as the row held keeps its old stamp: re-merging it changes nothing);
        - `_dbt_first_invocation_id`: the invocation that inserted the key.
      `current_alias` is the alias of the model's own rows (`this`) in an incremental run, else none. -#}
    {%- set now = "'" ~ invocation_id ~ "'" -%}
    {#- dbt unit tests set var audit_fixed_stamp: the invocation id changes per run and `this` may be a
        fixture, so the stamps are that constant. -#}
    {%- set fixed = var("audit_fixed_stamp", none) -%}
    {%- if fixed is not none -%}{%- set now = "'" ~ fixed ~ "'" -%}{%- set current_alias = none -%}{%- endif -%}
    {%- if current_alias is none %},
    cast({{ now }} as {{ dbt.type_string() }}) as _dbt_invocation_id,
    cast({{ now }} as {{ dbt.type_string() }}) as _dbt_first_invocation_id
    {%- else -%}
        {#- The model may predate the stamps: on_schema_change adds them, until then they are null. -#}
        {#- In unit tests `this` is a fixture name (a string) and offline (lint) there is no warehouse. -#}
        {%- set online = execute and this is not string and not var("tidemark_offline", false) -%}
        {%- set have = adapter.get_columns_in_relation(this) | map(attribute="name") | map("lower") | list if online else [] -%}
        {%- set last = current_alias ~ "._dbt_invocation_id" if "_dbt_invocation_id" in have else "null" -%}
        {%- set first = current_alias ~ "._dbt_first_invocation_id" if "_dbt_first_invocation_id" in have else "null" -%}
        {%- set same_run = current_alias ~ "._run_id = " ~ latest_alias ~ "._run_id" if "_run_id" in have else "false" %},
    cast(case when {{ same_run }} and {{ last }} is not null then {{ last }} else {{ now }} end as {{ dbt.type_string() }}) as _dbt_invocation_id,
    cast(coalesce({{ first }}, {{ now }}) as {{ dbt.type_string() }}) as _dbt_first_invocation_id
    {%- endif -%}
{%- endmacro %}
