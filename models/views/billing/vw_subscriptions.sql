with

current_rows as (

    select * from {{ ref('subscriptions') }}

),

live as (

    select
        subscription_id,
        account_id,
        product,
        status,
        monthly_amount,
        started_on,
        updated_at,
        _op,
        _source_file,
        _run_id,
        _ingested_at

    from current_rows
    where not _is_deleted

)

select * from live
