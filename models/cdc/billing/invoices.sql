{{ config(unique_key=['invoice_id']) }}

{{ cdc_current_state(ref('stg_billing__invoices'), cursor='updated_at') }}
