"""Store domain normalisation and validation, with the messages the product shows."""

from __future__ import annotations

import re

MYSHOPIFY_SUFFIX = ".myshopify.com"
MIN_NAME = 4
MAX_NAME = 60

DOMAIN_REQUIRED = "Store domain is required"
INVALID_FORMAT = "Invalid store domain format"
TOO_SHORT = "Store name must be at least 4 characters"
TOO_LONG = "Store name cannot exceed 60 characters"
BAD_HYPHEN = "Store name cannot start or end with a hyphen"

# Shopify store names are lowercase letters, digits and hyphens.
_NAME_CHARS = re.compile(r"[a-z0-9-]+")


class InvalidStoreDomain(ValueError):
    """The entered store domain is not acceptable; ``str(exc)`` is the message to show."""


def normalize_store_domain(value: str | None) -> str:
    """Turn what a user typed into ``<name>.myshopify.com``, or raise ``InvalidStoreDomain``.

    Accepts ``mystore`` and ``mystore.myshopify.com``, either with an ``https://`` prefix
    and/or one trailing slash, in any letter case. Anything else (custom domains, paths,
    ports, ``http://``) is rejected with exactly one of the product's messages.
    """
    text = (value or "").strip()
    if not text:
        raise InvalidStoreDomain(DOMAIN_REQUIRED)
    text = text.lower()
    text = text.removeprefix("https://")
    text = text.removesuffix("/")
    name = text.removesuffix(MYSHOPIFY_SUFFIX)
    if not name or _NAME_CHARS.fullmatch(name) is None:
        raise InvalidStoreDomain(INVALID_FORMAT)
    if len(name) < MIN_NAME:
        raise InvalidStoreDomain(TOO_SHORT)
    if len(name) > MAX_NAME:
        raise InvalidStoreDomain(TOO_LONG)
    if name.startswith("-") or name.endswith("-"):
        raise InvalidStoreDomain(BAD_HYPHEN)
    return name + MYSHOPIFY_SUFFIX


def store_handle(domain: str) -> str:
    """The store name part of a normalised domain (``mystore`` for ``mystore.myshopify.com``)."""
    return domain.removesuffix(MYSHOPIFY_SUFFIX)
