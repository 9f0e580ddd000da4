with

current_rows as (

    select * from {{ ref('accounts') }}

),

live as (

    select
        account_id,
        account_name,
        plan_tier,
        country,
        created_at,
        updated_at,
        segment,
        {{ new_landed_columns(
            ref('accounts'),
            [
                'account_id',
                'account_name',
                'plan_tier',
                'country',
                'created_at',
                'updated_at',
                'segment',
                '_op',
                '_source_file',
                '_run_id',
                '_ingested_at',
            ],
            [
                '_ingest_date',
                '_is_deleted',
                '_deleted_at',
                '_dbt_invocation_id',
                '_dbt_first_invocation_id',
            ]
        ) }}
        _op,
        _source_file,
        _run_id,
        _ingested_at

    from current_rows
    where not _is_deleted

)

select * from live
