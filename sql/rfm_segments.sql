-- RFM segment sizes and value: how many people in each segment and what they are worth.
SELECT
    segment,
    count(*) AS contacts,
    sum(order_count) AS orders,
    sum(total_spent) AS total_spent,
    round(avg(days_since_last_order), 1) AS avg_days_since_last_order,
    round(sum(coalesce(clv_12m, 0)), 2) AS predicted_clv_12m
FROM core.contact_metrics
GROUP BY segment
ORDER BY total_spent DESC NULLS LAST, segment
