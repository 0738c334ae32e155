"""Small JSON documents shared by every process that calls one shop, under an ``fcntl`` lock.

Dagster's multiprocess executor runs each entity's fetch of a store in its own process,
and pushes and webhook refetches run in others; all of them spend the same Shopify cost
bucket and the same five bulk-operation slots. Their shared bookkeeping lives in one file
per shop and purpose under the data folder, read and rewritten while holding an exclusive
``flock`` on it. The lock also orders threads of one process (each open file has its own
lock). A file left unreadable by a process killed mid-write reads as empty: the state is a
cache of what Shopify reports, rebuilt from its next answer.

Only one machine's processes share a file (``flock`` is not reliable on network file
systems); across machines Shopify's own answers (THROTTLED, LIMIT_REACHED) still keep
every client correct, just less efficient.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def state_file(folder: Path, shop: str, purpose: str) -> Path:
    """The file holding ``purpose``'s state for ``shop`` (the name is made file-system safe)."""
    return folder / f"{_UNSAFE.sub('_', shop)}.{purpose}.json"


class SharedState:
    """A JSON object shared through ``path`` (or held in memory when ``path`` is None)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, Any] = {}
        self._lock = threading.Lock()

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """Hold the lock and yield the state; changes made to it are saved on exit."""
        if self.path is None:
            with self._lock:
                yield self._memory
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "r+", encoding="utf-8") as fh:
                text = fh.read()
                try:
                    state = json.loads(text) if text.strip() else {}
                except ValueError:
                    state = {}
                if not isinstance(state, dict):
                    state = {}
                before = json.dumps(state, sort_keys=True)
                yield state
                after = json.dumps(state, sort_keys=True)
                if after != before:
                    fh.seek(0)
                    fh.truncate()
                    fh.write(after)
                    fh.flush()
        finally:
            # closing the descriptor releases the lock
            os.close(fd)
