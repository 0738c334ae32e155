"""Bulk query checks and JSONL flattening, without a server."""

from __future__ import annotations

import graphql
import pytest

from devstore.bulk import analyse_query, flatten
from devstore.graph import load_schema


def _problems(query: str) -> list[str]:
    return analyse_query(load_schema(), graphql.parse(query)).problems or []


def test_a_two_level_query_with_ids_is_accepted() -> None:
    shape = analyse_query(
        load_schema(),
        graphql.parse("{ customers { edges { node { id orders { edges { node { id name } } } } } } }"),
    )
    assert shape.problems == []
    assert (shape.connections, shape.depth) == (2, 2)


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("{ shop { name } }", "at least one connection"),
        (
            "{ customers { edges { node { id orders { edges { node { id lineItems { edges { node { id } } } } } } } } } }",
            "nesting depth greater than 2",
        ),
        (
            "{ a: customers { nodes { id } } b: customers { nodes { id } } c: customers { nodes { id } }"
            " d: customers { nodes { id } } e: customers { nodes { id } } f: products { nodes { id } } }",
            "more than 5 connections",
        ),
        ('{ node(id: "gid://shopify/Customer/1") { id } products { nodes { id } } }', "top level `node`"),
        ("{ customers { edges { node { email orders { nodes { id } } } } } }", "must select the 'id' field"),
    ],
)
def test_shopify_bulk_limits_are_enforced(query: str, fragment: str) -> None:
    assert any(fragment in p for p in _problems(query)), _problems(query)


def test_flatten_puts_nested_nodes_on_their_own_lines_with_parent_ids() -> None:
    data = {
        "customers": {
            "edges": [
                {
                    "node": {
                        "id": "C1",
                        "tags": ["a"],
                        "orders": {"edges": [{"node": {"id": "O1"}}, {"node": {"id": "O2"}}]},
                    }
                },
                {
                    "node": {
                        "id": "C2",
                        "tags": [],
                        "orders": {"nodes": [{"id": "O3", "total": {"amount": "1.00"}}]},
                    }
                },
            ]
        }
    }
    lines, roots = flatten(data)
    assert roots == 2
    # ungrouped: all roots first, children afterwards
    assert lines == [
        {"id": "C1", "tags": ["a"]},
        {"id": "C2", "tags": []},
        {"id": "O1", "__parentId": "C1"},
        {"id": "O2", "__parentId": "C1"},
        {"id": "O3", "total": {"amount": "1.00"}, "__parentId": "C2"},
    ]
    grouped, _ = flatten(data, group_objects=True)
    assert [line["id"] for line in grouped] == ["C1", "O1", "O2", "C2", "O3"]
