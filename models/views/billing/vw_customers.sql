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
        _op,
        _source_file,
        _run_id,
        _ingested_at

    from current_rows
    where not _is_deleted

)

select * from live
