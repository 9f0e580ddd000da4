with

source as (

    select * from {{ source('billing', 'invoices') }}

),

renamed as (

    select
        {{ landed_columns(
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
            ]
        ) }}

    from source

)

select * from renamed
