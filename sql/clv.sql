-- Predicted 12-month customer lifetime value per person, highest first, with the inputs behind it.
SELECT
    m.contact_id,
    c.first_name,
    c.last_name,
    c.email,
    m.currency_code,
    m.order_count,
    m.total_spent,
    m.p_alive,
    m.expected_purchases_12m,
    m.predicted_average_value,
    m.clv_12m,
    m.clv_tier,
    rank() OVER (ORDER BY m.clv_12m DESC NULLS LAST) AS clv_rank
FROM core.contact_metrics AS m
LEFT JOIN core.contacts AS c ON c.contact_id = m.contact_id
ORDER BY clv_rank, m.contact_id
