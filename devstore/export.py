"""Files of a generated world: bulk-export JSONL per shop, the ground truth, the engagement feed.

``shopsync devstore generate`` writes all three without serving; ``shopsync devstore serve
--truth-dir`` writes the truth and the engagement feed of the world it serves. File names:

    <dir>/truth.csv                      record_type, shop, record_id, person_id
    <dir>/engagement.jsonl               the feed ``shopsync engagement import`` reads
    <dir>/<handle>.customers.jsonl       a bulk export of the shop's customers
    <dir>/<handle>.orders.jsonl          its orders, each followed by its line items (``__parentId``)

Nothing is overwritten: ``existing`` lists the files already there so the caller can refuse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from devstore.bulk_jsonl import write_customers_jsonl, write_orders_jsonl
from devstore.generator import write_engagement, write_truth

TRUTH_FILE = "truth.csv"
ENGAGEMENT_FILE = "engagement.jsonl"


def _handles(tables: dict[str, pl.DataFrame]) -> list[tuple[str, str]]:
    shops = tables["shops"]
    return sorted(zip(shops["shop"].to_list(), shops["handle"].to_list(), strict=True))


def bulk_paths(tables: dict[str, pl.DataFrame], out: Path) -> dict[str, dict[str, Path]]:
    """Per shop domain: where its customers and orders bulk JSONL go."""
    return {
        shop: {
            "customers": out / f"{handle}.customers.jsonl",
            "orders": out / f"{handle}.orders.jsonl",
        }
        for shop, handle in _handles(tables)
    }


def target_paths(tables: dict[str, pl.DataFrame], out: Path, *, bulk: bool) -> list[Path]:
    """Every file ``write_world_files`` would write."""
    paths = [out / TRUTH_FILE, out / ENGAGEMENT_FILE]
    if bulk:
        paths += [p for entry in bulk_paths(tables, out).values() for p in entry.values()]
    return paths


def existing(tables: dict[str, pl.DataFrame], out: Path, *, bulk: bool) -> list[Path]:
    """The files of ``target_paths`` that already exist (and would be overwritten)."""
    return [p for p in target_paths(tables, out, bulk=bulk) if p.exists()]


def write_world_files(tables: dict[str, pl.DataFrame], out: str | Path, *, bulk: bool) -> dict[str, Any]:
    """Write the truth and engagement files (and, with ``bulk``, every shop's bulk JSONL) into ``out``.

    Returns what was written: paths and row/line counts, JSON-ready.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    truth = write_truth(tables, out / TRUTH_FILE)
    engagement = write_engagement(tables, out / ENGAGEMENT_FILE)
    summary: dict[str, Any] = {
        "truth": {"path": str(truth), "rows": tables["truth"].height},
        "engagement": {"path": str(engagement), "events": tables["engagement_events"].height},
    }
    if bulk:
        shops: dict[str, Any] = {}
        for shop, paths in bulk_paths(tables, out).items():
            customers = write_customers_jsonl(tables, paths["customers"], shop)
            order_lines = write_orders_jsonl(tables, paths["orders"], shop)
            shops[shop] = {
                "customers": {"path": str(paths["customers"]), "lines": customers},
                "orders": {"path": str(paths["orders"]), "lines": order_lines},
            }
        summary["bulk"] = shops
    return summary
