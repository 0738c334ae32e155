"""Admin API mutations the devstore implements, with Shopify's validation and userErrors.

Resolvers follow graphql-core's signature ``fn(root, info, **args)``; ``info.context``
carries ``shop`` (``ShopState``), ``world``, ``scopes`` and ``app``. Payloads return
internal records (snake_case dicts per ``devstore.model``); the GraphQL layer renders them.
Every successful write goes through ``ShopState`` so that ``updated_at`` moves, the write
log records it and the matching webhook topic is emitted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlparse

import phonenumbers
from graphql import GraphQLError, GraphQLResolveInfo

from devstore.graph import access_denied
from devstore.state import AppCredentials, Record, ShopState

API_VERSION = "2026-10"
MAX_METAFIELDS_PER_CALL = 25
SETTABLE_MARKETING_STATES = ("SUBSCRIBED", "UNSUBSCRIBED", "PENDING")
# Namespaces no app may write to (Shopify keeps them for itself).
RESERVED_NAMESPACE_PREFIXES = ("shopify", "shopify-", "shopify_")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HEX_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")

# webhook topic enum -> the scope an app needs to subscribe to it
TOPIC_SCOPES: dict[str, str] = {
    "CUSTOMERS": "read_customers",
    "ORDERS": "read_orders",
    "CHECKOUTS": "read_orders",
    "PRODUCTS": "read_products",
    "COLLECTIONS": "read_products",
}


# helpers ---------------------------------------------------------------------------------
def compare_digest(value: str) -> str:
    """The ``compareDigest`` Shopify returns for a metafield: a hash of its stored value."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def topic_enum(topic: str) -> str:
    """``customers/create`` -> ``CUSTOMERS_CREATE`` (the WebhookSubscriptionTopic value)."""
    return topic.upper().replace("/", "_")


def topic_name(enum_value: str) -> str:
    """``CUSTOMERS_CREATE`` -> ``customers/create`` (the X-Shopify-Topic header value)."""
    head, _, tail = enum_value.partition("_")
    # A few resource names contain underscores themselves.
    for resource in ("BULK_OPERATIONS", "SHOP", "APP"):
        if enum_value.startswith(resource + "_"):
            head, tail = resource, enum_value[len(resource) + 1 :]
            break
    return f"{head.lower()}/{tail.lower()}"


def parse_gid(gid: Any, expected_type: str) -> int | None:
    """The numeric id of ``gid://shopify/<expected_type>/<id>``, or None if it is not one."""
    if not isinstance(gid, str):
        return None
    prefix = f"gid://shopify/{expected_type}/"
    if not gid.startswith(prefix):
        return None
    tail = gid[len(prefix) :].split("?", 1)[0]
    return int(tail) if tail.isdigit() else None


def context_value(info: GraphQLResolveInfo, key: str) -> Any:
    """Read ``key`` from the resolver context, whether it is a dict or an object."""
    ctx = info.context
    if isinstance(ctx, dict):
        return ctx.get(key)
    return getattr(ctx, key, None)


def context_shop(info: GraphQLResolveInfo) -> ShopState:
    """The shop the request is for."""
    shop = context_value(info, "shop")
    if shop is None:
        raise GraphQLError("No shop in request context.", extensions={"code": "INTERNAL_SERVER_ERROR"})
    return shop


def context_client_id(info: GraphQLResolveInfo) -> str:
    """The client id of the calling app ("" when unknown)."""
    app = context_value(info, "app")
    if isinstance(app, AppCredentials):
        return app.client_id
    if isinstance(app, str):
        return app
    return str(getattr(app, "client_id", "") or "")


def require_scope(info: GraphQLResolveInfo, scope: str) -> None:
    """Raise Shopify's ACCESS_DENIED error unless the token grants ``scope``."""
    scopes = context_value(info, "scopes")
    if scopes is None or scope in scopes:
        return
    raise access_denied(info.field_name, scope)


def user_error(
    field: list[str] | None, message: str, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    """One userError as Shopify returns it."""
    error: dict[str, Any] = {"field": field, "message": message}
    if code is not None:
        error["code"] = code
    error.update(extra)
    return error


def parse_datetime(value: Any) -> datetime | None:
    """A DateTime argument as an aware UTC datetime (graphql-core hands scalars over as strings)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value).strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _log_rejected(
    shop: ShopState, operation: str, target: str, payload: dict[str, Any], errors: list[dict]
) -> None:
    code = errors[0].get("code") or "INVALID"
    shop.log_write(operation, target, _jsonable(payload), outcome=str(code))


def _jsonable(value: Any) -> Any:
    """Arguments made JSON-safe for the write log (enums and datetimes as strings)."""
    return json.loads(json.dumps(value, default=str))


# marketing consent -----------------------------------------------------------------------
def _consent_update(info: GraphQLResolveInfo, input: dict[str, Any], channel: str) -> dict[str, Any]:
    require_scope(info, "write_customers")
    shop = context_shop(info)
    operation = info.field_name
    consent_key = "emailMarketingConsent" if channel == "email" else "smsMarketingConsent"
    consent = input.get(consent_key) or {}
    customer_id = parse_gid(input.get("customerId"), "Customer")
    errors: list[dict[str, Any]] = []
    with shop.lock:
        customer = shop.records["customers"].get(customer_id) if customer_id is not None else None
        if customer is None:
            errors.append(user_error(["input", "customerId"], "Customer not found", "INVALID"))
        else:
            contact = customer.get("email") if channel == "email" else customer.get("phone")
            if not contact:
                what = "an email address" if channel == "email" else "a phone number"
                errors.append(
                    user_error(
                        ["input", "customerId"],
                        f"The customer must have {what} to update {channel.upper() if channel == 'sms' else channel}"
                        " marketing consent. Add it with customerUpdate first.",
                        "INVALID",
                    )
                )
        state = str(consent.get("marketingState") or "")
        if state not in SETTABLE_MARKETING_STATES:
            errors.append(
                user_error(
                    ["input", consent_key, "marketingState"],
                    f"Marketing state {state} can't be set; use SUBSCRIBED, UNSUBSCRIBED or PENDING.",
                    "INCLUSION",
                )
            )
        now = shop.clock.now()
        try:
            updated_at = parse_datetime(consent.get("consentUpdatedAt")) or now
        except ValueError:
            updated_at = now
            errors.append(
                user_error(
                    ["input", consent_key, "consentUpdatedAt"], "Consent updated at is invalid", "INVALID"
                )
            )
        if updated_at > now:
            errors.append(
                user_error(
                    ["input", consent_key, "consentUpdatedAt"],
                    "Consent updated at can't be in the future",
                    "INVALID",
                )
            )
        target = (
            shop.gid("customers", customer_id) if customer_id is not None else str(input.get("customerId"))
        )
        if errors:
            _log_rejected(shop, operation, target, input, errors)
            return {"customer": None, "userErrors": errors}
        assert customer is not None and customer_id is not None
        prefix = "email_consent" if channel == "email" else "sms_consent"
        stored_at = customer.get(f"{prefix}_updated_at")
        if stored_at is not None and stored_at > updated_at:
            # Latest consentUpdatedAt wins: an older decision never overwrites a newer one.
            shop.log_write(operation, target, _jsonable(input), outcome="ignored_older")
            return {"customer": customer, "userErrors": []}
        changes: dict[str, Any] = {
            f"{prefix}_state": state,
            f"{prefix}_opt_in_level": consent.get("marketingOptInLevel")
            or customer.get(f"{prefix}_opt_in_level")
            or "SINGLE_OPT_IN",
            f"{prefix}_updated_at": updated_at,
        }
        if channel == "sms":
            changes["sms_consent_collected_from"] = "OTHER"
        topic = (
            "customers_email_marketing_consent/update"
            if channel == "email"
            else "customers_marketing_consent/update"
        )
        updated = shop.update_record(
            "customers", customer_id, changes, operation=operation, topics=(topic, "customers/update")
        )
    return {"customer": updated, "userErrors": []}


def resolve_customer_email_marketing_consent_update(
    root: Any, info: GraphQLResolveInfo, input: dict[str, Any]
) -> dict[str, Any]:
    """customerEmailMarketingConsentUpdate: settable states only, latest consentUpdatedAt wins."""
    return _consent_update(info, input, "email")


def resolve_customer_sms_marketing_consent_update(
    root: Any, info: GraphQLResolveInfo, input: dict[str, Any]
) -> dict[str, Any]:
    """customerSmsMarketingConsentUpdate: settable states only, latest consentUpdatedAt wins."""
    return _consent_update(info, input, "sms")


# metafields ------------------------------------------------------------------------------
def validate_metafield_value(mf_type: str, value: str) -> str | None:
    """Why ``value`` is not valid for ``mf_type`` (None when it is)."""
    if mf_type.startswith("list."):
        inner = mf_type.removeprefix("list.")
        if inner not in SCALAR_TYPES or inner in (
            "json",
            "multi_line_text_field",
            "boolean",
            "rich_text_field",
        ):
            return f"Type {mf_type} is not supported."
        try:
            items = json.loads(value)
        except ValueError:
            return "Value must be a JSON array."
        if not isinstance(items, list):
            return "Value must be a JSON array."
        for item in items:
            problem = validate_metafield_value(inner, item if isinstance(item, str) else json.dumps(item))
            if problem:
                return problem
        return None
    check = SCALAR_TYPES.get(mf_type)
    if check is None:
        return f"Type {mf_type} is not supported."
    return check(value)


def _check_single_line(value: str) -> str | None:
    if "\n" in value or "\r" in value:
        return "Value must be a single line."
    if len(value) > 65_535:
        return "Value is too long."
    return None


def _check_multi_line(value: str) -> str | None:
    return "Value is too long." if len(value) > 65_535 else None


def _check_integer(value: str) -> str | None:
    if not re.fullmatch(r"[+-]?\d+", value.strip()):
        return "Value must be an integer."
    if abs(int(value)) > 9_007_199_254_740_991:
        return "Value must be between -9007199254740991 and 9007199254740991."
    return None


def _check_decimal(value: str) -> str | None:
    try:
        number = Decimal(value)
    except InvalidOperation:
        return "Value must be a decimal number."
    return None if number.is_finite() else "Value must be a decimal number."


def _check_boolean(value: str) -> str | None:
    return None if value in ("true", "false") else "Value must be true or false."


def _check_json(value: str) -> str | None:
    try:
        json.loads(value)
    except ValueError:
        return "Value must be valid JSON."
    return None


def _check_date(value: str) -> str | None:
    try:
        date.fromisoformat(value)
    except ValueError:
        return "Value must be a date in the format YYYY-MM-DD."
    return (
        None
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)
        else "Value must be a date in the format YYYY-MM-DD."
    )


def _check_date_time(value: str) -> str | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?", value):
        return "Value must be an ISO 8601 date and time, e.g. 2026-01-31T12:00:00Z."
    try:
        parse_datetime(value)
    except ValueError:
        return "Value must be an ISO 8601 date and time, e.g. 2026-01-31T12:00:00Z."
    return None


def _check_url(value: str) -> str | None:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https", "mailto", "sms", "tel"):
        return "Value must be a URL with scheme http, https, mailto, sms or tel."
    return None


def _check_color(value: str) -> str | None:
    return None if re.fullmatch(r"#[0-9A-Fa-f]{6}", value) else "Value must be a hex color, e.g. #FF0000."


def _check_rating(value: str) -> str | None:
    try:
        data = json.loads(value)
    except ValueError:
        return "Value must be a rating object."
    return None if isinstance(data, dict) and "value" in data else "Value must be a rating object."


SCALAR_TYPES: dict[str, Callable[[str], str | None]] = {
    "single_line_text_field": _check_single_line,
    "multi_line_text_field": _check_multi_line,
    "number_integer": _check_integer,
    "number_decimal": _check_decimal,
    "boolean": _check_boolean,
    "json": _check_json,
    "date": _check_date,
    "date_time": _check_date_time,
    "url": _check_url,
    "color": _check_color,
    "rating": _check_rating,
    "rich_text_field": _check_json,
}


def _app_namespace(info: GraphQLResolveInfo) -> str:
    client_id = context_client_id(info) or "devstore"
    return f"app--{client_id}"


def _validate_metafield(
    shop: ShopState,
    info: GraphQLResolveInfo,
    index: int,
    element: dict[str, Any],
    seen: set[tuple[int, str, str]],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Errors for one metafieldsSet element, and the planned write when there are none."""

    def err(field: str, message: str, code: str) -> dict[str, Any]:
        return user_error(["metafields", str(index), field], message, code, elementIndex=index)

    errors: list[dict[str, Any]] = []
    owner_id = parse_gid(element.get("ownerId"), "Customer")
    if owner_id is None or owner_id not in shop.records["customers"]:
        errors.append(err("ownerId", "Owner does not exist.", "INVALID"))
    namespace = element.get("namespace")
    if namespace is None or namespace == "$app":
        namespace = _app_namespace(info)
    elif namespace.startswith("$app:"):
        namespace = f"{_app_namespace(info)}--{namespace.removeprefix('$app:')}"
    key = str(element.get("key") or "")
    value = element.get("value")
    if len(namespace) < 3:
        errors.append(err("namespace", "Namespace is too short (minimum is 3 characters)", "TOO_SHORT"))
    elif len(namespace) > 255:
        errors.append(err("namespace", "Namespace is too long (maximum is 255 characters)", "TOO_LONG"))
    elif not _NAME_RE.match(namespace):
        errors.append(
            err(
                "namespace",
                "Namespace can only contain alphanumeric, hyphen and underscore characters.",
                "INVALID",
            )
        )
    elif namespace.lower().startswith(RESERVED_NAMESPACE_PREFIXES):
        errors.append(
            err("namespace", f"Namespace {namespace} is reserved and can't be written to.", "INVALID")
        )
    if len(key) < 2:
        errors.append(err("key", "Key is too short (minimum is 2 characters)", "TOO_SHORT"))
    elif len(key) > 64:
        errors.append(err("key", "Key is too long (maximum is 64 characters)", "TOO_LONG"))
    elif not _NAME_RE.match(key):
        errors.append(
            err("key", "Key can only contain alphanumeric, hyphen and underscore characters.", "INVALID")
        )
    existing: Record | None = None
    if owner_id is not None:
        for mf in shop.children["metafields"].get(owner_id, []):
            if mf["namespace"] == namespace and mf["key"] == key:
                existing = mf
                break
    mf_type = element.get("type") or (existing["type"] if existing else None)
    if not mf_type:
        errors.append(err("type", "Type can't be blank.", "BLANK"))
    elif existing is not None and element.get("type") and element["type"] != existing["type"]:
        errors.append(
            err(
                "type",
                f"Type must be {existing['type']}, the type of the existing metafield.",
                "INVALID_TYPE",
            )
        )
    elif mf_type.removeprefix("list.") not in SCALAR_TYPES:
        errors.append(err("type", f"Type {mf_type} is not a supported metafield type.", "INVALID_TYPE"))
    if value is None or value == "":
        errors.append(err("value", "Value can't be blank.", "BLANK"))
    elif mf_type and mf_type.removeprefix("list.") in SCALAR_TYPES:
        problem = validate_metafield_value(mf_type, value)
        if problem:
            errors.append(err("value", problem, "INVALID_VALUE"))
    if "compareDigest" in element:
        digest = element["compareDigest"]
        if digest is not None and not _HEX_DIGEST_RE.match(str(digest)):
            errors.append(err("compareDigest", "The compareDigest is invalid.", "INVALID_COMPARE_DIGEST"))
        elif (digest is None and existing is not None) or (
            digest is not None and (existing is None or compare_digest(existing["value"]) != digest)
        ):
            errors.append(
                err("compareDigest", "The resource has been updated since it was loaded.", "STALE_OBJECT")
            )
    if owner_id is not None:
        ident = (owner_id, namespace, key)
        if ident in seen:
            errors.append(err("key", "The same metafield appears more than once in this request.", "TAKEN"))
        seen.add(ident)
    if errors:
        return errors, None
    return [], {"owner_id": owner_id, "namespace": namespace, "key": key, "type": mf_type, "value": value}


def _write_metafields(shop: ShopState, plans: list[dict[str, Any]], now: datetime) -> list[Record]:
    """Create or update validated metafields (the caller holds the shop lock)."""
    written: list[Record] = []
    for plan in plans:
        owner_id = plan["owner_id"]
        siblings = shop.children["metafields"].setdefault(owner_id, [])
        record = next(
            (m for m in siblings if m["namespace"] == plan["namespace"] and m["key"] == plan["key"]), None
        )
        if record is None:
            record = {
                "shop": shop.domain,
                "id": shop.next_id(),
                "owner_type": "Customer",
                "owner_id": owner_id,
                "namespace": plan["namespace"],
                "key": plan["key"],
                "created_at": now,
            }
            siblings.append(record)
        record.update(type=plan["type"], value=plan["value"], updated_at=now)
        written.append(record)
    return written


def resolve_metafields_set(
    root: Any, info: GraphQLResolveInfo, metafields: list[dict[str, Any]]
) -> dict[str, Any]:
    """metafieldsSet: up to 25 per call, all-or-nothing, compare-and-set via compareDigest."""
    require_scope(info, "write_customers")
    shop = context_shop(info)
    if len(metafields) > MAX_METAFIELDS_PER_CALL:
        errors = [
            user_error(
                ["metafields"],
                f"Exceeded the maximum metafields input limit of {MAX_METAFIELDS_PER_CALL}.",
                "LESS_THAN_OR_EQUAL_TO",
                elementIndex=None,
            )
        ]
        _log_rejected(shop, "metafieldsSet", "metafields", {"count": len(metafields)}, errors)
        return {"metafields": [], "userErrors": errors}
    with shop.lock:
        errors = []
        plans: list[dict[str, Any]] = []
        seen: set[tuple[int, str, str]] = set()
        for index, element in enumerate(metafields):
            element_errors, plan = _validate_metafield(shop, info, index, element, seen)
            errors.extend(element_errors)
            if plan is not None:
                plans.append(plan)
        if errors:
            # atomic: one bad element means nothing is written
            _log_rejected(shop, "metafieldsSet", "metafields", {"metafields": metafields}, errors)
            return {"metafields": [], "userErrors": errors}
        now = shop.clock.now()
        written = _write_metafields(shop, plans, now)
        owners: list[int] = list(dict.fromkeys(r["owner_id"] for r in written))
        for owner_id in owners:
            mine = [
                {"namespace": r["namespace"], "key": r["key"], "type": r["type"], "value": r["value"]}
                for r in written
                if r["owner_id"] == owner_id
            ]
            shop.update_record(
                "customers",
                owner_id,
                {},
                operation="metafieldsSet",
                topics=("customers/update",),
                at=now,
                log_payload={"metafields": _jsonable(mine)},
            )
    return {"metafields": written, "userErrors": []}


# customers -------------------------------------------------------------------------------
def _normalise_phone(phone: str, country: str | None) -> str | None:
    try:
        parsed = phonenumbers.parse(phone, country or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _split_tags(tags: list[str] | str) -> list[str]:
    items = [tags] if isinstance(tags, str) else list(tags)
    out: list[str] = []
    for item in items:
        for tag in str(item).split(","):
            tag = tag.strip()
            if tag and tag not in out:
                out.append(tag)
    return sorted(out, key=str.lower)


def resolve_customer_update(root: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> dict[str, Any]:
    """customerUpdate: profile fields, tags (replacing), email/phone with format and uniqueness checks."""
    require_scope(info, "write_customers")
    shop = context_shop(info)
    customer_id = parse_gid(input.get("id"), "Customer")
    errors: list[dict[str, Any]] = []
    with shop.lock:
        customer = shop.records["customers"].get(customer_id) if customer_id is not None else None
        if customer is None:
            errors.append(user_error(["id"], "Customer does not exist"))
            _log_rejected(shop, "customerUpdate", str(input.get("id")), input, [{"code": "NOT_FOUND"}])
            return {"customer": None, "userErrors": errors}
        assert customer_id is not None
        changes: dict[str, Any] = {}
        for arg, column in (
            ("firstName", "first_name"),
            ("lastName", "last_name"),
            ("note", "note"),
            ("locale", "locale"),
        ):
            if arg in input:
                changes[column] = input[arg]
        if "taxExempt" in input and input["taxExempt"] is not None:
            changes["tax_exempt"] = bool(input["taxExempt"])
        if "tags" in input:
            changes["tags"] = _split_tags(input["tags"] or [])
        if "email" in input:
            email = (input["email"] or "").strip() or None
            if email is not None and not _EMAIL_RE.match(email):
                errors.append(user_error(["email"], "Email is invalid"))
            elif email is not None and any(
                (c.get("email") or "").strip().lower() == email.lower() and cid != customer_id
                for cid, c in shop.records["customers"].items()
            ):
                errors.append(user_error(["email"], "Email has already been taken"))
            else:
                changes["email"] = email
                if email is None:
                    changes.update(email_consent_state=None, email_consent_opt_in_level=None)
                elif not customer.get("email"):
                    changes["email_consent_state"] = "NOT_SUBSCRIBED"
        if "phone" in input:
            raw = (input["phone"] or "").strip()
            phone = _normalise_phone(raw, shop.info.get("country_code")) if raw else None
            if raw and phone is None:
                errors.append(user_error(["phone"], "Phone is invalid"))
            elif phone is not None and any(
                c.get("phone") == phone and cid != customer_id for cid, c in shop.records["customers"].items()
            ):
                errors.append(user_error(["phone"], "Phone has already been taken"))
            else:
                changes["phone"] = phone
                if phone is None:
                    changes.update(sms_consent_state=None, sms_consent_opt_in_level=None)
                elif not customer.get("phone"):
                    changes.update(
                        sms_consent_state="NOT_SUBSCRIBED", sms_consent_opt_in_level="SINGLE_OPT_IN"
                    )
        for arg, mutation in (
            ("emailMarketingConsent", "customerEmailMarketingConsentUpdate"),
            ("smsMarketingConsent", "customerSmsMarketingConsentUpdate"),
        ):
            if input.get(arg) is not None:
                errors.append(
                    user_error([arg], f"To update {arg}, please use the {mutation} Mutation instead")
                )
        plans: list[dict[str, Any]] = []
        seen: set[tuple[int, str, str]] = set()
        for index, element in enumerate(input.get("metafields") or []):
            as_set = {k: v for k, v in element.items() if k != "id"}
            as_set["ownerId"] = shop.gid("customers", customer_id)
            element_errors, plan = _validate_metafield(shop, info, index, as_set, seen)
            errors.extend(user_error(e["field"], e["message"]) for e in element_errors)
            if plan is not None:
                plans.append(plan)
        if errors:
            _log_rejected(
                shop, "customerUpdate", shop.gid("customers", customer_id), input, [{"code": "INVALID"}]
            )
            return {"customer": None, "userErrors": errors}
        log_payload = dict(_jsonable(input))
        if plans:
            _write_metafields(shop, plans, shop.clock.now())
        updated = shop.update_record(
            "customers",
            customer_id,
            changes,
            operation="customerUpdate",
            topics=("customers/update",),
            log_payload=log_payload,
        )
    return {"customer": updated, "userErrors": []}


def resolve_customer_address_create(
    root: Any,
    info: GraphQLResolveInfo,
    customerId: str,
    address: dict[str, Any],
    setAsDefault: bool | None = None,
) -> dict[str, Any]:
    """customerAddressCreate: adds an address; the first one (or setAsDefault) becomes the default."""
    require_scope(info, "write_customers")
    shop = context_shop(info)
    customer_id = parse_gid(customerId, "Customer")
    with shop.lock:
        customer = shop.records["customers"].get(customer_id) if customer_id is not None else None
        if customer is None or customer_id is None:
            errors = [user_error(["customerId"], "Customer does not exist")]
            _log_rejected(
                shop, "customerAddressCreate", str(customerId), {"address": address}, [{"code": "NOT_FOUND"}]
            )
            return {"address": None, "userErrors": errors}
        phone = address.get("phone")
        if phone:
            normalised = _normalise_phone(phone, address.get("countryCode") or shop.info.get("country_code"))
            if normalised is None:
                errors = [user_error(["address", "phone"], "Phone is invalid")]
                _log_rejected(
                    shop, "customerAddressCreate", shop.gid("customers", customer_id), address, errors
                )
                return {"address": None, "userErrors": errors}
            phone = normalised
        record: Record = {
            "shop": shop.domain,
            "id": shop.next_id(),
            "customer_id": customer_id,
            "first_name": address.get("firstName"),
            "last_name": address.get("lastName"),
            "company": address.get("company"),
            "address1": address.get("address1"),
            "address2": address.get("address2"),
            "city": address.get("city"),
            "province": address.get("province"),
            "province_code": address.get("provinceCode"),
            "zip": address.get("zip"),
            "country": address.get("country"),
            "country_code": address.get("countryCode"),
            "phone": phone,
        }
        shop.children["customer_addresses"].setdefault(customer_id, []).append(record)
        changes: dict[str, Any] = {}
        if setAsDefault or not customer.get("default_address_id"):
            changes["default_address_id"] = record["id"]
        shop.update_record(
            "customers",
            customer_id,
            changes,
            operation="customerAddressCreate",
            topics=("customers/update",),
            log_payload={"address": _jsonable(address), "setAsDefault": bool(setAsDefault)},
        )
    return {"address": record, "userErrors": []}


# webhook subscriptions -------------------------------------------------------------------
def _is_loopback(host: str | None) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or (host or "").endswith(".localhost")


def validate_webhook_uri(uri: str) -> str | None:
    """Why Shopify would refuse this subscription address (None when acceptable)."""
    if uri.startswith("pubsub://") or uri.startswith("arn:aws:events:"):
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "https" and parsed.netloc:
        return None
    # The devstore also accepts plain http to loopback, so tests need no TLS certificates.
    if parsed.scheme == "http" and _is_loopback(parsed.hostname):
        return None
    if parsed.scheme and parsed.scheme != "https":
        return f"Address protocol {parsed.scheme}:// is not supported"
    return "Address is invalid"


def create_webhook_subscription(
    shop: ShopState,
    topic: str,
    uri: str,
    *,
    client_id: str,
    fmt: str = "JSON",
    include_fields: list[str] | None = None,
    name: str | None = None,
    filter_query: str | None = None,
    operation: str = "webhookSubscriptionCreate",
    source: str = "api",
) -> Record:
    """Store a subscription (``topic`` as the enum value, e.g. ``CUSTOMERS_CREATE``)."""
    now = shop.clock.now()
    with shop.lock:
        sub_id = shop.next_id()
        record: Record = {
            "id": sub_id,
            "topic": topic,
            "uri": uri,
            "callback_url": uri,
            "format": fmt,
            "client_id": client_id,
            "api_version": API_VERSION,
            "include_fields": list(include_fields or []),
            "metafield_namespaces": [],
            "filter": filter_query,
            "name": name,
            "created_at": now,
            "updated_at": now,
            "__typename": "WebhookSubscription",
            "source": source,  # "api" or "control"; only API subscriptions are removed after failures
        }
        shop.webhook_subscriptions[sub_id] = record
        shop.log_write(operation, f"gid://shopify/WebhookSubscription/{sub_id}", {"topic": topic, "uri": uri})
    return record


def resolve_webhook_subscription_create(
    root: Any, info: GraphQLResolveInfo, topic: str, webhookSubscription: dict[str, Any]
) -> dict[str, Any]:
    """webhookSubscriptionCreate: one subscription per app, topic and address."""
    shop = context_shop(info)
    topic = str(topic)
    sub = webhookSubscription or {}
    uri = sub.get("uri") or sub.get("callbackUrl")
    client_id = context_client_id(info)
    errors: list[dict[str, Any]] = []
    scope = TOPIC_SCOPES.get(topic.split("_", 1)[0])
    scopes = context_value(info, "scopes")
    if (
        scope
        and scopes is not None
        and scope not in scopes
        and scope.replace("read_", "write_") not in scopes
    ):
        errors.append(
            user_error(
                ["webhookSubscription"],
                f"You do not have permission to create or update webhooks with {topic_name(topic)} topic."
                f" This topic requires the `{scope}` access scope.",
            )
        )
    field_name = "uri" if sub.get("uri") else "callbackUrl"
    if not uri:
        errors.append(user_error(["webhookSubscription", field_name], "Address can't be blank"))
    else:
        problem = validate_webhook_uri(str(uri))
        if problem:
            errors.append(user_error(["webhookSubscription", field_name], problem))
        elif any(
            s["topic"] == topic and s["uri"] == uri and s.get("client_id") == client_id
            for s in shop.webhook_subscriptions.values()
        ):
            errors.append(
                user_error(
                    ["webhookSubscription", field_name], "Address for this topic has already been taken"
                )
            )
    if errors:
        _log_rejected(
            shop, "webhookSubscriptionCreate", topic, {"topic": topic, "uri": uri}, [{"code": "INVALID"}]
        )
        return {"webhookSubscription": None, "userErrors": errors}
    record = create_webhook_subscription(
        shop,
        topic,
        str(uri),
        client_id=client_id,
        fmt=str(sub.get("format") or "JSON"),
        include_fields=sub.get("includeFields"),
        name=sub.get("name"),
        filter_query=sub.get("filter"),
    )
    return {"webhookSubscription": record, "userErrors": []}


def resolve_webhook_subscription_delete(root: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any]:
    """webhookSubscriptionDelete: removes one of the calling app's subscriptions."""
    shop = context_shop(info)
    sub_id = parse_gid(id, "WebhookSubscription")
    client_id = context_client_id(info)
    with shop.lock:
        record = shop.webhook_subscriptions.get(sub_id) if sub_id is not None else None
        if record is None or (client_id and record.get("client_id") not in (client_id, "")):
            shop.log_write("webhookSubscriptionDelete", str(id), {}, outcome="NOT_FOUND")
            return {
                "deletedWebhookSubscriptionId": None,
                "userErrors": [user_error(["id"], "Webhook subscription does not exist")],
            }
        del shop.webhook_subscriptions[sub_id]
        shop.log_write("webhookSubscriptionDelete", str(id), {})
    return {"deletedWebhookSubscriptionId": f"gid://shopify/WebhookSubscription/{sub_id}", "userErrors": []}


def list_webhook_subscriptions(
    shop: ShopState,
    client_id: str = "",
    topics: list[str] | None = None,
    uri: str | None = None,
    fmt: str | None = None,
) -> list[Record]:
    """The subscriptions an app sees, oldest first, filtered like the webhookSubscriptions query."""
    with shop.lock:
        subs = sorted(shop.webhook_subscriptions.values(), key=lambda s: s["id"])
    out = []
    for s in subs:
        if client_id and s.get("client_id") not in (client_id, ""):
            continue
        if topics and s["topic"] not in topics:
            continue
        if uri and s["uri"] != uri:
            continue
        if fmt and s["format"] != fmt:
            continue
        out.append(s)
    return out


def resolve_webhook_subscriptions(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    """webhookSubscriptions query: the calling app's subscriptions as a connection."""
    from devstore.queries import connection  # the GraphQL layer's pager; imported late to avoid a cycle

    shop = context_shop(info)
    subs = list_webhook_subscriptions(
        shop,
        context_client_id(info),
        topics=[str(t) for t in args["topics"]] if args.get("topics") else None,
        uri=args.get("uri") or args.get("callbackUrl"),
        fmt=str(args["format"]) if args.get("format") else None,
    )
    return connection(
        info,
        subs,
        first=args.get("first"),
        after=args.get("after"),
        last=args.get("last"),
        before=args.get("before"),
        reverse=bool(args.get("reverse")),
        sort_key=str(args.get("sortKey") or "ID"),
    )


def resolve_webhook_subscription(root: Any, info: GraphQLResolveInfo, id: str) -> Record | None:
    """webhookSubscription(id) query."""
    shop = context_shop(info)
    sub_id = parse_gid(id, "WebhookSubscription")
    record = shop.webhook_subscriptions.get(sub_id) if sub_id is not None else None
    client_id = context_client_id(info)
    if record is None or (client_id and record.get("client_id") not in (client_id, "")):
        return None
    return record


def _subscription_id(sub: Record, info: GraphQLResolveInfo) -> str:
    return f"gid://shopify/WebhookSubscription/{sub['id']}"


def _subscription_legacy_id(sub: Record, info: GraphQLResolveInfo) -> int:
    return int(sub["id"])


def _subscription_api_version(sub: Record, info: GraphQLResolveInfo) -> dict[str, Any]:
    version = sub.get("api_version") or API_VERSION
    return {"handle": version, "displayName": version, "supported": True}


def _subscription_endpoint(sub: Record, info: GraphQLResolveInfo) -> dict[str, Any]:
    uri = str(sub["uri"])
    if uri.startswith("pubsub://"):
        project, _, topic = uri.removeprefix("pubsub://").partition(":")
        return {"__typename": "WebhookPubSubEndpoint", "pubSubProject": project, "pubSubTopic": topic}
    if uri.startswith("arn:"):
        return {"__typename": "WebhookEventBridgeEndpoint", "arn": uri}
    return {"__typename": "WebhookHttpEndpoint", "callbackUrl": uri}


def resolve_app_uninstall(root: Any, info: GraphQLResolveInfo) -> dict[str, Any]:
    """appUninstall: the calling app uninstalls itself from the shop.

    As on Shopify: ``app/uninstalled`` goes out while the app's subscriptions still exist,
    then its tokens stop working and its webhook subscriptions are deleted.
    """
    import zlib

    shop = context_shop(info)
    app = context_value(info, "app")
    if not isinstance(app, AppCredentials):
        return {"app": None, "userErrors": [user_error(None, "Only an app can uninstall itself.")]}
    app_id = zlib.crc32(app.client_id.encode())
    shop.uninstall_app(app, "appUninstall")
    return {
        "app": {"id": f"gid://shopify/App/{app_id}", "title": "shopsync", "handle": "shopsync"},
        "userErrors": [],
    }


def _metafield_compare_digest(mf: Record, info: GraphQLResolveInfo) -> str:
    return compare_digest(str(mf.get("value") or ""))


RESOLVERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("Mutation", "customerEmailMarketingConsentUpdate"): resolve_customer_email_marketing_consent_update,
    ("Mutation", "customerSmsMarketingConsentUpdate"): resolve_customer_sms_marketing_consent_update,
    ("Mutation", "metafieldsSet"): resolve_metafields_set,
    ("Mutation", "customerUpdate"): resolve_customer_update,
    ("Mutation", "customerAddressCreate"): resolve_customer_address_create,
    ("Mutation", "webhookSubscriptionCreate"): resolve_webhook_subscription_create,
    ("Mutation", "webhookSubscriptionDelete"): resolve_webhook_subscription_delete,
    ("Mutation", "appUninstall"): resolve_app_uninstall,
    ("Query", "webhookSubscriptions"): resolve_webhook_subscriptions,
    ("Query", "webhookSubscription"): resolve_webhook_subscription,
    # the schema's query type is called QueryRoot; the executor dispatches on that name
    ("QueryRoot", "webhookSubscriptions"): resolve_webhook_subscriptions,
    ("QueryRoot", "webhookSubscription"): resolve_webhook_subscription,
    ("WebhookSubscription", "id"): _subscription_id,
    ("WebhookSubscription", "legacyResourceId"): _subscription_legacy_id,
    ("WebhookSubscription", "apiVersion"): _subscription_api_version,
    ("WebhookSubscription", "endpoint"): _subscription_endpoint,
    ("Metafield", "compareDigest"): _metafield_compare_digest,
}
