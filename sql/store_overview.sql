-- Per store: customers, orders, revenue in the store's currency, and people shared with other stores.
WITH customers AS (
    SELECT shop, count(*) AS customers
    FROM shopify.customers
    WHERE _deleted_at IS NULL
    GROUP BY shop
),
orders AS (
    SELECT
        shop,
        any_value(currency_code) AS currency_code,
        count(*) AS orders,
        sum(total_price - coalesce(total_refunded, 0)) AS net_revenue,
        count(*) FILTER (WHERE customer_id IS NULL) AS guest_orders
    FROM shopify.orders
    WHERE _deleted_at IS NULL AND NOT coalesce(test, FALSE) AND cancelled_at IS NULL
    GROUP BY shop
),
contacts AS (
    SELECT
        i.shop,
        count(DISTINCT i.contact_id) AS contacts,
        count(DISTINCT i.contact_id) FILTER (WHERE c.shop_count > 1) AS shared_contacts
    FROM core.contact_identities AS i
    LEFT JOIN (
        SELECT contact_id, count(DISTINCT shop) AS shop_count
        FROM core.contact_identities
        GROUP BY contact_id
    ) AS c ON c.contact_id = i.contact_id
    GROUP BY i.shop
)
SELECT
    cu.shop,
    cu.customers,
    coalesce(o.orders, 0) AS orders,
    coalesce(o.guest_orders, 0) AS guest_orders,
    o.currency_code,
    coalesce(o.net_revenue, 0) AS net_revenue,
    coalesce(ct.contacts, 0) AS contacts,
    coalesce(ct.shared_contacts, 0) AS contacts_shared_with_other_stores
FROM customers AS cu
LEFT JOIN orders AS o ON o.shop = cu.shop
LEFT JOIN contacts AS ct ON ct.shop = cu.shop
ORDER BY cu.shop
