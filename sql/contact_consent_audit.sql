-- Every change of a person's consent, including those a merge or split of contacts caused, newest first.
SELECT
    a.recorded_at,
    a.contact_id,
    c.first_name,
    c.last_name,
    c.email,
    a.channel,
    a.reason,
    a.previous_state,
    a.state,
    a.updated_at,
    a.source,
    a.previous_contact_ids
FROM core.contact_consent_audit AS a
LEFT JOIN core.contacts AS c ON c.contact_id = a.contact_id
ORDER BY a.recorded_at DESC, a.contact_id, a.channel
