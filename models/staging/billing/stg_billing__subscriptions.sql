with

source as (

    select * from {{ source('billing', 'subscriptions') }}

),

renamed as (

    select
        subscription_id,
        account_id,
        product,
        status,
        monthly_amount,
        started_on,
        updated_at,
        {{ new_landed_columns(
            source('billing', 'subscriptions'),
            [
                'subscription_id',
                'account_id',
                'product',
                'status',
                'monthly_amount',
                'started_on',
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
