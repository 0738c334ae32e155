"""Reverse sync pusher: send a push plan to one shop through the shared ``ShopifyClient``.

Network only: it takes the plan (``transforms.reverse_sync.PLAN_SCHEMA``) and returns one
outcome row per plan row (``pipelines.sync_log.OUTCOME_SCHEMA``) plus one ``origin`` row per
customer written; the caller records them in the warehouse afterwards, so the warehouse is
not held while waiting on Shopify.

No duplicate writes on flaky networks: a mutation is sent with the client's own retries off;
when it gets no answer (5xx, reset, timeout) the pusher re-reads what the write would have
changed, and only sends again if it did not land. Metafields are compare-and-set
(``compareDigest``): a stale element is re-read and re-planned, the rest of its atomic batch
goes through.

No duplicate writes across a killed process either: with a :class:`PushJournal`, every write's
intent is on disk before it is sent, and a run first settles the intents an earlier run left
(verifying unanswered ones against Shopify) before sending anything. See
``pipelines/push_journal.py``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from pipelines.push_journal import ANSWERED, RECORDED, Intent, PushJournal
from pipelines.shopify.client import ShopifyAccessDenied, ShopifyClient, ShopifyQueryError, ShopifyUnavailable
from pipelines.shopify.documents import load
from pipelines.sync_log import OUTCOME_SCHEMA, SUCCESS_OUTCOMES
from transforms.reverse_sync import NAMESPACE, ORIGIN_KEY, customer_gid, payload_hash

log = logging.getLogger("shopsync.shopify.push")

METAFIELDS_PER_CALL = 25
REQUIRED_SCOPE = "write_customers"
CONSENT_KINDS = ("email_consent", "sms_consent")
# customers per metafields read when verifying (nodes(ids:) takes up to 250)
_READ_CHUNK = 100


class PushScopeMissing(Exception):
    """The token lacks ``write_customers``: nothing was sent; the store must be reconnected."""

    def __init__(self, shop: str) -> None:
        super().__init__(
            f"{shop} has not granted the {REQUIRED_SCOPE} permission that pushing to Shopify needs: "
            "nothing was sent. Reconnect the store and approve the new permissions."
        )
        self.shop = shop


@dataclass
class PushReport:
    """What one push did: outcome rows and call counts."""

    shop: str
    outcomes: pl.DataFrame
    calls: dict[str, int] = field(default_factory=dict)
    points: float = 0.0
    recovered: int = 0  # intents of earlier runs settled by this one
    already_done: int = 0  # plan rows an earlier push had already written
    echoes: pl.DataFrame | None = None  # inbound versions that only echo our writes (from the plan)

    def count(self, outcome: str, kind: str | None = None) -> int:
        """Outcome rows with this outcome (and kind)."""
        frame = self.outcomes.filter(pl.col("outcome") == outcome)
        if kind is not None:
            frame = frame.filter(pl.col("kind") == kind)
        return frame.height

    @property
    def consent_failures(self) -> list[tuple[int, str]]:
        """(customer id, error) of every consent write that failed."""
        failed = self.outcomes.filter(
            pl.col("outcome") == "failed", pl.col("kind").is_in(["email_consent", "sms_consent"])
        )
        return [(int(r["customer_id"]), str(r["error"])) for r in failed.iter_rows(named=True)]


class _NoAnswer(Exception):
    """A mutation got no answer: it may or may not have been applied."""


def _iso_now(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


class Pusher:
    """Sends one shop's plan. ``tries`` bounds the sends of one write within a run.

    With a ``journal`` every write is announced there before it is sent, and :meth:`run` first
    settles what earlier runs left in it (see ``pipelines/push_journal.py``).
    """

    def __init__(
        self,
        client: ShopifyClient,
        *,
        run_id: str,
        now: datetime,
        tries: int = 4,
        journal: PushJournal | None = None,
    ) -> None:
        self.client = client
        self.shop = client.shop
        self.run_id = run_id
        self.now = now
        self.tries = max(1, tries)
        self.journal = journal
        self.calls: dict[str, int] = {}
        self.rows: list[dict[str, Any]] = []
        # customers written in this run -> latest updatedAt Shopify answered with
        self.touched: dict[int, datetime | None] = {}
        # origin metafields an earlier run announced but never got onto Shopify: sent unchanged
        self.resend_origins: dict[int, Intent] = {}
        self.recovered = 0
        self.already_done = 0

    # plumbing ------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    @contextmanager
    def _single_attempt(self) -> Iterator[None]:
        # the client's own retries would resend a write that may already have landed
        saved = self.client.max_attempts
        self.client.max_attempts = 1
        try:
            yield
        finally:
            self.client.max_attempts = saved

    def _read(self, name: str, variables: dict[str, Any]) -> dict[str, Any]:
        self._count(name)
        return self.client.execute(load(name), variables)

    def _mutate(self, name: str, variables: dict[str, Any]) -> dict[str, Any]:
        self._count(name)
        try:
            with self._single_attempt():
                return self.client.execute(load(name), variables)
        except ShopifyUnavailable as exc:
            raise _NoAnswer(str(exc)) from None

    def _pause(self, attempt: int) -> None:
        time.sleep(min(self.client.backoff_cap_s, self.client.backoff_base_s * (2**attempt)) * 0.5)

    def _with_retries(
        self, send: Callable[[], dict[str, Any]], landed: Callable[[], bool]
    ) -> dict[str, Any] | None:
        """Send; on no answer re-read and resend only if the write did not land. None = landed unseen."""
        last = ""
        for attempt in range(self.tries):
            if attempt:
                if landed():
                    return None
                self._pause(attempt)
            try:
                return send()
            except _NoAnswer as exc:
                last = str(exc)
        if landed():
            return None
        raise _NoAnswer(last)

    def _touch(self, customer_id: int, updated_at: Any) -> None:
        ts = _parse_ts(updated_at)
        prior = self.touched.get(customer_id)
        self.touched[customer_id] = max(t for t in (ts, prior) if t is not None) if (ts or prior) else None

    def _intent_id(self, row: dict[str, Any]) -> str:
        return f"{self.run_id}:{row['kind']}:{row['customer_id']}:{row['key']}"

    def _announce(self, row: dict[str, Any], request: dict[str, Any], intent_id: str | None = None) -> str:
        """Journal the intent of a write before it is sent (the idempotency key is the intent id)."""
        iid = intent_id or self._intent_id(row)
        if self.journal is not None:
            self.journal.begin(
                [
                    Intent(
                        intent_id=iid,
                        run_id=self.run_id,
                        shop=self.shop,
                        customer_id=int(row["customer_id"]),
                        kind=str(row["kind"]),
                        key=str(row["key"]),
                        payload_hash=row.get("payload_hash"),
                        request={"row": _plain(row), **request},
                    )
                ]
            )
        return iid

    def _outcome(
        self,
        row: dict[str, Any],
        operation: str,
        outcome: str,
        error: str | None = None,
        *,
        intent_id: str | None = None,
        settled: bool = True,
        **extra: Any,
    ) -> None:
        """One outcome row; a settled one is also the journal's answer to its intent.

        ``settled=False``: whether the write landed is unknown (its verification failed too);
        the intent stays pending and the next run verifies it before anything is resent.
        """
        item = {
            "shop": self.shop,
            "customer_id": row["customer_id"],
            "kind": row["kind"],
            "key": row["key"],
            "operation": operation,
            "outcome": outcome,
            "error": error,
            "payload": row["payload"],
            "payload_hash": row["payload_hash"],
            "digest": extra.get("digest"),
            "write_id": extra.get("write_id"),
            "shopify_updated_at": extra.get("shopify_updated_at"),
            "intent_id": intent_id,
        }
        self.rows.append(item)
        if self.journal is not None and intent_id is not None and settled:
            self.journal.answer(intent_id, item)

    # scope ---------------------------------------------------------------------------
    def check_scope(self) -> None:
        """Raise ``PushScopeMissing`` unless the token grants ``write_customers``."""
        data = self._read("access_scopes", {})
        handles = {
            s["handle"] for s in ((data.get("currentAppInstallation") or {}).get("accessScopes") or [])
        }
        if REQUIRED_SCOPE not in handles:
            raise PushScopeMissing(self.shop)

    # consent -------------------------------------------------------------------------
    def _consent_now(self, row: dict[str, Any]) -> tuple[str | None, datetime | None, Any]:
        """(state, consentUpdatedAt, customer updatedAt) of the row's channel on Shopify now."""
        c = self._read("push_consent_read", {"id": row["customer_gid"]}).get("customer") or {}
        if row["kind"] == "email_consent":
            state = (c.get("defaultEmailAddress") or {}).get("marketingState")
            at = (c.get("defaultEmailAddress") or {}).get("marketingUpdatedAt")
        else:
            sms = (c.get("defaultPhoneNumber") or {}).get("smsMarketingConsent") or {}
            state, at = sms.get("state"), sms.get("updatedAt")
            state = "NOT_SUBSCRIBED" if state == "NEVER_SUBSCRIBED" else state
        return state, _parse_ts(at), c.get("updatedAt")

    def _consent_settled(self, row: dict[str, Any]) -> str | None:
        """``written`` if the row's decision is on Shopify, ``unchanged`` if a newer one is, else None."""
        payload = json.loads(row["payload"])
        want_at = _parse_ts(payload["updated_at"])
        state, stored, _ = self._consent_now(row)
        if state == payload["state"] and stored == want_at:
            return "written"
        if stored is not None and want_at is not None and stored > want_at:
            return "unchanged"
        return None

    def push_consent(self, row: dict[str, Any]) -> None:
        """One consent mutation with the original consentUpdatedAt and opt-in level."""
        payload = json.loads(row["payload"])
        email = row["kind"] == "email_consent"
        name = "push_email_consent" if email else "push_sms_consent"
        field_name = "emailMarketingConsent" if email else "smsMarketingConsent"
        consent = {
            "marketingState": payload["state"],
            "marketingOptInLevel": payload["opt_in_level"],
            "consentUpdatedAt": payload["updated_at"],
        }
        variables = {"input": {"customerId": row["customer_gid"], field_name: consent}}
        operation = "customerEmailMarketingConsentUpdate" if email else "customerSmsMarketingConsentUpdate"
        iid = self._announce(row, {"operation": operation})

        def landed() -> bool:
            # a newer decision already on Shopify also means there is nothing to send
            return self._consent_settled(row) is not None

        try:
            data = self._with_retries(lambda: self._mutate(name, variables), landed)
        except _NoAnswer as exc:
            self._fail_consent(row, operation, f"no answer from Shopify: {exc}", intent_id=iid)
            return
        if data is None:
            self._outcome(row, operation, "written", intent_id=iid)
            self.touched.setdefault(row["customer_id"], None)
            return
        result = next(iter(data.values())) or {}
        errors = result.get("userErrors") or []
        if errors:
            self._fail_consent(row, operation, "; ".join(e.get("message", "") for e in errors), intent_id=iid)
            return
        self._touch(row["customer_id"], (result.get("customer") or {}).get("updatedAt"))
        self._outcome(row, operation, "written", intent_id=iid)

    def _fail_consent(
        self, row: dict[str, Any], operation: str, error: str, *, intent_id: str | None, settled: bool = True
    ) -> None:
        # the customer id only: consent failures alert individually, without personal data
        log.error(
            "reverse sync %s: %s failed for customer %s: %s", self.shop, operation, row["customer_id"], error
        )
        self._outcome(row, operation, "failed", error, intent_id=intent_id, settled=settled)

    # profile fill --------------------------------------------------------------------
    @staticmethod
    def _profile_filled(wanted: dict[str, Any], current: dict[str, Any]) -> bool:
        """Whether every field the row wants filled holds a value on Shopify now."""
        have = {
            "first_name": current.get("firstName"),
            "last_name": current.get("lastName"),
            "phone": (current.get("defaultPhoneNumber") or {}).get("phoneNumber"),
            "address": current.get("defaultAddress"),
        }
        return all(have.get(k) for k in wanted)

    def push_profile(self, row: dict[str, Any]) -> None:
        """Re-read the customer; write only fields still empty; add an address only if there is none."""
        wanted = json.loads(row["payload"])
        gid = row["customer_gid"]
        try:
            current = self._read("push_customer_read", {"id": gid}).get("customer")
        except ShopifyUnavailable as exc:
            self._outcome(row, "customerUpdate", "failed", str(exc))
            return
        if current is None:
            self._outcome(row, "customerUpdate", "failed", "customer no longer exists on Shopify")
            return
        fill: dict[str, Any] = {}
        if wanted.get("first_name") and not current.get("firstName"):
            fill["firstName"] = wanted["first_name"]
        if wanted.get("last_name") and not current.get("lastName"):
            fill["lastName"] = wanted["last_name"]
        if wanted.get("phone") and not current.get("defaultPhoneNumber"):
            fill["phone"] = wanted["phone"]
        address = wanted.get("address") if not current.get("defaultAddress") else None
        if not fill and not address:
            self._outcome(row, "customerUpdate", "unchanged")
            return
        iid = self._announce(row, {"operation": "customerUpdate"})
        wrote = False
        errors: list[str] = []

        def reread() -> dict[str, Any]:
            return self._read("push_customer_read", {"id": gid}).get("customer") or {}

        if fill:

            def update_landed() -> bool:
                c = reread()
                got = {"firstName": c.get("firstName"), "lastName": c.get("lastName")}
                got["phone"] = (c.get("defaultPhoneNumber") or {}).get("phoneNumber")
                return all(got[k] for k in fill)

            try:
                data = self._with_retries(
                    lambda: self._mutate("push_customer_update", {"input": {"id": gid, **fill}}),
                    update_landed,
                )
                result = (data or {}).get("customerUpdate") or {}
                if result.get("userErrors"):
                    errors.extend(e.get("message", "") for e in result["userErrors"])
                else:
                    wrote = True
                    self._touch(row["customer_id"], (result.get("customer") or {}).get("updatedAt"))
            except _NoAnswer as exc:
                errors.append(f"no answer from Shopify: {exc}")
        if address:
            mailing = {
                "address1": address.get("address1"),
                "city": address.get("city"),
                "zip": address.get("zip"),
                "countryCode": address.get("country_code"),
            }
            try:
                data = self._with_retries(
                    lambda: self._mutate(
                        "push_address_create", {"customerId": gid, "address": mailing, "setAsDefault": True}
                    ),
                    lambda: bool(reread().get("defaultAddress")),
                )
                result = (data or {}).get("customerAddressCreate") or {}
                if result.get("userErrors"):
                    errors.extend(e.get("message", "") for e in result["userErrors"])
                else:
                    wrote = True
                    self.touched.setdefault(row["customer_id"], None)
            except _NoAnswer as exc:
                errors.append(f"no answer from Shopify: {exc}")
        if errors:
            self._outcome(row, "customerUpdate", "failed", "; ".join(errors), intent_id=iid)
        else:
            self._outcome(row, "customerUpdate", "written" if wrote else "unchanged", intent_id=iid)

    # metafields ----------------------------------------------------------------------
    def _read_metafields(self, gids: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
        found: dict[tuple[str, str], dict[str, Any]] = {}
        unique = sorted(set(gids))
        for start in range(0, len(unique), _READ_CHUNK):
            data = self._read("push_metafields_read", {"ids": unique[start : start + _READ_CHUNK]})
            for node in data.get("nodes") or []:
                if not node:
                    continue
                for mf in (node.get("metafields") or {}).get("nodes") or []:
                    found[(node["id"], mf["key"])] = {**mf, "updatedAt": node.get("updatedAt")}
        return found

    def _origin_element(self, cid: int) -> dict[str, Any]:
        write_id = f"{self.run_id}:{cid}"
        value = json.dumps({"write_id": write_id, "at": _iso_now(self.now)}, sort_keys=True)
        origin = {
            "shop": self.shop,
            "customer_id": cid,
            "customer_gid": customer_gid(cid),
            "kind": "origin",
            "key": ORIGIN_KEY,
            "payload": value,
            "payload_hash": payload_hash(value),
            "digest": None,
        }
        return {
            "row": origin,
            "type": "json",
            "value": value,
            "digest": None,
            "stale": 0,
            "sends": 0,
            "write_id": write_id,
            "intent_id": self._intent_id(origin),
        }

    def push_metafields(self, rows: list[dict[str, Any]]) -> None:
        """Engagement metafields plus one origin metafield per customer touched, 25 per call."""
        customers = dict.fromkeys([r["customer_id"] for r in rows] + list(self.touched))
        elements: list[dict[str, Any]] = []
        for r in rows:
            payload = json.loads(r["payload"])
            elements.append(
                {
                    "row": r,
                    "type": payload["type"],
                    "value": payload["value"],
                    "digest": r.get("digest"),
                    "stale": 0,
                    "sends": 0,
                    "intent_id": self._intent_id(r),
                }
            )
        for cid in customers:
            stale_origin = self.resend_origins.pop(cid, None)
            if stale_origin is not None and self.journal is not None:
                # this run writes a newer origin for the customer: the old one is superseded
                self.journal.void(stale_origin.intent_id)
            elements.append(self._origin_element(cid))
        for intent in self.resend_origins.values():
            # an earlier run's origin that never landed, sent unchanged under its own intent
            elements.append(
                {
                    "row": intent.request["row"],
                    "type": "json",
                    "value": intent.request["value"],
                    "digest": None,
                    "stale": 0,
                    "sends": 0,
                    "write_id": intent.request.get("write_id"),
                    "intent_id": intent.intent_id,
                }
            )
        self.resend_origins = {}
        queue = list(elements)
        while queue:
            batch, queue = queue[:METAFIELDS_PER_CALL], queue[METAFIELDS_PER_CALL:]
            queue = self._send_batch(batch) + queue

    def _element_input(self, e: dict[str, Any]) -> dict[str, Any]:
        item = {
            "ownerId": e["row"]["customer_gid"],
            "namespace": NAMESPACE,
            "key": e["row"]["key"],
            "type": e["type"],
            "value": e["value"],
        }
        if e["row"]["kind"] != "origin":
            # null = "must not exist yet"; a value = "must still be what we last wrote"
            item["compareDigest"] = e["digest"]
        return item

    def _done(self, e: dict[str, Any], outcome: str, digest: str | None, updated_at: Any) -> None:
        row = e["row"]
        if row["kind"] == "origin":
            self._touch(row["customer_id"], updated_at)
            self._outcome(
                row,
                "metafieldsSet",
                outcome,
                intent_id=e.get("intent_id"),
                digest=digest,
                write_id=e.get("write_id"),
                shopify_updated_at=self.touched.get(row["customer_id"]),
            )
        else:
            self._outcome(row, "metafieldsSet", outcome, intent_id=e.get("intent_id"), digest=digest)

    def _announce_batch(self, batch: list[dict[str, Any]]) -> None:
        if self.journal is None:
            return
        self.journal.begin(
            Intent(
                intent_id=e["intent_id"],
                run_id=self.run_id,
                shop=self.shop,
                customer_id=int(e["row"]["customer_id"]),
                kind=str(e["row"]["kind"]),
                key=str(e["row"]["key"]),
                payload_hash=e["row"].get("payload_hash"),
                request={
                    "row": _plain(e["row"]),
                    "operation": "metafieldsSet",
                    "value": e["value"],
                    "write_id": e.get("write_id"),
                },
            )
            for e in batch
        )

    def _send_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send one batch; return the elements to send again."""
        for e in batch:
            e["sends"] += 1
        self._announce_batch(batch)
        try:
            data = self._mutate(
                "push_metafields_set", {"metafields": [self._element_input(e) for e in batch]}
            )
        except _NoAnswer as exc:
            # did it land? keep what did, resend the rest (bounded)
            current = self._read_metafields([e["row"]["customer_gid"] for e in batch])
            again: list[dict[str, Any]] = []
            for e in batch:
                now = current.get((e["row"]["customer_gid"], e["row"]["key"]))
                if now is not None and now["value"] == e["value"]:
                    self._done(e, "written", now["compareDigest"], now.get("updatedAt"))
                elif e["sends"] >= self.tries:
                    self._outcome(
                        e["row"],
                        "metafieldsSet",
                        "failed",
                        f"no answer from Shopify: {exc}",
                        intent_id=e.get("intent_id"),
                    )
                else:
                    again.append(e)
            if again:
                self._pause(min(e["sends"] for e in again))
            return again
        result = data.get("metafieldsSet") or {}
        errors = result.get("userErrors") or []
        if not errors:
            # all-or-nothing: no errors means every element was written, answered in order
            for e, m in zip(batch, result.get("metafields") or [{}] * len(batch), strict=False):
                self._done(e, "written", m.get("compareDigest"), m.get("updatedAt"))
            return []
        bad: dict[int, list[dict[str, Any]]] = {}
        whole_call = False
        for err in errors:
            index = err.get("elementIndex")
            if index is None:
                whole_call = True
            else:
                bad.setdefault(int(index), []).append(err)
        if whole_call:
            message = "; ".join(e.get("message", "") for e in errors)
            for e in batch:
                self._outcome(e["row"], "metafieldsSet", "failed", message, intent_id=e.get("intent_id"))
            return []
        self._count("metafields_split")
        again = [e for i, e in enumerate(batch) if i not in bad]
        stale = [batch[i] for i, errs in bad.items() if all(x.get("code") == "STALE_OBJECT" for x in errs)]
        for i, errs in bad.items():
            if batch[i] not in stale:
                self._outcome(
                    batch[i]["row"],
                    "metafieldsSet",
                    "failed",
                    "; ".join(x.get("message", "") for x in errs),
                    intent_id=batch[i].get("intent_id"),
                )
        if stale:
            current = self._read_metafields([e["row"]["customer_gid"] for e in stale])
            for e in stale:
                now = current.get((e["row"]["customer_gid"], e["row"]["key"]))
                e["stale"] += 1
                if now is not None and now["value"] == e["value"]:
                    self._done(e, "unchanged", now["compareDigest"], None)
                elif e["stale"] > 1:
                    self._outcome(
                        e["row"],
                        "metafieldsSet",
                        "failed",
                        "metafield keeps changing on Shopify (stale compareDigest)",
                        intent_id=e.get("intent_id"),
                    )
                else:
                    # re-plan against what is there now
                    e["digest"] = now["compareDigest"] if now is not None else None
                    again.append(e)
        return again

    # settling what earlier runs left -------------------------------------------------
    def recover(self) -> None:
        """Settle the journal before sending: verify unanswered intents, re-hand unrecorded outcomes.

        An unanswered write that landed becomes an outcome of this run; one that did not is
        voided (the planner plans it again), except an origin metafield, which this run sends
        unchanged. A customer whose earlier write landed without its origin metafield gets one.
        """
        if self.journal is None:
            return
        unrecorded = self.journal.unrecorded()
        for intent in unrecorded:
            if intent.outcome is not None:
                self.rows.append(_restore(intent.outcome))
        pending = self.journal.pending()
        metafield_intents: list[Intent] = []
        for intent in pending:
            if intent.kind in CONSENT_KINDS:
                self._settle_consent(intent)
            elif intent.kind == "profile":
                self._settle_profile(intent)
            else:
                metafield_intents.append(intent)
        if metafield_intents:
            self._settle_metafields(metafield_intents)
        self.recovered = len(unrecorded) + len(pending)
        if not self.recovered:
            return
        # writes of earlier runs that landed, and the origins those runs announced
        landed: dict[tuple[str, int], bool] = {}
        for intent in [*unrecorded, *pending]:
            row = intent.request["row"]
            key = (intent.run_id, int(row["customer_id"]))
            if intent.kind == "origin":
                landed[key] = True  # covered: landed, or about to be sent unchanged
            else:
                settled = self.journal.latest(intent.customer_id, intent.kind, intent.key)
                ok = (
                    settled is not None
                    and settled.intent_id == intent.intent_id
                    and (settled.outcome or {}).get("outcome") == "written"
                )
                if ok:
                    landed.setdefault(key, False)
        for (_run, cid), covered in landed.items():
            if not covered:
                self.touched.setdefault(cid, None)

    def _settle_consent(self, intent: Intent) -> None:
        row = intent.request["row"]
        try:
            outcome = self._consent_settled(row)
        except ShopifyUnavailable:
            return  # still unknown: stays pending, verified by the next run
        if outcome is None:
            self.journal.void(intent.intent_id)  # type: ignore[union-attr]
            return
        if outcome == "written":
            self.touched.setdefault(int(row["customer_id"]), None)
        self._outcome(row, intent.request.get("operation", row["kind"]), outcome, intent_id=intent.intent_id)

    def _settle_profile(self, intent: Intent) -> None:
        row = intent.request["row"]
        try:
            current = self._read("push_customer_read", {"id": row["customer_gid"]}).get("customer")
        except ShopifyUnavailable:
            return
        if current is None or not self._profile_filled(json.loads(row["payload"]), current):
            # the next plan re-reads the customer and fills only what is still empty
            self.journal.void(intent.intent_id)  # type: ignore[union-attr]
            return
        self._touch(int(row["customer_id"]), current.get("updatedAt"))
        self._outcome(row, "customerUpdate", "written", intent_id=intent.intent_id)

    def _settle_metafields(self, intents: list[Intent]) -> None:
        try:
            current = self._read_metafields([i.request["row"]["customer_gid"] for i in intents])
        except ShopifyUnavailable:
            return
        for intent in intents:
            row = intent.request["row"]
            now = current.get((row["customer_gid"], row["key"]))
            if now is not None and now["value"] == intent.request["value"]:
                element = {
                    "row": row,
                    "intent_id": intent.intent_id,
                    "write_id": intent.request.get("write_id"),
                }
                self._done(element, "written", now["compareDigest"], now.get("updatedAt"))
            elif intent.kind == "origin":
                self.resend_origins[int(row["customer_id"])] = intent
            else:
                self.journal.void(intent.intent_id)  # type: ignore[union-attr]

    def _already_done(self, row: dict[str, Any]) -> bool:
        """The journal's latest write to this target already put exactly this payload on Shopify.

        Happens when a plan was made before an earlier push was recorded (two runs close
        together, or a run killed after pushing): sending it again would be a duplicate.
        """
        if self.journal is None:
            return False
        latest = self.journal.latest(int(row["customer_id"]), str(row["kind"]), str(row["key"]))
        return (
            latest is not None
            and latest.status in (ANSWERED, RECORDED)
            and latest.payload_hash == row["payload_hash"]
            and (latest.outcome or {}).get("outcome") in SUCCESS_OUTCOMES
        )

    # the run -------------------------------------------------------------------------
    def _guard(self, push: Callable[[dict[str, Any]], None], row: dict[str, Any]) -> None:
        """One row's unexpected Shopify error fails that row, not the run (auth and scope errors still stop it).

        Whether its write landed is unknown, so its intent stays pending for the next run to verify.
        """
        try:
            push(row)
        except (ShopifyQueryError, ShopifyUnavailable) as exc:
            iid = self._intent_id(row)
            if row["kind"] in CONSENT_KINDS:
                self._fail_consent(row, row["kind"], str(exc), intent_id=iid, settled=False)
            else:
                self._outcome(row, row["kind"], "failed", str(exc), intent_id=iid, settled=False)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if self.journal is None:
            yield
        else:
            with self.journal.exclusive(self.shop):
                yield

    def run(self, plan: pl.DataFrame) -> PushReport:
        """Check the scope, settle the journal, then push ``plan`` (one shop).

        Consent first, then profile, then metafields + origins. The scope is checked even for an
        empty plan: a toggle that needs ``write_customers`` must surface a missing grant.
        """
        rows = plan.filter(pl.col("shop") == self.shop).to_dicts()
        try:
            self.check_scope()
            with self._exclusive():
                self.recover()
                todo = [r for r in rows if not self._already_done(r)]
                self.already_done = len(rows) - len(todo)
                for r in todo:
                    if r["kind"] in CONSENT_KINDS:
                        self._guard(self.push_consent, r)
                for r in todo:
                    if r["kind"] == "profile":
                        self._guard(self.push_profile, r)
                self.push_metafields([r for r in todo if r["kind"] == "engagement"])
        except ShopifyAccessDenied as exc:
            raise PushScopeMissing(self.shop) from exc
        outcomes = (
            pl.DataFrame(self.rows, schema=OUTCOME_SCHEMA)
            if self.rows
            else pl.DataFrame(schema=OUTCOME_SCHEMA)
        )
        return PushReport(
            shop=self.shop,
            outcomes=outcomes,
            calls=dict(self.calls),
            points=self.client.stats.points,
            recovered=self.recovered,
            already_done=self.already_done,
        )


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A plan row as JSON-safe values (the journal stores it to rebuild outcomes)."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _restore(outcome: dict[str, Any]) -> dict[str, Any]:
    """An outcome row read back from the journal, typed as ``OUTCOME_SCHEMA`` wants."""
    item = {k: outcome.get(k) for k in OUTCOME_SCHEMA}
    item["shopify_updated_at"] = _parse_ts(item.get("shopify_updated_at"))
    return item


def push_shop(
    client: ShopifyClient,
    plan: pl.DataFrame,
    *,
    run_id: str,
    now: datetime | None = None,
    journal: PushJournal | None = None,
) -> PushReport:
    """Push one shop's plan. Raises ``PushScopeMissing`` (nothing sent) when the token cannot write customers."""
    return Pusher(client, run_id=run_id, now=now or datetime.now(UTC), journal=journal).run(plan)
