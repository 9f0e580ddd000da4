{{ config(materialized="view", pre_hook=audit_create_dbt_results_table()) }}

with

source as (

    select * from {{ source("dbt_audit", "dbt_node_runs") }}

),

renamed as (

    select
        invocation_id,
        invocation_started_at,
        target_name,
        target_type,
        node_unique_id,
        node_name,
        resource_type,
        materialized,
        relation_name,
        tags,
        upstream_sources,
        status,
        started_at,
        completed_at,
        execution_seconds,
        rows_affected,
        rows_inserted,
        rows_updated,
        failures,
        message,
        recorded_at
    from source

)

select * from renamed
