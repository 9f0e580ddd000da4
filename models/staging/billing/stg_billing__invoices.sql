with

source as (

    select * from {{ source('billing', 'invoices') }}

),

renamed as (

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
            source('billing', 'invoices'),
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
            ]
        ) }}
        _op,
        _source_file,
        _run_id,
        _ingested_at

    from source

)

select * from renamed
