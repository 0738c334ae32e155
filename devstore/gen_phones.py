"""Valid phone numbers per country, generated in bulk without a per-number Python loop.

``phonenumbers`` decides validity from the leading digits of a national number, so we
validate a pool of prefixes once (each tried with several random 4-digit tails); the
generator then draws numbers as ``prefix + tail`` with vectorised code (code // 10**4 picks
the prefix, code % 10**4 is the tail). A fixed internal seed keeps the pools the
same in every process, which keeps worlds deterministic by their own seed.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import phonenumbers

TAIL_DIGITS = 4
_TAIL_SPACE = 10**TAIL_DIGITS
_POOL_SIZE = 400
_PROBES = 4


@cache
def prefix_pool(region: str) -> tuple[int, tuple[str, ...]]:
    """Country calling code and a tuple of national-number prefixes valid for ``region``.

    Every prefix, completed with any 4-digit tail, forms a valid mobile (or, failing that,
    fixed-line) number in ``region``.
    """
    rng = np.random.default_rng(20261101)
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:
        example = phonenumbers.example_number(region)
    national = str(example.national_number)
    head_len = 1  # keep the leading digit that marks a mobile range
    body_len = len(national) - head_len - TAIL_DIGITS
    head = national[:head_len]
    found: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(found) < _POOL_SIZE and attempts < _POOL_SIZE * 50:
        attempts += 1
        body = "".join(rng.choice(list("0123456789"), size=body_len))
        prefix = head + body
        if prefix in seen:
            continue
        seen.add(prefix)
        tails = rng.integers(0, _TAIL_SPACE, size=_PROBES)
        if all(
            phonenumbers.is_valid_number_for_region(
                phonenumbers.parse(f"+{example.country_code}{prefix}{t:0{TAIL_DIGITS}d}"), region
            )
            for t in tails
        ):
            found.append(prefix)
    if not found:
        raise RuntimeError(f"could not build a phone number pool for region {region}")
    return example.country_code, tuple(sorted(found))


def capacity(region: str) -> int:
    """How many distinct numbers ``national_numbers`` can produce for ``region``."""
    return len(prefix_pool(region)[1]) * _TAIL_SPACE


def calling_code(region: str) -> int:
    """The country calling code of ``region`` (1 for US/CA, 44 for GB...)."""
    return prefix_pool(region)[0]
