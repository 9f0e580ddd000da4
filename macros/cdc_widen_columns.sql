{% macro cdc_widen_columns(source_columns, target_columns, relation) -%}
    {#- Widen columns of `relation` whose type in the batch is wider, so the merge never rounds or
        truncates a landed value: varchar(n) → varchar(m > n) or unbounded; integer promotion (tinyint →
        smallint → integer → bigint → hugeint); integer → decimal and decimal(p,s) → decimal with room for
        both (integer digits and scale each the larger, precision at most 38); integer or decimal →
        double; date → timestamp; timestamp → timestamptz; a text column holding no value yet → any type
        (landed_columns' placeholder for a table that landed empty). Returns the widened column names. dbt's
        on_schema_change adds columns but never widens them. -#}
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
            {%- set old_kind = tidemark.cdc_type_kind(old) -%}
            {%- set new_kind = tidemark.cdc_type_kind(new) -%}
            {%- set wider = none -%}
            {%- if old_type in int_rank and new_type in int_rank -%}
                {%- if int_rank[new_type] > int_rank[old_type] -%}
                    {%- set wider = new.data_type -%}
                {%- endif -%}
            {%- elif old_kind[0] in ["integer", "decimal"] and new_kind[0] in ["integer", "decimal"] -%}
                {%- set digits = [old_kind[1] - old_kind[2], new_kind[1] - new_kind[2]] | max -%}
                {%- set scale = [old_kind[2], new_kind[2]] | max -%}
                {%- set precision = digits + scale -%}
                {%- if precision > 38 -%}
                    {{ tidemark.cdc_cannot_widen(relation, old, new, "no decimal holds " ~ digits ~ " integer digits and scale " ~ scale) }}
                {%- endif -%}
                {%- if old_kind[0] == "integer" or precision != old_kind[1] or scale != old_kind[2] -%}
                    {%- set wider = "numeric(" ~ precision ~ "," ~ scale ~ ")" -%}
                {%- endif -%}
            {%- elif old_kind[0] in ["integer", "decimal"] and new_kind[0] == "float" -%}
                {%- set wider = new.data_type -%}
            {%- elif old_kind[0] == "date" and new_kind[0] in ["timestamp", "timestamptz"] -%}
                {%- set wider = new.data_type -%}
            {%- elif old_kind[0] == "timestamp" and new_kind[0] == "timestamptz" -%}
                {%- set wider = new.data_type -%}
            {%- elif old.is_string() and new.is_string() -%}
                {%- if old.char_size is not none and (new.char_size is none or new.char_size > old.char_size) -%}
                    {%- set wider = new.data_type -%}
                {%- endif -%}
            {%- elif old_kind[0] != "other" and new.is_string() -%}
                {#- Text arriving in a typed column: a cast could fail or change values, never widen. -#}
                {{ tidemark.cdc_cannot_widen(relation, old, new, "text does not fit a " ~ old_kind[0] ~ " column") }}
            {%- elif old.is_string() and not new.is_string() and tidemark.cdc_column_is_empty(relation, old.name) -%}
                {#- A text column that holds no value yet (landed_columns' typed null: the table landed with
                    no rows, so the lake had no type) takes the type its first values land with. -#}
                {%- set wider = new.data_type -%}
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


{% macro cdc_column_is_empty(relation, column_name) -%}
    {#- Does the column hold no value in any row (or the table no row)? -#}
    {%- if not execute -%}{{ return(false) }}{%- endif -%}
    {%- set found = run_query("select count(" ~ adapter.quote(column_name) ~ ") from " ~ relation) -%}
    {{ return(found.rows[0][0] == 0) }}
{%- endmacro %}


{% macro cdc_cannot_widen(relation, old, new, why) -%}
    {#- Fail the model (never merge a rounded or truncated value) and say what to run. -#}
    {{ exceptions.raise_compiler_error(
        "cdc: " ~ relation ~ "." ~ old.name ~ " is " ~ old.data_type ~ " but the landed rows now hold "
        ~ new.data_type ~ " (" ~ why ~ "), which cannot be widened in place. Rebuild the table: "
        ~ "dbt build --full-refresh --select " ~ relation.identifier
    ) }}
{%- endmacro %}


{% macro cdc_type_kind(column) -%}
    {#- (kind, precision, scale) of a column: kind is integer (precision = its decimal digits), decimal,
        float, date, timestamp, timestamptz or other. DuckDB reports `DECIMAL(18,4)` as the type
        string only; PostgreSQL and Redshift `numeric` with precision and scale apart. -#}
    {%- set t = column.dtype | lower | trim -%}
    {%- set digits = {"tinyint": 3, "int1": 3, "smallint": 5, "int2": 5, "integer": 10, "int": 10, "int4": 10,
                      "bigint": 19, "int8": 19, "hugeint": 38} -%}
    {%- if t in digits -%}
        {{ return(("integer", digits[t], 0)) }}
    {%- elif t.startswith("decimal") or t.startswith("numeric") -%}
        {%- set found = modules.re.search("\\(\\s*(\\d+)\\s*,\\s*(\\d+)\\s*\\)", column.data_type) -%}
        {%- if found -%}
            {{ return(("decimal", found.group(1) | int, found.group(2) | int)) }}
        {%- elif column.numeric_precision is not none -%}
            {{ return(("decimal", column.numeric_precision | int, (column.numeric_scale or 0) | int)) }}
        {%- endif -%}
        {{ return(("other", 0, 0)) }}
    {%- elif t in ["double", "double precision", "float8", "float", "real", "float4"] -%}
        {{ return(("float", 0, 0)) }}
    {%- elif t == "date" -%}
        {{ return(("date", 0, 0)) }}
    {%- elif t in ["timestamp", "timestamp without time zone", "datetime"] -%}
        {{ return(("timestamp", 0, 0)) }}
    {%- elif t in ["timestamptz", "timestamp with time zone"] -%}
        {{ return(("timestamptz", 0, 0)) }}
    {%- endif -%}
    {{ return(("other", 0, 0)) }}
{%- endmacro %}


{% macro default__cdc_alter_column_type(relation, column_name, new_type) -%}
    {%- call statement("cdc_alter_column_type") -%}
        alter table {{ relation }} alter column {{ adapter.quote(column_name) }} type {{ new_type }}
    {%- endcall -%}
{%- endmacro %}


{% macro postgres__cdc_alter_column_type(relation, column_name, new_type) -%}
    {#- PostgreSQL refuses to change a column type that a view reads: drop the dependent views (dbt
        recreates them later in the same build, they are downstream of this model), then alter. -#}
    {%- do tidemark.cdc_drop_dependent_views(relation, column_name) -%}
    {#- `using`: a text column that held no value yet changes to a typed one, which PostgreSQL casts only
        when told to. -#}
    {%- call statement("cdc_alter_column_type") -%}
        alter table {{ relation }} alter column {{ adapter.quote(column_name) }} type {{ new_type }}
        using {{ adapter.quote(column_name) }}::{{ new_type }}
    {%- endcall -%}
{%- endmacro %}


{% macro cdc_drop_dependent_views(relation, column_name) -%}
    {#- Drop the views bound to `relation` (pg_depend: PostgreSQL's views, Redshift's views without
        `with no schema binding`; late-binding views have no dependency and stay) through the adapter, so
        dbt's relation cache forgets them too: the views' own models then create them afresh instead of
        renaming a relation that is gone. They are downstream of the widened model, so the same build
        recreates them. -#}
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
        {%- do adapter.drop_relation(api.Relation.create(
            database=relation.database, schema=row[0], identifier=row[1], type="view")) -%}
    {%- endfor -%}
{%- endmacro %}


{% macro duckdb__cdc_alter_column_type(relation, column_name, new_type) -%}
    {%- call statement("cdc_alter_column_type") -%}
        alter table {{ relation }} alter column {{ adapter.quote(column_name) }} set data type {{ new_type }}
    {%- endcall -%}
{%- endmacro %}


{% macro redshift__cdc_alter_column_type(relation, column_name, new_type) -%}
    {#- Redshift changes a column type in place only for varchar lengths, and never inside a transaction
        block, where dbt-redshift runs a model (unless redshift_skip_autocommit_transaction_statements):
        like dbt's alter_column_type, add a column of the new type, copy, drop the old one, rename — four
        statements in the model's transaction, so a failure leaves the table as it was (with that flag on,
        they commit one by one, as dbt's own alter_column_type's do). The copy casts
        (a text column that held no value yet becomes typed). DROP COLUMN … CASCADE would drop bound views
        behind dbt's back (its cache would still list them, and their models fail renaming a relation
        that is gone): they are dropped through the adapter first and rebuilt by their models in the
        same build. The project's own views are late-binding (`bind: false`) and stay. The column moves
        to the end of the table; the merge and snapshot inserts name their columns. -#}
    {%- do tidemark.cdc_drop_dependent_views(relation, column_name) -%}
    {%- set type_lower = new_type | lower | trim -%}
    {%- if type_lower.startswith("varchar") or type_lower.startswith("character varying") -%}
        {#- dbt-redshift's own: in place where Redshift can (outside a transaction), else a rebuild. -#}
        {%- do alter_column_type(relation, column_name, new_type) -%}
    {%- else -%}
        {%- set column = adapter.quote(column_name) -%}
        {%- set tmp = adapter.quote(column_name ~ "__tm_wide") -%}
        {%- call statement("cdc_alter_column_type") -%}
            alter table {{ relation }} add column {{ tmp }} {{ new_type }};
            update {{ relation }} set {{ tmp }} = cast({{ column }} as {{ new_type }});
            alter table {{ relation }} drop column {{ column }} cascade;
            alter table {{ relation }} rename column {{ tmp }} to {{ column }}
        {%- endcall -%}
    {%- endif -%}
{%- endmacro %}
