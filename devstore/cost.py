"""Query cost and throttling, by Shopify's published rules.

Cost of a query (``requested_cost``): scalars and enums 0; an object 1 plus its selection;
a connection 2 plus ``first`` (or ``last``) times the cost of one node; a mutation field 10;
for an interface or union the most expensive of the type-conditioned branches. The actual
cost (``actual_cost``) applies the same rules to the data really returned (real page sizes),
and the difference is refunded to the bucket.

Buckets (``CostLimiter``) are leaky buckets per (app, shop), sized by the shop's plan:
``standard`` 2000 points restoring 100/s, ``advanced`` 4000 at 200/s, ``plus`` 20000 at 1000/s.
A single query may request at most 1000 points.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import graphql
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.execution.values import get_argument_values, get_variable_values

MAX_QUERY_COST = 1000
MUTATION_COST = 10
CONNECTION_BASE_COST = 2
OBJECT_COST = 1

# plan -> (bucket size, restore rate in points per second)
PLAN_LIMITS: dict[str, tuple[float, float]] = {
    "standard": (2000.0, 100.0),
    "advanced": (4000.0, 200.0),
    "plus": (20000.0, 1000.0),
}

_MISSING = object()


def _operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        return next((o for o in operations if o.name and o.name.value == operation_name), None)
    return operations[0] if len(operations) == 1 else None


class _CostWalker:
    """Walks an operation's selections (optionally alongside its result data) adding up cost."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        variables: dict[str, Any],
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }

    def selection_cost(
        self, selection_set: SelectionSetNode | None, parent: Any, data: Any = _MISSING
    ) -> int:
        """Cost of a selection set on ``parent`` (an object/interface/union type)."""
        if selection_set is None:
            return 0
        common = 0
        branches: dict[str, int] = {}
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                common += self.field_cost(selection, parent, data)
                continue
            if isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition.name.value if selection.type_condition else None
                sub_set = selection.selection_set
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is None:
                    continue
                condition = fragment.type_condition.name.value
                sub_set = fragment.selection_set
            else:
                continue
            target = self.schema.type_map.get(condition) if condition else parent
            cost = self.selection_cost(sub_set, target or parent, data)
            if condition is None or condition == parent.name or not isinstance(target, GraphQLObjectType):
                common += cost
            else:
                branches[condition] = branches.get(condition, 0) + cost
        return common + max(branches.values(), default=0)

    def field_cost(self, node: FieldNode, parent: Any, data: Any) -> int:
        """Cost of one field (0 for leaves, 1 + selection for objects, sized for connections)."""
        name = node.name.value
        if name.startswith("__") or not hasattr(parent, "fields"):
            return 0
        field_def = parent.fields.get(name)
        if field_def is None:
            return 0
        named = graphql.get_named_type(field_def.type)
        if graphql.is_leaf_type(named):
            return 0
        value: Any = _MISSING
        if data is not _MISSING:
            key = node.alias.value if node.alias else name
            value = data.get(key) if isinstance(data, dict) else None
        if _is_connection(named):
            return self.connection_cost(node, field_def, named, value)
        if isinstance(value, list):
            # a plain list of objects costs as one object, as Shopify sizes only connections
            value = value[0] if value else None
        if value is None and data is not _MISSING:
            return OBJECT_COST
        return OBJECT_COST + self.selection_cost(node.selection_set, named, value)

    def connection_cost(self, node: FieldNode, field_def: Any, connection_type: Any, value: Any) -> int:
        """``2 + size × node cost``; size is first/last when requested, the real count when actual."""
        # (field holding the list: ``nodes`` or ``edges``, field selecting the node)
        node_selections: list[tuple[FieldNode, FieldNode]] = []
        for sub in self._fields(node.selection_set, connection_type):
            if sub.name.value == "nodes":
                node_selections.append((sub, sub))
            elif sub.name.value == "edges":
                edge_type = graphql.get_named_type(connection_type.fields["edges"].type)
                for edge_field in self._fields(sub.selection_set, edge_type):
                    if edge_field.name.value == "node":
                        node_selections.append((sub, edge_field))
        if "nodes" not in connection_type.fields:
            return CONNECTION_BASE_COST
        node_type = graphql.get_named_type(connection_type.fields["nodes"].type)
        if value is _MISSING:
            args = get_argument_values(field_def, node, self.variables)
            size = args.get("first") if args.get("first") is not None else args.get("last") or 0
            per_node = sum(
                OBJECT_COST + self.selection_cost(sel.selection_set, node_type) for _, sel in node_selections
            )
            return CONNECTION_BASE_COST + int(size) * per_node
        if not isinstance(value, dict):
            return CONNECTION_BASE_COST
        total = CONNECTION_BASE_COST
        for holder, sel in node_selections:
            listed = value.get(_key(holder))
            if not isinstance(listed, list):
                continue
            items = listed if holder is sel else [e.get(_key(sel)) for e in listed if isinstance(e, dict)]
            total += sum(
                OBJECT_COST + self.selection_cost(sel.selection_set, node_type, item) for item in items
            )
        return total

    def _fields(self, selection_set: SelectionSetNode | None, parent: Any) -> list[FieldNode]:
        """Fields of a selection set, fragments flattened (connections are object types)."""
        out: list[FieldNode] = []
        if selection_set is None:
            return out
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                out.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                out.extend(self._fields(selection.selection_set, parent))
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value in self.fragments:
                out.extend(self._fields(self.fragments[selection.name.value].selection_set, parent))
        return out


def _key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _is_connection(named: Any) -> bool:
    fields = getattr(named, "fields", None)
    return bool(named.name.endswith("Connection") and fields and "pageInfo" in fields)


def _coerced_variables(
    schema: GraphQLSchema, operation: OperationDefinitionNode, variables: dict[str, Any] | None
) -> dict[str, Any] | None:
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {})
    return coerced if isinstance(coerced, dict) else None


def requested_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> int:
    """The cost Shopify would reserve before running the operation."""
    operation = _operation(document, operation_name)
    if operation is None:
        return 0
    coerced = _coerced_variables(schema, operation, variables)
    if coerced is None:
        return 0
    walker = _CostWalker(schema, document, coerced)
    if operation.operation == graphql.OperationType.MUTATION:
        return MUTATION_COST * len(walker._fields(operation.selection_set, schema.mutation_type))
    root = schema.query_type
    return sum(walker.field_cost(f, root, _MISSING) for f in walker._fields(operation.selection_set, root))


def actual_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    data: dict[str, Any] | None,
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
) -> int:
    """The cost of what was really returned (real connection sizes); 0 when nothing was."""
    operation = _operation(document, operation_name)
    if operation is None or data is None:
        return 0
    if operation.operation == graphql.OperationType.MUTATION:
        return requested_cost(schema, document, variables, operation_name)
    coerced = _coerced_variables(schema, operation, variables)
    if coerced is None:
        return 0
    walker = _CostWalker(schema, document, coerced)
    root = schema.query_type
    return sum(walker.field_cost(f, root, data) for f in walker._fields(operation.selection_set, root))


# throttling -----------------------------------------------------------------------------------


@dataclass
class ThrottleBucket:
    """A leaky bucket of query-cost points."""

    maximum: float
    restore_rate: float
    clock: Callable[[], float] = time.monotonic
    available: float = -1.0
    updated: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.available < 0:
            self.available = self.maximum
        self.updated = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        self.available = min(self.maximum, self.available + (now - self.updated) * self.restore_rate)
        self.updated = now

    def try_take(self, cost: float) -> bool:
        """Reserve ``cost`` points if the bucket holds them; False (nothing taken) otherwise."""
        with self.lock:
            self._refill()
            if cost > self.available:
                return False
            self.available -= cost
            return True

    def refund(self, points: float) -> None:
        """Give back points reserved but not used (requested minus actual cost)."""
        with self.lock:
            self._refill()
            self.available = min(self.maximum, self.available + max(0.0, points))

    def drain(self, points: float | None = None) -> None:
        """Empty the bucket (or remove ``points``), e.g. for a simulated throttle storm."""
        with self.lock:
            self._refill()
            self.available = 0.0 if points is None else max(0.0, self.available - points)

    def status(self) -> dict[str, Any]:
        """``throttleStatus`` as Shopify reports it."""
        with self.lock:
            self._refill()
            return {
                "maximumAvailable": float(self.maximum),
                "currentlyAvailable": int(self.available),
                "restoreRate": float(self.restore_rate),
            }


class CostLimiter:
    """The buckets of every (app, shop) pair, created on first use from the shop's plan."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        limits: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self.clock = clock
        # plan -> (bucket size, restore rate); benchmarks and tests may loosen or tighten them
        self.limits = {**PLAN_LIMITS, **(limits or {})}
        self._buckets: dict[tuple[str, str], ThrottleBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, app_id: str, shop_domain: str, plan: str | None) -> ThrottleBucket:
        """The bucket of one app on one shop."""
        key = (app_id, shop_domain)
        with self._lock:
            found = self._buckets.get(key)
            if found is None:
                maximum, rate = self.limits.get(plan or "standard", self.limits["standard"])
                found = ThrottleBucket(maximum, rate, clock=self.clock)
                self._buckets[key] = found
            return found

    def reset(self) -> None:
        """Forget every bucket (all start full again)."""
        with self._lock:
            self._buckets.clear()


def cost_extension(requested: int, actual: int | None, bucket: ThrottleBucket) -> dict[str, Any]:
    """``extensions.cost`` of a response."""
    return {
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
        "throttleStatus": bucket.status(),
    }


def max_cost_error(requested: int) -> dict[str, Any]:
    """Shopify's error for a query whose requested cost exceeds the single-query limit."""
    return {
        "message": (
            f"Query cost is {requested}, which exceeds the single query max cost limit ({MAX_QUERY_COST}).\n\n"
            "See https://shopify.dev/concepts/about-apis/rate-limits for more information on how the\n"
            "cost of a query is calculated.\n\n"
            "To query larger amounts of data with fewer limits, bulk operations should be used instead.\n"
            "See https://shopify.dev/tutorials/perform-bulk-operations-with-admin-api for usage details.\n"
        ),
        "extensions": {
            "code": "MAX_COST_EXCEEDED",
            "cost": requested,
            "maxCost": MAX_QUERY_COST,
            "documentation": "https://shopify.dev/api/usage/rate-limits",
        },
    }


def throttled_error() -> dict[str, Any]:
    """Shopify's error when the bucket cannot cover the requested cost."""
    return {
        "message": "Throttled",
        "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"},
    }
