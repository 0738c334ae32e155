"""The webhook receiver: verify, dedupe, make durable, answer — in milliseconds.

Shopify gives a receiver five seconds and retries what fails, so the receiver does only
what must happen before the 200: check the signature on the raw body, journal the delivery
(durably, deduplicated by event id), and answer. Turning deliveries into warehouse rows
happens later, off the request path: a background task seals journalled deliveries into
landing batches every ``seal_interval`` seconds.

Answers: 401 for a bad or missing signature or an unknown shop (nothing stored); 400 for a
delivery missing Shopify's headers (nothing stored); 200 otherwise — including duplicates,
stale deliveries, deliveries for a disconnected store (acknowledged and dropped) and a
correctly signed body that is not JSON (kept in quarantine with the reason, since a retry
would not fix it).

Privacy topics are accepted whatever the store's status — for a paused store, and for a
deleted one whose signing secret is still kept for the ``shop/redact`` that follows an
uninstall — because Shopify requires them to be acted on.

The shop's secrets come from ``lookup``, which may query a database: it runs in a worker
thread, never on the event loop, so a slow control plane cannot stall other deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pipelines.webhooks.journal import PRIVACY_TOPICS, Delivery, Journal
from pipelines.webhooks.verify import verify

log = logging.getLogger("shopsync.webhooks")


@dataclass(frozen=True)
class ShopWebhookConfig:
    """What the receiver needs to know about a shop: its app secrets and whether it syncs.

    ``privacy_only``: the store was deleted; only privacy topics are still taken.
    ``landing_root``: the store's project's landing zone (None: the receiver's default).
    """

    secrets: tuple[str, ...]
    active: bool = True
    privacy_only: bool = False
    landing_root: Path | None = None


SecretLookup = Callable[[str], ShopWebhookConfig | None]


@dataclass
class ReceiverStats:
    """Counters and recent latencies, served at ``/healthz``."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0..1) of recent request latencies in milliseconds."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _quarantine(
    landing_root: Path | None, delivery_id: str, shop: str, topic: str, body: bytes, reason: str
) -> None:
    if landing_root is None:
        return
    folder = landing_root / "_quarantine" / "webhooks"
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "event_id": delivery_id,
        "shop": shop,
        "topic": topic,
        "reason": reason,
        "body": body.decode("utf-8", errors="replace"),
    }
    (folder / f"{delivery_id}.json").write_text(json.dumps(record))


def create_receiver(
    journal: Journal,
    lookup: SecretLookup,
    *,
    landing_root: Path | None = None,
    seal_interval: float = 1.0,
) -> Starlette:
    """The receiver app. With ``landing_root``, deliveries are sealed into landing batches
    (into each shop's own project landing zone when the lookup names one)."""
    stats = ReceiverStats()

    def root_for(shop: str) -> Path:
        # called from the sealing thread, where a lookup may block
        assert landing_root is not None
        config = lookup(shop)
        return config.landing_root if config is not None and config.landing_root is not None else landing_root

    async def receive(request: Request) -> Response:
        started = time.perf_counter()
        try:
            return await _receive(request)
        finally:
            stats.latencies_ms.append((time.perf_counter() - started) * 1000)

    async def _receive(request: Request) -> Response:
        body = await request.body()
        headers = request.headers
        shop = headers.get("x-shopify-shop-domain", "").strip().lower()
        topic = headers.get("x-shopify-topic", "").strip()
        event_id = headers.get("x-shopify-event-id") or headers.get("x-shopify-webhook-id")
        if not shop or not topic or not event_id:
            stats.outcomes["bad_request"] += 1
            missing = [
                h
                for h, v in (
                    ("X-Shopify-Shop-Domain", shop),
                    ("X-Shopify-Topic", topic),
                    ("X-Shopify-Event-Id", event_id),
                )
                if not v
            ]
            return JSONResponse(
                {"error": f"not a Shopify webhook: missing {', '.join(missing)}"}, status_code=400
            )
        config = await run_in_threadpool(lookup, shop)
        if config is None or not verify(body, headers.get("x-shopify-hmac-sha256"), config.secrets):
            stats.outcomes["unauthorized"] += 1
            log.warning("webhook rejected: signature does not verify", extra={"shop": shop, "topic": topic})
            return JSONResponse({"error": "signature does not verify"}, status_code=401)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("payload is not a JSON object")
        except ValueError as exc:
            stats.outcomes["malformed"] += 1
            root = None if landing_root is None else await run_in_threadpool(root_for, shop)
            await run_in_threadpool(_quarantine, root, event_id, shop, topic, body, str(exc))
            log.error("webhook body is not JSON; kept in quarantine", extra={"shop": shop, "topic": topic})
            return JSONResponse({"status": "quarantined"})
        delivery = Delivery(
            event_id=event_id,
            shop=shop,
            topic=topic,
            webhook_id=headers.get("x-shopify-webhook-id"),
            triggered_at=headers.get("x-shopify-triggered-at"),
            body=body,
            payload=payload,
        )
        keep = topic in PRIVACY_TOPICS or (config.active and not config.privacy_only)
        outcome = await run_in_threadpool(journal.record, delivery, dropped=not keep)
        stats.outcomes[outcome] += 1
        return JSONResponse({"status": outcome})

    async def healthz(request: Request) -> Response:
        return JSONResponse(
            {
                "outcomes": dict(stats.outcomes),
                "p50_ms": stats.percentile(0.5),
                "p99_ms": stats.percentile(0.99),
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if landing_root is not None:

            async def seal_forever() -> None:
                while True:
                    await asyncio.sleep(seal_interval)
                    try:
                        await run_in_threadpool(journal.seal, root_for)
                    except Exception:  # keep receiving; the next tick retries the seal
                        log.exception("sealing webhook deliveries failed; will retry")

            task = asyncio.create_task(seal_forever())
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if landing_root is not None:
                await run_in_threadpool(journal.seal, root_for)

    app = Starlette(
        routes=[
            Route("/webhooks", receive, methods=["POST"]),
            Route("/webhooks/{topic:path}", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.stats = stats
    return app
