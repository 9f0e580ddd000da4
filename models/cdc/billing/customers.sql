{{ config(unique_key=['customer_id']) }}

{{ cdc_current_state(ref('stg_billing__customers'), cursor='updated_at') }}
