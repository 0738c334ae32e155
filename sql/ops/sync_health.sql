-- Sync health as last evaluated: one row per figure (lag p50/p95 per store, entity and
-- event type against its service level; consent push errors; dead letters; API points used
-- vs available; identity outcome rates; blocked overwrites). Breaches first; each breach's
-- message says what to do.
SELECT
    evaluated_at,
    shop,
    entity,
    event_type,
    metric,
    value,
    objective,
    status,
    message
FROM ops.sync_health
WHERE evaluated_at = (SELECT max(evaluated_at) FROM ops.sync_health)
ORDER BY status = 'breach' DESC, shop, metric, entity, event_type
