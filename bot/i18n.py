"""Translations of the bot's messages (gettext catalogues managed with Babel) and number formats.

English msgids in the code are the source text. Mark a string with ``t(lang, "...")`` where it
is sent, or with ``N_("...")`` for a module-level constant that is translated later with
``t(lang, CONSTANT)``. Every msgid is a ``str.format`` template: write literal braces as ``{{``
and ``}}``. Placeholders are filled after translation, so a translator can move them.

English is the source language and has no catalogue. After changing messages, from the
repository root (Babel's own CLI; its configuration is in pyproject.toml, [tool.babel.*])::

    pybabel extract && pybabel update     # then translate the new entries in bot/locale/*/*.po
    pybabel compile                       # after editing translations
    pytest tests/test_i18n.py             # fails if anything is missing, fuzzy or stale
    python -m hbscreen.bot.i18n out.txt   # every message in every language, for reading

Counts use ``tn(lang, singular, plural, n)``; numbers and dates use ``fmt_number`` and
``fmt_date`` so they read the way each locale writes them.
"""

from __future__ import annotations

import argparse
import decimal
import gettext
import logging
import sys
from datetime import date, datetime, timezone
from functools import cache
from importlib import resources
from pathlib import Path

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal, format_percent

log = logging.getLogger(__name__)

DOMAIN = "messages"
# The catalogues ship inside the package (gettext needs a real folder: not a zipped install).
LOCALE_DIR = Path(str(resources.files("hbscreen.bot") / "locale"))
POT_FILE = LOCALE_DIR / f"{DOMAIN}.pot"

DEFAULT_LANGUAGE = "en"
LANGUAGES: tuple[str, ...] = ("en", "fr", "sw", "hi", "ja")

# Endonyms, shown in the language picker so each person finds their own language.
_ENDONYMS: dict[str, str] = {
    "en": "English",
    "fr": "Français",
    "sw": "Kiswahili",
    "hi": "हिन्दी",
    "ja": "日本語",
}


def N_(msgid: str) -> str:
    """Mark a module-level string for extraction; it is translated later with t()."""
    return msgid


def _normalise(lang: str | None) -> str:
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


@cache
def _translations(lang: str) -> gettext.NullTranslations:
    """The compiled catalogue of one language, read once per process; English is the source."""
    if lang == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    try:
        return gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[lang])
    except OSError:
        log.warning("no compiled catalogue for %r in %s; showing English", lang, LOCALE_DIR)
        return gettext.NullTranslations()


def _format(lang: str, translated: str, source: str, kwargs: dict[str, object]) -> str:
    try:
        return translated.format(**kwargs)
    except (KeyError, IndexError, ValueError) as exc:
        if translated == source:
            raise
        # A broken translation must not cost the person their message: fall back to English.
        log.error("translation of %r in %r does not format (%s); using English", source, lang, exc)
        return source.format(**kwargs)


def t(lang: str | None, msgid: str, **kwargs: object) -> str:
    """Translate msgid into lang (unknown languages get English), then str.format(**kwargs)."""
    lang = _normalise(lang)
    return _format(lang, _translations(lang).gettext(msgid), msgid, kwargs)


def tn(lang: str | None, singular: str, plural: str, n: int, **kwargs: object) -> str:
    """Like t() for a message that depends on a count n; n is also passed to format as {n}."""
    lang = _normalise(lang)
    kwargs.setdefault("n", n)
    source = singular if n == 1 else plural
    return _format(lang, _translations(lang).ngettext(singular, plural, n), source, kwargs)


@cache
def _locale(lang: str) -> Locale:
    return Locale.parse(lang)


@cache
def _integer_pattern(lang: str) -> str:
    """The locale's grouping ("#,##,##0" in Hindi), without its fraction part."""
    return _locale(lang).decimal_formats[None].pattern.split(";")[0].split(".")[0]


def fmt_number(x: float, lang: str | None, digits: int = 1) -> str:
    """A number in the locale's format with a fixed number of decimals ("10,5" in French).

    Rounds half up on the decimal value people read (10.25 -> 10.3), not binary half-even.
    Digits are Latin everywhere, Hindi included: that is CLDR's default for hi, and Hb values on
    Indian lab reports, phones and medicine packs are written in Latin digits, so people match
    them more easily than Devanagari digits.
    """
    lang = _normalise(lang)
    pattern = _integer_pattern(lang) + ("." + "0" * digits if digits > 0 else "")
    value = decimal.Decimal(str(x))
    with decimal.localcontext() as ctx:
        ctx.rounding = decimal.ROUND_HALF_UP
        return format_decimal(value, format=pattern, locale=_locale(lang), numbering_system="latn")


def fmt_percent(share: float, lang: str | None) -> str:
    """A share as a percentage the locale's way ("80 %" in French); Latin digits, as above."""
    return format_percent(share, locale=_locale(_normalise(lang)), numbering_system="latn")


def fmt_date(value: date | datetime | float, lang: str | None) -> str:
    """A day as people write it in the locale ("5 janvier 2027", "2027年1月5日").

    A float is a Unix timestamp, read in UTC. Digits are Latin, as in fmt_number.
    """
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, datetime):
        value = value.date()
    return format_date(value, format="long", locale=_locale(_normalise(lang)))


def language_name(lang: str) -> str:
    """The language's own name (endonym), for the language picker."""
    return _ENDONYMS[_normalise(lang)]


def pick_language(telegram_language_code: str | None) -> str:
    """The supported language for a Telegram client's IETF code ("fr-CA" -> "fr"), else English."""
    if not telegram_language_code:
        return DEFAULT_LANGUAGE
    primary = telegram_language_code.replace("_", "-").split("-", 1)[0].strip().lower()
    return primary if primary in LANGUAGES else DEFAULT_LANGUAGE


# The command menu. The bot calls set_my_commands once per language with
# language_code=lang and t(lang, description), and once without language_code in English.
COMMANDS: list[tuple[str, str]] = [
    ("start", N_("Start a new screening")),
    ("help", N_("How to use this bot")),
    ("language", N_("Change the language")),
    ("worker", N_("Health worker mode")),
    ("summary", N_("List this session's screenings")),
    ("export", N_("Get my screenings as a file")),
    ("privacy", N_("What we keep and why")),
    ("delete", N_("Delete all my data")),
    ("cancel", N_("Stop what is happening now")),
    ("stop", N_("Stop reminders and messages")),
]
# Shown only to admins (BotCommandScopeChat for each admin id).
ADMIN_COMMANDS: list[tuple[str, str]] = [
    ("stats", N_("Numbers per campaign and day")),
]


def commands_for(lang: str | None, *, admin: bool = False) -> list[tuple[str, str]]:
    """(command, translated description) pairs for set_my_commands in one language."""
    pairs = COMMANDS + (ADMIN_COMMANDS if admin else [])
    return [(command, t(lang, description)) for command, description in pairs]


# ---------------------------------------------------------------------------------------------
# Reading every message: python -m hbscreen.bot.i18n FILE


def render_all(path: Path) -> int:
    """Write every message in every language, one block per msgid, for a human to read."""
    import string

    from babel.messages.pofile import read_po

    with POT_FILE.open("rb") as fh:
        template = read_po(fh)
    blocks = []
    for message in template:
        if not message.id:
            continue
        ids: tuple[str, ...] = (message.id,) if isinstance(message.id, str) else tuple(message.id)
        sample = {
            name: f"<{name}>"
            for text in ids
            for _, name, _, _ in string.Formatter().parse(text)
            if name and name != "n"
        }
        lines = [f"### {ids[0]!r}"]
        for lang in LANGUAGES:
            if len(ids) > 1:
                for n in (1, 3):
                    lines.append(f"[{lang} n={n}] {tn(lang, ids[0], ids[1], n, **sample)}")
            else:
                lines.append(f"[{lang}] {t(lang, ids[0], **sample)}")
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return len(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hbscreen.bot.i18n",
        description="Write every message in every language to FILE, for a human to read.",
    )
    parser.add_argument("file", type=Path, metavar="FILE")
    args = parser.parse_args(argv)
    print(f"{render_all(args.file)} messages x {len(LANGUAGES)} languages -> {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
