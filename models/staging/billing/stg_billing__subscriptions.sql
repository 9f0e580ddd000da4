with

source as (

    select * from {{ source('billing', 'subscriptions') }}

),

renamed as (

    select
        {{ landed_columns(
            source('billing', 'subscriptions'),
            [
                'subscription_id',
                'account_id',
                'product',
                'status',
                'monthly_amount',
                'started_on',
                'updated_at',
            ]
        ) }}

    from source

)

select * from renamed
