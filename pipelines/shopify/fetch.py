"""Fetchers: read one entity of one shop into the landing zone, by bulk export, paged query or id list.

Every mode writes rows in the shape of Shopify's bulk JSONL: one object per line, nested
connection nodes on their own lines with ``__parentId``, no ``edges``/``node``/``pageInfo``
wrappers. So the loader has one path for all of them.

Incremental reads page through a *fixed* window ``updated_at >= A AND updated_at <= B``
with the GraphQL cursor: ``B`` is fixed when the sync starts and ``A`` is the last
watermark minus a look-back. A mass edit that gives thousands of rows one ``updated_at``
is just more pages of the same window; nothing restarts from ``updated_at`` alone, so
nothing stalls or is skipped. Progress (bounds + GraphQL cursor) is saved after each
landing batch, so a crashed run resumes where its last batch ended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pipelines import landing
from pipelines.landing import Manifest
from pipelines.shopify import documents
from pipelines.shopify.bulk import BulkExport, Slice, make_slices
from pipelines.shopify.client import ShopifyAccessDenied, ShopifyClient, ShopifyCostTooHigh
from pipelines.shopify.cursors import IncrementalCursor, Window
from pipelines.shopify.preflight import ORDERS_WINDOW_MESSAGE, orders_restricted, read_scopes, skip_reason
from pipelines.shopify.settings import (
    ENTITY_SCOPES,
    EPOCH_ISO,
    MAX_PAGE_SIZE,
    MAX_QUERY_COST,
    RECENT_ORDERS_WINDOW,
    FetchSettings,
)

log = logging.getLogger("shopsync.shopify.fetch")

ENTITIES = ("customers", "orders", "products", "collections", "abandoned_checkouts")
Mode = Literal["bulk", "incremental", "reconcile"]
# Entities whose reconciliation is a whole export, not an id list. A product joining or leaving
# a collection does not move the collection's updated_at, so no incremental read sees it;
# collections are few and their export carries only member ids, so exporting them whole
# each night brings membership changes in (and still marks deleted collections).
WHOLE_ON_RECONCILE = frozenset({"collections"})


@dataclass(frozen=True)
class EntitySpec:
    """How an entity is read: its root field, its child connection, how many children per page."""

    name: str
    root: str  # QueryRoot connection field
    child: str  # the nested connection drained past its first page
    child_first: int  # children asked for with each node of a page
    # Requested cost of one node of the page query with its first child page, and of one
    # child in a follow-up page, by Shopify's cost rules (measured on the devstore, which
    # applies them): they size the first pages until an answer tells the real figures, so
    # those pages are neither refused nor throttled.
    node_cost: float
    child_cost: float


SPECS: dict[str, EntitySpec] = {
    # customers: shopsync writes five engagement metafields (transforms.reverse_sync), so a
    # first child page of five holds them all; asking for more would only raise the page's
    # requested cost (and the wait for it), and a sixth is drained like any nested page
    "customers": EntitySpec("customers", "customers", "metafields", 5, node_cost=15, child_cost=1.1),
    "orders": EntitySpec("orders", "orders", "lineItems", 5, node_cost=73, child_cost=9.1),
    "products": EntitySpec("products", "products", "variants", 10, node_cost=14, child_cost=1.1),
    "collections": EntitySpec("collections", "collections", "products", 100, node_cost=104, child_cost=1.1),
    "abandoned_checkouts": EntitySpec(
        "abandoned_checkouts", "abandonedCheckouts", "lineItems", 5, node_cost=39, child_cost=6.1
    ),
}


@dataclass
class FetchResult:
    """What one fetch of one entity did."""

    shop: str
    entity: str
    mode: str
    batches: list[Manifest] = field(default_factory=list)
    rows: int = 0
    skipped_reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    api_points: int = 0
    throttle_wait_s: float = 0.0
    throttled: int = 0  # THROTTLED and 429 answers
    restore_rate: float | None = None  # the store's points per second, as Shopify last reported it


# shape -------------------------------------------------------------------------------------
def _connection_nodes(value: dict[str, Any]) -> list[dict[str, Any]]:
    if "edges" in value:
        return [edge["node"] for edge in value.get("edges") or [] if edge.get("node") is not None]
    return [n for n in value.get("nodes") or [] if n is not None]


def _is_connection(value: Any) -> bool:
    return isinstance(value, dict) and ("edges" in value or "nodes" in value)


def flatten_node(node: dict[str, Any], parent_id: str | None = None) -> list[dict[str, Any]]:
    """One paged-query node as bulk-JSONL rows: the node, then each nested connection node with ``__parentId``."""
    row: dict[str, Any] = {}
    children: list[dict[str, Any]] = []
    for key, value in node.items():
        if _is_connection(value):
            for child in _connection_nodes(value):
                children.extend(flatten_node(child, node.get("id")))
        else:
            row[key] = value
    if parent_id is not None:
        row["__parentId"] = parent_id
    return [row, *children]


# helpers -----------------------------------------------------------------------------------
def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _base_filter(entity: str, restricted: bool, now: datetime) -> str:
    if entity == "orders" and restricted:
        # Shopify serves only recent orders without read_all_orders; ask only for those
        return f"created_at:>='{_iso(now - RECENT_ORDERS_WINDOW)}'"
    return ""


def _target_cost(client: ShopifyClient, settings: FetchSettings) -> float:
    """The requested cost to aim a page at: the target, within Shopify's limit and the bucket share."""
    target = float(min(settings.target_query_cost, MAX_QUERY_COST))
    bucket = client.bucket
    if bucket is not None:
        target = min(target, bucket.maximum * settings.bucket_share)
    return target


def _fit_to_bucket(first: int, per_node: float, client: ShopifyClient) -> int:
    """A smaller page when the bucket holds less than a full one, instead of waiting for it.

    Shopify takes a query's requested cost (computed from ``first``) when it starts and
    refunds the unused part when it ends, so a page asks for about twice what it spends.
    Sending what the bucket holds now, down to a quarter of a page, spends the same points
    per second with less waiting: it matters at the end of a read (the last pages of a small
    incremental window) and costs only more, smaller requests while the bucket is empty.
    """
    available = client.available_points()
    if available is None:
        return first
    fits = int((available - 3) / (per_node * 1.02))
    return first if fits >= first else max(1, first // 4, fits)


def _page_size(
    cost_per_node: float | None, client: ShopifyClient, settings: FetchSettings, node_cost: float
) -> int:
    """Nodes per page so that the requested cost stays below the target (and the bucket share)."""
    target = _target_cost(client, settings)
    if not cost_per_node:
        # before the first answer: the entity's known cost per node, and a small page
        return max(1, min(settings.first_page_size, int(target // node_cost)))
    return max(1, min(MAX_PAGE_SIZE, int(target // cost_per_node)))


# incremental -------------------------------------------------------------------------------
class _Incremental:
    def __init__(
        self,
        client: ShopifyClient,
        spec: EntitySpec,
        *,
        shop: str,
        landing_root: Path,
        state_dir: Path,
        settings: FetchSettings,
        base_filter: str,
    ) -> None:
        self.client = client
        self.spec = spec
        self.shop = shop
        self.landing_root = landing_root
        self.state_dir = state_dir
        self.settings = settings
        self.base_filter = base_filter
        self.document = documents.load(spec.name)
        self.children_document = documents.load(f"{spec.name}.children")
        self.cost_per_node: float | None = None
        self.child_cost: float | None = None
        self.batches: list[Manifest] = []

    def run(self, *, lookback: timedelta, now: datetime) -> list[Manifest]:
        cursor = IncrementalCursor.load(self.state_dir, self.shop, self.spec.name)
        if cursor.window is None:
            floor = cursor.watermark or cursor.updated_at
            start = _iso(_parse(floor) - lookback) if floor else EPOCH_ISO
            # B rounded up to the whole second (Shopify's search precision) so a change made just
            # before the sync is inside this window; the next window's look-back re-reads the
            # part of that second after the sync started
            upper = now.replace(microsecond=0) + (timedelta(seconds=1) if now.microsecond else timedelta(0))
            cursor.window = Window(window_from=start, window_to=_iso(upper))
            cursor.save(self.state_dir, self.shop, self.spec.name)
        window = cursor.window
        terms = [self.base_filter] if self.base_filter else []
        terms += [f"updated_at:>='{window.window_from}'", f"updated_at:<='{window.window_to}'"]
        search = " AND ".join(terms)

        pending: list[dict[str, Any]] = []
        parents_pending = 0
        after = window.after
        cap: int | None = None
        while True:
            first = _page_size(self.cost_per_node, self.client, self.settings, self.spec.node_cost)
            if cap is not None:
                first = min(first, cap)
            per_node = self.cost_per_node or self.spec.node_cost
            first = _fit_to_bucket(first, per_node, self.client)
            variables = {"first": first, "after": after, "query": search, "childFirst": self.spec.child_first}
            expected = per_node * first + 2
            try:
                data = self.client.execute(self.document, variables, expected_cost=expected)
            except ShopifyCostTooHigh as exc:
                # more than one query may cost, or than the bucket holds: our estimate was low
                if first == 1:
                    raise
                if exc.requested > exc.limit:
                    # requested cost is linear in the page size: learn the cost per node from the refusal
                    self.cost_per_node = exc.requested / first
                else:
                    cap = max(1, first // 2)
                continue
            requested, _ = self.client.last_cost
            connection = data[self.spec.root]
            nodes = _connection_nodes(connection)
            if requested and first:
                # requested cost is linear in the page size; this is an upper bound per node
                self.cost_per_node = max(1.0, requested / first)
            for node in nodes:
                self._drain_children(node)
                pending.extend(flatten_node(node))
                cursor.advance(node.get("updatedAt"), node.get("id"))
                parents_pending += 1
            page_info = connection.get("pageInfo") or {}
            has_next = bool(page_info.get("hasNextPage")) and bool(nodes)
            after = page_info.get("endCursor") or after
            if parents_pending >= self.settings.rows_per_batch or (not has_next and pending):
                self._land(pending, window, after)
                window.after = after
                window.rows += parents_pending
                pending, parents_pending = [], 0
                cursor.save(self.state_dir, self.shop, self.spec.name)
            if not has_next:
                break
        cursor.watermark = window.window_to
        cursor.window = None
        cursor.save(self.state_dir, self.shop, self.spec.name)
        return self.batches

    def _drain_children(self, node: dict[str, Any]) -> None:
        """Fetch the rest of a node's child connection and splice it into the node."""
        connection = node.get(self.spec.child)
        if not _is_connection(connection):
            return
        page_info = connection.get("pageInfo") or {}
        if not page_info.get("hasNextPage"):
            return
        collected = _connection_nodes(connection)
        after = page_info.get("endCursor")
        while after:
            target = _target_cost(self.client, self.settings)
            # the entity's known cost per child until the first answer tells the real one
            child_cost = self.child_cost or self.spec.child_cost
            first = max(1, min(MAX_PAGE_SIZE, int((target - 3) // child_cost)))
            expected = child_cost * first + 3
            try:
                data = self.client.execute(
                    self.children_document,
                    {"id": node["id"], "first": first, "after": after},
                    expected_cost=expected,
                )
            except ShopifyCostTooHigh as exc:
                if first == 1 or not exc.requested:
                    raise
                self.child_cost = exc.requested / first
                continue
            requested, _ = self.client.last_cost
            if requested:
                self.child_cost = max(0.1, requested / first)
            owner = data.get("node") or {}
            more = owner.get(self.spec.child) or {}
            collected.extend(_connection_nodes(more))
            info = more.get("pageInfo") or {}
            after = info.get("endCursor") if info.get("hasNextPage") else None
        node[self.spec.child] = {"edges": [{"node": n} for n in collected]}

    def _land(self, rows: list[dict[str, Any]], window: Window, after: str | None) -> None:
        manifest = landing.write_batch(
            self.landing_root,
            self.shop,
            self.spec.name,
            "incremental",
            rows,
            window_from=window.window_from,
            window_to=window.window_to,
            extra={"after": after},
        )
        self.batches.append(manifest)


# bulk and reconcile ------------------------------------------------------------------------
def _oldest_updated_at(client: ShopifyClient, entity: str) -> datetime | None:
    data = client.execute(documents.load(f"{entity}.oldest"), expected_cost=5)
    nodes = _connection_nodes(data[SPECS[entity].root])
    if not nodes:
        return None
    node = nodes[0]
    value = node.get("updatedAt") if entity != "abandoned_checkouts" else node.get("createdAt")
    return _parse(value) if value else None


def _bulk(
    client: ShopifyClient,
    *,
    shop: str,
    entity: str,
    landing_root: Path,
    state_dir: Path,
    mode: Mode,
    now: datetime,
    base_filter: str,
    restricted_from: datetime | None,
    settings: FetchSettings,
) -> tuple[list[Manifest], list[str], bool, str]:
    export = BulkExport(
        client, shop=shop, entity=entity, landing_root=landing_root, state_dir=state_dir, settings=settings
    )
    plan = export.load_plan(mode)
    if plan is None:
        if mode == "reconcile":
            slices = [Slice(key="000", start=None, end=None)]
            plan = export.new_plan(mode, f"{entity}.ids", now, slices, base_filter, None)
        else:
            oldest = _oldest_updated_at(client, entity)
            lower = oldest or _parse(EPOCH_ISO)
            if restricted_from is not None:
                lower = max(lower, restricted_from)
            lower = lower.replace(microsecond=0)
            upper = max(now.replace(microsecond=0), lower + timedelta(seconds=1))
            slices = make_slices(lower, upper, settings.initial_slices)
            plan = export.new_plan(mode, f"{entity}.bulk", now, slices, base_filter, _iso(lower))
    else:
        log.info("resuming the %s export of %s/%s started at %s", mode, shop, entity, plan.started_at)
    outcome = export.run(plan, complete_if_whole=restricted_from is None)
    return outcome.batches, outcome.warnings, outcome.complete, plan.started_at


# the entry point ---------------------------------------------------------------------------
def fetch_entity(
    client: ShopifyClient,
    *,
    shop: str,
    entity: str,
    landing_root: Path,
    state_dir: Path,
    mode: Literal["bulk", "incremental", "reconcile"],
    lookback: timedelta = timedelta(minutes=5),
    now: datetime | None = None,
    scopes: set[str] | None = None,
    settings: FetchSettings | None = None,
) -> FetchResult:
    """Read one entity of one shop into the landing zone.

    ``bulk`` is the full export (first sync and every re-sync; its batch is ``complete``),
    ``incremental`` the paged read of what changed since the last watermark, ``reconcile``
    an ids-only full export (a whole one for :data:`WHOLE_ON_RECONCILE`). ``scopes`` are the granted scopes if the caller already read
    them (else they are read here). Missing scopes give a skipped result, not an error.
    """
    if entity not in SPECS:
        raise ValueError(f"unknown entity {entity!r}; use one of {', '.join(ENTITIES)}")
    if mode not in ("bulk", "incremental", "reconcile"):
        raise ValueError(f"unknown fetch mode {mode!r}; use bulk, incremental or reconcile")
    settings = settings or FetchSettings()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    result = FetchResult(shop=shop, entity=entity, mode=mode)
    points_before, wait_before = client.stats.points, client.stats.wait_s
    throttled_before = client.stats.throttled
    try:
        if scopes is None:
            scopes = read_scopes(client)
        reason = skip_reason(entity, scopes)
        if reason:
            result.skipped_reason = reason
            log.warning("%s: %s", shop, reason)
            return result
        restricted = entity == "orders" and orders_restricted(scopes)
        if restricted:
            result.warnings.append(ORDERS_WINDOW_MESSAGE)
        base_filter = _base_filter(entity, restricted, now)
        if restricted and mode == "reconcile":
            # an id list of 60 days of orders cannot tell a deleted old order from an unreadable
            # one, and a reconciliation batch marks every absent id deleted: land nothing
            log.info("%s: orders reconciliation skipped, only 60 days of orders are readable", shop)
            return result
        if mode == "reconcile" and entity in WHOLE_ON_RECONCILE:
            mode = "bulk"
        try:
            if mode == "incremental":
                runner = _Incremental(
                    client,
                    SPECS[entity],
                    shop=shop,
                    landing_root=landing_root,
                    state_dir=state_dir,
                    settings=settings,
                    base_filter=base_filter,
                )
                result.batches = runner.run(lookback=lookback, now=now)
            else:
                batches, warnings, complete, started_at = _bulk(
                    client,
                    shop=shop,
                    entity=entity,
                    landing_root=landing_root,
                    state_dir=state_dir,
                    mode=mode,
                    now=now,
                    base_filter=base_filter,
                    restricted_from=now - RECENT_ORDERS_WINDOW if restricted else None,
                    settings=settings,
                )
                result.batches = batches
                result.warnings.extend(warnings)
                if mode == "bulk" and complete:
                    # the full export covers everything up to its start: incremental reads go on from there
                    cursor = IncrementalCursor.load(state_dir, shop, entity)
                    cursor.watermark = started_at
                    cursor.window = None
                    cursor.save(state_dir, shop, entity)
        except ShopifyAccessDenied as exc:
            scope = exc.scope or ENTITY_SCOPES[entity]
            result.skipped_reason = skip_reason(entity, set()) if scope == ENTITY_SCOPES[entity] else str(exc)
            log.warning("%s: %s", shop, result.skipped_reason)
    finally:
        result.rows = sum(m.rows for m in result.batches)
        result.api_points = round(client.stats.points - points_before)
        result.throttle_wait_s = round(client.stats.wait_s - wait_before, 3)
        result.throttled = client.stats.throttled - throttled_before
        result.restore_rate = client.bucket.restore_rate if client.bucket is not None else None
    return result
