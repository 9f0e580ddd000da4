{{ config(materialized="view") }}

with

ingestion as (

    select * from {{ ref("stg_audit__ingestion_runs") }}

),

dbt_nodes as (

    select * from {{ ref("stg_audit__dbt_node_runs") }}
    where resource_type = 'model'

),

-- The CDC model that curates a landed table, in the first dbt invocation that started after the
-- ingestion run ended: the run whose merge took the landed rows in.
curated as (

    select
        ingestion.run_id,
        ingestion.source_name,
        ingestion.table_name,
        dbt_nodes.invocation_id,
        dbt_nodes.node_name,
        dbt_nodes.status,
        dbt_nodes.started_at,
        dbt_nodes.completed_at,
        dbt_nodes.execution_seconds,
        dbt_nodes.rows_affected,
        dbt_nodes.rows_inserted,
        dbt_nodes.rows_updated,
        dbt_nodes.message,
        row_number() over (
            partition by ingestion.run_id, ingestion.source_name, ingestion.table_name
            order by dbt_nodes.started_at, dbt_nodes.node_name
        ) as dbt_rank
    from ingestion
    inner join dbt_nodes
        on
            {{ dbt.concat(["','", "dbt_nodes.tags", "','"]) }} like '%,cdc,%'
            and {{ dbt.concat(["','", "dbt_nodes.upstream_sources", "','"]) }}
            like {{ dbt.concat(["'%,'", "ingestion.source_name", "'.'", "ingestion.table_name", "',%'"]) }}
            and dbt_nodes.started_at >= coalesce(ingestion.ended_at, ingestion.started_at)

),

joined as (

    select
        ingestion.run_id,
        ingestion.pipeline,
        ingestion.env,
        ingestion.engine,
        ingestion.source_name,
        ingestion.table_name,
        ingestion.load_type,
        ingestion.status as ingestion_status,
        ingestion.started_at as ingestion_started_at,
        ingestion.ended_at as ingestion_ended_at,
        ingestion.duration_seconds as ingestion_seconds,
        ingestion.files,
        ingestion.rows_read,
        ingestion.rows_landed,
        ingestion.rows_rejected,
        ingestion.rows_deduplicated,
        ingestion.rows_filtered,
        ingestion.watermark_before,
        ingestion.watermark_after,
        ingestion.lag_seconds,
        ingestion.error_class,
        ingestion.error_message,
        ingestion.failed_step,
        ingestion.files_refused,
        ingestion.warnings,
        curated.invocation_id as dbt_invocation_id,
        curated.node_name as dbt_model,
        curated.status as dbt_status,
        curated.started_at as dbt_started_at,
        curated.completed_at as dbt_completed_at,
        curated.execution_seconds as dbt_seconds,
        curated.rows_affected as dbt_rows_affected,
        curated.rows_inserted as dbt_rows_inserted,
        curated.rows_updated as dbt_rows_updated,
        curated.message as dbt_message,
        case
            when ingestion.status in ('failed', 'locked', 'refused', 'abandoned', 'running') then ingestion.status
            when curated.status is null then 'awaiting_dbt'
            when curated.status = 'success' then 'ok'
            else {{ dbt.concat(["'dbt_'", "curated.status"]) }}
        end as pipeline_status
    from ingestion
    left join curated
        on
            ingestion.run_id = curated.run_id
            and ingestion.source_name = curated.source_name
            and ingestion.table_name = curated.table_name
            and curated.dbt_rank = 1

)

select * from joined
