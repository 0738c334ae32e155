"""The devstore control API (JSON, not Shopify's), mounted at ``/_devstore``.

Tests and demos use it to change a shop behind the app's back (create, update and delete
records, a mass edit that gives many rows one ``updated_at``), to break things (revoke a
token, remove a scope, uninstall the app, set a fault profile, shift the clock), to trigger
compliance webhooks, and to read back what the app did (records, counts, the write log,
webhook deliveries). Bulk operation results are served here too, without a token.

The routes find the devstore through ``request.app.state.world`` (a ``World``);
``state.faults``, ``state.webhooks`` and ``state.bulk_runner`` are used when present,
otherwise the world's own injector and runner. ``{shop}`` is a handle or a domain.

    GET    /shops                                  shops with record counts
    GET    /shops/{shop}/counts                    record counts of one shop
    GET    /shops/{shop}/records/{entity}          records (?ids=1,2&limit=N); child tables too
    POST   /shops/{shop}/records/{entity}          create (nested addresses/line_items/variants); */create
    GET    /shops/{shop}/records/{entity}/{id}     one record with its children
    PATCH  /shops/{shop}/records/{entity}/{id}     partial update, moves updated_at; */update(d)
    DELETE /shops/{shop}/records/{entity}/{id}     delete with children; */delete
    POST   /shops/{shop}/mass_edit                 {entity, ids?|count?, changes?, updated_at?}: one updated_at
    GET    /shops/{shop}/write_log, /write_log     ?shop=&operation=&outcome=&since=&limit=
    POST   /shops/{shop}/tokens/revoke             {token} | {all: true, client_id?}
    POST   /shops/{shop}/scopes/remove|grant       {scope, client_id?}
    POST   /shops/{shop}/uninstall                 app/uninstalled, then tokens and subscriptions dropped
    POST   /shops/{shop}/reinstall                 {client_id?}: installed again, returns a static token
    GET|PUT /shops/{shop}/app                      {token_ttl_seconds?, redirect_urls?, client_id?}: app settings
    POST   /shops/{shop}/privacy                   {topic: customers/data_request|customers/redact|shop/redact, customer_id?}
    POST   /shops/{shop}/webhooks                  {topic, uri, client_id?}: subscribe to any topic
    GET    /webhooks/deliveries                    delivery attempts (?shop=&topic=)
    GET|PUT|DELETE /faults                         read, set (a FaultProfile as JSON) or clear faults
    GET    /clock, POST /clock/shift               {days?, hours?, seconds?}
    PUT    /bulk/settings                          {seconds_per_object?, min_seconds?}
    GET    /bulk/{id}.jsonl, /bulk/{id}-partial.jsonl   bulk results (no token)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import polars as pl
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from devstore import model
from devstore.bulk import BulkRunner, runner_for
from devstore.faults import FaultInjector, FaultProfile, injector_for
from devstore.mutations import create_webhook_subscription, topic_enum
from devstore.state import CHILD_TABLES, ENTITY_TABLES, Record, ShopState, World
from devstore.webhooks import WebhookDispatcher, dispatcher_for, shop_numeric_id

# entity table -> webhook resource and the verb its update topic uses
_TOPICS: dict[str, tuple[str, str]] = {
    "customers": ("customers", "update"),
    "orders": ("orders", "updated"),
    "products": ("products", "update"),
    "collections": ("collections", "update"),
    "abandoned_checkouts": ("checkouts", "update"),
}
# nested lists accepted when creating a record -> child table
_CHILD_KEYS: dict[str, dict[str, str]] = {
    "customers": {"addresses": "customer_addresses", "metafields": "metafields"},
    "orders": {"line_items": "order_line_items", "refunds": "refunds"},
    "products": {"variants": "variants"},
    "collections": {"products": "collection_products"},
    "abandoned_checkouts": {"line_items": "checkout_line_items"},
}
PRIVACY_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")


class ControlError(Exception):
    """An expected failure: becomes a JSON error with a status code, never a traceback."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, set | tuple):
        return list(value)
    return str(value)


def _ok(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, default=_json_default)
    return Response(body, status_code=status, media_type="application/json")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _handler(fn: Any) -> Any:
    """Wrap a handler so ``ControlError`` and bad JSON become clear JSON errors."""

    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except ControlError as exc:
            return _error(exc.status, exc.message)
        except json.JSONDecodeError as exc:
            return _error(400, f"Request body is not valid JSON ({exc.msg}). Send a JSON object.")
        except (TypeError, ValueError, KeyError) as exc:
            # a number that is not a number, a list that is not a list: the caller's mistake
            return _error(400, f"Invalid request: {exc}. Check the field types against the documented body.")

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


# dependencies ----------------------------------------------------------------------------
def _world(request: Request) -> World:
    world = getattr(request.app.state, "world", None)
    if world is None:
        raise ControlError(500, "The devstore app has no world attached (app.state.world).")
    return world


def _faults(request: Request) -> FaultInjector:
    injector = getattr(request.app.state, "faults", None)
    return injector if isinstance(injector, FaultInjector) else injector_for(_world(request))


def _runner(request: Request) -> BulkRunner:
    runner = getattr(request.app.state, "bulk_runner", None)
    return runner if isinstance(runner, BulkRunner) else runner_for(_world(request))


def _dispatcher(request: Request) -> WebhookDispatcher | None:
    dispatcher = getattr(request.app.state, "webhooks", None)
    if isinstance(dispatcher, WebhookDispatcher):
        return dispatcher
    return dispatcher_for(_world(request))


def _shop(request: Request) -> ShopState:
    name = request.path_params["shop"]
    shop = _world(request).shop(name)
    if shop is None:
        raise ControlError(404, f"No shop {name!r} in this devstore. GET /_devstore/shops lists them.")
    return shop


def _entity(request: Request) -> str:
    entity = request.path_params["entity"]
    if entity not in ENTITY_TABLES:
        raise ControlError(404, f"Unknown entity {entity!r}; use one of {', '.join(ENTITY_TABLES)}.")
    return entity


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ControlError(400, "Request body must be a JSON object.")
    return data


def _coerce(table: str, values: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """Check column names against ``devstore.model`` and parse timestamps."""
    schema = model.TABLES[table]
    unknown = sorted(set(values) - set(schema) - {"id"})
    if unknown:
        raise ControlError(400, f"Unknown {table} fields: {', '.join(unknown)}. Known: {', '.join(schema)}.")
    out: dict[str, Any] = {}
    for key, value in values.items():
        dtype = schema.get(key)
        if value is not None and isinstance(dtype, pl.Datetime):
            try:
                parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError as exc:
                raise ControlError(400, f"{key} must be an ISO 8601 timestamp, got {value!r}.") from exc
            value = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        out[key] = value
    if not partial:
        for key in schema:
            out.setdefault(key, None)
    return out


def _defaults(shop: ShopState, table: str, row: dict[str, Any]) -> None:
    """Fill what Shopify would fill for a record created in the admin."""
    if table in ("customers", "orders", "products") and row.get("tags") is None:
        row["tags"] = []
    if table == "customers":
        row["state"] = row.get("state") or "ENABLED"
        row["verified_email"] = bool(
            row.get("verified_email", True) if row.get("verified_email") is not None else True
        )
        row["tax_exempt"] = bool(row.get("tax_exempt") or False)
        if row.get("email") and not row.get("email_consent_state"):
            row["email_consent_state"] = "NOT_SUBSCRIBED"
        if row.get("phone") and not row.get("sms_consent_state"):
            row["sms_consent_state"] = "NOT_SUBSCRIBED"
    if table == "orders":
        currency = shop.info.get("currency_code")
        row["currency_code"] = row.get("currency_code") or currency
        row["presentment_currency_code"] = row.get("presentment_currency_code") or row["currency_code"]
        row["test"] = bool(row.get("test") or False)
        row["financial_status"] = row.get("financial_status") or "PAID"
        row["fulfillment_status"] = row.get("fulfillment_status") or "UNFULFILLED"
        for column in model.ORDERS:
            if column.endswith("_presentment") and row.get(column) is None:
                row[column] = row.get(column.removesuffix("_presentment"))
        if not row.get("name"):
            row["name"] = f"#{1001 + len(shop.records['orders'])}"
    if table == "products":
        row["status"] = row.get("status") or "ACTIVE"


# handlers --------------------------------------------------------------------------------
@_handler
async def list_shops(request: Request) -> Response:
    """GET /shops: every shop with its record counts."""
    world = _world(request)
    with world.lock:
        shops = list(world.shops.values())
    return _ok([{"shop": s.domain, "handle": s.handle, "counts": _counts(s)} for s in shops])


def _counts(shop: ShopState) -> dict[str, int]:
    with shop.lock:
        counts = {t: len(shop.records[t]) for t in ENTITY_TABLES}
        counts.update({t: sum(len(v) for v in shop.children[t].values()) for t in CHILD_TABLES})
        counts["webhook_subscriptions"] = len(shop.webhook_subscriptions)
        counts["bulk_operations"] = len(shop.bulk_operations)
        counts["write_log"] = len(shop.write_log)
    return counts


@_handler
async def shop_counts(request: Request) -> Response:
    """GET /shops/{shop}/counts."""
    return _ok(_counts(_shop(request)))


@_handler
async def list_records(request: Request) -> Response:
    """GET /shops/{shop}/records/{entity}[?ids=1,2&limit=N]: records of an entity (child tables too)."""
    shop = _shop(request)
    entity = request.path_params["entity"]
    ids_param = request.query_params.get("ids")
    ids = {int(i) for i in ids_param.split(",") if i.strip().isdigit()} if ids_param else None
    limit = int(request.query_params.get("limit", "0") or 0)
    with shop.lock:
        if entity in ENTITY_TABLES:
            rows = [dict(r) for r in shop.records[entity].values() if ids is None or r["id"] in ids]
        elif entity in CHILD_TABLES:
            rows = [
                dict(r)
                for parent_id, children in shop.children[entity].items()
                for r in children
                if ids is None or parent_id in ids
            ]
        else:
            raise ControlError(
                404,
                f"Unknown entity {entity!r}; use one of {', '.join(ENTITY_TABLES + tuple(CHILD_TABLES))}.",
            )
    rows.sort(key=lambda r: r.get("id") or 0)
    if limit:
        rows = rows[:limit]
    return _ok(rows)


@_handler
async def get_record(request: Request) -> Response:
    """GET /shops/{shop}/records/{entity}/{id}."""
    shop, entity = _shop(request), _entity(request)
    record_id = int(request.path_params["id"])
    with shop.lock:
        row = shop.records[entity].get(record_id)
        if row is None:
            raise ControlError(404, f"No {entity} record {record_id} in {shop.domain}.")
        out = dict(row)
        for key, child in _CHILD_KEYS[entity].items():
            out[key] = [dict(c) for c in shop.children[child].get(record_id, [])]
    return _ok(out)


@_handler
async def create_record(request: Request) -> Response:
    """POST /shops/{shop}/records/{entity}: create a record (nested children allowed); emits */create."""
    shop, entity = _shop(request), _entity(request)
    body = await _body(request)
    nested = {k: body.pop(k) for k in list(body) if k in _CHILD_KEYS[entity]}
    row = _coerce(entity, body, partial=False)
    _defaults(shop, entity, row)
    resource, _ = _TOPICS[entity]
    with shop.lock:
        if row.get("id") is not None and row["id"] in shop.records[entity]:
            raise ControlError(409, f"{entity} record {row['id']} already exists; PATCH it instead.")
        if row.get("id") is None:
            row.pop("id", None)
        # children first, so the create webhook carries them
        record_id = row.get("id") or shop.next_id()
        row["id"] = record_id
        for key, rows in nested.items():
            child_table = _CHILD_KEYS[entity][key]
            _parent, fk = CHILD_TABLES[child_table]
            children = shop.children[child_table].setdefault(record_id, [])
            for child in rows:
                values = _coerce(child_table, child, partial=False)
                values.update(shop=shop.domain, **{fk: record_id})
                if "id" in model.TABLES[child_table] and values.get("id") is None:
                    values["id"] = shop.next_id()
                # Shopify stamps what it creates; a child served without its non-null
                # timestamps would fail every query that reads it
                for stamp in ("created_at", "updated_at"):
                    if stamp in model.TABLES[child_table] and values.get(stamp) is None:
                        values[stamp] = shop.clock.now()
                children.append(values)
        created = shop.create_record(entity, row, operation="control.create", topic=f"{resource}/create")
    return _ok(created, status=201)


@_handler
async def update_record(request: Request) -> Response:
    """PATCH /shops/{shop}/records/{entity}/{id}: partial update; moves updated_at; emits */update."""
    shop, entity = _shop(request), _entity(request)
    record_id = int(request.path_params["id"])
    changes = _coerce(entity, await _body(request), partial=True)
    changes.pop("id", None)
    at = changes.pop("updated_at", None)
    resource, verb = _TOPICS[entity]
    topics: tuple[str, ...] = (f"{resource}/{verb}",)
    if entity == "customers":
        # a consent change made in the Shopify admin also fires the consent topics
        if any(k.startswith("email_consent_") for k in changes):
            topics += ("customers_email_marketing_consent/update",)
        if any(k.startswith("sms_consent_") for k in changes):
            topics += ("customers_marketing_consent/update",)
    updated = shop.update_record(entity, record_id, changes, operation="control.update", topics=topics, at=at)
    if updated is None:
        raise ControlError(404, f"No {entity} record {record_id} in {shop.domain}.")
    return _ok(updated)


@_handler
async def delete_record(request: Request) -> Response:
    """DELETE /shops/{shop}/records/{entity}/{id}: removes it (and its children); emits */delete."""
    shop, entity = _shop(request), _entity(request)
    record_id = int(request.path_params["id"])
    resource, _ = _TOPICS[entity]
    deleted = shop.delete_record(entity, record_id, operation="control.delete", topic=f"{resource}/delete")
    if deleted is None:
        raise ControlError(404, f"No {entity} record {record_id} in {shop.domain}.")
    return _ok({"deleted": record_id})


@_handler
async def mass_edit(request: Request) -> Response:
    """POST /shops/{shop}/mass_edit {entity, ids? | count?, changes?, updated_at?}.

    Gives every selected row the same ``updated_at`` (like an admin bulk edit), so a
    client's ``(updated_at, id)`` cursor has to cope with thousands of ties.
    """
    shop = _shop(request)
    body = await _body(request)
    entity = body.get("entity", "customers")
    if entity not in ENTITY_TABLES:
        raise ControlError(400, f"Unknown entity {entity!r}; use one of {', '.join(ENTITY_TABLES)}.")
    changes = _coerce(entity, dict(body.get("changes") or {}), partial=True)
    at_raw = body.get("updated_at")
    at = _coerce(entity, {"updated_at": at_raw}, partial=True)["updated_at"] if at_raw else shop.clock.now()
    resource, verb = _TOPICS[entity]
    with shop.lock:
        if body.get("ids") is not None:
            ids = [int(i) for i in body["ids"] if int(i) in shop.records[entity]]
        else:
            ids = sorted(shop.records[entity])[: int(body.get("count", len(shop.records[entity])))]
        for record_id in ids:
            shop.update_record(
                entity,
                record_id,
                dict(changes),
                operation="control.mass_edit",
                topics=(f"{resource}/{verb}",),
                at=at,
            )
    return _ok({"updated": len(ids), "ids": ids, "updated_at": at})


@_handler
async def write_log(request: Request) -> Response:
    """GET /write_log or /shops/{shop}/write_log [?shop=&operation=&outcome=&since=N&limit=N]."""
    world = _world(request)
    shop_filter = request.path_params.get("shop") or request.query_params.get("shop")
    shops = [_shop(request)] if request.path_params.get("shop") else list(world.shops.values())
    if shop_filter and not request.path_params.get("shop"):
        found = world.shop(shop_filter)
        shops = [found] if found else []
    operation = request.query_params.get("operation")
    outcome = request.query_params.get("outcome")
    since = int(request.query_params.get("since", "0") or 0)
    entries: list[dict[str, Any]] = []
    for shop in shops:
        with shop.lock:
            log = list(shop.write_log)[since:] if len(shops) == 1 else list(shop.write_log)
        for entry in log:
            if operation and entry.operation != operation:
                continue
            if outcome and entry.outcome != outcome:
                continue
            entries.append(
                {
                    "at": entry.at,
                    "shop": entry.shop,
                    "operation": entry.operation,
                    "target": entry.target,
                    "payload": entry.payload,
                    "outcome": entry.outcome,
                }
            )
    entries.sort(key=lambda e: e["at"])
    limit = int(request.query_params.get("limit", "0") or 0)
    return _ok(entries[-limit:] if limit else entries)


def _app(shop: ShopState, client_id: str | None) -> Any:
    if client_id:
        app = shop.apps.get(client_id)
        if app is None:
            raise ControlError(404, f"No app {client_id!r} installed on {shop.domain}.")
        return app
    if not shop.apps:
        raise ControlError(404, f"No app is installed on {shop.domain}.")
    if len(shop.apps) > 1:
        raise ControlError(400, f"{shop.domain} has several apps; say which with client_id.")
    return next(iter(shop.apps.values()))


@_handler
async def revoke_token(request: Request) -> Response:
    """POST /shops/{shop}/tokens/revoke {token} or {client_id?, all: true}: the token stops working."""
    shop = _shop(request)
    body = await _body(request)
    revoked = 0
    with shop.lock:
        if body.get("token"):
            for app in shop.apps.values():
                if app.tokens.pop(body["token"], "missing") != "missing":
                    revoked += 1
        elif body.get("all"):
            app = _app(shop, body.get("client_id"))
            revoked = len(app.tokens)
            app.tokens.clear()
        else:
            raise ControlError(400, 'Say which token to revoke: {"token": "shpat_..."} or {"all": true}.')
        shop.log_write("control.revoke_token", shop.domain, {"revoked": revoked})
    if body.get("token") and not revoked:
        raise ControlError(404, "That token is not known to this shop.")
    return _ok({"revoked": revoked})


@_handler
async def remove_scope(request: Request) -> Response:
    """POST /shops/{shop}/scopes/remove {scope, client_id?}: the app loses an access scope."""
    shop = _shop(request)
    body = await _body(request)
    scope = body.get("scope")
    if not scope:
        raise ControlError(400, 'Say which scope to remove, e.g. {"scope": "write_customers"}.')
    with shop.lock:
        app = _app(shop, body.get("client_id"))
        app.scopes.discard(scope)
        shop.log_write("control.remove_scope", shop.domain, {"scope": scope})
        scopes = sorted(app.scopes)
    return _ok({"scopes": scopes})


@_handler
async def grant_scope(request: Request) -> Response:
    """POST /shops/{shop}/scopes/grant {scope, client_id?}: give a scope back."""
    shop = _shop(request)
    body = await _body(request)
    scope = body.get("scope")
    if not scope:
        raise ControlError(400, 'Say which scope to grant, e.g. {"scope": "write_customers"}.')
    with shop.lock:
        app = _app(shop, body.get("client_id"))
        app.scopes.add(scope)
        shop.log_write("control.grant_scope", shop.domain, {"scope": scope})
        scopes = sorted(app.scopes)
    return _ok({"scopes": scopes})


@_handler
async def uninstall(request: Request) -> Response:
    """POST /shops/{shop}/uninstall {client_id?}: emits app/uninstalled, then drops tokens and subscriptions."""
    shop = _shop(request)
    body = await _body(request)
    with shop.lock:
        app = _app(shop, body.get("client_id"))
    # app/uninstalled goes out while the subscriptions still exist: Shopify sends it, then forgets them.
    shop.uninstall_app(app, "control.uninstall")
    return _ok({"uninstalled": app.client_id})


@_handler
async def reinstall(request: Request) -> Response:
    """POST /shops/{shop}/reinstall {client_id?}: install the app again; returns a fresh static token."""
    shop = _shop(request)
    body = await _body(request)
    with shop.lock:
        app = _app(shop, body.get("client_id"))
        app.installed = True
        token = app.issue_token(shop.clock.now(), None)
        shop.log_write("control.reinstall", shop.domain, {"client_id": app.client_id})
    return _ok({"client_id": app.client_id, "access_token": token, "scopes": sorted(app.scopes)})


def _app_settings(app: Any) -> dict[str, Any]:
    return {
        "client_id": app.client_id,
        "installed": app.installed,
        "scopes": sorted(app.scopes),
        "token_ttl_seconds": app.token_ttl.total_seconds(),
        "redirect_urls": list(app.redirect_urls),
    }


@_handler
async def get_app(request: Request) -> Response:
    """GET /shops/{shop}/app [?client_id=]: the app's settings (token lifetime, redirect URLs, scopes)."""
    shop = _shop(request)
    with shop.lock:
        return _ok(_app_settings(_app(shop, request.query_params.get("client_id"))))


@_handler
async def update_app(request: Request) -> Response:
    """PUT /shops/{shop}/app {token_ttl_seconds?, redirect_urls?, client_id?}: change the app's settings.

    ``token_ttl_seconds`` applies to client-credentials tokens issued from now on (tokens
    already issued keep their expiry); ``redirect_urls`` replaces the allowed OAuth
    redirection URLs.
    """
    shop = _shop(request)
    body = await _body(request)
    unknown = sorted(set(body) - {"token_ttl_seconds", "redirect_urls", "client_id"})
    if unknown:
        raise ControlError(
            400, f"Unknown app settings: {', '.join(unknown)}. Send token_ttl_seconds and/or redirect_urls."
        )
    ttl = body.get("token_ttl_seconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise ControlError(400, f"token_ttl_seconds must be a number of seconds above 0, got {ttl!r}.")
    urls = body.get("redirect_urls")
    if urls is not None:
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ControlError(
                400, 'redirect_urls must be a list of URLs, e.g. ["https://app.example/callback"].'
            )
        bad = [u for u in urls if urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).netloc]
        if bad:
            raise ControlError(400, f"Redirect URLs must be absolute http(s) URLs: {', '.join(bad)}.")
    with shop.lock:
        app = _app(shop, body.get("client_id"))
        if ttl is not None:
            app.token_ttl = timedelta(seconds=float(ttl))
        if urls is not None:
            app.redirect_urls = list(urls)
        shop.log_write("control.update_app", shop.domain, {k: v for k, v in body.items() if k != "client_id"})
        return _ok(_app_settings(app))


@_handler
async def privacy(request: Request) -> Response:
    """POST /shops/{shop}/privacy {topic, customer_id?, orders?}: send a compliance webhook."""
    shop = _shop(request)
    body = await _body(request)
    topic = body.get("topic")
    if topic not in PRIVACY_TOPICS:
        raise ControlError(400, f"topic must be one of {', '.join(PRIVACY_TOPICS)}.")
    payload: dict[str, Any] = {"shop_id": shop_numeric_id(shop.domain), "shop_domain": shop.domain}
    if topic != "shop/redact":
        customer_id = body.get("customer_id")
        with shop.lock:
            customer = shop.records["customers"].get(int(customer_id)) if customer_id is not None else None
            if customer is None:
                raise ControlError(404, f"{topic} needs an existing customer_id of {shop.domain}.")
            orders = body.get("orders")
            if orders is None:
                orders = sorted(
                    o["id"] for o in shop.records["orders"].values() if o.get("customer_id") == customer["id"]
                )
        payload["customer"] = {
            "id": customer["id"],
            "email": customer.get("email"),
            "phone": customer.get("phone"),
        }
        if topic == "customers/data_request":
            payload["orders_requested"] = orders
            payload["data_request"] = {"id": shop.next_id()}
        else:
            payload["orders_to_redact"] = orders
    shop.log_write("control.privacy", topic, payload)
    shop.emit(topic, payload)
    return _ok(payload)


@_handler
async def create_subscription(request: Request) -> Response:
    """POST /shops/{shop}/webhooks {topic, uri, client_id?}: subscribe to any topic (compliance ones too)."""
    shop = _shop(request)
    body = await _body(request)
    topic, uri = body.get("topic"), body.get("uri")
    if not topic or not uri:
        raise ControlError(400, 'Send {"topic": "customers/redact", "uri": "http://127.0.0.1:8787/..."}.')
    client_id = body.get("client_id") or (_app(shop, None).client_id if shop.apps else "")
    record = create_webhook_subscription(
        shop,
        topic_enum(topic) if "/" in topic else topic,
        uri,
        client_id=client_id,
        operation="control.subscribe",
        source="control",
    )
    return _ok(record, status=201)


@_handler
async def deliveries(request: Request) -> Response:
    """GET /webhooks/deliveries [?shop=&topic=]: every delivery attempt so far."""
    dispatcher = _dispatcher(request)
    if dispatcher is None:
        return _ok([])
    records = dispatcher.records(request.query_params.get("shop"), request.query_params.get("topic"))
    return _ok([r.to_dict() for r in records])


@_handler
async def get_faults(request: Request) -> Response:
    """GET /faults: the active profile and how many faults were injected."""
    return _ok(_faults(request).snapshot())


@_handler
async def set_faults(request: Request) -> Response:
    """PUT /faults {seed, rate_500, ...}: install a fault profile (restarts the random streams)."""
    body = await _body(request)
    try:
        profile = FaultProfile.from_dict(body)
    except (TypeError, ValueError) as exc:
        raise ControlError(400, f"Invalid fault profile: {exc}") from exc
    _faults(request).set_profile(profile)
    return _ok(_faults(request).snapshot())


@_handler
async def clear_faults(request: Request) -> Response:
    """DELETE /faults: no more faults."""
    _faults(request).clear()
    return _ok(_faults(request).snapshot())


@_handler
async def get_clock(request: Request) -> Response:
    """GET /clock: the devstore's now and its offset from the wall clock."""
    clock = _world(request).clock
    return _ok({"now": clock.now(), "offset_seconds": clock.offset.total_seconds()})


@_handler
async def shift_clock(request: Request) -> Response:
    """POST /clock/shift {days?, hours?, seconds?}: move the devstore's clock forward (or back)."""
    body = await _body(request)
    try:
        delta = timedelta(
            days=float(body.get("days", 0)),
            hours=float(body.get("hours", 0)),
            seconds=float(body.get("seconds", 0)),
        )
    except (TypeError, ValueError) as exc:
        raise ControlError(400, "days, hours and seconds must be numbers.") from exc
    clock = _world(request).clock
    clock.offset += delta
    return _ok({"now": clock.now(), "offset_seconds": clock.offset.total_seconds()})


@_handler
async def bulk_settings(request: Request) -> Response:
    """PUT /bulk/settings {seconds_per_object?, min_seconds?}: simulated bulk running time."""
    runner = _runner(request)
    body = await _body(request)
    for key in ("seconds_per_object", "min_seconds"):
        if key in body:
            value = float(body[key])
            if value < 0:
                raise ControlError(400, f"{key} must be zero or more.")
            setattr(runner, key, value)
    return _ok({"seconds_per_object": runner.seconds_per_object, "min_seconds": runner.min_seconds})


async def bulk_file(request: Request) -> Response:
    """GET /bulk/{name}: a bulk result (``<id>.jsonl``) or partial result; no token needed."""
    runner = _runner(request)
    name = request.path_params["name"]
    stem = name.removesuffix(".jsonl").removesuffix("-partial")
    found = runner.find_operation(int(stem)) if stem.isdigit() else None
    path = runner.path_for(name)
    if path is None or found is None:
        return _error(404, "No such bulk operation result.")
    if found[1].get("status") == "EXPIRED":
        return _error(410, "This bulk operation result has expired (results are kept for seven days).")
    return FileResponse(path, media_type="application/jsonl")


routes: list[BaseRoute] = [
    Route("/shops", list_shops, methods=["GET"]),
    Route("/shops/{shop}/counts", shop_counts, methods=["GET"]),
    Route("/shops/{shop}/records/{entity}", list_records, methods=["GET"]),
    Route("/shops/{shop}/records/{entity}", create_record, methods=["POST"]),
    Route("/shops/{shop}/records/{entity}/{id:int}", get_record, methods=["GET"]),
    Route("/shops/{shop}/records/{entity}/{id:int}", update_record, methods=["PATCH"]),
    Route("/shops/{shop}/records/{entity}/{id:int}", delete_record, methods=["DELETE"]),
    Route("/shops/{shop}/mass_edit", mass_edit, methods=["POST"]),
    Route("/shops/{shop}/write_log", write_log, methods=["GET"]),
    Route("/shops/{shop}/tokens/revoke", revoke_token, methods=["POST"]),
    Route("/shops/{shop}/scopes/remove", remove_scope, methods=["POST"]),
    Route("/shops/{shop}/scopes/grant", grant_scope, methods=["POST"]),
    Route("/shops/{shop}/uninstall", uninstall, methods=["POST"]),
    Route("/shops/{shop}/reinstall", reinstall, methods=["POST"]),
    Route("/shops/{shop}/app", get_app, methods=["GET"]),
    Route("/shops/{shop}/app", update_app, methods=["PUT", "PATCH"]),
    Route("/shops/{shop}/privacy", privacy, methods=["POST"]),
    Route("/shops/{shop}/webhooks", create_subscription, methods=["POST"]),
    Route("/write_log", write_log, methods=["GET"]),
    Route("/webhooks/deliveries", deliveries, methods=["GET"]),
    Route("/faults", get_faults, methods=["GET"]),
    Route("/faults", set_faults, methods=["PUT", "POST"]),
    Route("/faults", clear_faults, methods=["DELETE"]),
    Route("/clock", get_clock, methods=["GET"]),
    Route("/clock/shift", shift_clock, methods=["POST"]),
    Route("/bulk/settings", bulk_settings, methods=["PUT", "POST"]),
    Route("/bulk/{name}", bulk_file, methods=["GET"]),
]


def record_json(record: Record) -> str:
    """A record as the control API writes it (timestamps as ISO 8601 UTC)."""
    return json.dumps(record, default=_json_default)
