"""GraphQL documents: loaded from ``queries/*.graphql``, with the fragments they use appended.

Fragments live in ``*.fields.graphql`` files (one per entity) and fix the landing-row shape,
so the bulk export and the paged query of an entity read exactly the same fields. A
document gets only the fragments it spreads (transitively), because GraphQL rejects unused
fragments.

Bulk queries take no variables, so ``inline_bulk_query`` substitutes the variable values
as literals and inlines the fragments into a self-contained query string.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from graphql import (
    REMOVE,
    ArgumentNode,
    DocumentNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    VariableNode,
    Visitor,
    parse,
    parse_value,
    print_ast,
    visit,
)

QUERIES_DIR = Path(__file__).parent / "queries"


def fragment_definitions(paths: list[Path]) -> dict[str, FragmentDefinitionNode]:
    """Every fragment defined in ``paths``, by name (a name defined twice is an error)."""
    found: dict[str, FragmentDefinitionNode] = {}
    for path in paths:
        for definition in parse(path.read_text(encoding="utf-8")).definitions:
            if isinstance(definition, FragmentDefinitionNode):
                name = definition.name.value
                if name in found:
                    raise ValueError(f"GraphQL fragment {name} is defined twice (again in {path})")
                found[name] = definition
    return found


def _spread_names(node: Any) -> set[str]:
    names: set[str] = set()

    class Collect(Visitor):
        def enter_fragment_spread(self, spread: FragmentSpreadNode, *_: Any) -> None:
            names.add(spread.name.value)

    visit(node, Collect())
    return names


def with_fragments(source: str, fragments: dict[str, FragmentDefinitionNode]) -> str:
    """``source`` followed by the fragments it uses, transitively, and only those."""
    document = parse(source)
    defined = {d.name.value for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    needed: list[str] = []
    pending = sorted(_spread_names(document) - defined)
    while pending:
        name = pending.pop(0)
        if name in needed or name in defined:
            continue
        if name not in fragments:
            raise KeyError(f"GraphQL fragment {name} is used but not defined in any *.fields.graphql file")
        needed.append(name)
        pending.extend(sorted(_spread_names(fragments[name]) - set(needed) - defined))
    parts = [source.rstrip()] + [print_ast(fragments[name]) for name in needed]
    return "\n\n".join(parts) + "\n"


@cache
def _project_fragments() -> dict[str, FragmentDefinitionNode]:
    return fragment_definitions(sorted(QUERIES_DIR.glob("*.fields.graphql")))


@cache
def load(name: str) -> str:
    """The document ``queries/<name>.graphql`` with its fragments appended, ready to send."""
    path = QUERIES_DIR / f"{name}.graphql"
    if not path.exists():
        raise FileNotFoundError(f"no GraphQL document {path}")
    return with_fragments(path.read_text(encoding="utf-8"), _project_fragments())


def inline_bulk_query(document: str, variables: dict[str, Any] | None = None) -> str:
    """A self-contained query string for ``bulkOperationRunQuery``.

    Variables are replaced by literals (bulk queries take none), fragment spreads become
    inline fragments, and the operation's variable definitions and name are dropped.
    """
    variables = variables or {}
    document_node: DocumentNode = parse(document)
    fragments = {d.name.value: d for d in document_node.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document_node.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1:
        raise ValueError("a bulk query document must hold exactly one operation")

    class Inline(Visitor):
        def enter_argument(self, node: ArgumentNode, *_: Any) -> Any:
            # an argument whose variable is null is left out, as if it were never given
            if isinstance(node.value, VariableNode) and variables.get(node.value.name.value, "") is None:
                return REMOVE
            return None

        def enter_variable(self, node: VariableNode, *_: Any) -> Any:
            name = node.name.value
            if name not in variables:
                raise KeyError(f"bulk query variable ${name} has no value")
            return parse_value(json_literal(variables[name]))

        def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> Any:
            fragment = fragments[node.name.value]
            return InlineFragmentNode(
                type_condition=fragment.type_condition,
                directives=(),
                selection_set=visit(fragment.selection_set, Inline()),
            )

    operation = operations[0]
    body = visit(operation.selection_set, Inline())
    return "{\n" + "\n".join(print_ast(body).splitlines()[1:-1]) + "\n}\n"


def json_literal(value: Any) -> str:
    """A Python value as a GraphQL literal (strings quoted and escaped like JSON)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(json_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {json_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as a GraphQL literal")
