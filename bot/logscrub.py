"""Keep the token and chat content out of every log line, whatever the level.

At DEBUG, python-telegram-bot logs each Bot API call with its parameters and return values
(`sendMessage` with the text, `getUpdates` with names and typed text), httpx logs URLs that
contain the token, and aiohttp/httpcore trace requests. Setting those loggers' levels is not
enough (anyone can turn DEBUG back on), so the scrubbing happens where records are written: a
`logging.Filter` on the root logger's handlers, which sees records from every logger.

- Our own loggers (`hbscreen.*`) never log personal data by design; their lines only have
  secrets masked (the token anywhere, e.g. inside an exception message with a URL).
- Third-party records keep their message template; arguments are kept only when they look
  like identifiers or are numbers or booleans (an endpoint name like `sendMessage`, a count),
  everything else (dicts of parameters, updates, texts, URLs) becomes `<redacted>`. Messages
  from third parties that arrive pre-formatted are cut to their first 200 characters, with
  anything token-shaped masked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from hbscreen.inference.jsonlog import scrub as mask_token_shapes

OWN_LOGGERS = ("hbscreen", "__main__")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
REDACTED = "<redacted>"
MAX_THIRD_PARTY_CHARS = 200


def _safe_arg(value: object) -> object:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str) and _IDENTIFIER.match(value):
        return value
    return REDACTED


class ScrubFilter(logging.Filter):
    """Rewrite each record in place before any formatter sees it; never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        return mask_token_shapes(text)

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == "root" or record.name.startswith(OWN_LOGGERS)
        try:
            if own:
                message = record.getMessage()
            else:
                args = record.args
                if isinstance(args, dict):
                    safe: object = {k: _safe_arg(v) for k, v in args.items()}
                elif isinstance(args, tuple):
                    safe = tuple(_safe_arg(a) for a in args)
                else:
                    safe = ()
                template = str(record.msg)
                message = template % safe if safe else template
                if len(message) > MAX_THIRD_PARTY_CHARS:
                    message = message[:MAX_THIRD_PARTY_CHARS] + " <cut>"
        except Exception:  # a broken format string: keep the template only
            message = str(record.msg)
        record.msg, record.args = self._mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self._mask(record.stack_info)
        return True


def install(secrets: Iterable[str] = (), logger: logging.Logger | None = None) -> ScrubFilter:
    """Attach one ScrubFilter to every handler of `logger` (default: the root logger).

    Call after the handlers exist (after basicConfig / the JSON set-up)."""
    target = logger or logging.getLogger()
    f = ScrubFilter(secrets)
    for handler in target.handlers:
        for old in [x for x in handler.filters if isinstance(x, ScrubFilter)]:
            handler.removeFilter(old)
        handler.addFilter(f)
    return f


def secrets_of(settings: object) -> list[str]:
    """The configured secrets to mask by value (token, webhook secret, hash key)."""
    out = []
    for name in ("telegram_bot_token", "webhook_secret", "hash_key"):
        value = getattr(settings, name, None)
        if value is not None:
            out.append(value.get_secret_value() if hasattr(value, "get_secret_value") else value)
    return [str(x) for x in out]
