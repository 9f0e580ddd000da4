with

current_rows as (

    select * from {{ ref('subscriptions') }}

),

live as (

    select
        {{ landed_columns(
            ref('subscriptions'),
            [
                'subscription_id',
                'account_id',
                'product',
                'status',
                'monthly_amount',
                'started_on',
                'updated_at',
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
