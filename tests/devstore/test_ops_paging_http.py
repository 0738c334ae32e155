"""Paging over HTTP while the shop changes under the client, as Shopify pages: keyset cursors on (sort key, id).

Between pages the control API creates records, edits records (an edit moves a record to the
end of the UPDATED_AT order), and deletes records, including the very record the client's
cursor points at. What a client must be able to rely on:

- sortKey ID: every record that existed throughout comes back exactly once, edited or not;
  records created meanwhile come after them; a record deleted before the client reached it
  never comes back.
- sortKey UPDATED_AT: every record that existed throughout and was not edited comes back
  exactly once; an edited record comes back (again) at the end with its new updatedAt, so an
  unbounded UPDATED_AT read repeats records edited behind the cursor but never loses one.
- UPDATED_AT with a fixed upper bound (``updated_at:<='T0'``, how shopsync's incremental
  fetch pages): nothing comes back twice, and every untouched record comes back once.
- Always: the (sort value, id) pairs the cursors carry strictly increase, and a deleted
  cursor record does not derail the next page.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devstore.server import RunningDevstore, create_world, start_in_thread

HANDLE = "acme-outdoors"
PAGE = 7
TYPE = {"customers": "Customer", "orders": "Order"}
DOCUMENT = """query($first: Int!, $after: String, $sortKey: {sort_type}, $query: String) {{
  {entity}(first: $first, after: $after, sortKey: $sortKey, query: $query) {{
    edges {{ cursor node {{ id updatedAt }} }}
    pageInfo {{ hasNextPage endCursor }} }} }}"""


@pytest.fixture
def store() -> Iterator[RunningDevstore]:
    running = start_in_thread(create_world(stores=1, customers=45, seed=21), webhooks=False)
    # wherever the machine's clock stands, "now" must come after every generated timestamp,
    # so an edit moves a record to the end of the UPDATED_AT order
    latest = max(
        r["updated_at"]
        for entity in TYPE
        for r in running.control("GET", f"/shops/{HANDLE}/records/{entity}")
        if r.get("updated_at")
    )
    behind = datetime.fromisoformat(latest.replace("Z", "+00:00")) - datetime.now(UTC)
    running.control("POST", "/clock/shift", {"seconds": max(0.0, behind.total_seconds()) + 3600})
    yield running
    running.stop()


def _numeric(gid: str) -> int:
    return int(gid.rsplit("/", 1)[1])


def _cursor(cursor: str) -> tuple[Any, int]:
    """Shopify's cursors are base64 JSON of the last record's sort value and id."""
    data = json.loads(base64.b64decode(cursor))
    return data["last_value"], int(data["last_id"])


class Pager:
    """Drains one connection page by page over HTTP, calling ``between`` after each page."""

    def __init__(self, store: RunningDevstore, entity: str, sort_key: str, query: str | None = None) -> None:
        self.store, self.entity, self.sort_key, self.query = store, entity, sort_key, query
        self.http = httpx.Client(timeout=30, headers={"X-Shopify-Access-Token": store.token(HANDLE)})
        sort_type = "CustomerSortKeys" if entity == "customers" else "OrderSortKeys"
        self.document = DOCUMENT.format(sort_type=sort_type, entity=entity)
        self.ids: list[int] = []
        self.updated_at: dict[int, list[str]] = {}
        self.keys: list[tuple[Any, int]] = []

    def drain(self, between: Callable[[int], None]) -> None:
        after = None
        for page in range(200):
            body = self.http.post(
                self.store.graphql_url(HANDLE),
                json={
                    "query": self.document,
                    "variables": {
                        "first": PAGE,
                        "after": after,
                        "sortKey": self.sort_key,
                        "query": self.query,
                    },
                },
            ).json()
            assert "errors" not in body, body
            connection = body["data"][self.entity]
            for edge in connection["edges"]:
                record_id = _numeric(edge["node"]["id"])
                self.ids.append(record_id)
                self.updated_at.setdefault(record_id, []).append(edge["node"]["updatedAt"])
                key = _cursor(edge["cursor"])
                assert key[1] == record_id  # the cursor names the record it points at
                self.keys.append(key)
            if not connection["pageInfo"]["hasNextPage"]:
                return
            after = connection["pageInfo"]["endCursor"]
            between(page)
        raise AssertionError("paging did not end")


class Churn:
    """Changes made through the control API between pages, and what they were."""

    def __init__(self, store: RunningDevstore, entity: str, order: list[int]) -> None:
        self.store, self.entity, self.order = store, entity, order
        self.edited_seen: set[int] = set()
        self.edited_unseen: set[int] = set()
        self.deleted_seen: set[int] = set()
        self.deleted_unseen: set[int] = set()
        self.created: set[int] = set()
        self.touched: set[int] = set()

    def _path(self, record_id: int | None = None) -> str:
        base = f"/shops/{HANDLE}/records/{self.entity}"
        return base if record_id is None else f"{base}/{record_id}"

    def _ahead(self, seen: list[int], skip: int) -> int:
        """A record the pager has not reached yet, ``skip`` records beyond the cursor."""
        ahead = [i for i in self.order if i not in set(seen) and i not in self.touched]
        return ahead[min(skip, len(ahead) - 1)]

    def edit(self, record_id: int, seen: list[int]) -> None:
        self.store.control("PATCH", self._path(record_id), {"tags": ["edited-while-paging"]})
        self.touched.add(record_id)
        (self.edited_seen if record_id in seen else self.edited_unseen).add(record_id)

    def delete(self, record_id: int, seen: list[int]) -> None:
        self.store.control("DELETE", self._path(record_id))
        self.touched.add(record_id)
        (self.deleted_seen if record_id in seen else self.deleted_unseen).add(record_id)

    def create(self) -> None:
        body = {"email": f"new{len(self.created)}@example.com", "tags": ["created-while-paging"]}
        self.created.add(int(self.store.control("POST", self._path(), body)["id"]))

    def between(self, seen: list[int]) -> Callable[[int], None]:
        def act(page: int) -> None:
            if page == 0:
                self.edit(seen[0], seen)
                self.edit(self._ahead(seen, 2), seen)
                self.delete(seen[-1], seen)  # the record the cursor points at
                self.delete(self._ahead(seen, 4), seen)
                self.create()
            elif page == 2:
                self.edit(next(i for i in seen if i not in self.touched), seen)
                self.edit(self._ahead(seen, 0), seen)  # the record right after the cursor
                self.delete(self._ahead(seen, 1), seen)
                self.create()

        return act

    @property
    def throughout(self) -> set[int]:
        """Records that existed from the first page to the last."""
        return set(self.order) - self.deleted_seen - self.deleted_unseen


def _order(store: RunningDevstore, entity: str, sort_key: str) -> list[int]:
    rows = store.control("GET", f"/shops/{HANDLE}/records/{entity}")
    if sort_key == "ID":
        return sorted(r["id"] for r in rows)
    return [r["id"] for r in sorted(rows, key=lambda r: (r["updated_at"], r["id"]))]


@pytest.mark.parametrize("entity", ["customers", "orders"])
def test_paging_by_id_returns_every_record_that_existed_throughout_exactly_once(
    store: RunningDevstore, entity: str
) -> None:
    churn = Churn(store, entity, _order(store, entity, "ID"))
    pager = Pager(store, entity, "ID")
    pager.drain(churn.between(pager.ids))
    counts = Counter(pager.ids)
    assert churn.edited_seen and churn.edited_unseen and churn.deleted_unseen and churn.created
    assert all(counts[i] == 1 for i in churn.throughout), (
        "a record that existed throughout was lost or repeated"
    )
    assert not (set(counts) & churn.deleted_unseen), "a record deleted before it was reached came back"
    assert churn.deleted_seen <= set(counts)  # deleted after being read: it was read once, before
    assert {i for i in counts if counts[i] > 1} == set()
    assert pager.ids == sorted(pager.ids)
    # records created meanwhile have higher ids than every existing one: they come last
    assert set(pager.ids[-len(churn.created) :]) == churn.created
    assert all(a < b for a, b in zip(pager.keys, pager.keys[1:], strict=False))


@pytest.mark.parametrize("entity", ["customers", "orders"])
def test_paging_by_updated_at_moves_edited_records_to_the_end(store: RunningDevstore, entity: str) -> None:
    churn = Churn(store, entity, _order(store, entity, "UPDATED_AT"))
    pager = Pager(store, entity, "UPDATED_AT")
    pager.drain(churn.between(pager.ids))
    counts = Counter(pager.ids)
    assert churn.edited_seen and churn.edited_unseen and churn.deleted_unseen and churn.created
    untouched = churn.throughout - churn.edited_seen - churn.edited_unseen
    assert all(counts[i] == 1 for i in untouched), "an untouched record was lost or repeated"
    assert not (set(counts) & churn.deleted_unseen)
    # edited behind the cursor: read at the old position and again at the end, with the edit
    assert all(counts[i] == 2 for i in churn.edited_seen)
    assert all(pager.updated_at[i][0] < pager.updated_at[i][1] for i in churn.edited_seen)
    # edited ahead of the cursor: read once, at the end
    assert all(counts[i] == 1 for i in churn.edited_unseen)
    moved = churn.edited_seen | churn.edited_unseen | churn.created
    tail = pager.ids[-len(moved) :]
    assert set(tail) == moved, "edited and created records must come after every untouched one"
    # the cursor keys (updated_at, id) strictly increase over the whole read: no record is
    # skipped because another one changed, and none is read twice at the same position
    assert all(a < b for a, b in zip(pager.keys, pager.keys[1:], strict=False))
    assert [pager.updated_at[i][-1] for i in tail] == sorted(pager.updated_at[i][-1] for i in tail)


@pytest.mark.parametrize("entity", ["customers", "orders"])
def test_paging_a_fixed_updated_at_window_never_repeats(store: RunningDevstore, entity: str) -> None:
    # the upper bound fixed before the first page, as shopsync's incremental fetch does
    now = datetime.fromisoformat(store.control("GET", "/clock")["now"].replace("Z", "+00:00"))
    bound = (now - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    churn = Churn(store, entity, _order(store, entity, "UPDATED_AT"))
    pager = Pager(store, entity, "UPDATED_AT", query=f"updated_at:<='{bound}'")
    pager.drain(churn.between(pager.ids))
    counts = Counter(pager.ids)
    assert max(counts.values()) == 1, "a bounded window read a record twice"
    untouched = churn.throughout - churn.edited_seen - churn.edited_unseen
    assert untouched <= set(counts)
    # edited ahead of the cursor: moved past the bound, left for the next window to pick up
    assert not (set(counts) & (churn.edited_unseen | churn.created | churn.deleted_unseen))
    assert all(a < b for a, b in zip(pager.keys, pager.keys[1:], strict=False))
