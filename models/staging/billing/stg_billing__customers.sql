with

source as (

    select * from {{ source('billing', 'customers') }}

),

renamed as (

    select
        customer_id,
        account_id,
        first_name,
        last_name,
        e_mail,
        signup_date,
        updated_at,
        {{ new_landed_columns(
            source('billing', 'customers'),
            [
                'customer_id',
                'account_id',
                'first_name',
                'last_name',
                'e_mail',
                'signup_date',
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
