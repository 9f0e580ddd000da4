{#- One row per live account with its customers, subscriptions and invoices rolled up (seed 0's
    account-level dataset). The shared key is var('account_key'), default account_id. -#}
{%- set key = var("account_key", "account_id") -%}

with

accounts as (

    select * from {{ ref('vw_accounts') }}

),

customers as (

    select * from {{ ref('vw_customers') }}

),

subscriptions as (

    select * from {{ ref('vw_subscriptions') }}

),

invoices as (

    select * from {{ ref('vw_invoices') }}

),

customer_totals as (

    select
        {{ key }},
        count(*) as customer_count
    from customers
    group by {{ key }}

),

subscription_totals as (

    select
        {{ key }},
        sum(case when status = 'active' then 1 else 0 end) as active_subscriptions,
        sum(case when status = 'active' then monthly_amount else 0 end) as monthly_recurring_revenue
    from subscriptions
    group by {{ key }}

),

invoice_totals as (

    select
        {{ key }},
        count(*) as invoice_count,
        sum(case when status = 'open' then amount else 0 end) as open_invoice_amount,
        max(issued_on) as last_invoiced_on
    from invoices
    group by {{ key }}

),

joined as (

    select
        cast(accounts.{{ key }} as bigint) as account_id,
        cast(accounts.account_name as {{ dbt.type_string() }}) as account_name,
        cast(accounts.plan_tier as {{ dbt.type_string() }}) as plan_tier,
        cast(accounts.country as {{ dbt.type_string() }}) as country,
        cast(accounts.segment as {{ dbt.type_string() }}) as segment,
        cast(coalesce(customer_totals.customer_count, 0) as bigint) as customer_count,
        cast(coalesce(subscription_totals.active_subscriptions, 0) as bigint) as active_subscriptions,
        cast(
            coalesce(subscription_totals.monthly_recurring_revenue, 0) as numeric(18, 2)
        ) as monthly_recurring_revenue,
        cast(coalesce(invoice_totals.invoice_count, 0) as bigint) as invoice_count,
        cast(coalesce(invoice_totals.open_invoice_amount, 0) as numeric(18, 2)) as open_invoice_amount,
        cast(invoice_totals.last_invoiced_on as date) as last_invoiced_on,
        cast(accounts.updated_at as timestamp) as account_updated_at
    from accounts
    left join customer_totals on accounts.{{ key }} = customer_totals.{{ key }}
    left join subscription_totals on accounts.{{ key }} = subscription_totals.{{ key }}
    left join invoice_totals on accounts.{{ key }} = invoice_totals.{{ key }}

)

select * from joined
