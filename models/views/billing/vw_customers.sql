with

current_rows as (

    select * from {{ ref('customers') }}

),

live as (

    select
        customer_id,
        account_id,
        first_name,
        last_name,
        e_mail,
        signup_date,
        updated_at,
        {{ new_landed_columns(
            ref('customers'),
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
