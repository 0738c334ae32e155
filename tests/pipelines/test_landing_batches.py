"""The landing zone: atomic, immutable, ordered batches with manifests."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import landing


def test_batch_becomes_visible_only_with_its_manifest(tmp_path: Path) -> None:
    folder = landing.entity_dir(tmp_path, "acme.myshopify.com", "customers")
    folder.mkdir(parents=True)
    # A crash between data and manifest leaves a data file (or temp file) nobody reads.
    (folder / "20260101T000000000000-bulk-deadbeef.jsonl").write_text('{"id":"gid://shopify/Customer/1"}\n')
    (folder / ".tmp-20260101T000000000001-bulk-cafe.jsonl").write_text("partial")
    assert list(landing.iter_batches(tmp_path)) == []


def test_write_batch_from_rows_records_counts_and_digest(tmp_path: Path) -> None:
    rows = [{"id": f"gid://shopify/Customer/{i}", "firstName": "Zoë"} for i in range(3)]
    manifest = landing.write_batch(tmp_path, "acme.myshopify.com", "customers", "incremental", rows)
    data = tmp_path / "acme.myshopify.com" / "customers" / manifest.data_path_name
    lines = data.read_text(encoding="utf-8").splitlines()
    assert manifest.rows == 3 == len(lines)
    assert json.loads(lines[0])["firstName"] == "Zoë"
    assert manifest.bytes == data.stat().st_size
    assert [m.batch_id for m, _ in landing.iter_batches(tmp_path)] == [manifest.batch_id]


def test_write_batch_moves_a_downloaded_file_in(tmp_path: Path) -> None:
    download = tmp_path / "download.jsonl"
    download.write_text(
        '{"id":"gid://shopify/Order/1"}\n{"id":"gid://shopify/LineItem/2","__parentId":"gid://shopify/Order/1"}\n'
    )
    manifest = landing.write_batch(
        tmp_path / "landing", "acme.myshopify.com", "orders", "bulk", download, complete=True
    )
    assert not download.exists()
    assert manifest.rows == 2 and manifest.complete


def test_same_batch_id_is_written_once(tmp_path: Path) -> None:
    first = landing.write_batch(
        tmp_path, "acme.myshopify.com", "orders", "webhook", [{"id": "a"}], batch_id="b1"
    )
    again = landing.write_batch(
        tmp_path, "acme.myshopify.com", "orders", "webhook", [{"id": "zzz"}], batch_id="b1"
    )
    assert again == first
    assert len(list(landing.iter_batches(tmp_path))) == 1


def test_pending_batches_are_ordered_and_filtered_and_marked(tmp_path: Path) -> None:
    ids = []
    for shop, entity in [
        ("a.myshopify.com", "orders"),
        ("b.myshopify.com", "orders"),
        ("a.myshopify.com", "customers"),
    ]:
        ids.append(landing.write_batch(tmp_path, shop, entity, "bulk", [{"id": "x"}]).batch_id)
    assert [m.batch_id for m, _ in landing.pending_batches(tmp_path)] == sorted(ids)
    only = landing.pending_batches(tmp_path, shop="a.myshopify.com", entity="orders")
    assert [m.batch_id for m, _ in only] == [ids[0]]
    landing.mark_loaded(only[0][1], {"rows": 1})
    assert ids[0] not in [m.batch_id for m, _ in landing.pending_batches(tmp_path)]


def test_engagement_batches_live_under_their_own_folder(tmp_path: Path) -> None:
    manifest = landing.write_batch(tmp_path, landing.ENGAGEMENT, "engagement", "feed", [{"event_id": "e1"}])
    assert (tmp_path / "_engagement" / manifest.data_path_name).exists()


def test_pending_batches_never_read_a_loaded_batch_or_another_entity(tmp_path: Path) -> None:
    # The landing zone keeps every batch: the scan the sensor runs each tick must not grow with
    # loaded ones. A loaded batch is skipped on its marker (its manifest is not even parsed)
    # and a shop + entity scan reads only that folder.
    loaded = landing.write_batch(tmp_path, "a.myshopify.com", "orders", "bulk", [{"id": "1"}])
    waiting = landing.write_batch(tmp_path, "a.myshopify.com", "orders", "incremental", [{"id": "2"}])
    other = landing.write_batch(tmp_path, "a.myshopify.com", "customers", "bulk", [{"id": "3"}])
    folder = landing.entity_dir(tmp_path, "a.myshopify.com", "orders")
    landing.mark_loaded(folder / loaded.data_path_name, {"rows": 1})
    (folder / f"{loaded.batch_id}.json").write_text("not a manifest any more")
    customers = landing.entity_dir(tmp_path, "a.myshopify.com", "customers")
    (customers / f"{other.batch_id}.json").write_text("{ unreadable")

    pending = landing.pending_batches(tmp_path, "a.myshopify.com", "orders")
    assert [m.batch_id for m, _ in pending] == [waiting.batch_id]
