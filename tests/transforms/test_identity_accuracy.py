"""Accuracy regression guard: resolution on a generated world against its ground truth."""

from __future__ import annotations

import polars as pl
import pytest

from devstore.generator import generate_world
from transforms.identity import LinkageSettings, resolve
from transforms.identity.evaluate import pairwise_metrics
from transforms.identity.sources import records_from_shopify

NAME_ADDRESS_COLUMNS = [
    "shop",
    "record_type",
    "record_id",
    "first_name",
    "last_name",
    "address1",
    "address2",
    "city",
    "province",
    "zip",
    "country",
]


@pytest.fixture(scope="module")
def world() -> dict[str, pl.DataFrame]:
    return generate_world(stores=2, customers=500, seed=0)


def _resolve(world: dict[str, pl.DataFrame], columns: list[str] | None = None) -> dict[str, float]:
    records = records_from_shopify(
        world["customers"], world["customer_addresses"], world["orders"], world["abandoned_checkouts"]
    )
    if columns:
        records = records.select(columns)
    shops = world["shops"]
    settings = LinkageSettings(shop_regions=dict(zip(shops["shop"], shops["country_code"], strict=True)))
    result = resolve(records, settings=settings)
    return pairwise_metrics(result.contact_identities, world["truth"])


def test_accuracy_with_all_fields(world: dict[str, pl.DataFrame]) -> None:
    metrics = _resolve(world)
    assert metrics["records"] > 1000
    assert metrics["precision"] >= 0.99, metrics
    assert metrics["recall"] >= 0.95, metrics


def test_accuracy_with_names_and_addresses_only(world: dict[str, pl.DataFrame]) -> None:
    metrics = _resolve(world, NAME_ADDRESS_COLUMNS)
    assert metrics["precision"] >= 0.99, metrics
    assert metrics["f1"] >= 0.80, metrics


def test_pairwise_metrics_counts_pairs() -> None:
    keys = {"shop": ["s"] * 4, "record_type": ["customer"] * 4, "record_id": ["1", "2", "3", "4"]}
    truth = pl.DataFrame({**keys, "person_id": [1, 1, 1, 2]})
    predicted = pl.DataFrame({**keys, "contact_id": ["a", "a", "b", "b"]})
    metrics = pairwise_metrics(predicted, truth)
    # true pairs 12,13,23; predicted 12,34; hits 12
    assert (metrics["true_pairs"], metrics["predicted_pairs"]) == (3, 2)
    assert metrics["precision"] == 0.5 and metrics["recall"] == pytest.approx(1 / 3)
