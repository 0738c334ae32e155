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

from pipelines.shopify.client import ShopifyAccessDenied, ShopifyClient, ShopifyQueryError, ShopifyUnavailable
from pipelines.shopify.documents import load
from pipelines.sync_log import OUTCOME_SCHEMA
from transforms.reverse_sync import NAMESPACE, ORIGIN_KEY, customer_gid, payload_hash

log = logging.getLogger("shopsync.shopify.push")

METAFIELDS_PER_CALL = 25
REQUIRED_SCOPE = "write_customers"


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
    """Sends one shop's plan. ``tries`` bounds the sends of one write within a run."""

    def __init__(self, client: ShopifyClient, *, run_id: str, now: datetime, tries: int = 4) -> None:
        self.client = client
        self.shop = client.shop
        self.run_id = run_id
        self.now = now
        self.tries = max(1, tries)
        self.calls: dict[str, int] = {}
        self.rows: list[dict[str, Any]] = []
        # customers written in this run -> latest updatedAt Shopify answered with
        self.touched: dict[int, datetime | None] = {}

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

    def _outcome(
        self, row: dict[str, Any], operation: str, outcome: str, error: str | None = None, **extra: Any
    ) -> None:
        self.rows.append(
            {
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
            }
        )

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
        want_at = _parse_ts(payload["updated_at"])

        def landed() -> bool:
            c = self._read("push_consent_read", {"id": row["customer_gid"]}).get("customer") or {}
            if email:
                state = (c.get("defaultEmailAddress") or {}).get("marketingState")
                at = (c.get("defaultEmailAddress") or {}).get("marketingUpdatedAt")
            else:
                state = (c.get("smsMarketingConsent") or {}).get("marketingState")
                at = (c.get("smsMarketingConsent") or {}).get("consentUpdatedAt")
            stored = _parse_ts(at)
            # a newer decision already on Shopify also means there is nothing to send
            return (state == payload["state"] and stored == want_at) or (
                stored is not None and want_at is not None and stored > want_at
            )

        operation = "customerEmailMarketingConsentUpdate" if email else "customerSmsMarketingConsentUpdate"
        try:
            data = self._with_retries(lambda: self._mutate(name, variables), landed)
        except _NoAnswer as exc:
            self._fail_consent(row, operation, f"no answer from Shopify: {exc}")
            return
        if data is None:
            self._outcome(row, operation, "written")
            self.touched.setdefault(row["customer_id"], None)
            return
        result = next(iter(data.values())) or {}
        errors = result.get("userErrors") or []
        if errors:
            self._fail_consent(row, operation, "; ".join(e.get("message", "") for e in errors))
            return
        self._touch(row["customer_id"], (result.get("customer") or {}).get("updatedAt"))
        self._outcome(row, operation, "written")

    def _fail_consent(self, row: dict[str, Any], operation: str, error: str) -> None:
        # the customer id only: consent failures alert individually, without personal data
        log.error(
            "reverse sync %s: %s failed for customer %s: %s", self.shop, operation, row["customer_id"], error
        )
        self._outcome(row, operation, "failed", error)

    # profile fill --------------------------------------------------------------------
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
            self._outcome(row, "customerUpdate", "failed", "; ".join(errors))
        else:
            self._outcome(row, "customerUpdate", "written" if wrote else "unchanged")

    # metafields ----------------------------------------------------------------------
    def _read_metafields(self, gids: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
        data = self._read("push_metafields_read", {"ids": sorted(set(gids))})
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for node in data.get("nodes") or []:
            if not node:
                continue
            for mf in (node.get("metafields") or {}).get("nodes") or []:
                found[(node["id"], mf["key"])] = {**mf, "updatedAt": node.get("updatedAt")}
        return found

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
                }
            )
        for cid in customers:
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
            elements.append(
                {
                    "row": origin,
                    "type": "json",
                    "value": value,
                    "digest": None,
                    "stale": 0,
                    "sends": 0,
                    "write_id": write_id,
                }
            )
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
                digest=digest,
                write_id=e.get("write_id"),
                shopify_updated_at=self.touched.get(row["customer_id"]),
            )
        else:
            self._outcome(row, "metafieldsSet", outcome, digest=digest)

    def _send_batch(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send one batch; return the elements to send again."""
        for e in batch:
            e["sends"] += 1
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
                    self._outcome(e["row"], "metafieldsSet", "failed", f"no answer from Shopify: {exc}")
                else:
                    if now is not None and e["row"]["kind"] != "origin" and e["digest"] is None:
                        e["digest"] = None  # someone else's value: let compare-and-set decide
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
                self._outcome(e["row"], "metafieldsSet", "failed", message)
            return []
        self._count("metafields_split")
        again = [e for i, e in enumerate(batch) if i not in bad]
        stale = [batch[i] for i, errs in bad.items() if all(x.get("code") == "STALE_OBJECT" for x in errs)]
        for i, errs in bad.items():
            if batch[i] not in stale:
                self._outcome(
                    batch[i]["row"], "metafieldsSet", "failed", "; ".join(x.get("message", "") for x in errs)
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
                    )
                else:
                    # re-plan against what is there now
                    e["digest"] = now["compareDigest"] if now is not None else None
                    again.append(e)
        return again

    # the run -------------------------------------------------------------------------
    def _guard(self, push: Callable[[dict[str, Any]], None], row: dict[str, Any]) -> None:
        """One row's unexpected Shopify error fails that row, not the run (auth and scope errors still stop it)."""
        try:
            push(row)
        except (ShopifyQueryError, ShopifyUnavailable) as exc:
            if row["kind"] in ("email_consent", "sms_consent"):
                self._fail_consent(row, row["kind"], str(exc))
            else:
                self._outcome(row, row["kind"], "failed", str(exc))

    def run(self, plan: pl.DataFrame) -> PushReport:
        """Push every row of ``plan`` (one shop); consent first, then profile, then metafields + origins."""
        rows = plan.filter(pl.col("shop") == self.shop).to_dicts()
        if rows:
            self.check_scope()
            try:
                for r in rows:
                    if r["kind"] in ("email_consent", "sms_consent"):
                        self._guard(self.push_consent, r)
                for r in rows:
                    if r["kind"] == "profile":
                        self._guard(self.push_profile, r)
                self.push_metafields([r for r in rows if r["kind"] == "engagement"])
            except ShopifyAccessDenied as exc:
                raise PushScopeMissing(self.shop) from exc
        outcomes = (
            pl.DataFrame(self.rows, schema=OUTCOME_SCHEMA)
            if self.rows
            else pl.DataFrame(schema=OUTCOME_SCHEMA)
        )
        return PushReport(
            shop=self.shop, outcomes=outcomes, calls=dict(self.calls), points=self.client.stats.points
        )


def push_shop(
    client: ShopifyClient, plan: pl.DataFrame, *, run_id: str, now: datetime | None = None
) -> PushReport:
    """Push one shop's plan. Raises ``PushScopeMissing`` (nothing sent) when the token cannot write customers."""
    return Pusher(client, run_id=run_id, now=now or datetime.now(UTC)).run(plan)
