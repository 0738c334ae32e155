"""Webhook authenticity: Shopify signs the raw body with the app's client secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable


def sign(body: bytes, secret: str) -> str:
    """The ``X-Shopify-Hmac-Sha256`` value Shopify sends for ``body``: base64 HMAC-SHA256."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """Whether ``header`` signs ``body`` under any of ``secrets`` (several during a rotation).

    Compares in constant time on the raw bytes; the body must not have been parsed and
    re-serialised before this check.
    """
    if not header:
        return False
    try:
        claimed = base64.b64decode(header.strip(), validate=True)
    except (ValueError, TypeError):
        return False
    ok = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        # no early exit: the time taken does not say which secret (or none) matched
        ok |= hmac.compare_digest(expected, claimed)
    return ok
