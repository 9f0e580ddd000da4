with

current_rows as (

    select * from {{ ref('invoices') }}

),

live as (

    select
        {{ landed_columns(
            ref('invoices'),
            [
                'invoice_id',
                'account_id',
                'subscription_id',
                'amount',
                'currency',
                'status',
                'issued_on',
                'due_on',
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
