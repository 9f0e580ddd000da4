with

current_rows as (

    select * from {{ ref('invoices') }}

),

live as (

    select
        invoice_id,
        account_id,
        subscription_id,
        amount,
        currency,
        status,
        issued_on,
        due_on,
        updated_at,
        {{ new_landed_columns(
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
