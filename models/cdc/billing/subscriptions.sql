{{ config(unique_key=['subscription_id']) }}

{{ cdc_current_state(ref('stg_billing__subscriptions'), cursor='updated_at') }}
