"""The devstore's GraphQL executor: schema, resolver registry, type mappers and error shapes.

Sources handed to resolvers are the internal records of ``devstore.state`` (snake_case dicts
in the shape of ``devstore.model``). A single ``field_resolver`` dispatches on
``(parent_type_name, field_name)`` through ``RESOLVERS``; anything not registered falls back
to a dict lookup, first by the GraphQL field name (for small view dicts built by resolvers)
and then by its snake_case twin (for model records). Scalars are formatted the way Shopify
formats them (DateTime as ``2026-01-01T12:00:00Z``, Decimal/Money/UnsignedInt64 as strings)
by the schema's scalar serializers, so resolvers hand back raw Python values.

Other modules plug in through ``register`` or their own ``RESOLVERS`` dict, merged by
``load_plugins`` (``devstore.mutations.RESOLVERS``, ``devstore.bulk.RESOLVERS``).
"""

from __future__ import annotations

import functools
import gzip
import importlib
import inspect
import json
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import graphql
from graphql import ExecutionResult, GraphQLError, GraphQLResolveInfo, GraphQLSchema

from devstore.state import ALL_SCOPES, AppCredentials, ShopState, World

API_VERSION = "2026-10"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / f"admin_{API_VERSION}.json.gz"

Resolver = Callable[..., Any]

# (parent type name, field name) -> resolver(source, info, **args)
RESOLVERS: dict[tuple[str, str], Resolver] = {}

PLUGIN_MODULES: tuple[str, ...] = ("devstore.queries", "devstore.mutations", "devstore.bulk")

_SNAKE_1 = re.compile(r"(.)([A-Z][a-z]+)")
_SNAKE_2 = re.compile(r"([a-z0-9])([A-Z])")


@functools.lru_cache(maxsize=4096)
def snake_case(name: str) -> str:
    """``countryCodeV2`` -> ``country_code_v2``; ``createdAt`` -> ``created_at``."""
    return _SNAKE_2.sub(r"\1_\2", _SNAKE_1.sub(r"\1_\2", name)).lower()


def register(type_name: str, field_name: str, fn: Resolver) -> Resolver:
    """Register ``fn`` as the resolver of ``type_name.field_name``; returns ``fn``."""
    RESOLVERS[(type_name, field_name)] = fn
    return fn


def resolves(type_name: str, *field_names: str) -> Callable[[Resolver], Resolver]:
    """Decorator form of ``register`` for one or more fields of one type."""

    def decorate(fn: Resolver) -> Resolver:
        for field_name in field_names:
            register(type_name, field_name, fn)
        return fn

    return decorate


_plugins_loaded = False


def load_plugins(modules: Iterable[str] = PLUGIN_MODULES) -> None:
    """Import resolver modules once and merge their ``RESOLVERS`` dicts into the registry.

    A module that does not exist yet is skipped, so the core serves queries on its own.
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        RESOLVERS.update(getattr(module, "RESOLVERS", {}) or {})
    _plugins_loaded = True


# schema ----------------------------------------------------------------------------------


def _format_datetime(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _format_string(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _format_json(value: Any) -> Any:
    return value


@functools.lru_cache(maxsize=1)
def load_schema(path: Path = SCHEMA_PATH) -> GraphQLSchema:
    """The derived Admin API schema, built once per process, with Shopify's scalar formats."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        data = json.load(fh)
    schema = graphql.build_client_schema(data["data"])
    serializers: dict[str, Callable[[Any], Any]] = {
        "DateTime": _format_datetime,
        "Date": _format_datetime,
        "Decimal": _format_string,
        "Money": _format_string,
        "UnsignedInt64": _format_string,
        "URL": _format_string,
        "HTML": _format_string,
        "FormattedString": _format_string,
        "ARN": _format_string,
        "UtcOffset": _format_string,
        "Color": _format_string,
        "JSON": _format_json,
    }
    for name, fn in serializers.items():
        scalar = schema.type_map.get(name)
        if isinstance(scalar, graphql.GraphQLScalarType):
            scalar.serialize = fn  # type: ignore[method-assign]
    return schema


# resolution ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _accepted_args(fn: Resolver) -> frozenset[str] | None:
    """Names of keyword arguments ``fn`` takes, or None when it takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


def field_resolver(source: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
    """Dispatch on ``(parent type, field)``; fall back to a dict lookup (camelCase, then snake_case).

    Arguments a resolver does not declare are dropped, so a resolver written for the fields
    shopsync reads keeps working when a query passes optional arguments it ignores.
    """
    fn = RESOLVERS.get((info.parent_type.name, info.field_name))
    if fn is not None:
        if args:
            accepted = _accepted_args(fn)
            if accepted is not None:
                args = {k: v for k, v in args.items() if k in accepted}
        return fn(source, info, **args)
    if isinstance(source, dict):
        name = info.field_name
        if name in source:
            return source[name]
        return source.get(snake_case(name))
    return getattr(source, info.field_name, None)


def type_resolver(value: Any, info: GraphQLResolveInfo, abstract_type: Any) -> str | None:
    """Concrete type of an interface/union value: view dicts carry ``__typename``."""
    if isinstance(value, dict):
        typename = value.get("__typename")
        return typename if isinstance(typename, str) else None
    return getattr(value, "__typename", None)


def context_of(info: GraphQLResolveInfo) -> dict[str, Any]:
    """The execution context dict (``shop``, ``world``, ``scopes``, ``bulk``, ``app``, caches)."""
    context: dict[str, Any] = info.context
    return context


# errors in Shopify's shapes --------------------------------------------------------------

_VALIDATION_PATTERNS: tuple[
    tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[str, dict[str, Any]]]], ...
] = (
    (
        re.compile(r"Cannot query field '(?P<field>[^']+)' on type '(?P<type>[^']+)'"),
        lambda m: (
            f"Field '{m['field']}' doesn't exist on type '{m['type']}'",
            {"code": "undefinedField", "typeName": m["type"], "fieldName": m["field"]},
        ),
    ),
    (
        re.compile(r"Unknown argument '(?P<arg>[^']+)' on field '(?P<type>[^'.]+)\.(?P<field>[^']+)'"),
        lambda m: (
            f"Field '{m['field']}' doesn't accept argument '{m['arg']}'",
            {
                "code": "argumentNotAccepted",
                "name": m["field"],
                "typeName": "Field",
                "argumentName": m["arg"],
            },
        ),
    ),
    (
        re.compile(
            r"Field '(?P<type>[^'.]+)\.(?P<field>[^']+)' argument '(?P<arg>[^']+)' of type .* is required"
        ),
        lambda m: (
            f"Field '{m['field']}' is missing required arguments: {m['arg']}",
            {
                "code": "missingRequiredArguments",
                "className": "Field",
                "name": m["field"],
                "arguments": m["arg"],
            },
        ),
    ),
    (
        re.compile(r"Unknown type '(?P<type>[^']+)'"),
        lambda m: (
            f"No such type {m['type']}, so it can't be a fragment condition",
            {"code": "undefinedType", "typeName": m["type"]},
        ),
    ),
    (
        re.compile(r"Variable '\$(?P<var>[^']+)' is never used"),
        lambda m: (
            f"Variable ${m['var']} is declared by anonymous query but not used",
            {"code": "variableNotUsed", "variableName": m["var"]},
        ),
    ),
    (
        re.compile(r"Field '(?P<field>[^']+)' of type '(?P<type>[^']+)' must have a selection of subfields"),
        lambda m: (
            f"Field must have selections (field '{m['field']}' returns {m['type'].strip('!')} but has no selections.)",
            {
                "code": "selectionMismatch",
                "nodeName": f"field '{m['field']}'",
                "typeName": m["type"].strip("![]"),
            },
        ),
    ),
)


def _locations(error: GraphQLError) -> list[dict[str, int]]:
    return [{"line": loc.line, "column": loc.column} for loc in (error.locations or [])]


def _ast_path(document: graphql.DocumentNode | None, error: GraphQLError) -> list[str] | None:
    """Shopify's validation errors carry the path of field names down to the offending node."""
    if document is None or not error.nodes:
        return None
    target = error.nodes[0]
    found: list[str] | None = None

    class _Finder(graphql.Visitor):
        def enter(self, node: Any, key: Any, parent: Any, path: Any, ancestors: Any) -> Any:
            nonlocal found
            if node is target:
                names: list[str] = []
                for anc in [*ancestors, node]:
                    if isinstance(anc, graphql.OperationDefinitionNode):
                        names.append(
                            anc.operation.value
                            if anc.name is None
                            else f"{anc.operation.value} {anc.name.value}"
                        )
                    elif isinstance(anc, graphql.FragmentDefinitionNode):
                        names.append(f"fragment {anc.name.value}")
                    elif isinstance(anc, graphql.FieldNode):
                        names.append(anc.alias.value if anc.alias else anc.name.value)
                found = names
                return graphql.BREAK
            return None

    graphql.visit(document, _Finder())
    return found


def validation_error_dict(
    error: GraphQLError, document: graphql.DocumentNode | None = None
) -> dict[str, Any]:
    """A graphql-core validation error in Shopify's (graphql-ruby's) shape."""
    message = error.message
    extensions: dict[str, Any] = {"code": "validationError"}
    for pattern, build in _VALIDATION_PATTERNS:
        match = pattern.search(message)
        if match:
            message, extensions = build(match)
            break
    out: dict[str, Any] = {"message": message, "locations": _locations(error)}
    path = _ast_path(document, error)
    if path:
        out["path"] = path
    out["extensions"] = extensions
    return out


def parse_error_dict(error: GraphQLError) -> dict[str, Any]:
    """A syntax error in Shopify's shape (``Parse error on ... at [line, column]``)."""
    locs = _locations(error)
    where = f" at [{locs[0]['line']}, {locs[0]['column']}]" if locs else ""
    detail = error.message.removeprefix("Syntax Error: ")
    return {
        "message": f"Parse error on {detail}{where}",
        "locations": locs,
        "extensions": {"code": "parseError"},
    }


_NOT_NULL = "Expected value to not be null"
_MISSING_FIELD = re.compile(r"^Field '(?P<field>[^']+)' of required type '[^']+' was not provided\.")


def _problem(path: list[str | int], invalid: Any, error: GraphQLError, type_name: str) -> dict[str, Any]:
    """One entry of ``extensions.problems`` of Shopify's INVALID_VARIABLE error."""
    message = error.message
    missing = _MISSING_FIELD.match(message)
    if missing:
        return {"path": [*path, missing["field"]], "explanation": _NOT_NULL}
    if invalid is None or "not to be null" in message:
        return {"path": list(path), "explanation": _NOT_NULL}
    if "cannot represent" in message:
        return {
            "path": list(path),
            "explanation": f"Could not coerce value {json.dumps(invalid, default=str)} to {type_name}",
        }
    return {"path": list(path), "explanation": message}


def _type_name_at(var_type: Any, path: list[str | int]) -> str:
    """The named type at ``path`` inside an input type (list indexes and input fields)."""
    current = var_type
    for step in path:
        current = graphql.get_nullable_type(current)
        if isinstance(step, int) and graphql.is_list_type(current):
            current = current.of_type
        elif isinstance(step, str) and graphql.is_input_object_type(current) and step in current.fields:
            current = current.fields[step].type
    return str(graphql.get_named_type(current).name)


def variable_errors(
    document: graphql.DocumentNode, variables: dict[str, Any] | None, operation_name: str | None = None
) -> list[dict[str, Any]]:
    """Shopify's INVALID_VARIABLE errors for variables that are missing or do not fit their type.

    Shopify checks variables before it costs or runs a query, so these errors come back
    alone: no ``data`` and no ``extensions.cost``.
    """
    operation = graphql.utilities.get_operation_ast(document, operation_name)
    if operation is None:
        return []
    schema = load_schema()
    given = variables or {}
    out: list[dict[str, Any]] = []
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        var_type = graphql.utilities.type_from_ast(schema, definition.type)
        if var_type is None or not graphql.is_input_type(var_type):
            continue  # validation has already reported it
        problems: list[dict[str, Any]] = []
        value = given.get(name)
        if name not in given:
            if definition.default_value is not None or not graphql.is_non_null_type(var_type):
                continue
            problems.append({"path": [], "explanation": _NOT_NULL})
        else:

            def on_error(
                path: list[str | int],
                invalid: Any,
                error: GraphQLError,
                root: Any = var_type,
                found: list[dict[str, Any]] = problems,
            ) -> None:
                found.append(_problem(path, invalid, error, _type_name_at(root, path)))

            graphql.utilities.coerce_input_value(value, var_type, on_error)
        if not problems:
            continue
        type_text = graphql.print_ast(definition.type)
        message = f"Variable ${name} of type {type_text} was provided invalid value"
        first = problems[0]
        if first["path"]:
            where = ".".join(str(p) for p in first["path"])
            message += f" for {where} ({first['explanation']})"
        error: dict[str, Any] = {"message": message}
        if definition.loc is not None:
            location = graphql.language.location.get_location(definition.loc.source, definition.loc.start)
            error["locations"] = [{"line": location.line, "column": location.column}]
        error["extensions"] = {"code": "INVALID_VARIABLE", "value": value, "problems": problems}
        out.append(error)
    return out


def user_error(message: str, code: str, **extra: Any) -> GraphQLError:
    """A resolver error carrying ``extensions.code`` (and more) like Shopify's."""
    return GraphQLError(message, extensions={"code": code, **extra})


def access_denied(field_name: str, scope: str) -> GraphQLError:
    """Shopify's error for a field the app lacks the scope for."""
    return GraphQLError(
        f"Access denied for {field_name} field. Required access: `{scope}` access scope.",
        extensions={
            "code": "ACCESS_DENIED",
            "documentation": "https://shopify.dev/api/usage/access-scopes",
            "requiredAccess": f"`{scope}` access scope.",
        },
    )


def require_scope(info: GraphQLResolveInfo, *scopes: str) -> None:
    """Raise ACCESS_DENIED unless the app holds one of ``scopes`` (write implies read)."""
    held: set[str] = context_of(info)["scopes"]
    for scope in scopes:
        if scope in held or scope.replace("read_", "write_", 1) in held:
            return
    raise access_denied(info.field_name, scopes[0])


def error_dict(error: GraphQLError) -> dict[str, Any]:
    """An execution error as JSON (message, locations, path, extensions)."""
    out: dict[str, Any] = {"message": error.message}
    if error.locations:
        out["locations"] = _locations(error)
    if error.path is not None:
        out["path"] = list(error.path)
    if error.extensions:
        out["extensions"] = dict(error.extensions)
    elif error.original_error is not None and not isinstance(error.original_error, GraphQLError):
        # an unexpected exception inside a resolver: Shopify says little about its internals
        out["extensions"] = {"code": "INTERNAL_SERVER_ERROR"}
    return out


# execution -------------------------------------------------------------------------------


def make_context(
    world: World,
    shop: ShopState,
    *,
    bulk: bool = False,
    app_scopes: Iterable[str] = ALL_SCOPES,
    app: AppCredentials | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The context dict every resolver sees."""
    context: dict[str, Any] = {
        "shop": shop,
        "world": world,
        "scopes": set(app_scopes),
        "bulk": bulk,
        "app": app,
        "now": world.clock.now(),
        "cache": {},  # per-request indexes (e.g. orders by customer), built lazily
    }
    if extra:
        context.update(extra)
    return context


def parse_and_validate(
    query: str, operation_name: str | None = None
) -> tuple[graphql.DocumentNode | None, list[dict[str, Any]]]:
    """Parse and validate ``query``; returns the document and Shopify-shaped errors (empty if valid).

    Clients send the same few documents over and over, so results are cached by query text
    (documents are never mutated; callers must not mutate the error dicts either).
    """
    document, errors = _parse_and_validate_cached(query)
    return document, [dict(e) for e in errors]


@functools.lru_cache(maxsize=512)
def _parse_and_validate_cached(query: str) -> tuple[graphql.DocumentNode | None, tuple[dict[str, Any], ...]]:
    document, errors = _parse_and_validate(query)
    return document, tuple(errors)


def _parse_and_validate(query: str) -> tuple[graphql.DocumentNode | None, list[dict[str, Any]]]:
    try:
        document = graphql.parse(query)
    except GraphQLError as exc:
        return None, [parse_error_dict(exc)]
    errors = graphql.validate(load_schema(), document)
    if errors:
        return document, [validation_error_dict(e, document) for e in errors]
    return document, []


def _never_awaitable(value: Any) -> bool:
    return False


def execute_document(
    document: graphql.DocumentNode,
    context: dict[str, Any],
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> ExecutionResult:
    """Execute an already validated document with the devstore resolvers."""
    load_plugins()
    shop: ShopState = context["shop"]
    with shop.lock:
        result = graphql.execute(
            load_schema(),
            document,
            root_value={},
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            field_resolver=field_resolver,
            type_resolver=type_resolver,
            # every devstore resolver is synchronous; skipping the awaitable probe saves ~10 %
            is_awaitable=_never_awaitable,
        )
    if isinstance(result, ExecutionResult):
        return result
    raise RuntimeError("the devstore resolvers are synchronous; got an awaitable result")


def execute(
    world: World,
    shop_state: ShopState,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    bulk: bool = False,
    app_scopes: Iterable[str] = ALL_SCOPES,
    app: AppCredentials | None = None,
    operation_name: str | None = None,
    extra_context: dict[str, Any] | None = None,
) -> ExecutionResult:
    """Parse, validate and run ``query`` against one shop.

    Validation and parse errors come back as an ``ExecutionResult`` with ``data=None``; their
    Shopify-shaped dicts are in ``result.extensions["shopify_errors"]``. In ``bulk`` mode every
    connection returns all its nodes, whatever ``first``/``after`` say (the bulk runner's view).
    """
    document, errors = parse_and_validate(query, operation_name)
    if errors or document is None:
        return ExecutionResult(
            data=None,
            errors=[GraphQLError(e["message"], extensions=e.get("extensions")) for e in errors],
            extensions={"shopify_errors": errors},
        )
    context = make_context(world, shop_state, bulk=bulk, app_scopes=app_scopes, app=app, extra=extra_context)
    return execute_document(document, context, variables, operation_name)
