-- Every consent change with the person it belongs to: the compliance trail, newest first.
SELECT
    a.recorded_at,
    a.shop,
    a.customer_id,
    i.contact_id,
    a.channel,
    a.previous_state,
    a.state,
    a.updated_at,
    a.source,
    a.source_ref
FROM core.consent_audit AS a
LEFT JOIN core.contact_identities AS i
    ON i.shop = a.shop AND i.record_type = 'customer' AND i.record_id = CAST(a.customer_id AS VARCHAR)
ORDER BY a.recorded_at DESC, a.shop, a.customer_id, a.channel
