"""How each landing entity flattens into ``shopify.*`` tables: Polars expressions, no Python per row.

An :class:`EntitySpec` names the parent row type of an entity file (the gid's type segment),
the expressions that turn a landing line into a warehouse row, and its children: inline
lists exploded from the parent line (customer addresses, order refunds) or separate lines
carrying ``__parentId`` (line items, variants, memberships, metafields).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipelines.tables import MONEY

# The numeric id at the end of a gid; Shopify may append a query (``?model_name=...``).
_GID_NUMBER = r"/(\d+)(?:\?.*)?$"
GID_TYPE = r"^gid://shopify/([A-Za-z]+)/\d+(?:\?.*)?$"


def gid_number(expr: pl.Expr) -> pl.Expr:
    """The numeric id of a gid string expression (null stays null)."""
    return expr.str.extract(_GID_NUMBER, 1).cast(pl.Int64)


def ref_id(column: str) -> pl.Expr:
    """The numeric id of a ``{ id }`` reference object such as ``customer``."""
    return gid_number(pl.col(column).struct.field("id"))


def ts(expr: pl.Expr | str) -> pl.Expr:
    """An ISO-8601 string as a UTC timestamp."""
    expr = pl.col(expr) if isinstance(expr, str) else expr
    return expr.str.to_datetime(time_unit="us", time_zone="UTC", format="%Y-%m-%dT%H:%M:%S%.f%#z")


def amount(expr: pl.Expr) -> pl.Expr:
    """A decimal-string money amount as DECIMAL(18,3), parsed from the string, never via float."""
    return expr.struct.field("amount").cast(MONEY)


def money_pair(name: str, column: str) -> dict[str, pl.Expr]:
    """Shop-currency and presentment-currency amounts of a MoneyBag column."""
    bag = pl.col(column)
    return {
        name: amount(bag.struct.field("shopMoney")),
        f"{name}_presentment": amount(bag.struct.field("presentmentMoney")),
    }


def field(column: str, name: str) -> pl.Expr:
    """A field of a nested object column."""
    return pl.col(column).struct.field(name)


def _sms(name: str) -> pl.Expr:
    """A field of the customer's SMS consent, where 2026-10 keeps it (under defaultPhoneNumber).

    Its ``state`` enum (CustomerMarketingConsentState) says NEVER_SUBSCRIBED where the older
    one (CustomerSmsMarketingState) says NOT_SUBSCRIBED; the warehouse keeps the older name,
    which the webhooks and the email side use too.
    """
    value = field("defaultPhoneNumber", "smsMarketingConsent").struct.field(name)
    return value.replace("NEVER_SUBSCRIBED", "NOT_SUBSCRIBED") if name == "state" else value


@dataclass(frozen=True)
class ChildSpec:
    """A child table of an entity, replaced wholesale whenever its parent is written."""

    table: str
    parent_key: str  # the column holding the parent's numeric id, e.g. "order_id"
    columns: dict[str, pl.Expr]  # output column → expression over the child's source frame
    row_type: str | None = None  # gid type of child lines carrying __parentId
    inline: str | None = None  # list column of the parent line holding the children
    key: tuple[str, ...] = ("id",)  # identifies a child row under its parent


@dataclass(frozen=True)
class EntitySpec:
    """One landing entity: its parent table and children."""

    entity: str
    table: str
    row_type: str
    columns: dict[str, pl.Expr]
    children: tuple[ChildSpec, ...]

    @property
    def row_types(self) -> frozenset[str]:
        """Every gid type a line of this entity's batches may have."""
        return frozenset({self.row_type} | {c.row_type for c in self.children if c.row_type})


_BILLING = {
    "billing_first_name": field("billingAddress", "firstName"),
    "billing_last_name": field("billingAddress", "lastName"),
    "billing_address1": field("billingAddress", "address1"),
    "billing_city": field("billingAddress", "city"),
    "billing_zip": field("billingAddress", "zip"),
    "billing_country_code": field("billingAddress", "countryCodeV2"),
    "billing_phone": field("billingAddress", "phone"),
}

CUSTOMERS = EntitySpec(
    entity="customers",
    table="customers",
    row_type="Customer",
    columns={
        "first_name": pl.col("firstName"),
        "last_name": pl.col("lastName"),
        "display_name": pl.col("displayName"),
        "email": field("defaultEmailAddress", "emailAddress"),
        # defaultEmailAddress carries the consent in 2026-10; emailMarketingConsent is the
        # older shape, kept as a fallback for rows fetched through it.
        "email_marketing_state": pl.coalesce(
            field("defaultEmailAddress", "marketingState"), field("emailMarketingConsent", "marketingState")
        ),
        "email_marketing_opt_in_level": pl.coalesce(
            field("defaultEmailAddress", "marketingOptInLevel"),
            field("emailMarketingConsent", "marketingOptInLevel"),
        ),
        "email_consent_updated_at": ts(
            pl.coalesce(
                field("defaultEmailAddress", "marketingUpdatedAt"),
                field("emailMarketingConsent", "consentUpdatedAt"),
            )
        ),
        "phone": field("defaultPhoneNumber", "phoneNumber"),
        # defaultPhoneNumber.smsMarketingConsent in 2026-10; smsMarketingConsent on the
        # customer is the deprecated shape, kept as a fallback for rows fetched through it.
        "sms_marketing_state": pl.coalesce(_sms("state"), field("smsMarketingConsent", "marketingState")),
        "sms_marketing_opt_in_level": pl.coalesce(
            _sms("optInLevel"), field("smsMarketingConsent", "marketingOptInLevel")
        ),
        "sms_consent_updated_at": ts(
            pl.coalesce(_sms("updatedAt"), field("smsMarketingConsent", "consentUpdatedAt"))
        ),
        "sms_consent_collected_from": pl.coalesce(
            _sms("collectedFrom"), field("smsMarketingConsent", "consentCollectedFrom")
        ),
        "tags": pl.col("tags"),
        "note": pl.col("note"),
        "state": pl.col("state"),
        "verified_email": pl.col("verifiedEmail"),
        "tax_exempt": pl.col("taxExempt"),
        "locale": pl.col("locale"),
        "number_of_orders": pl.col("numberOfOrders").cast(pl.Int64),
        "amount_spent": amount(pl.col("amountSpent")),
        "amount_spent_currency": field("amountSpent", "currencyCode"),
        "default_address_id": ref_id("defaultAddress"),
        "created_at": ts("createdAt"),
        "updated_at": ts("updatedAt"),
    },
    children=(
        ChildSpec(
            table="customer_addresses",
            parent_key="customer_id",
            inline="addresses",
            columns={
                "id": gid_number(pl.col("id")),
                "first_name": pl.col("firstName"),
                "last_name": pl.col("lastName"),
                "company": pl.col("company"),
                "address1": pl.col("address1"),
                "address2": pl.col("address2"),
                "city": pl.col("city"),
                "province": pl.col("province"),
                "province_code": pl.col("provinceCode"),
                "zip": pl.col("zip"),
                "country": pl.col("country"),
                "country_code": pl.col("countryCodeV2"),
                "phone": pl.col("phone"),
            },
        ),
        ChildSpec(
            table="customer_metafields",
            parent_key="customer_id",
            row_type="Metafield",
            columns={
                "id": gid_number(pl.col("id")),
                "namespace": pl.col("namespace"),
                "key": pl.col("key"),
                "type": pl.col("type"),
                "value": pl.col("value"),
                "created_at": ts("createdAt"),
                "updated_at": ts("updatedAt"),
            },
        ),
    ),
)

ORDERS = EntitySpec(
    entity="orders",
    table="orders",
    row_type="Order",
    columns={
        "name": pl.col("name"),
        "email": pl.col("email"),
        "phone": pl.col("phone"),
        "test": pl.col("test"),
        "customer_id": ref_id("customer"),
        "currency_code": pl.col("currencyCode"),
        "presentment_currency_code": pl.col("presentmentCurrencyCode"),
        **money_pair("subtotal_price", "subtotalPriceSet"),
        **money_pair("total_price", "totalPriceSet"),
        **money_pair("total_tax", "totalTaxSet"),
        **money_pair("total_discounts", "totalDiscountsSet"),
        **money_pair("total_shipping_price", "totalShippingPriceSet"),
        **money_pair("total_refunded", "totalRefundedSet"),
        "financial_status": pl.col("displayFinancialStatus"),
        "fulfillment_status": pl.col("displayFulfillmentStatus"),
        "cancelled_at": ts("cancelledAt"),
        "cancel_reason": pl.col("cancelReason"),
        "closed_at": ts("closedAt"),
        "processed_at": ts("processedAt"),
        "created_at": ts("createdAt"),
        "updated_at": ts("updatedAt"),
        "tags": pl.col("tags"),
        "source_name": pl.col("sourceName"),
        **_BILLING,
        "billing_address2": field("billingAddress", "address2"),
        "billing_province": field("billingAddress", "province"),
    },
    children=(
        ChildSpec(
            table="order_line_items",
            parent_key="order_id",
            row_type="LineItem",
            columns={
                "id": gid_number(pl.col("id")),
                "title": pl.col("title"),
                "sku": pl.col("sku"),
                "quantity": pl.col("quantity"),
                "product_id": ref_id("product"),
                "variant_id": ref_id("variant"),
                **money_pair("original_unit_price", "originalUnitPriceSet"),
                **money_pair("discounted_total", "discountedTotalSet"),
            },
        ),
        ChildSpec(
            table="order_refunds",
            parent_key="order_id",
            inline="refunds",
            columns={
                "id": gid_number(pl.col("id")),
                "created_at": ts("createdAt"),
                "note": pl.col("note"),
                **money_pair("total_refunded", "totalRefundedSet"),
            },
        ),
    ),
)

PRODUCTS = EntitySpec(
    entity="products",
    table="products",
    row_type="Product",
    columns={
        "title": pl.col("title"),
        "handle": pl.col("handle"),
        "product_type": pl.col("productType"),
        "vendor": pl.col("vendor"),
        "status": pl.col("status"),
        "tags": pl.col("tags"),
        "created_at": ts("createdAt"),
        "updated_at": ts("updatedAt"),
    },
    children=(
        ChildSpec(
            table="product_variants",
            parent_key="product_id",
            row_type="ProductVariant",
            columns={
                "id": gid_number(pl.col("id")),
                "title": pl.col("title"),
                "sku": pl.col("sku"),
                "price": pl.col("price").cast(MONEY),
                "inventory_quantity": pl.col("inventoryQuantity"),
                "created_at": ts("createdAt"),
                "updated_at": ts("updatedAt"),
            },
        ),
    ),
)

COLLECTIONS = EntitySpec(
    entity="collections",
    table="collections",
    row_type="Collection",
    columns={
        "title": pl.col("title"),
        "handle": pl.col("handle"),
        "sort_order": pl.col("sortOrder"),
        "updated_at": ts("updatedAt"),
    },
    children=(
        ChildSpec(
            table="collection_products",
            parent_key="collection_id",
            row_type="Product",
            columns={"product_id": gid_number(pl.col("id"))},
            key=("product_id",),
        ),
    ),
)

ABANDONED_CHECKOUTS = EntitySpec(
    entity="abandoned_checkouts",
    table="abandoned_checkouts",
    row_type="AbandonedCheckout",
    columns={
        "abandoned_checkout_url": pl.col("abandonedCheckoutUrl"),
        "customer_id": ref_id("customer"),
        # The checkout has no currency fields of its own; its total's MoneyBag carries them.
        "currency_code": field("totalPriceSet", "shopMoney").struct.field("currencyCode"),
        "presentment_currency_code": field("totalPriceSet", "presentmentMoney").struct.field("currencyCode"),
        **money_pair("total_price", "totalPriceSet"),
        "completed_at": ts("completedAt"),
        "created_at": ts("createdAt"),
        "updated_at": ts("updatedAt"),
        **_BILLING,
    },
    children=(
        ChildSpec(
            table="abandoned_checkout_line_items",
            parent_key="checkout_id",
            row_type="AbandonedCheckoutLineItem",
            columns={
                "id": gid_number(pl.col("id")),
                "title": pl.col("title"),
                "quantity": pl.col("quantity"),
                "product_id": ref_id("product"),
                "variant_id": ref_id("variant"),
                **money_pair("original_unit_price", "originalUnitPriceSet"),
            },
        ),
    ),
)

SPECS: dict[str, EntitySpec] = {
    spec.entity: spec for spec in (CUSTOMERS, ORDERS, PRODUCTS, COLLECTIONS, ABANDONED_CHECKOUTS)
}
