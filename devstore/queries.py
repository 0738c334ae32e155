"""Query resolvers: the shop, customers, orders, products, collections, checkouts, nodes.

Connections are keyset-paginated like Shopify's: a cursor encodes the sort-key value and
the id of the record it points at (``{"last_id": ..., "last_value": ...}`` in base64), so a
page boundary does not shift when records before it change or disappear, and paging by
``ID`` over a changing dataset returns every record that existed throughout exactly once.
``query:`` follows Shopify's search syntax (AND, OR, NOT / ``-``, parentheses, comparators)
over the fields each resource can be searched by (``_SEARCH_FIELDS``); a term on any other
field is dropped and reported in ``extensions.search``, as Shopify does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from graphql import GraphQLResolveInfo

from devstore.graph import context_of, require_scope, user_error
from devstore.state import Record, ShopState
from devstore.webhooks import shop_numeric_id as webhook_shop_id

MAX_PAGE_SIZE = 250
ALL_ORDERS_WINDOW = timedelta(days=60)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

RESOLVERS: dict[tuple[str, str], Callable[..., Any]] = {}


def _on(type_name: str, *fields: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for f in fields:
            RESOLVERS[(type_name, f)] = fn
        return fn

    return decorate


# ids ---------------------------------------------------------------------------------------


def gid(type_name: str, record_id: int | str) -> str:
    """Shopify's global id, ``gid://shopify/<Type>/<id>``."""
    return f"gid://shopify/{type_name}/{record_id}"


_GID = re.compile(r"^gid://shopify/(?P<type>[A-Za-z]+)/(?P<id>\d+)(?:\?.*)?$")


def parse_gid(value: str) -> tuple[str, int]:
    """``gid://shopify/Customer/42`` -> ``("Customer", 42)``; raises Shopify's invalid-id error."""
    match = _GID.match(value or "")
    if not match:
        raise user_error(f"Invalid global id '{value}'", "argumentLiteralsIncompatible")
    return match["type"], int(match["id"])


def shop_numeric_id(shop: ShopState) -> int:
    """The shop's numeric id: the same one REST ``shop.json`` and webhook payloads carry."""
    return webhook_shop_id(shop.domain)


# cursors and sorting -------------------------------------------------------------------------


def _sort_value(value: Any) -> Any:
    """A JSON-safe, totally ordered form of a sort-key value (datetimes as epoch microseconds)."""
    if value is None:
        return -(2**62)
    if isinstance(value, datetime):
        return int((value - _EPOCH) / timedelta(microseconds=1))
    if isinstance(value, Decimal):
        return float(value)
    return value


def encode_cursor(value: Any, record_id: int) -> str:
    """The opaque cursor of a record at sort-key ``value``."""
    raw = json.dumps({"last_id": record_id, "last_value": value}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[Any, int]:
    """Inverse of ``encode_cursor``; an unreadable cursor is Shopify's invalid-cursor error."""
    try:
        data = json.loads(base64.b64decode(cursor.encode(), validate=True))
        return data["last_value"], int(data["last_id"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise user_error(f"Invalid cursor for current pagination sort: {cursor}", "INVALID_CURSOR") from exc


# sort key -> record column
SORT_COLUMNS: dict[str, str] = {
    "ID": "id",
    "UPDATED_AT": "updated_at",
    "CREATED_AT": "created_at",
    "PROCESSED_AT": "processed_at",
    "TITLE": "title",
    "NAME": "last_name",
    "ORDER_NUMBER": "id",
    "CHECKOUT_ID": "id",
    "POSITION": "position",
    "COLLECTION_DEFAULT": "position",
    "MANUAL": "position",
    "RELEVANCE": "id",
}


def connection(
    info: GraphQLResolveInfo,
    records: Iterable[Record],
    *,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
    reverse: bool = False,
    sort_key: str | None = None,
    wrap: Callable[[Record], Any] | None = None,
) -> dict[str, Any]:
    """A Relay connection (``edges``, ``nodes``, ``pageInfo``) over ``records``.

    In bulk mode (``context["bulk"]``) every record in the window is returned.
    """
    bulk = bool(context_of(info).get("bulk"))
    if not bulk:
        if first is None and last is None:
            raise user_error("you must provide one of first or last", "BAD_REQUEST")
        for name, size in (("first", first), ("last", last)):
            if size is not None and size > MAX_PAGE_SIZE:
                raise user_error(
                    f"The {name} argument is too large: {size}; the maximum is {MAX_PAGE_SIZE}.",
                    "BAD_REQUEST",
                    argumentName=name,
                    maximum=MAX_PAGE_SIZE,
                )
            if size is not None and size < 0:
                raise user_error(f"The {name} argument must be at least 0.", "BAD_REQUEST")
    column = SORT_COLUMNS.get(sort_key or "ID", "id")

    def key(record: Record) -> tuple[Any, int]:
        return (_sort_value(record.get(column)), record["id"])

    keyed = sorted(((key(r), r) for r in records), key=lambda kr: kr[0], reverse=reverse)
    lo, hi = 0, len(keyed)
    if after:
        cursor_key = tuple(decode_cursor(after))
        while lo < hi and not _beyond(keyed[lo][0], cursor_key, reverse):
            lo += 1
    if before:
        cursor_key = tuple(decode_cursor(before))
        while hi > lo and not _beyond(cursor_key, keyed[hi - 1][0], reverse):
            hi -= 1
    start, end = lo, hi
    if not bulk:
        if first is not None:
            end = min(end, start + first)
        if last is not None:
            start = max(start, end - last)
    window = keyed[start:end]
    edges = []
    nodes = []
    for (value, record_id), record in window:
        node = wrap(record) if wrap else record
        nodes.append(node)
        edges.append({"cursor": encode_cursor(value, record_id), "node": node})
    return {
        "edges": edges,
        "nodes": nodes,
        "pageInfo": {
            # anything beyond the page in the full ordering, whichever side the cursors cut
            "hasNextPage": end < len(keyed),
            "hasPreviousPage": start > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


def _beyond(a: tuple[Any, int], b: tuple[Any, int], reverse: bool) -> bool:
    """True when key ``a`` comes strictly after key ``b`` in traversal order."""
    return a < b if reverse else a > b


# search syntax ---------------------------------------------------------------------------------
#
# Shopify's grammar (shopify.dev/docs/api/usage/search-syntax): terms joined by whitespace
# (implied AND) or the connectives AND / OR; a term is an optional modifier ("-" glued to
# the term, or "NOT" and a space) and either a parenthesised sub-query or
# ``[field comparator] value``. AND binds tighter than OR. Shopify never fails a request
# over its search string: a term on a field the resource cannot be searched by is dropped
# and reported in ``extensions.search[].warnings`` ("Invalid search field for this query.",
# code ``invalid_field``); the devstore does the same. Free-text terms (no field) are not
# searched here and are dropped without a warning, as they are valid for Shopify.

INVALID_SEARCH_FIELD = "Invalid search field for this query."


@dataclass(frozen=True)
class SearchTerm:
    """``field:op value`` (``field`` None for a free-text value)."""

    field: str | None
    op: str
    value: str


@dataclass(frozen=True)
class SearchNot:
    """``-term`` or ``NOT term``."""

    node: SearchNode


@dataclass(frozen=True)
class SearchAnd:
    """Terms that must all match."""

    nodes: tuple[SearchNode, ...]


@dataclass(frozen=True)
class SearchOr:
    """Terms of which one must match."""

    nodes: tuple[SearchNode, ...]


SearchNode = SearchTerm | SearchNot | SearchAnd | SearchOr

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<open>\()
      | (?P<close>\))
      | (?P<not>NOT)(?=\s)
      | (?P<conn>AND|OR)(?=[\s(]|$)
      | (?P<minus>-)(?=[^\s)])
      | (?:(?P<field>[A-Za-z_][A-Za-z0-9_.]*):(?P<op>>=|<=|>|<|=)?\s*)?
        (?P<value>'[^']*'|"[^"]*"|[^\s()]+)
    )""",
    re.VERBOSE,
)


def _tokens(query: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if match is None or match.end() == pos:
            break  # only trailing whitespace is left
        pos = match.end()
        if match["open"]:
            out.append(("(", None))
        elif match["close"]:
            out.append((")", None))
        elif match["not"] or match["minus"]:
            out.append(("not", None))
        elif match["conn"]:
            out.append((match["conn"], None))
        else:
            value = match["value"]
            if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) >= 2:
                value = value[1:-1]
            field = match["field"].lower() if match["field"] else None
            out.append(("term", SearchTerm(field, match["op"] or "=", value)))
    return out


class _SearchParser:
    """Recursive descent over the tokens; lenient like Shopify (stray connectives and parens are ignored)."""

    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def parse(self) -> SearchNode | None:
        nodes = []
        while self._peek() is not None:
            node = self._or()
            if node is not None:
                nodes.append(node)
            if self._peek() is not None:
                self.pos += 1  # a ")" with no "(" or a dangling connective
        return _join(SearchAnd, nodes)

    def _or(self) -> SearchNode | None:
        nodes = [self._and()]
        while self._peek() == "OR":
            self.pos += 1
            nodes.append(self._and())
        return _join(SearchOr, [n for n in nodes if n is not None])

    def _and(self) -> SearchNode | None:
        nodes = [self._unary()]
        while self._peek() in ("AND", "not", "(", "term"):
            if self._peek() == "AND":
                self.pos += 1
            nodes.append(self._unary())
        return _join(SearchAnd, [n for n in nodes if n is not None])

    def _unary(self) -> SearchNode | None:
        kind = self._peek()
        if kind == "not":
            self.pos += 1
            inner = self._unary()
            return None if inner is None else SearchNot(inner)
        if kind == "(":
            self.pos += 1
            inner = self._or()
            if self._peek() == ")":
                self.pos += 1
            return inner
        if kind == "term":
            term: SearchTerm = self.tokens[self.pos][1]
            self.pos += 1
            return term
        return None  # a connective where a term belongs: skipped by the caller


def _join(kind: type[SearchAnd] | type[SearchOr], nodes: list[SearchNode]) -> SearchNode | None:
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else kind(tuple(nodes))


def parse_search_tree(query: str | None) -> SearchNode | None:
    """``-id:5 AND (state:enabled OR state:disabled)`` as a tree of ``Search*`` nodes (None if empty)."""
    if not query:
        return None
    return _SearchParser(_tokens(query)).parse()


def parse_search(query: str | None) -> list[tuple[str, str, str]]:
    """Every ``field:op value`` term of ``query`` in order, whatever its connectives (for logs and tests)."""

    def walk(node: SearchNode | None) -> Iterable[tuple[str, str, str]]:
        if isinstance(node, SearchTerm):
            if node.field is not None:
                yield (node.field, node.op, node.value)
        elif isinstance(node, SearchNot):
            yield from walk(node.node)
        elif isinstance(node, SearchAnd | SearchOr):
            for child in node.nodes:
                yield from walk(child)

    return list(walk(parse_search_tree(query)))


def _parse_time(value: str) -> datetime | None:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _seconds(value: Any) -> Any:
    return value.replace(microsecond=0) if isinstance(value, datetime) else value


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is None:
        return False
    if op == ">=":
        return bool(left >= right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    if op == "<":
        return bool(left < right)
    return bool(left == right)


_TIME_FIELDS = {"updated_at", "created_at", "processed_at", "completed_at"}
Predicate = Callable[[Record], bool]


def _term_predicate(term: SearchTerm, fields: set[str], invalid: list[str]) -> Predicate | None:
    name, op, raw = term.field, term.op, term.value
    if name is None:
        return None
    if name not in fields:
        invalid.append(name)
        return None
    if name in _TIME_FIELDS:
        when = _parse_time(raw)
        if when is None:
            return None
        # Shopify keeps timestamps to the second, and that is what clients see and send back:
        # compare a record's time truncated to its second, here as bounds on the raw value
        # (floor(t) >= w  <=>  t >= ceil(w), floor(t) <= w  <=>  t < floor(w) + 1 s, ...)
        low = _seconds(when)
        high = low + timedelta(seconds=1)
        above = high if when > low else low  # the first whole second at or after `when`
        bounds: dict[str, Predicate] = {
            ">=": lambda r: (t := r.get(name)) is not None and t >= above,
            ">": lambda r: (t := r.get(name)) is not None and t >= high,
            "<=": lambda r: (t := r.get(name)) is not None and t < high,
            "<": lambda r: (t := r.get(name)) is not None and t < above,
        }
        return bounds.get(op) or (lambda r: _compare(_seconds(r.get(name)), op, when))
    if name == "id":
        try:
            number = int(raw.rsplit("/", 1)[-1])
        except ValueError:
            return None
        return lambda r: _compare(r.get("id"), op, number)
    lowered = raw.lower()
    return lambda r: _compare(str(r.get(name) or "").strip().lower(), op, lowered)


def _compile(node: SearchNode | None, fields: set[str], invalid: list[str]) -> Predicate | None:
    """A predicate for ``node``; None where nothing applicable is left (the term is dropped)."""
    if node is None:
        return None
    if isinstance(node, SearchTerm):
        return _term_predicate(node, fields, invalid)
    if isinstance(node, SearchNot):
        inner = _compile(node.node, fields, invalid)
        return None if inner is None else (lambda r: not inner(r))
    parts = [p for p in (_compile(child, fields, invalid) for child in node.nodes) if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    if isinstance(node, SearchOr):
        return lambda r: any(p(r) for p in parts)
    return lambda r: all(p(r) for p in parts)


def search_filter(query: str | None, fields: set[str], invalid_fields: list[str] | None = None) -> Predicate:
    """A predicate for ``query`` on a resource searchable by ``fields``.

    Terms on other fields are dropped (their names appended to ``invalid_fields``), the rest
    keep their AND / OR / NOT structure.
    """
    invalid: list[str] = [] if invalid_fields is None else invalid_fields
    predicate = _compile(parse_search_tree(query), fields, invalid)
    return predicate if predicate is not None else (lambda _record: True)


def _search(info: GraphQLResolveInfo, query: str | None, table: str) -> Predicate:
    """``search_filter`` for a connection field, reporting dropped fields in ``extensions.search``."""
    invalid: list[str] = []
    keep = search_filter(query, _SEARCH_FIELDS.get(table, set()), invalid)
    if invalid:
        entry = {
            "path": list(info.path.as_list()),
            "query": query,
            "warnings": [
                {"field": name, "message": INVALID_SEARCH_FIELD, "code": "invalid_field"}
                for name in dict.fromkeys(invalid)
            ],
        }
        context_of(info).setdefault("search_warnings", []).append(entry)
    return keep


_SEARCH_FIELDS: dict[str, set[str]] = {
    "customers": {"updated_at", "created_at", "id", "email", "state"},
    "orders": {
        "updated_at",
        "created_at",
        "processed_at",
        "id",
        "email",
        "financial_status",
        "fulfillment_status",
    },
    "products": {"updated_at", "created_at", "id", "status", "vendor", "product_type", "handle"},
    "collections": {"updated_at", "id", "handle", "title"},
    "abandoned_checkouts": {"updated_at", "created_at", "id", "email"},
}


# access and indexes --------------------------------------------------------------------------


def shop_of(info: GraphQLResolveInfo) -> ShopState:
    """The shop the request addresses."""
    shop: ShopState = context_of(info)["shop"]
    return shop


def _cache(info: GraphQLResolveInfo, name: str, build: Callable[[], Any]) -> Any:
    cache: dict[str, Any] = context_of(info)["cache"]
    if name not in cache:
        cache[name] = build()
    return cache[name]


def _order_visible(info: GraphQLResolveInfo) -> Callable[[Record], bool]:
    """Without read_all_orders, orders processed more than 60 days ago are invisible."""
    context = context_of(info)
    if "read_all_orders" in context["scopes"]:
        return lambda _r: True
    cutoff = context["now"] - ALL_ORDERS_WINDOW
    return lambda r: (r.get("processed_at") or r.get("created_at") or cutoff) >= cutoff


def _orders_by_customer(info: GraphQLResolveInfo, *, visible_only: bool = True) -> dict[int, list[Record]]:
    """Orders per customer id; ``visible_only`` applies the read_all_orders window.

    The whole-shop index is kept between requests until a record changes (a page of
    customers asks for every customer's order count and spend: scanning every order on
    each page made paged reads of big shops slow, as Shopify's are not).
    """
    shop = shop_of(info)

    def build_all() -> dict[int, list[Record]]:
        index: dict[int, list[Record]] = {}
        for order in shop.records["orders"].values():
            if order.get("customer_id") is not None:
                index.setdefault(order["customer_id"], []).append(order)
        return index

    everything: dict[int, list[Record]] = shop.derived("orders_by_customer", build_all)
    if not visible_only or "read_all_orders" in context_of(info)["scopes"]:
        return everything

    def build() -> dict[int, list[Record]]:
        visible = _order_visible(info)
        seen = {cid: [o for o in orders if visible(o)] for cid, orders in everything.items()}
        return {cid: orders for cid, orders in seen.items() if orders}

    result: dict[int, list[Record]] = _cache(info, "orders_by_customer:visible", build)
    return result


def _variants_by_id(info: GraphQLResolveInfo) -> dict[int, Record]:
    def build() -> dict[int, Record]:
        return {v["id"]: v for rows in shop_of(info).children["variants"].values() for v in rows}

    result: dict[int, Record] = _cache(info, "variants_by_id", build)
    return result


def _entities(info: GraphQLResolveInfo, table: str, query: str | None = None) -> list[Record]:
    records: Iterable[Record] = shop_of(info).records[table].values()
    if table in ("orders",):
        visible = _order_visible(info)
        records = (r for r in records if visible(r))
    if query:
        keep = _search(info, query, table)
        records = (r for r in records if keep(r))
    return list(records)


def _page_args(args: dict[str, Any]) -> dict[str, Any]:
    return {
        "first": args.get("first"),
        "after": args.get("after"),
        "last": args.get("last"),
        "before": args.get("before"),
        "reverse": bool(args.get("reverse")),
        "sort_key": args.get("sortKey"),
    }


def _money(amount: Any, currency: str | None) -> dict[str, Any]:
    return {
        "amount": Decimal(str(amount)) if amount is not None else Decimal("0.0"),
        "currencyCode": currency,
    }


def money_bag(
    record: Record, column: str, shop_currency: str | None, presentment_currency: str | None
) -> dict[str, Any]:
    """A MoneyBag from ``column`` and its ``*_presentment`` twin."""
    presentment = record.get(f"{column}_presentment", record.get(column))
    return {
        "shopMoney": _money(record.get(column), shop_currency),
        "presentmentMoney": _money(presentment, presentment_currency or shop_currency),
    }


def _typed(type_name: str, record: Record | None) -> Record | None:
    """A shallow copy tagged with ``__typename`` (for Node/interface positions)."""
    if record is None:
        return None
    return {**record, "__typename": type_name}


# root: QueryRoot -------------------------------------------------------------------------------

ROOT = "QueryRoot"


@_on(ROOT, "shop")
def _shop(root: Any, info: GraphQLResolveInfo) -> Record:
    return shop_of(info).info


@_on(ROOT, "customers")
def _customers(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_customers")
    return connection(info, _entities(info, "customers", args.get("query")), **_page_args(args))


@_on(ROOT, "orders")
def _orders(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_orders")
    return connection(info, _entities(info, "orders", args.get("query")), **_page_args(args))


@_on(ROOT, "products")
def _products(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_products")
    return connection(info, _entities(info, "products", args.get("query")), **_page_args(args))


@_on(ROOT, "collections")
def _collections(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_products")
    return connection(info, _entities(info, "collections", args.get("query")), **_page_args(args))


@_on(ROOT, "abandonedCheckouts")
def _abandoned_checkouts(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_orders")
    return connection(info, _entities(info, "abandoned_checkouts", args.get("query")), **_page_args(args))


def _count(records: list[Record], limit: int | None) -> dict[str, Any]:
    """A ``Count``; the schema's default limit is 10000, and an explicit ``limit: null`` uncaps it."""
    if limit is not None and len(records) > limit:
        return {"count": limit, "precision": "AT_LEAST"}
    return {"count": len(records), "precision": "EXACT"}


@_on(ROOT, "customersCount")
def _customers_count(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_customers")
    return _count(_entities(info, "customers", args.get("query")), args.get("limit"))


@_on(ROOT, "ordersCount")
def _orders_count(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_orders")
    return _count(_entities(info, "orders", args.get("query")), args.get("limit"))


@_on(ROOT, "productsCount")
def _products_count(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_products")
    return _count(_entities(info, "products", args.get("query")), args.get("limit"))


@_on(ROOT, "abandonedCheckoutsCount")
def _checkouts_count(root: Any, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_orders")
    return _count(_entities(info, "abandoned_checkouts", args.get("query")), args.get("limit"))


# gid type -> (table, scope)
_NODE_TABLES: dict[str, tuple[str, str]] = {
    "Customer": ("customers", "read_customers"),
    "Order": ("orders", "read_orders"),
    "Product": ("products", "read_products"),
    "Collection": ("collections", "read_products"),
    "AbandonedCheckout": ("abandoned_checkouts", "read_orders"),
}


def lookup_node(info: GraphQLResolveInfo, global_id: str) -> Record | None:
    """The record behind a gid, tagged with its ``__typename``; None when it does not exist."""
    type_name, record_id = parse_gid(global_id)
    shop = shop_of(info)
    if type_name == "BulkOperation":
        from devstore.graph import RESOLVERS as REGISTRY

        resolver = REGISTRY.get(("Query", "node:BulkOperation")) or REGISTRY.get((ROOT, "node:BulkOperation"))
        if resolver is None:
            return None
        found = resolver(None, info, id=global_id)
        if isinstance(found, dict) and "__typename" not in found:
            found = {**found, "__typename": "BulkOperation"}
        result: Record | None = found
        return result
    if type_name in _NODE_TABLES:
        table, scope = _NODE_TABLES[type_name]
        require_scope(info, scope)
        record = shop.records[table].get(record_id)
        if record is not None and table == "orders" and not _order_visible(info)(record):
            return None
        return _typed(type_name, record)
    if type_name == "ProductVariant":
        require_scope(info, "read_products")
        return _typed(type_name, _variants_by_id(info).get(record_id))
    if type_name == "Metafield":
        for rows in shop.children["metafields"].values():
            for row in rows:
                if row["id"] == record_id:
                    return _typed(type_name, row)
    return None


@_on(ROOT, "node")
def _node(root: Any, info: GraphQLResolveInfo, id: str) -> Record | None:
    return lookup_node(info, id)


@_on(ROOT, "nodes")
def _nodes(root: Any, info: GraphQLResolveInfo, ids: list[str]) -> list[Record | None]:
    if len(ids) > MAX_PAGE_SIZE:
        raise user_error(
            f"The ids argument is too large: {len(ids)}; the maximum is {MAX_PAGE_SIZE}.", "BAD_REQUEST"
        )
    return [lookup_node(info, i) for i in ids]


def _typed_lookup(type_name: str) -> Callable[..., Record | None]:
    def resolve(root: Any, info: GraphQLResolveInfo, id: str) -> Record | None:
        found_type, _ = parse_gid(id)
        if found_type != type_name:
            return None
        return lookup_node(info, id)

    return resolve


for _type in ("Customer", "Order", "Product", "Collection", "ProductVariant"):
    RESOLVERS[(ROOT, _type[0].lower() + _type[1:])] = _typed_lookup(_type)


@_on(ROOT, "currentAppInstallation")
def _current_app_installation(root: Any, info: GraphQLResolveInfo) -> Record:
    context = context_of(info)
    app = context.get("app")
    app_id = zlib.crc32((app.client_id if app else "devstore").encode())
    return {
        "id": gid("AppInstallation", app_id),
        "accessScopes": [
            {"handle": s, "description": f"Access to {s.split('_', 1)[-1].replace('_', ' ')}."}
            for s in sorted(context["scopes"])
        ],
        "launchUrl": f"https://{shop_of(info).domain}/admin/apps/{app_id}",
        "uninstallUrl": None,
    }


# Shop -----------------------------------------------------------------------------------------

_PLAN_NAMES = {"standard": "Basic", "advanced": "Advanced", "plus": "Shopify Plus"}


@_on("Shop", "id")
def _shop_id(shop_info: Record, info: GraphQLResolveInfo) -> str:
    return gid("Shop", shop_numeric_id(shop_of(info)))


@_on("Shop", "myshopifyDomain")
def _shop_domain(shop_info: Record, info: GraphQLResolveInfo) -> str:
    return str(shop_info["shop"])


@_on("Shop", "contactEmail")
def _shop_contact_email(shop_info: Record, info: GraphQLResolveInfo) -> str:
    return str(shop_info.get("email") or "")


@_on("Shop", "primaryDomain")
def _shop_primary_domain(shop_info: Record, info: GraphQLResolveInfo) -> Record:
    host = shop_info.get("primary_domain") or shop_info["shop"]
    return {
        "id": gid("Domain", zlib.crc32(host.encode())),
        "host": host,
        "url": f"https://{host}",
        "sslEnabled": True,
    }


@_on("Shop", "billingAddress")
def _shop_billing_address(shop_info: Record, info: GraphQLResolveInfo) -> Record:
    return {
        "id": gid("ShopAddress", shop_numeric_id(shop_of(info))),
        "countryCodeV2": shop_info.get("country_code"),
        "countryCode": shop_info.get("country_code"),
        "coordinatesValidated": False,
        "formattedArea": None,
        "formatted": [],
    }


@_on("Shop", "plan")
def _shop_plan(shop_info: Record, info: GraphQLResolveInfo) -> Record:
    plan = shop_info.get("plan") or "standard"
    name = _PLAN_NAMES.get(plan, plan.title())
    return {
        "displayName": name,
        "publicDisplayName": name,
        "partnerDevelopment": False,
        "shopifyPlus": plan == "plus",
    }


@_on("Shop", "ianaTimezone")
def _shop_timezone(shop_info: Record, info: GraphQLResolveInfo) -> str:
    return str(shop_info.get("timezone") or "UTC")


# Customer ---------------------------------------------------------------------------------------


def _legacy_id(record: Record, info: GraphQLResolveInfo) -> int:
    return int(record["id"])


def _gid_resolver(type_name: str) -> Callable[[Record, GraphQLResolveInfo], str]:
    return lambda record, info: gid(type_name, record["id"])


for _type in (
    "Customer",
    "Order",
    "LineItem",
    "Refund",
    "Product",
    "ProductVariant",
    "Collection",
    "AbandonedCheckout",
    "AbandonedCheckoutLineItem",
    "Metafield",
):
    RESOLVERS[(_type, "id")] = _gid_resolver(_type)
    RESOLVERS[(_type, "legacyResourceId")] = _legacy_id


@_on("Customer", "displayName")
def _customer_display_name(c: Record, info: GraphQLResolveInfo) -> str:
    name = " ".join(p for p in (c.get("first_name"), c.get("last_name")) if p)
    return name or (c.get("email") or "").strip() or (c.get("phone") or "")


@_on("Customer", "defaultEmailAddress")
def _customer_email_address(c: Record, info: GraphQLResolveInfo) -> Record | None:
    if not c.get("email"):
        return None
    return {
        "emailAddress": c["email"],
        "marketingState": c.get("email_consent_state") or "NOT_SUBSCRIBED",
        "marketingOptInLevel": c.get("email_consent_opt_in_level"),
        "marketingUpdatedAt": c.get("email_consent_updated_at"),
        "validFormat": "@" in c["email"],
        "sourceLocation": None,
    }


def _never(state: str | None) -> str:
    return "NEVER_SUBSCRIBED" if state in (None, "NOT_SUBSCRIBED") else state


@_on("Customer", "defaultPhoneNumber")
def _customer_phone_number(c: Record, info: GraphQLResolveInfo) -> Record | None:
    if not c.get("phone"):
        return None
    return {
        "phoneNumber": c["phone"],
        "marketingState": c.get("sms_consent_state") or "NOT_SUBSCRIBED",
        "marketingOptInLevel": c.get("sms_consent_opt_in_level"),
        "marketingUpdatedAt": c.get("sms_consent_updated_at"),
        "marketingCollectedFrom": c.get("sms_consent_collected_from"),
        "sourceLocation": None,
        # where 2026-10 keeps SMS consent (Customer.smsMarketingConsent is deprecated)
        "smsMarketingConsent": {
            # CustomerMarketingConsentState says NEVER_SUBSCRIBED where the older enum said NOT_SUBSCRIBED
            "state": _never(c.get("sms_consent_state")),
            "optInLevel": c.get("sms_consent_opt_in_level"),
            "updatedAt": c.get("sms_consent_updated_at"),
            "collectedFrom": c.get("sms_consent_collected_from"),
            "sourceLocation": None,
        },
    }


@_on("Customer", "emailMarketingConsent")
def _customer_email_consent(c: Record, info: GraphQLResolveInfo) -> Record | None:
    if not c.get("email"):
        return None
    return {
        "marketingState": c.get("email_consent_state") or "NOT_SUBSCRIBED",
        "marketingOptInLevel": c.get("email_consent_opt_in_level"),
        "consentUpdatedAt": c.get("email_consent_updated_at"),
        "sourceLocation": None,
    }


@_on("Customer", "smsMarketingConsent")
def _customer_sms_consent(c: Record, info: GraphQLResolveInfo) -> Record | None:
    if not c.get("phone"):
        return None
    return {
        "marketingState": c.get("sms_consent_state") or "NOT_SUBSCRIBED",
        # non-null in the schema: a phone given without a consent choice is single opt-in
        "marketingOptInLevel": c.get("sms_consent_opt_in_level") or "SINGLE_OPT_IN",
        "consentUpdatedAt": c.get("sms_consent_updated_at"),
        "consentCollectedFrom": c.get("sms_consent_collected_from"),
        "sourceLocation": None,
    }


@_on("Customer", "tags")
def _tags(record: Record, info: GraphQLResolveInfo) -> list[str]:
    return list(record.get("tags") or [])


RESOLVERS[("Order", "tags")] = _tags
RESOLVERS[("Product", "tags")] = _tags


@_on("Customer", "numberOfOrders")
def _customer_number_of_orders(c: Record, info: GraphQLResolveInfo) -> int:
    return len(_orders_by_customer(info, visible_only=False).get(c["id"], []))


@_on("Customer", "amountSpent")
def _customer_amount_spent(c: Record, info: GraphQLResolveInfo) -> Record:
    total = Decimal("0")
    for order in _orders_by_customer(info, visible_only=False).get(c["id"], []):
        if order.get("test") or order.get("cancelled_at") is not None:
            continue
        total += Decimal(order.get("total_price") or "0") - Decimal(order.get("total_refunded") or "0")
    return _money(total, shop_of(info).info.get("currency_code"))


def _addresses(c: Record, info: GraphQLResolveInfo) -> list[Record]:
    rows = shop_of(info).children["customer_addresses"].get(c["id"], [])
    return sorted(rows, key=lambda a: (a["id"] != c.get("default_address_id"), a["id"]))


@_on("Customer", "defaultAddress")
def _customer_default_address(c: Record, info: GraphQLResolveInfo) -> Record | None:
    default_id = c.get("default_address_id")
    if default_id is None:
        return None
    return next((a for a in _addresses(c, info) if a["id"] == default_id), None)


@_on("Customer", "addresses")
def _customer_addresses(c: Record, info: GraphQLResolveInfo, first: int | None = None) -> list[Record]:
    rows = _addresses(c, info)
    return rows if first is None else rows[:first]


@_on("Customer", "addressesV2")
def _customer_addresses_v2(c: Record, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    return connection(info, _addresses(c, info), **_page_args(args))


def _metafields(c: Record, info: GraphQLResolveInfo) -> list[Record]:
    rows = shop_of(info).children["metafields"].get(c["id"], [])
    return [m for m in rows if (m.get("owner_type") or "Customer") == "Customer"]


@_on("Customer", "metafields")
def _customer_metafields(c: Record, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    rows = _metafields(c, info)
    if args.get("namespace") is not None:
        rows = [m for m in rows if m["namespace"] == args["namespace"]]
    if args.get("keys"):
        wanted = set(args["keys"])
        rows = [m for m in rows if f"{m['namespace']}.{m['key']}" in wanted]
    return connection(info, rows, **_page_args(args))


@_on("Customer", "metafield")
def _customer_metafield(
    c: Record, info: GraphQLResolveInfo, key: str, namespace: str | None = None
) -> Record | None:
    if namespace is None and "." in key:
        namespace, key = key.split(".", 1)
    for m in _metafields(c, info):
        if m["key"] == key and (namespace is None or m["namespace"] == namespace):
            return m
    return None


@_on("Customer", "orders")
def _customer_orders(c: Record, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    require_scope(info, "read_orders")
    rows = _orders_by_customer(info).get(c["id"], [])
    if args.get("query"):
        keep = _search(info, args["query"], "orders")
        rows = [r for r in rows if keep(r)]
    return connection(info, rows, **_page_args(args))


# MailingAddress (customer addresses and order/checkout billing addresses) -------------------


@_on("MailingAddress", "id")
def _address_id(a: Record, info: GraphQLResolveInfo) -> str:
    return f"gid://shopify/MailingAddress/{a.get('id') or 0}?model_name=CustomerAddress"


@_on("MailingAddress", "countryCodeV2", "countryCode")
def _address_country_code(a: Record, info: GraphQLResolveInfo) -> str | None:
    code: str | None = a.get("country_code")
    return code


@_on("MailingAddress", "name")
def _address_name(a: Record, info: GraphQLResolveInfo) -> str:
    return " ".join(p for p in (a.get("first_name"), a.get("last_name")) if p)


@_on("MailingAddress", "formatted")
def _address_formatted(a: Record, info: GraphQLResolveInfo, **args: Any) -> list[str]:
    lines = [a.get("address1"), a.get("address2"), " ".join(p for p in (a.get("zip"), a.get("city")) if p)]
    return [line for line in lines if line]


@_on("MailingAddress", "coordinatesValidated")
def _address_coordinates(a: Record, info: GraphQLResolveInfo) -> bool:
    return False


def _billing_address(record: Record) -> Record | None:
    """An order or checkout's ``billing_*`` columns as an address record (None when empty)."""
    address = {
        key: record.get(f"billing_{key}")
        for key in (
            "first_name",
            "last_name",
            "address1",
            "address2",
            "city",
            "province",
            "zip",
            "country_code",
            "phone",
        )
    }
    if not any(address.values()):
        return None
    address["id"] = record["id"]
    return address


# Order ---------------------------------------------------------------------------------------------

_ORDER_MONEY = {
    "subtotalPriceSet": "subtotal_price",
    "totalPriceSet": "total_price",
    "totalTaxSet": "total_tax",
    "totalDiscountsSet": "total_discounts",
    "totalShippingPriceSet": "total_shipping_price",
    "totalRefundedSet": "total_refunded",
    "currentTotalPriceSet": "total_price",
    "currentSubtotalPriceSet": "subtotal_price",
    "currentTotalTaxSet": "total_tax",
    "currentTotalDiscountsSet": "total_discounts",
}


def _order_money(column: str) -> Callable[[Record, GraphQLResolveInfo], Record]:
    return lambda o, info: money_bag(o, column, o.get("currency_code"), o.get("presentment_currency_code"))


for _field, _column in _ORDER_MONEY.items():
    RESOLVERS[("Order", _field)] = _order_money(_column)


@_on("Order", "customer")
def _order_customer(o: Record, info: GraphQLResolveInfo) -> Record | None:
    if o.get("customer_id") is None or not _has(info, "read_customers"):
        return None
    return shop_of(info).records["customers"].get(o["customer_id"])


def _has(info: GraphQLResolveInfo, scope: str) -> bool:
    scopes: set[str] = context_of(info)["scopes"]
    return scope in scopes or scope.replace("read_", "write_", 1) in scopes


@_on("Order", "displayFinancialStatus")
def _order_financial_status(o: Record, info: GraphQLResolveInfo) -> str | None:
    status: str | None = o.get("financial_status")
    return status


@_on("Order", "displayFulfillmentStatus")
def _order_fulfillment_status(o: Record, info: GraphQLResolveInfo) -> str:
    return str(o.get("fulfillment_status") or "UNFULFILLED")


@_on("Order", "cancelled")
def _order_cancelled(o: Record, info: GraphQLResolveInfo) -> bool:
    return o.get("cancelled_at") is not None


@_on("Order", "closed")
def _order_closed(o: Record, info: GraphQLResolveInfo) -> bool:
    return o.get("closed_at") is not None


@_on("Order", "billingAddress")
def _order_billing_address(o: Record, info: GraphQLResolveInfo) -> Record | None:
    return _billing_address(o)


@_on("Order", "billingAddressMatchesShippingAddress")
def _order_billing_matches(o: Record, info: GraphQLResolveInfo) -> bool:
    return True


def _with_order(order: Record) -> Callable[[Record], Record]:
    # children need the order's currencies for their MoneyBags
    return lambda child: {**child, "_order": order}


@_on("Order", "lineItems")
def _order_line_items(o: Record, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    rows = shop_of(info).children["order_line_items"].get(o["id"], [])
    return connection(info, rows, wrap=_with_order(o), **_page_args(args))


@_on("Order", "refunds")
def _order_refunds(o: Record, info: GraphQLResolveInfo, first: int | None = None) -> list[Record]:
    rows = sorted(shop_of(info).children["refunds"].get(o["id"], []), key=lambda r: r["id"])
    if first is not None:
        rows = rows[:first]
    return [_with_order(o)(r) for r in rows]


def _child_money(column: str) -> Callable[[Record, GraphQLResolveInfo], Record]:
    def resolve(child: Record, info: GraphQLResolveInfo) -> Record:
        parent = child.get("_order") or child.get("_checkout") or {}
        currency = parent.get("currency_code") or shop_of(info).info.get("currency_code")
        return money_bag(child, column, currency, parent.get("presentment_currency_code") or currency)

    return resolve


RESOLVERS[("LineItem", "originalUnitPriceSet")] = _child_money("original_unit_price")
RESOLVERS[("LineItem", "discountedTotalSet")] = _child_money("discounted_total")
RESOLVERS[("Refund", "totalRefundedSet")] = _child_money("total_refunded")


def _product_ref(child: Record, info: GraphQLResolveInfo) -> Record | None:
    if child.get("product_id") is None:
        return None
    return shop_of(info).records["products"].get(child["product_id"])


def _variant_ref(child: Record, info: GraphQLResolveInfo) -> Record | None:
    if child.get("variant_id") is None:
        return None
    return _variants_by_id(info).get(child["variant_id"])


for _type in ("LineItem", "AbandonedCheckoutLineItem"):
    RESOLVERS[(_type, "product")] = _product_ref
    RESOLVERS[(_type, "variant")] = _variant_ref


@_on("LineItem", "name")
def _line_item_name(li: Record, info: GraphQLResolveInfo) -> str:
    return str(li.get("title") or "")


@_on("LineItem", "currentQuantity")
def _line_item_current_quantity(li: Record, info: GraphQLResolveInfo) -> int:
    return int(li.get("quantity") or 0)


@_on("LineItem", "variantTitle", "vendor")
def _line_item_none(li: Record, info: GraphQLResolveInfo) -> None:
    return None


# Product, variants, collections ---------------------------------------------------------------------


@_on("Product", "variants")
def _product_variants(p: Record, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    rows = shop_of(info).children["variants"].get(p["id"], [])
    return connection(info, rows, **_page_args(args))


@_on("Product", "variantsCount")
def _product_variants_count(p: Record, info: GraphQLResolveInfo) -> Record:
    return _count(shop_of(info).children["variants"].get(p["id"], []), None)


@_on("ProductVariant", "product")
def _variant_product(v: Record, info: GraphQLResolveInfo) -> Record | None:
    return shop_of(info).records["products"].get(v["product_id"])


@_on("ProductVariant", "displayName")
def _variant_display_name(v: Record, info: GraphQLResolveInfo) -> str:
    product = shop_of(info).records["products"].get(v["product_id"]) or {}
    return f"{product.get('title') or ''} - {v.get('title') or ''}".strip(" -")


def _collection_products(c: Record, info: GraphQLResolveInfo) -> list[Record]:
    products = shop_of(info).records["products"]
    members = sorted(
        shop_of(info).children["collection_products"].get(c["id"], []), key=lambda m: m["position"]
    )
    return [
        {**products[m["product_id"]], "position": m["position"]}
        for m in members
        if m["product_id"] in products
    ]


@_on("Collection", "products")
def _collection_products_connection(c: Record, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    page = _page_args(args)
    if page["sort_key"] in (None, "COLLECTION_DEFAULT", "MANUAL", "BEST_SELLING"):
        page["sort_key"] = "POSITION"
    return connection(info, _collection_products(c, info), **page)


@_on("Collection", "productsCount")
def _collection_products_count(c: Record, info: GraphQLResolveInfo) -> Record:
    return _count(_collection_products(c, info), None)


# Abandoned checkouts -------------------------------------------------------------------------------


@_on("AbandonedCheckout", "customer")
def _checkout_customer(ac: Record, info: GraphQLResolveInfo) -> Record | None:
    if ac.get("customer_id") is None or not _has(info, "read_customers"):
        return None
    return shop_of(info).records["customers"].get(ac["customer_id"])


@_on("AbandonedCheckout", "totalPriceSet")
def _checkout_total(ac: Record, info: GraphQLResolveInfo) -> Record:
    return money_bag(ac, "total_price", ac.get("currency_code"), ac.get("currency_code"))


@_on("AbandonedCheckout", "billingAddress")
def _checkout_billing_address(ac: Record, info: GraphQLResolveInfo) -> Record | None:
    return _billing_address(ac)


@_on("AbandonedCheckout", "name")
def _checkout_name(ac: Record, info: GraphQLResolveInfo) -> str:
    return f"#{ac['id']}"


@_on("AbandonedCheckout", "lineItemsQuantity")
def _checkout_quantity(ac: Record, info: GraphQLResolveInfo) -> int:
    rows = shop_of(info).children["checkout_line_items"].get(ac["id"], [])
    return sum(int(r.get("quantity") or 0) for r in rows)


@_on("AbandonedCheckout", "lineItems")
def _checkout_line_items(ac: Record, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any]:
    rows = shop_of(info).children["checkout_line_items"].get(ac["id"], [])
    return connection(info, rows, wrap=lambda li: {**li, "_checkout": ac}, **_page_args(args))


RESOLVERS[("AbandonedCheckoutLineItem", "originalUnitPriceSet")] = _child_money("original_unit_price")


# Metafield ---------------------------------------------------------------------------------------------


@_on("Metafield", "ownerType")
def _metafield_owner_type(m: Record, info: GraphQLResolveInfo) -> str:
    return str(m.get("owner_type") or "Customer").upper()


@_on("Metafield", "jsonValue")
def _metafield_json_value(m: Record, info: GraphQLResolveInfo) -> Any:
    value = m.get("value")
    if m.get("type", "").startswith(("json", "list.")):
        try:
            return json.loads(value or "null")
        except ValueError:
            return value
    if m.get("type") == "number_integer":
        return int(value) if value not in (None, "") else None
    return value
