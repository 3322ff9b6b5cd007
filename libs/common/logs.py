"""Structured logging: one event name plus fields, JSON for machines, key=value for terminals.

A redaction processor runs last before rendering, so a secret passed as a field (tokens,
signatures, URL passwords) never reaches a log line.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|signature|private_key|authorization|api_key)", re.I)
# Counts of LLM tokens are not secrets: `prompt_tokens`, `completion_tokens`, `reasoning_tokens` (and only
# when the value is a number, so a string in such a field is still hidden).
_TOKEN_COUNTS = re.compile(r"^(prompt|completion|reasoning|total|billed_output)_tokens$")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@", re.I)
_BOT_TOKEN = re.compile(r"\b\d{6,}:[A-Za-z0-9_\-]{20,}\b")


def redact_text(text: str) -> str:
    """Hide URL passwords and Telegram bot tokens inside free text."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    return _BOT_TOKEN.sub("***", text)


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and value is not None \
                and not (_TOKEN_COUNTS.match(key) and isinstance(value, int) and not isinstance(value, bool)):
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    return event_dict


def configure_logging(service: str, level: str = "INFO", fmt: str = "auto", instance: str | None = None) -> None:
    """Configure structlog and stdlib logging for one process."""
    json_out = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, **({"instance": instance} if instance else {}))
    # Third-party libraries log through stdlib; keep their noise at WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structured logger; call as `log.info("event_name", field=value)`."""
    return structlog.get_logger(name)  # type: ignore[no-any-return]
