{% test unique_key(model, columns) %}
    {#- Fails for each combination of `columns` that occurs more than once: uniqueness of a composite
        key (dbt's built-in `unique` takes one column). -#}
    select
        {{ columns | join(", ") }},
        count(*) as occurrences
    from {{ model }}
    group by {{ columns | join(", ") }}
    having count(*) > 1
{% endtest %}
