-- One row per person: golden profile, value across stores and marketing consent.
SELECT
    c.contact_id,
    c.first_name,
    c.last_name,
    c.email,
    c.phone,
    c.country,
    c.shops,
    c.customer_count,
    c.record_count,
    m.order_count,
    m.total_spent,
    m.average_order_value,
    m.first_order_at,
    m.last_order_at,
    m.churn_risk,
    m.clv_tier,
    m.segment AS rfm_segment,
    m.clv_12m,
    coalesce(e.consented, FALSE) AS email_consented,
    coalesce(s.consented, FALSE) AS sms_consented,
    c.lifecycle_stage,
    c.lead_status,
    c.owner
FROM core.contacts AS c
LEFT JOIN core.contact_metrics AS m ON m.contact_id = c.contact_id
LEFT JOIN core.contact_consent AS e ON e.contact_id = c.contact_id AND e.channel = 'email'
LEFT JOIN core.contact_consent AS s ON s.contact_id = c.contact_id AND s.channel = 'sms'
