{{ config(unique_key=['account_id']) }}

{{ cdc_current_state(ref('stg_billing__accounts'), cursor='updated_at') }}
