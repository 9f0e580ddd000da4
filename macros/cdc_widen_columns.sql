{% macro cdc_widen_columns(source_columns, target_columns, relation) -%}
    {#- Widen columns of `relation` whose type in the batch is wider: varchar(n) → varchar(m > n) or
        unbounded, and integer promotion (tinyint → smallint → integer → bigint → hugeint). Returns the
        widened column names. dbt's on_schema_change adds columns but never widens them. -#}
    {%- set int_rank = {"tinyint": 1, "int1": 1, "smallint": 2, "int2": 2, "integer": 4, "int": 4, "int4": 4,
                        "bigint": 8, "int8": 8, "hugeint": 16} -%}
    {%- set target_by_name = {} -%}
    {%- for c in target_columns -%}{%- do target_by_name.update({c.name | lower: c}) -%}{%- endfor -%}
    {%- set widened = [] -%}
    {%- for new in source_columns -%}
        {%- set old = target_by_name.get(new.name | lower) -%}
        {%- if old is not none -%}
            {%- set old_type = old.dtype | lower -%}
            {%- set new_type = new.dtype | lower -%}
            {%- set wider = none -%}
            {%- if old_type in int_rank and new_type in int_rank and int_rank[new_type] > int_rank[old_type] -%}
                {%- set wider = new.data_type -%}
            {%- elif old.is_string() and new.is_string() and old.char_size is not none -%}
                {%- if new.char_size is none or new.char_size > old.char_size -%}
                    {%- set wider = new.data_type -%}
                {%- endif -%}
            {%- endif -%}
            {%- if wider is not none -%}
                {{ log("cdc: widening " ~ relation ~ "." ~ old.name ~ " from " ~ old.data_type ~ " to " ~ wider, info=true) }}
                {%- do adapter.dispatch("cdc_alter_column_type", "tidemark")(relation, old.name, wider) -%}
                {%- do widened.append(old.name) -%}
            {%- endif -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(widened) }}
{%- endmacro %}


{% macro default__cdc_alter_column_type(relation, column_name, new_type) -%}
    {%- call statement("cdc_alter_column_type") -%}
        alter table {{ relation }} alter column {{ adapter.quote(column_name) }} type {{ new_type }}
    {%- endcall -%}
{%- endmacro %}


{% macro postgres__cdc_alter_column_type(relation, column_name, new_type) -%}
    {#- PostgreSQL refuses to change a column type that a view reads: drop the dependent views (dbt
        recreates them later in the same build, they are downstream of this model), then alter. -#}
    {%- set dependents -%}
        select distinct dependent_ns.nspname as view_schema, dependent.relname as view_name
        from pg_depend
        join pg_rewrite on pg_depend.objid = pg_rewrite.oid
        join pg_class as dependent on pg_rewrite.ev_class = dependent.oid
        join pg_namespace as dependent_ns on dependent.relnamespace = dependent_ns.oid
        join pg_class as source on pg_depend.refobjid = source.oid
        join pg_namespace as source_ns on source.relnamespace = source_ns.oid
        where source_ns.nspname = '{{ relation.schema }}'
          and source.relname = '{{ relation.identifier }}'
          and dependent.oid <> source.oid
    {%- endset -%}
    {%- for row in run_query(dependents) -%}
        {{ log("cdc: dropping view " ~ row[0] ~ "." ~ row[1] ~ " to widen " ~ relation ~ "." ~ column_name ~ " (dbt recreates it)", info=true) }}
        {#- Through the adapter, so dbt's relation cache forgets the view too: the view's own model then
            creates it afresh instead of renaming a relation that is gone. -#}
        {%- do adapter.drop_relation(api.Relation.create(
            database=relation.database, schema=row[0], identifier=row[1], type="view")) -%}
    {%- endfor -%}
    {{ tidemark.default__cdc_alter_column_type(relation, column_name, new_type) }}
{%- endmacro %}


{% macro duckdb__cdc_alter_column_type(relation, column_name, new_type) -%}
    {%- call statement("cdc_alter_column_type") -%}
        alter table {{ relation }} alter column {{ adapter.quote(column_name) }} set data type {{ new_type }}
    {%- endcall -%}
{%- endmacro %}


{% macro redshift__cdc_alter_column_type(relation, column_name, new_type) -%}
    {#- Redshift alters in place only to widen a varchar; other promotions go through dbt's
        add / copy / drop / rename (late-binding views don't block either). -#}
    {%- if "char" in new_type | lower -%}
        {{ tidemark.default__cdc_alter_column_type(relation, column_name, new_type) }}
    {%- else -%}
        {%- do alter_column_type(relation, column_name, new_type) -%}
    {%- endif -%}
{%- endmacro %}
