"""Structured JSON logs, one object per line, with no personal data.

Photos are health data and chats are personal: log job ids, stages, timings and error codes,
never chat or user ids, names, message text, image bytes or tokens. Fields passed through
`extra={...}` are kept unless their name is on the deny list; string values that look like a
Telegram bot token are masked wherever they appear. The JSON itself is python-json-logger's.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import IO, Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

# Field names that are never written, whatever their value.
DENY_FIELDS = frozenset(
    {
        "chat_id",
        "user_id",
        "from_user",
        "username",
        "first_name",
        "last_name",
        "full_name",
        "name",
        "phone",
        "phone_number",
        "text",
        "caption",
        "message",
        "image",
        "photo",
        "data",
        "bytes",
        "token",
        "reply_to",
        "update",
    }
)
_TOKEN = re.compile(r"(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,}")
MAX_VALUE_CHARS = 500


def scrub(text: str) -> str:
    """Mask anything shaped like a bot token (a URL with the token leaks it too)."""
    return _TOKEN.sub("<token>", text)


def _clean(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if str(k) not in DENY_FIELDS}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value[:50]]
    s = scrub(str(value))
    return s if len(s) <= MAX_VALUE_CHARS else s[:MAX_VALUE_CHARS] + "…"


class JsonFormatter(_JsonFormatter):
    """python-json-logger's formatter with the project's fields, deny list and token scrub."""

    def __init__(self, service: str = "hbscreen") -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "message": "msg"},
            static_fields={"service": service},
            # Standard record attributes and denied names never become fields.
            reserved_attrs=[*RESERVED_ATTRS, "taskName", *DENY_FIELDS],
            json_default=str,
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["ts"] = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z"
        )
        super().add_fields(log_data, record, message_dict)
        if record.exc_info and record.exc_info[0] is not None:
            log_data["exc_type"] = record.exc_info[0].__name__

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in log_data.items():
            if key in DENY_FIELDS or key.startswith("_"):
                continue  # also what a dict logged as the message brings
            if key == "exc_info":
                out["exc"] = scrub(str(value))[-4000:]
            elif key == "msg":
                out[key] = scrub(str(value))
            elif key in ("ts", "level", "logger", "service", "exc_type"):
                out[key] = value
            else:
                out[key] = _clean(value)
        return out


def configure_json_logging(
    level: str | int = "INFO", *, service: str = "hbscreen", stream: IO[str] | None = None
) -> logging.Handler:
    """Route the root logger to one JSON-lines handler (stderr by default); returns it.

    Chatty libraries that log request URLs (httpx logs the bot token in them) are kept at
    WARNING."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    for noisy in ("httpx", "httpcore", "telegram.ext.Updater", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
