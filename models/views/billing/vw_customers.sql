with

current_rows as (

    select * from {{ ref('customers') }}

),

live as (

    select
        {{ landed_columns(
            ref('customers'),
            [
                'customer_id',
                'account_id',
                'first_name',
                'last_name',
                'e_mail',
                'signup_date',
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
