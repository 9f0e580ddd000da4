with

source as (

    select * from {{ source('billing', 'customers') }}

),

renamed as (

    select
        {{ landed_columns(
            source('billing', 'customers'),
            [
                'customer_id',
                'account_id',
                'first_name',
                'last_name',
                'e_mail',
                'signup_date',
                'updated_at',
            ]
        ) }}

    from source

)

select * from renamed
