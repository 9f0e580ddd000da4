{% macro audit_text_type() -%}
    {#- A string type long enough for dbt's messages (Redshift's plain varchar holds 256 bytes). -#}
    {{ return(adapter.dispatch("audit_text_type")()) }}
{%- endmacro %}

{% macro default__audit_text_type() -%}
    {{ return(dbt.type_string()) }}
{%- endmacro %}

{% macro redshift__audit_text_type() -%}
    {{ return("varchar(65535)") }}
{%- endmacro %}
