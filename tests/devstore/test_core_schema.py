"""The derived schema copy agrees with Shopify's published 2026-10 schema; validation errors look like Shopify's."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import graphql
import pytest
from core_tables import tiny_tables

from devstore import graph
from devstore.schema_derive import strip_descriptions, write_derived
from devstore.server import world_from_tables
from devstore.state import World

PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "shopify" / "admin_2026-10.json.gz"


def _shape(schema: graphql.GraphQLSchema) -> dict[str, object]:
    """Types, fields (with argument names and types), enum values and input fields of a schema."""
    out: dict[str, object] = {}
    for name, t in schema.type_map.items():
        if name.startswith("__"):
            continue
        entry: dict[str, object] = {"kind": type(t).__name__}
        if isinstance(t, graphql.GraphQLObjectType | graphql.GraphQLInterfaceType):
            entry["fields"] = {
                f: (str(d.type), {a: str(v.type) for a, v in d.args.items()}, d.deprecation_reason)
                for f, d in t.fields.items()
            }
            entry["interfaces"] = sorted(i.name for i in t.interfaces)
        elif isinstance(t, graphql.GraphQLInputObjectType):
            entry["fields"] = {f: str(d.type) for f, d in t.fields.items()}
        elif isinstance(t, graphql.GraphQLEnumType):
            entry["values"] = sorted(t.values)
        elif isinstance(t, graphql.GraphQLUnionType):
            entry["types"] = sorted(m.name for m in t.types)
        out[name] = entry
    return out


@pytest.mark.skipif(
    not PUBLISHED.exists(), reason="the published schema lives outside the repo (../shared/shopify/)"
)
def test_derived_schema_agrees_with_published(tmp_path: Path) -> None:
    with gzip.open(PUBLISHED, "rt") as fh:
        published = graphql.build_client_schema(json.load(fh)["data"])
    committed = graph.load_schema()
    assert _shape(committed) == _shape(published)
    # re-deriving gives the committed file byte for byte (so the copy is not stale)
    fresh = write_derived(PUBLISHED, tmp_path / "derived.json.gz")
    assert fresh.read_bytes() == graph.SCHEMA_PATH.read_bytes()


def test_derived_schema_has_no_descriptions_and_is_small() -> None:
    with gzip.open(graph.SCHEMA_PATH, "rt") as fh:
        data = json.load(fh)
    assert strip_descriptions(data) == data
    assert graph.SCHEMA_PATH.stat().st_size < 400_000
    schema = graph.load_schema()
    assert schema.query_type is not None and schema.query_type.name == "QueryRoot"
    assert "email" in schema.type_map["Customer"].fields  # type: ignore[attr-defined]
    assert graph.load_schema() is schema  # cached per process


@pytest.fixture(scope="module")
def tiny_world() -> World:
    return world_from_tables(tiny_tables())


def test_unknown_field_fails_like_shopify_validation(tiny_world: World) -> None:
    shop = tiny_world.shop("tiny")
    assert shop is not None
    query = "query Q {\n  customers(first: 1) {\n    nodes { id bogus }\n  }\n}"
    result = graph.execute(tiny_world, shop, query)
    assert result.data is None
    errors = result.extensions["shopify_errors"]  # type: ignore[index]
    assert errors == [
        {
            "message": "Field 'bogus' doesn't exist on type 'Customer'",
            "locations": [{"line": 3, "column": 16}],
            "path": ["query Q", "customers", "nodes", "bogus"],
            "extensions": {"code": "undefinedField", "typeName": "Customer", "fieldName": "bogus"},
        }
    ]


def test_unknown_argument_and_parse_error(tiny_world: World) -> None:
    shop = tiny_world.shop("tiny")
    assert shop is not None
    _, errors = graph.parse_and_validate("{ customers(first: 1, colour: 2) { nodes { id } } }")
    assert errors[0]["extensions"]["code"] == "argumentNotAccepted"
    assert errors[0]["message"] == "Field 'customers' doesn't accept argument 'colour'"
    _, errors = graph.parse_and_validate("{ customers(first: 1) { nodes { id }")
    assert errors[0]["message"].startswith("Parse error on ")
    assert errors[0]["locations"]
