with

current_rows as (

    select * from {{ ref('accounts') }}

),

live as (

    select
        {{ landed_columns(
            ref('accounts'),
            [
                'account_id',
                'account_name',
                'plan_tier',
                'country',
                'created_at',
                'updated_at',
                'segment',
            ],
            exclude=[
                '_ingest_date',
                '_is_deleted',
                '_deleted_at',
                '_dbt_invocation_id',
                '_dbt_first_invocation_id',
            ]
        ) }}

    from current_rows
    where not _is_deleted

)

select * from live
