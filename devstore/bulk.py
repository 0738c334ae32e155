"""Bulk operations: bulkOperationRunQuery, bulkOperationCancel, currentBulkOperation, JSONL results.

``bulkOperationRunQuery`` checks the query the way Shopify does (valid against the schema,
at least one and at most five connections, connections nested at most two levels, no
top-level ``node``/``nodes``, at most five running operations per app and shop) and hands it
to the world's ``BulkRunner``. The runner executes it in a background thread through the
GraphQL executor in bulk mode (every node of every connection), flattens the result to
JSONL (each node of a nested connection on its own line with ``__parentId``), and serves the
file at ``/_devstore/bulk/<id>.jsonl`` without an access token, like Shopify's signed URL.

A simulated running time (``min_seconds + seconds_per_object * objects``) lets tests see
RUNNING; faults can fail an operation with partial data or keep it running forever.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import graphql
from graphql import GraphQLResolveInfo

from devstore.faults import FaultInjector, injector_for
from devstore.mutations import context_client_id, context_shop, context_value, parse_gid, user_error
from devstore.state import AppCredentials, Record, ShopState, World

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 5
MAX_NESTING = 2
MAX_CONCURRENT = 5
RESULT_LIFETIME = timedelta(days=7)
ACTIVE_STATES = ("CREATED", "RUNNING", "CANCELING")
FINISHED_STATES = ("COMPLETED", "FAILED", "CANCELED", "EXPIRED")


def bulk_gid(op_id: int) -> str:
    """The global id of a bulk operation."""
    return f"gid://shopify/BulkOperation/{op_id}"


# query checks ----------------------------------------------------------------------------
@dataclass
class QueryShape:
    """What a bulk query selects: connection count, deepest nesting and problems found."""

    connections: int = 0
    depth: int = 0
    problems: list[str] | None = None


def _is_connection(gtype: graphql.GraphQLNamedType) -> bool:
    return (
        isinstance(gtype, graphql.GraphQLObjectType)
        and gtype.name.endswith("Connection")
        and ("edges" in gtype.fields or "nodes" in gtype.fields)
    )


def analyse_query(schema: graphql.GraphQLSchema, document: graphql.DocumentNode) -> QueryShape:
    """Count connections and nesting depth of a (valid) bulk query document."""
    shape = QueryShape(problems=[])
    problems = shape.problems
    assert problems is not None
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, graphql.FragmentDefinitionNode)
    }
    operations = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    if len(operations) != 1 or operations[0].operation != graphql.OperationType.QUERY:
        problems.append("Bulk operations must contain exactly one query operation.")
        return shape

    def selects_id(selection_set: graphql.SelectionSetNode | None) -> bool:
        if selection_set is None:
            return False
        for sel in selection_set.selections:
            if isinstance(sel, graphql.FieldNode) and sel.name.value == "id" and sel.alias is None:
                return True
            if isinstance(sel, graphql.InlineFragmentNode) and selects_id(sel.selection_set):
                return True
            if (
                isinstance(sel, graphql.FragmentSpreadNode)
                and sel.name.value in fragments
                and selects_id(fragments[sel.name.value].selection_set)
            ):
                return True
        return False

    def walk(
        selection_set: graphql.SelectionSetNode,
        parent: graphql.GraphQLNamedType,
        depth: int,
        node_selection: graphql.SelectionSetNode | None,
        at_root: bool,
    ) -> None:
        for sel in selection_set.selections:
            if isinstance(sel, graphql.InlineFragmentNode):
                target = schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
                walk(sel.selection_set, target or parent, depth, node_selection, at_root)
                continue
            if isinstance(sel, graphql.FragmentSpreadNode):
                frag = fragments.get(sel.name.value)
                if frag is not None:
                    target = schema.get_type(frag.type_condition.name.value) or parent
                    walk(frag.selection_set, target, depth, node_selection, at_root)
                continue
            if not isinstance(sel, graphql.FieldNode) or sel.name.value.startswith("__"):
                continue
            fields = getattr(parent, "fields", {})
            field_def = fields.get(sel.name.value)
            if field_def is None:
                continue
            if at_root and sel.name.value in ("node", "nodes"):
                problems.append("Bulk queries cannot contain a top level `node` or `nodes` field.")
                continue
            named = graphql.get_named_type(field_def.type)
            if _is_connection(named):
                shape.connections += 1
                level = depth + 1
                shape.depth = max(shape.depth, level)
                if level > 1 and not selects_id(node_selection):
                    problems.append(
                        f"The parent 'node' field for a nested connection must select the 'id' field."
                        f" Connection fields without 'id': {sel.name.value}."
                    )
                if sel.selection_set is None:
                    continue
                # descend through edges { node { ... } } and nodes { ... }
                assert isinstance(named, graphql.GraphQLObjectType)
                node_type = (
                    graphql.get_named_type(named.fields["nodes"].type) if "nodes" in named.fields else None
                )
                for inner in sel.selection_set.selections:
                    if not isinstance(inner, graphql.FieldNode) or inner.selection_set is None:
                        continue
                    if inner.name.value == "nodes" and node_type is not None:
                        walk(inner.selection_set, node_type, level, inner.selection_set, False)
                    elif inner.name.value == "edges":
                        edge_type = graphql.get_named_type(named.fields["edges"].type)
                        edge_node = getattr(edge_type, "fields", {}).get("node")
                        for edge_sel in inner.selection_set.selections:
                            if (
                                isinstance(edge_sel, graphql.FieldNode)
                                and edge_sel.name.value == "node"
                                and edge_sel.selection_set is not None
                                and edge_node is not None
                            ):
                                walk(
                                    edge_sel.selection_set,
                                    graphql.get_named_type(edge_node.type),
                                    level,
                                    edge_sel.selection_set,
                                    False,
                                )
            elif sel.selection_set is not None:
                walk(sel.selection_set, named, depth, node_selection, False)

    root = schema.query_type
    assert root is not None
    walk(operations[0].selection_set, root, 0, None, True)
    if shape.connections == 0:
        problems.append("Bulk queries must contain at least one connection.")
    if shape.connections > MAX_CONNECTIONS:
        problems.append(f"Bulk queries cannot contain more than {MAX_CONNECTIONS} connections.")
    if shape.depth > MAX_NESTING:
        problems.append(
            f"Bulk queries cannot contain connections with a nesting depth greater than {MAX_NESTING}."
        )
    return shape


# JSONL flattening ------------------------------------------------------------------------
def _connection_nodes(value: Any) -> list[Any] | None:
    """The nodes of a connection-shaped result value, or None when it is not a connection."""
    if not isinstance(value, dict) or not value or not set(value) <= {"edges", "nodes", "pageInfo"}:
        return None
    if isinstance(value.get("nodes"), list):
        return value["nodes"]
    if isinstance(value.get("edges"), list):
        return [e.get("node") for e in value["edges"] if isinstance(e, dict)]
    return None


def flatten(data: dict[str, Any], *, group_objects: bool = False) -> tuple[list[dict[str, Any]], int]:
    """JSONL lines of a bulk result and the number of root objects.

    Every node of a nested connection becomes its own line with ``__parentId`` (the parent
    node's id); other objects and lists stay inline. Ungrouped output (the 2026-10 default)
    writes all root objects first and the children after them, so a reader cannot assume
    that a child follows its parent.
    """
    lines: list[dict[str, Any]] = []
    deferred: list[tuple[dict[str, Any], Any]] = []
    roots = 0

    def emit(node: dict[str, Any], parent_id: Any) -> None:
        line: dict[str, Any] = {}
        children: list[list[Any]] = []
        for key, value in node.items():
            nodes = _connection_nodes(value)
            if nodes is not None:
                children.append(nodes)
            else:
                line[key] = value
        if parent_id is not None:
            line["__parentId"] = parent_id
        lines.append(line)
        for nodes in children:
            for child in nodes:
                if not isinstance(child, dict):
                    continue
                if group_objects:
                    emit(child, node.get("id"))
                else:
                    deferred.append((child, node.get("id")))

    def visit_root(value: Any, parent_id: Any) -> None:
        nonlocal roots
        nodes = _connection_nodes(value)
        if nodes is not None:
            for node in nodes:
                if isinstance(node, dict):
                    roots += 1 if parent_id is None else 0
                    emit(node, parent_id)
        elif isinstance(value, dict):
            # a plain object at the root (e.g. ``shop``) whose connections hold the data
            for inner in value.values():
                visit_root(inner, value.get("id"))

    for value in (data or {}).values():
        visit_root(value, None)
    while deferred:
        batch, deferred = deferred, []
        for child, parent_id in batch:
            emit(child, parent_id)
    return lines, roots


# the runner ------------------------------------------------------------------------------
class BulkRunner:
    """Runs bulk queries in background threads and writes their JSONL results.

    ``seconds_per_object`` and ``min_seconds`` set the simulated running time, so tests
    can observe RUNNING; the defaults finish as fast as the query runs.
    """

    def __init__(
        self,
        world: World,
        *,
        output_dir: Path | None = None,
        seconds_per_object: float = 0.0,
        min_seconds: float = 0.0,
        faults: FaultInjector | None = None,
        base_url: str = "",
    ) -> None:
        self.world = world
        self._own_dir = output_dir is None
        self.output_dir = Path(output_dir or tempfile.mkdtemp(prefix="devstore-bulk-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.seconds_per_object = seconds_per_object
        self.min_seconds = min_seconds
        self.faults = faults
        self.base_url = base_url.rstrip("/")
        self._threads: dict[int, threading.Thread] = {}
        self._cancel: dict[int, threading.Event] = {}
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    # files ---------------------------------------------------------------------------
    def path_for(self, name: str) -> Path | None:
        """The result file for a URL name like ``123.jsonl`` or ``123-partial.jsonl``."""
        stem = name.removesuffix(".jsonl")
        if not name.endswith(".jsonl") or not stem.removesuffix("-partial").isdigit():
            return None
        path = self.output_dir / name
        return path if path.is_file() else None

    def find_operation(self, op_id: int) -> tuple[ShopState, Record] | None:
        """The shop and record of a bulk operation id, searching every shop."""
        with self.world.lock:
            shops = list(self.world.shops.values())
        for shop in shops:
            op = shop.bulk_operations.get(op_id)
            if op is not None:
                refresh_expiry(shop, op)
                return shop, op
        return None

    def _url(self, name: str, base_url: str) -> str:
        base = (base_url or self.base_url).rstrip("/")
        return f"{base}/_devstore/bulk/{name}"

    # lifecycle -----------------------------------------------------------------------
    def submit(
        self, shop: ShopState, op: Record, *, scopes: set[str], app: AppCredentials | None, base_url: str
    ) -> None:
        """Start running ``op`` in its own thread."""
        cancel = threading.Event()
        fault = self.faults.decide_bulk(shop.handle) if self.faults is not None else None
        op["_fault"] = fault
        thread = threading.Thread(
            target=self._run,
            args=(shop, op, set(scopes), app, base_url, cancel, fault),
            name=f"devstore-bulk-{op['id']}",
            daemon=True,
        )
        with self._lock:
            self._threads[op["id"]] = thread
            self._cancel[op["id"]] = cancel
        thread.start()

    def cancel(self, op_id: int) -> None:
        """Ask a running operation to stop."""
        with self._lock:
            event = self._cancel.get(op_id)
        if event is not None:
            event.set()

    def wait(self, op_id: int, timeout: float = 10.0) -> bool:
        """Block until the operation's thread ends (True) or ``timeout`` passes."""
        with self._lock:
            thread = self._threads.get(op_id)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def stop(self) -> None:
        """Stop every running operation and remove the files the runner created."""
        self._stopped.set()
        with self._lock:
            events = list(self._cancel.values())
            threads = list(self._threads.values())
        for event in events:
            event.set()
        for thread in threads:
            thread.join(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def _run(
        self,
        shop: ShopState,
        op: Record,
        scopes: set[str],
        app: AppCredentials | None,
        base_url: str,
        cancel: threading.Event,
        fault: str | None,
    ) -> None:
        from devstore import graph  # the executor imports this module's RESOLVERS; import late

        with shop.lock:
            if op["status"] == "CREATED":  # a cancel may already have arrived
                op["status"] = "RUNNING"
        try:
            result = graph.execute(self.world, shop, op["query"], bulk=True, app_scopes=scopes, app=app)
        except Exception:
            # a resolver bug must not leave the operation RUNNING for ever
            log.exception("bulk operation %s failed inside the executor", op["id"])
            self._finish(shop, op, "FAILED", error_code="INTERNAL_SERVER_ERROR")
            return
        if result.errors:
            codes = {(e.extensions or {}).get("code") for e in result.errors}
            self._finish(
                shop,
                op,
                "FAILED",
                error_code="ACCESS_DENIED" if "ACCESS_DENIED" in codes else "INTERNAL_SERVER_ERROR",
            )
            return
        lines, roots = flatten(result.data or {}, group_objects=bool(op.get("group_objects")))
        total = len(lines)
        # roots among the first n lines, for the running rootObjectCount
        root_prefix = [0, *itertools.accumulate(1 if "__parentId" not in line else 0 for line in lines)]
        running = self.min_seconds + self.seconds_per_object * total
        started = time.monotonic()
        fail_at = total // 2 if fault == "fail_partial" else None
        while True:
            if cancel.is_set() or self._stopped.is_set():
                self._finish(shop, op, "CANCELED")
                return
            elapsed = time.monotonic() - started
            fraction = 1.0 if running <= 0 else min(1.0, elapsed / running)
            if fault == "never_finish":
                fraction = min(fraction, 0.5)
            done = int(total * fraction)
            with shop.lock:
                op["object_count"] = done
                op["root_object_count"] = root_prefix[done]
            if fail_at is not None and (done >= fail_at or fraction >= 1.0):
                self._fail_partial(shop, op, lines[:fail_at], base_url)
                return
            if fraction >= 1.0 and fault != "never_finish":
                break
            cancel.wait(0.02)
        name = f"{op['id']}.jsonl"
        size = self._write(name, lines)
        with shop.lock:
            op["object_count"] = total
            op["root_object_count"] = roots
            # Shopify returns no file at all for a query that matched nothing
            op["file_size"] = size if total else None
            op["url"] = self._url(name, base_url) if total else None
        self._finish(shop, op, "COMPLETED")

    def _write(self, name: str, lines: list[dict[str, Any]]) -> int:
        path = self.output_dir / name
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(json.dumps(line, separators=(",", ":"), default=str))
                fh.write("\n")
        os.replace(tmp, path)
        return path.stat().st_size

    def _fail_partial(self, shop: ShopState, op: Record, lines: list[dict[str, Any]], base_url: str) -> None:
        name = f"{op['id']}-partial.jsonl"
        self._write(name, lines)
        with shop.lock:
            op["object_count"] = len(lines)
            op["root_object_count"] = sum(1 for line in lines if "__parentId" not in line)
            op["partial_data_url"] = self._url(name, base_url) if lines else None
        self._finish(shop, op, "FAILED", error_code="INTERNAL_SERVER_ERROR")

    def _finish(self, shop: ShopState, op: Record, status: str, *, error_code: str | None = None) -> None:
        with shop.lock:
            op["status"] = status
            op["error_code"] = error_code
            op["completed_at"] = shop.clock.now()
            shop.log_write(
                "bulkOperationFinish", bulk_gid(op["id"]), {"status": status}, outcome=error_code or "ok"
            )
            payload = {
                "admin_graphql_api_id": bulk_gid(op["id"]),
                "completed_at": op["completed_at"].isoformat(),
                "created_at": op["created_at"].isoformat(),
                "error_code": error_code.lower() if error_code else None,
                "status": status.lower(),
                "type": op["type"].lower(),
            }
        shop.emit("bulk_operations/finish", payload)


_RUNNERS: weakref.WeakKeyDictionary[World, BulkRunner] = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.Lock()


def runner_for(world: World) -> BulkRunner:
    """The world's bulk runner (created on first use with the world's fault injector)."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(world)
        if runner is None:
            runner = BulkRunner(world, faults=injector_for(world))
            _RUNNERS[world] = runner
        return runner


def install_runner(world: World, runner: BulkRunner) -> BulkRunner:
    """Use ``runner`` for ``world`` (the server does this to set the base URL and timings)."""
    with _RUNNERS_LOCK:
        old = _RUNNERS.get(world)
        _RUNNERS[world] = runner
    if old is not None and old is not runner:
        old.stop()
    return runner


def refresh_expiry(shop: ShopState, op: Record) -> None:
    """Mark a finished operation EXPIRED once its result is older than seven days."""
    completed_at = op.get("completed_at")
    if (
        op.get("status") in ("COMPLETED", "FAILED")
        and completed_at is not None
        and shop.clock.now() - completed_at > RESULT_LIFETIME
    ):
        op["status"] = "EXPIRED"
        op["url"] = None
        op["partial_data_url"] = None


def _base_url(info: GraphQLResolveInfo, runner: BulkRunner) -> str:
    for key in ("base_url", "request"):
        value = context_value(info, key)
        if isinstance(value, str):
            return value
        if value is not None and hasattr(value, "base_url"):
            return str(value.base_url).rstrip("/")
    return runner.base_url


def _runner(info: GraphQLResolveInfo) -> BulkRunner:
    runner = context_value(info, "bulk_runner")
    if isinstance(runner, BulkRunner):
        return runner
    return runner_for(context_value(info, "world"))


def _ops_of_app(shop: ShopState, client_id: str) -> Iterator[Record]:
    for op in shop.bulk_operations.values():
        if not client_id or op.get("client_id") in (client_id, ""):
            yield op


# resolvers -------------------------------------------------------------------------------
def resolve_bulk_operation_run_query(
    root: Any, info: GraphQLResolveInfo, query: str, groupObjects: bool = False
) -> dict[str, Any]:
    """bulkOperationRunQuery: validate, then start the operation in the background."""
    from devstore import graph

    shop = context_shop(info)
    runner = _runner(info)
    client_id = context_client_id(info)
    document, errors = graph.parse_and_validate(query)
    problems: list[str] = []
    if errors:
        problems = [f"Invalid bulk query: {e['message']}" for e in errors]
    elif document is not None:
        problems = analyse_query(graph.load_schema(), document).problems or []
    if problems:
        shop.log_write("bulkOperationRunQuery", "query", {"query": query}, outcome="INVALID")
        return {"bulkOperation": None, "userErrors": [user_error(["query"], p, "INVALID") for p in problems]}
    with shop.lock:
        active = [
            op
            for op in _ops_of_app(shop, client_id)
            if op["type"] == "QUERY" and op["status"] in ACTIVE_STATES
        ]
        if len(active) >= MAX_CONCURRENT:
            shop.log_write("bulkOperationRunQuery", "query", {"query": query}, outcome="LIMIT_REACHED")
            message = (
                f"A maximum of {MAX_CONCURRENT} bulk query operations can run at the same time for this app and"
                " shop. Wait for one to finish or cancel one."
            )
            return {"bulkOperation": None, "userErrors": [user_error(None, message, "LIMIT_REACHED")]}
        op_id = shop.next_id()
        op: Record = {
            "__typename": "BulkOperation",
            "id": op_id,
            "status": "CREATED",
            "type": "QUERY",
            "query": query,
            "group_objects": bool(groupObjects),
            "created_at": shop.clock.now(),
            "completed_at": None,
            "error_code": None,
            "file_size": None,
            "object_count": 0,
            "root_object_count": 0,
            "url": None,
            "partial_data_url": None,
            "client_id": client_id,
        }
        shop.bulk_operations[op_id] = op
        shop.log_write(
            "bulkOperationRunQuery", bulk_gid(op_id), {"query": query, "groupObjects": bool(groupObjects)}
        )
    scopes = context_value(info, "scopes")
    app = context_value(info, "app")
    runner.submit(
        shop,
        op,
        scopes=set(scopes) if scopes is not None else set(),
        app=app if isinstance(app, AppCredentials) else None,
        base_url=_base_url(info, runner),
    )
    return {"bulkOperation": op, "userErrors": []}


def resolve_bulk_operation_cancel(root: Any, info: GraphQLResolveInfo, id: str) -> dict[str, Any]:
    """bulkOperationCancel: CREATED/RUNNING -> CANCELING (the runner then marks it CANCELED)."""
    shop = context_shop(info)
    op_id = parse_gid(id, "BulkOperation")
    with shop.lock:
        op = shop.bulk_operations.get(op_id) if op_id is not None else None
        if op is None or op.get("client_id") not in (context_client_id(info), ""):
            return {
                "bulkOperation": None,
                "userErrors": [user_error(["id"], "Bulk operation does not exist")],
            }
        refresh_expiry(shop, op)
        if op["status"] not in ("CREATED", "RUNNING"):
            message = f"A bulk operation cannot be canceled when it is {op['status'].lower()}"
            return {"bulkOperation": op, "userErrors": [user_error(None, message)]}
        op["status"] = "CANCELING"
        shop.log_write("bulkOperationCancel", bulk_gid(op["id"]), {})
    _runner(info).cancel(op["id"])
    return {"bulkOperation": op, "userErrors": []}


def resolve_current_bulk_operation(root: Any, info: GraphQLResolveInfo, type: str = "QUERY") -> Record | None:
    """currentBulkOperation: the calling app's most recent operation of ``type``."""
    shop = context_shop(info)
    with shop.lock:
        ops = [op for op in _ops_of_app(shop, context_client_id(info)) if op["type"] == str(type or "QUERY")]
        if not ops:
            return None
        latest = max(ops, key=lambda op: (op["created_at"], op["id"]))
        refresh_expiry(shop, latest)
    return latest


def resolve_bulk_operation_node(
    root: Any, info: GraphQLResolveInfo, id: Any = None, **_: Any
) -> Record | None:
    """``node(id:)`` / ``bulkOperation(id:)`` for a BulkOperation gid (or its numeric id)."""
    op_id = id if isinstance(id, int) else parse_gid(id, "BulkOperation")
    shop = context_shop(info)
    op = shop.bulk_operations.get(op_id) if op_id is not None else None
    if op is None or op.get("client_id") not in (context_client_id(info), ""):
        return None
    refresh_expiry(shop, op)
    return op


def resolve_bulk_operation_id(source: Record, info: GraphQLResolveInfo) -> str:
    """BulkOperation.id as a gid."""
    return bulk_gid(source["id"])


RESOLVERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("Mutation", "bulkOperationRunQuery"): resolve_bulk_operation_run_query,
    ("Mutation", "bulkOperationCancel"): resolve_bulk_operation_cancel,
    ("Query", "currentBulkOperation"): resolve_current_bulk_operation,
    ("Query", "bulkOperation"): resolve_bulk_operation_node,
    ("Query", "node:BulkOperation"): resolve_bulk_operation_node,
    # the schema's query type is called QueryRoot; the executor dispatches on that name
    ("QueryRoot", "currentBulkOperation"): resolve_current_bulk_operation,
    ("QueryRoot", "bulkOperation"): resolve_bulk_operation_node,
    ("BulkOperation", "id"): resolve_bulk_operation_id,
}
