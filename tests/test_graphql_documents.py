"""Every GraphQL document in the repository is valid against Shopify's published 2026-10 schema."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

import pytest
from graphql import (
    FragmentDefinitionNode,
    GraphQLSchema,
    OperationDefinitionNode,
    build_client_schema,
    build_schema,
    parse,
    specified_rules,
    validate,
)
from graphql.validation import NoUnusedFragmentsRule

from pipelines.shopify import documents

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO.parent / "shared" / "shopify" / "admin_2026-10.json.gz"
DERIVED = REPO / "devstore" / "schema"
SKIP_DIRS = {".venv", ".git", "node_modules", ".ruff_cache", "data", ".dagster_home"}


def _all_documents() -> list[Path]:
    found = []
    for path in REPO.rglob("*.graphql"):
        parts = set(path.relative_to(REPO).parts[:-1])
        if parts & SKIP_DIRS or str(path.relative_to(REPO)).startswith("devstore/schema"):
            continue
        found.append(path)
    return sorted(found)


@cache
def _schema() -> GraphQLSchema:
    """Shopify's own schema; the devstore's derived copy only where the shared file is absent."""
    if PUBLISHED.exists():
        with gzip.open(PUBLISHED) as fh:
            return build_client_schema(json.load(fh)["data"])
    for candidate in sorted(DERIVED.glob("*")):
        if candidate.name.endswith(".json.gz"):
            with gzip.open(candidate) as fh:
                data = json.load(fh)
            return build_client_schema(data.get("data", data))
        if candidate.suffix in (".graphql", ".graphqls"):
            return build_schema(candidate.read_text())
    raise FileNotFoundError(f"neither {PUBLISHED} nor a derived schema under {DERIVED} exists")


@cache
def _repo_fragments() -> dict[str, FragmentDefinitionNode]:
    return documents.fragment_definitions(_all_documents())


DOCUMENTS = _all_documents()


def test_the_repository_has_documents() -> None:
    # the glob must reach the fetchers' queries, or this whole module proves nothing
    names = {p.name for p in DOCUMENTS}
    assert {"customers.graphql", "orders.bulk.graphql", "customers.fields.graphql"} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=[str(p.relative_to(REPO)) for p in DOCUMENTS])
def test_document_is_valid_against_the_2026_10_schema(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    parsed = parse(source)
    has_operation = any(isinstance(d, OperationDefinitionNode) for d in parsed.definitions)
    if has_operation:
        errors = validate(_schema(), parse(documents.with_fragments(source, _repo_fragments())))
    else:
        # a fragment file: its fragments are used by other documents, not by itself
        rules = [r for r in specified_rules if r is not NoUnusedFragmentsRule]
        errors = validate(_schema(), parsed, rules)
    assert not errors, "\n".join(e.message for e in errors)


def test_bulk_queries_inline_to_valid_self_contained_queries() -> None:
    for entity in ("customers", "orders", "products", "collections", "abandoned_checkouts"):
        for kind in ("bulk", "ids"):
            query = documents.inline_bulk_query(
                documents.load(f"{entity}.{kind}"), {"query": "updated_at:>='2026-01-01T00:00:00Z'"}
            )
            assert "$" not in query and "fragment" not in query
            errors = validate(_schema(), parse(query))
            assert not errors, f"{entity}.{kind}: " + "\n".join(e.message for e in errors)
