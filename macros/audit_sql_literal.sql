{% macro audit_sql_literal(value, kind="s") -%}
    {#- A Python value as a portable SQL literal: `s` text, `ts` UTC timestamp, `n` number; none → null. -#}
    {%- if value is none -%}
        {{ return("null") }}
    {%- elif kind == "ts" -%}
        {%- set text = value.strftime("%Y-%m-%d %H:%M:%S.%f") if value is not string else value[:26] | replace("T", " ") -%}
        {{ return("cast('" ~ text ~ "' as " ~ dbt.type_timestamp() ~ ")") }}
    {%- elif kind == "n" -%}
        {{ return(value | string) }}
    {%- else -%}
        {{ return("'" ~ ((value | string)[:60000] | replace("'", "''")) ~ "'") }}
    {%- endif -%}
{%- endmacro %}
