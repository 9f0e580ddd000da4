with

source as (

    select * from {{ source('billing', 'accounts') }}

),

renamed as (

    select
        account_id,
        account_name,
        plan_tier,
        country,
        created_at,
        updated_at,
        {{ column_or_null(source('billing', 'accounts'), 'segment', dbt.type_string()) }},
        {{ new_landed_columns(
            source('billing', 'accounts'),
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
            ]
        ) }}
        _op,
        _source_file,
        _run_id,
        _ingested_at

    from source

)

select * from renamed
