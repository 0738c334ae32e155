-- Possible duplicates left unmerged, strongest evidence first, with both records side by side.
SELECT
    r.reason,
    r.weight,
    r.contact_id_l,
    r.shop_l,
    r.record_type_l,
    r.record_id_l,
    cl.first_name AS first_name_l,
    cl.last_name AS last_name_l,
    cl.email AS email_l,
    r.contact_id_r,
    r.shop_r,
    r.record_type_r,
    r.record_id_r,
    cr.first_name AS first_name_r,
    cr.last_name AS last_name_r,
    cr.email AS email_r,
    r.explanation
FROM core.identity_review AS r
LEFT JOIN core.contacts AS cl ON cl.contact_id = r.contact_id_l
LEFT JOIN core.contacts AS cr ON cr.contact_id = r.contact_id_r
ORDER BY r.weight DESC NULLS FIRST, r.contact_id_l, r.contact_id_r
