{{ config(materialized="view") }}

with

source as (

    select * from {{ source("lake_audit", "ingestion_runs") }}

),

ranked as (

    select
        source.*,
        row_number() over (
            partition by source.run_id, source.source_name, source.table_name
            order by source.recorded_at desc, case when source.status = 'running' then 1 else 0 end
        ) as ledger_rank
    from source

),

renamed as (

    select
        run_id,
        pipeline,
        env,
        engine,
        source_name,
        table_name,
        load_type,
        status,
        {{ audit_utc_timestamp("started_at") }} as started_at,
        {{ audit_utc_timestamp("ended_at") }} as ended_at,
        {{ audit_utc_timestamp("recorded_at") }} as recorded_at,
        duration_seconds,
        rows_read,
        rows_landed,
        rows_rejected,
        rows_deduplicated,
        rows_filtered,
        files,
        watermark_before,
        watermark_after,
        watermark_type,
        lag_seconds,
        error_class,
        error_message,
        host,
        pid,
        -- Ledger files written before these columns existed lack them: union_by_name fills their rows
        -- with nulls, and a ledger of old files only gets typed nulls (column_or_null).
        {{ column_or_null(source("lake_audit", "ingestion_runs"), "files_refused", dbt.type_bigint()) }},
        {{ column_or_null(source("lake_audit", "ingestion_runs"), "failed_step", audit_text_type()) }},
        {{ column_or_null(source("lake_audit", "ingestion_runs"), "warnings", audit_text_type()) }}
    from ranked
    where ledger_rank = 1

)

select * from renamed
