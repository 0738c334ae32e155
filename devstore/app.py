"""The devstore's ASGI app: Shopify's Admin endpoints for many shops at once.

A shop is addressed by ``Host: <handle>.myshopify.com`` or by the path prefix
``/shops/<handle>/...`` (handy where DNS cannot point a myshopify domain at localhost).
Endpoints: ``POST /admin/api/2026-10/graphql.json`` (other versions 404), REST
``GET /admin/api/2026-10/shop.json`` and ``GET /admin/oauth/access_scopes.json``, OAuth
``GET /admin/oauth/authorize`` and ``POST /admin/oauth/access_token``; the control API
(``devstore.control.routes``) is mounted under ``/_devstore``.

Every GraphQL call is authenticated, costed (``devstore.cost``) against the leaky bucket of
its (app, shop), executed (``devstore.graph``), refunded the unused cost, and answered with
``extensions.cost``. Faults from ``devstore.faults`` are applied per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from devstore import auth, cost, graph
from devstore.faults import FaultAction, FaultInjector, injector_for
from devstore.queries import shop_numeric_id
from devstore.state import AppCredentials, ShopState, World

log = logging.getLogger("devstore")

NOT_FOUND_BODY = {"errors": "Not Found"}
SHOP_SUFFIX = ".myshopify.com"


class InjectedConnectionReset(Exception):
    """Raised inside a streaming body to cut the connection (the ``reset`` fault)."""


class _QuietInjectedResets(logging.Filter):
    """Keep uvicorn's log free of tracebacks for resets the devstore injects on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, InjectedConnectionReset):
                return False
            exc = exc.__cause__ or exc.__context__
            if isinstance(exc, BaseExceptionGroup):
                return not any(isinstance(e, InjectedConnectionReset) for e in exc.exceptions)
        return True


@dataclass
class DevstoreRuntime:
    """What the endpoints share: the world, buckets, faults, OAuth codes, plug-ins."""

    world: World
    limiter: cost.CostLimiter = field(default_factory=cost.CostLimiter)
    faults: FaultInjector | None = None
    oauth: auth.OAuthState = field(default_factory=auth.OAuthState)
    bulk_runner: Any = None
    webhooks: Any = None
    base_url: str = ""  # the server's own URL, for links in responses (bulk results)


# addressing ------------------------------------------------------------------------------


def _runtime(request: Request) -> DevstoreRuntime:
    runtime: DevstoreRuntime = request.app.state.devstore
    return runtime


def resolve_shop(request: Request) -> ShopState | None:
    """The shop a request addresses: the ``/shops/<handle>`` prefix wins, else the Host header."""
    world = _runtime(request).world
    handle = request.path_params.get("handle")
    if handle:
        return world.shop(handle)
    host = request.headers.get("host", "").split(":", 1)[0].lower()
    if host.endswith(SHOP_SUFFIX):
        return world.shop(host)
    return None


def _base_url(request: Request) -> str:
    runtime = _runtime(request)
    if runtime.base_url:
        return runtime.base_url
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"


# faults ---------------------------------------------------------------------------------------

_FAULT_BODIES: dict[str, tuple[int, Any]] = {
    "500": (500, {"errors": "Internal Server Error"}),
    "502": (502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "503": (503, {"errors": "Unavailable Shop"}),
}


def _decide(request: Request, shop: ShopState, kind: str) -> FaultAction | None:
    faults = _runtime(request).faults
    return faults.decide(shop.handle, kind) if faults is not None else None


def _fault_response(action: FaultAction) -> Response | None:
    """Responses for faults that replace the answer outright (429, 5xx)."""
    if action.kind == "429":
        retry_after = max(action.retry_after, 0.0)
        return JSONResponse(
            {
                "errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
            },
            status_code=429,
            headers={"Retry-After": f"{retry_after:g}"},
        )
    if action.kind in _FAULT_BODIES:
        status, body = _FAULT_BODIES[action.kind]
        if isinstance(body, str):
            return Response(body, status_code=status, media_type="text/html")
        return JSONResponse(body, status_code=status)
    return None


def _deliver(body: dict[str, Any], action: FaultAction | None, status: int = 200) -> Response:
    """Serialise ``body``, breaking it first when the fault says so (invalid JSON, reset)."""
    raw = json.dumps(body, separators=(",", ":"), default=str).encode()
    if action is not None and action.kind == "invalid_json":
        return Response(raw[: max(1, len(raw) // 2)], status_code=status, media_type="application/json")
    if action is not None and action.kind == "reset":
        half = raw[: max(1, len(raw) // 2)]

        async def broken() -> AsyncIterator[bytes]:
            yield half
            await asyncio.sleep(0)
            raise InjectedConnectionReset("connection reset injected by the devstore fault profile")

        return StreamingResponse(broken(), status_code=status, media_type="application/json")
    return Response(raw, status_code=status, media_type="application/json")


Handler = Callable[[Request, ShopState, FaultAction | None], Awaitable[Response]]


def _endpoint(kind: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler with shop addressing and request faults of ``kind``."""

    async def endpoint(request: Request) -> Response:
        shop = resolve_shop(request)
        if shop is None:
            return JSONResponse(NOT_FOUND_BODY, status_code=404)
        action = _decide(request, shop, kind)
        if action is not None:
            if action.kind == "slow":
                await asyncio.sleep(max(action.delay, 0.0))
                action = None
            else:
                replaced = _fault_response(action)
                if replaced is not None:
                    return replaced
        return await handler(request, shop, action)

    return endpoint


def _authenticated(request: Request, shop: ShopState) -> AppCredentials | None:
    return auth.authenticate(_runtime(request).world, shop, request.headers.get("x-shopify-access-token"))


# GraphQL -------------------------------------------------------------------------------------


async def _read_graphql_body(request: Request) -> tuple[str, dict[str, Any] | None, str | None] | str:
    """(query, variables, operationName) from a JSON or application/graphql body, or an error text."""
    raw = await request.body()
    # A body that is not a GraphQL request never reaches costing, so its 400 carries no
    # extensions.cost (Shopify's own 400s for a malformed body carry only "errors").
    if "application/graphql" in request.headers.get("content-type", ""):
        return raw.decode("utf-8", "replace"), None, None
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return "The request body is not valid JSON."
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return "Parameter Missing or Invalid: the body needs a 'query' string."
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return "Parameter Missing or Invalid: 'variables' must be an object."
    operation_name = body.get("operationName")
    return body["query"], variables, operation_name if isinstance(operation_name, str) else None


def run_graphql(
    runtime: DevstoreRuntime,
    shop: ShopState,
    app: AppCredentials,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    *,
    action: FaultAction | None = None,
    base_url: str = "",
) -> dict[str, Any]:
    """Cost, throttle and execute one GraphQL request; the JSON body Shopify would answer with.

    ``extensions.cost`` is in every answer to a request that reached costing: data, execution
    errors, THROTTLED and MAX_COST_EXCEEDED. Like Shopify, a document that does not parse or
    validate, or whose variables do not fit their types, is rejected before it is costed and
    answered with ``errors`` alone (recorded Admin API responses carry no ``extensions`` for
    syntax, ``undefinedField``/``selectionMismatch`` or INVALID_VARIABLE errors); nothing is
    taken from the bucket for it.
    """
    document, errors = graph.parse_and_validate(query, operation_name)
    if errors or document is None:
        return {"errors": errors}
    errors = graph.variable_errors(document, variables, operation_name)
    if errors:
        return {"errors": errors}
    schema = graph.load_schema()
    requested = cost.requested_cost(schema, document, variables, operation_name)
    bucket = runtime.limiter.bucket(app.client_id, shop.domain, shop.info.get("plan"))
    if requested > cost.MAX_QUERY_COST:
        return {
            "errors": [cost.max_cost_error(requested)],
            "extensions": {"cost": cost.cost_extension(requested, None, bucket)},
        }
    if action is not None and action.kind == "throttled":
        bucket.drain()
        return {
            "errors": [cost.throttled_error()],
            "extensions": {"cost": cost.cost_extension(requested, None, bucket)},
        }
    if not bucket.try_take(requested):
        return {
            "errors": [cost.throttled_error()],
            "extensions": {"cost": cost.cost_extension(requested, None, bucket)},
        }
    context = graph.make_context(
        runtime.world,
        shop,
        app_scopes=app.scopes,
        app=app,
        extra={"bulk_runner": runtime.bulk_runner, "base_url": base_url, "runtime": runtime},
    )
    try:
        result = graph.execute_document(document, context, variables, operation_name)
    except Exception:
        bucket.refund(requested)
        raise
    actual = cost.actual_cost(schema, document, result.data, variables, operation_name)
    bucket.refund(requested - actual)
    body: dict[str, Any] = {}
    if result.errors:
        body["errors"] = [graph.error_dict(e) for e in result.errors]
    body["data"] = result.data
    body["extensions"] = {"cost": cost.cost_extension(requested, actual, bucket)}
    if context.get("search_warnings"):
        body["extensions"]["search"] = context["search_warnings"]
    return body


async def _graphql(request: Request, shop: ShopState, action: FaultAction | None) -> Response:
    app = _authenticated(request, shop)
    if app is None:
        return auth.unauthorized()
    parsed = await _read_graphql_body(request)
    if isinstance(parsed, str):
        return JSONResponse({"errors": parsed}, status_code=400)
    query, variables, operation_name = parsed
    runtime = _runtime(request)
    body = await run_in_threadpool(
        run_graphql,
        runtime,
        shop,
        app,
        query,
        variables,
        operation_name,
        action=action,
        base_url=_base_url(request),
    )
    return _deliver(body, action)


def _version_guard(handler: Handler) -> Handler:
    async def guarded(request: Request, shop: ShopState, action: FaultAction | None) -> Response:
        if request.path_params.get("version") != graph.API_VERSION:
            return JSONResponse(NOT_FOUND_BODY, status_code=404)
        return await handler(request, shop, action)

    return guarded


# REST and OAuth ---------------------------------------------------------------------------------


async def _shop_json(request: Request, shop: ShopState, action: FaultAction | None) -> Response:
    if _authenticated(request, shop) is None:
        return auth.unauthorized()
    return _deliver(auth.shop_json(shop, shop_numeric_id(shop)), action)


async def _access_scopes(request: Request, shop: ShopState, action: FaultAction | None) -> Response:
    app = _authenticated(request, shop)
    if app is None:
        return auth.unauthorized()
    return _deliver(auth.access_scopes_json(app), action)


async def _authorize(request: Request, shop: ShopState, action: FaultAction | None) -> Response:
    runtime = _runtime(request)
    return auth.authorize(request, runtime.world, shop, runtime.oauth)


async def _access_token(request: Request, shop: ShopState, action: FaultAction | None) -> Response:
    runtime = _runtime(request)
    response = await auth.access_token(request, runtime.world, shop, runtime.oauth)
    if action is not None and response.status_code == 200:
        return _deliver(json.loads(bytes(response.body)), action)
    return response


def _shop_routes() -> list[BaseRoute]:
    return [
        Route(
            "/admin/api/{version}/graphql.json",
            _endpoint("graphql", _version_guard(_graphql)),
            methods=["POST"],
        ),
        Route(
            "/admin/api/{version}/shop.json", _endpoint("rest", _version_guard(_shop_json)), methods=["GET"]
        ),
        Route("/admin/oauth/access_scopes.json", _endpoint("rest", _access_scopes), methods=["GET"]),
        Route("/admin/oauth/authorize", _endpoint("oauth", _authorize), methods=["GET"]),
        Route("/admin/oauth/access_token", _endpoint("oauth", _access_token), methods=["POST"]),
    ]


def _control_routes() -> list[BaseRoute]:
    try:
        from devstore import control
    except ModuleNotFoundError as exc:
        if exc.name != "devstore.control":
            raise
        return []
    return list(getattr(control, "routes", []))


def create_app(
    world: World,
    *,
    faults: FaultInjector | None = None,
    limiter: cost.CostLimiter | None = None,
    base_url: str = "",
    webhooks: bool = True,
    webhook_time_scale: float = 1.0,
    bulk_seconds_per_object: float = 0.0,
) -> Starlette:
    """The devstore ASGI app serving every shop of ``world``.

    ``faults`` defaults to the world's injector (the one the control API changes);
    ``webhooks`` starts H2's dispatcher with the app's lifespan.
    """
    graph.load_schema()
    graph.load_plugins()
    runtime = DevstoreRuntime(
        world, limiter or cost.CostLimiter(), faults or injector_for(world), base_url=base_url
    )

    from devstore.bulk import BulkRunner, install_runner

    runtime.bulk_runner = install_runner(
        world,
        BulkRunner(
            world, faults=runtime.faults, base_url=base_url, seconds_per_object=bulk_seconds_per_object
        ),
    )
    if webhooks:
        from devstore.webhooks import WebhookDispatcher

        runtime.webhooks = WebhookDispatcher(world, time_scale=webhook_time_scale, faults=runtime.faults)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if runtime.webhooks is not None:
            runtime.webhooks.start()
        try:
            yield
        finally:
            if runtime.webhooks is not None:
                runtime.webhooks.stop()
            if runtime.bulk_runner is not None:
                runtime.bulk_runner.stop()

    routes: list[BaseRoute] = [
        Mount("/_devstore", routes=_control_routes()),
        Mount("/shops/{handle}", routes=_shop_routes()),
        *_shop_routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.devstore = runtime
    app.state.world = world
    app.state.faults = runtime.faults
    app.state.limiter = runtime.limiter
    app.state.bulk_runner = runtime.bulk_runner
    app.state.webhooks = runtime.webhooks
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietInjectedResets) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_QuietInjectedResets())
    return app


def set_base_url(app: Starlette, base_url: str) -> None:
    """Tell the app its public URL once the server is bound (used in bulk result links)."""
    runtime: DevstoreRuntime = app.state.devstore
    runtime.base_url = base_url.rstrip("/")
    if runtime.bulk_runner is not None:
        runtime.bulk_runner.base_url = runtime.base_url
