"""Structured logs: one JSON object per line, carrying the store and the run, never a secret.

Every log line shopsync writes where it leaves the process (the CLI's stderr, the webhook
receiver, a Dagster run worker's console) is a JSON object with ``ts``, ``level``,
``logger``, ``message`` and, when known, ``shop``, ``run_id``, ``step`` and ``event``. The
store and run come from Dagster's record metadata (the run's ``dagster/partition`` tag is the
store) or from :func:`log_context`, which code outside Dagster sets around a unit of work.

Redaction happens when a record is created (:func:`install_redaction`), so it also covers
the copies Dagster keeps in its event log: Shopify access tokens and client secrets,
``Authorization``/``X-Shopify-Access-Token`` values, ``access_token=``/``client_secret=``
pairs, e-mail addresses and phone numbers become placeholders. Ids (numeric, ``gid://``,
contact ids) are kept: they are what an operator needs to find the record.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

SHOP_TAG = "dagster/partition"
_context: ContextVar[Mapping[str, str] | None] = ContextVar("shopsync_log_context", default=None)

# --- redaction -------------------------------------------------------------------------------
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Shopify's token and secret formats: shpat_ (admin), shpca_ (custom app), shppa_ (private
    # app), shpss_ (shared secret), shpua_ (user)
    (re.compile(r"\bshp(?:at|ca|pa|ss|ua)_[0-9A-Za-z]{8,}"), "<secret>"),
    # header values: X-Shopify-Access-Token: x, Authorization: Bearer x
    (
        re.compile(
            r"(?i)(x-shopify-access-token|authorization)(['\"]?\s*[:=]\s*['\"]?)(?:bearer\s+)?[^\s'\",}]+"
        ),
        r"\1\2<secret>",
    ),
    # key=value and "key": "value" pairs of secret-bearing names
    (
        re.compile(
            r"(?i)\b(access_token|client_secret|refresh_token|api_secret|password)"
            r"(['\"]?\s*[:=]\s*['\"]?)[^\s'\"&,}]+"
        ),
        r"\1\2<secret>",
    ),
    # OAuth callback query parameters
    (re.compile(r"([?&](?:code|hmac|state)=)[^&\s'\"]+"), r"\1<secret>"),
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# "+" then at least 7 digits with optional separators (E.164 and its formatted forms), or a
# national number formatted with separators: (555) 123-4567, 555-123-4567, 555.123.4567.
_PHONE = re.compile(
    r"(?<![\w/])\+\d(?:[\s().-]?\d){6,14}\b"
    r"|(?<![\w/-])\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"
)


def redact(text: str) -> str:
    """``text`` with secrets, e-mail addresses and phone numbers replaced by placeholders."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    text = _EMAIL.sub("<email>", text)
    return _PHONE.sub("<phone>", text)


def _redact_record(record: logging.LogRecord) -> None:
    """Rewrite the record's message only when redaction changes it.

    A record left alone keeps its ``args`` for formatters that read them (uvicorn's access
    formatter unpacks them); exceptions are redacted where they are formatted.
    """
    try:
        message = record.getMessage()
    except Exception:  # a malformed %-format: logging reports it when the record is emitted
        return
    redacted = redact(message)
    if redacted != message:
        record.msg = redacted
        record.args = None


def install_redaction() -> None:
    """Redact every log record as it is created (idempotent, process-wide).

    A record factory rather than a handler filter, so that every destination sees the redacted
    text: our handlers, third-party handlers, and Dagster's capture of managed loggers.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "shopsync_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    factory.shopsync_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


# --- context ---------------------------------------------------------------------------------
@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Attach ``fields`` (``shop=``, ``run_id=``, ``entity=`` ...) to every line logged inside."""
    merged = dict(_context.get() or {})
    merged.update({k: v for k, v in fields.items() if v is not None})
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    return _context.get() or {}


# --- formatting ------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, shop, run_id, step, event, error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        meta = getattr(record, "dagster_meta", None)
        if isinstance(meta, Mapping):
            line["message"] = redact(str(meta.get("orig_message") or record.getMessage()))
            tags = meta.get("job_tags") or {}
            if tags.get(SHOP_TAG):
                line["shop"] = tags[SHOP_TAG]
            for key, name in (("run_id", "run_id"), ("job_name", "job"), ("step_key", "step")):
                if meta.get(key):
                    line[name] = meta[key]
            event = meta.get("dagster_event")
            if event is not None:
                line["event"] = getattr(event, "event_type_value", str(event))
        else:
            line["message"] = redact(record.getMessage())
        for key, value in current_context().items():
            line.setdefault(key, value)
        for key in ("shop", "entity", "status", "attempt"):
            value = record.__dict__.get(key)
            if value is not None and key not in line:
                line[key] = value
        if record.exc_info:
            line["error"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["error"] = redact(record.exc_text)
        return json.dumps(line, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in current_context().items())
        return redact(super().format(record)) + (f" [{context}]" if context else "")


def _formatter() -> logging.Formatter:
    if os.environ.get("SHOPSYNC_LOG_FORMAT", "json").lower() == "text":
        return _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    return JsonFormatter()


def configure_logging(level: str | int | None = None, stream: IO[str] | None = None) -> logging.Handler:
    """Send the process's logs to ``stream`` (stderr) as JSON lines, redacted.

    ``SHOPSYNC_LOG_LEVEL`` (default WARNING for the CLI's quiet output, INFO for services
    that pass it) and ``SHOPSYNC_LOG_FORMAT=text`` for a human reading a terminal.
    Replaces the handler a previous call installed, never anyone else's.
    """
    install_redaction()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "shopsync", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_formatter())
    handler.shopsync = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    chosen = level or os.environ.get("SHOPSYNC_LOG_LEVEL") or "WARNING"
    root.setLevel(chosen if isinstance(chosen, int) else chosen.upper())
    return handler


def uvicorn_log_config(level: str = "INFO") -> dict[str, Any]:
    """uvicorn's ``log_config``: its error and access logs as the same JSON lines."""
    formatter = {"()": f"{__name__}.JsonFormatter"}
    if os.environ.get("SHOPSYNC_LOG_FORMAT", "json").lower() == "text":
        formatter = {
            "()": f"{__name__}._TextFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"shopsync": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "shopsync",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
            "shopsync": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }
