with

source as (

    select * from {{ source('billing', 'accounts') }}

),

renamed as (

    select
        {{ landed_columns(
            source('billing', 'accounts'),
            [
                'account_id',
                'account_name',
                'plan_tier',
                'country',
                'created_at',
                'updated_at',
                'segment',
            ]
        ) }}

    from source

)

select * from renamed
