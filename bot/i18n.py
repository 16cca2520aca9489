"""Translations of the bot's messages (gettext catalogues managed with Babel) and number formats.

English msgids in the code are the source text. Mark a string with ``t(lang, "...")`` where it
is sent, or with ``N_("...")`` for a module-level constant that is translated later with
``t(lang, CONSTANT)``. Every msgid is a ``str.format`` template: write literal braces as ``{{``
and ``}}``. Placeholders are filled after translation, so a translator can move them.

Update the catalogues after changing messages (extract, update, fill English, compile)::

    python -m hbscreen.bot.i18n --update      # then translate the new entries in bot/locale/*/*.po
    python -m hbscreen.bot.i18n --compile     # after editing translations
    python -m hbscreen.bot.i18n --check       # exit 1 if anything is missing, fuzzy or stale
    python -m hbscreen.bot.i18n --render out.txt   # every message in every language, for reading

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
from pathlib import Path

from babel import Locale
from babel.dates import format_date
from babel.messages.catalog import Catalog
from babel.numbers import format_decimal

log = logging.getLogger(__name__)

DOMAIN = "messages"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
POT_FILE = LOCALE_DIR / f"{DOMAIN}.pot"
SOURCE_DIR = Path(__file__).resolve().parent
REPO_ROOT = SOURCE_DIR.parent
BABEL_CFG = REPO_ROOT / "babel.cfg"
# Babel keywords: t(lang, msgid, ...), tn(lang, singular, plural, n, ...), N_(msgid).
EXTRACT_KEYWORDS: tuple[str, ...] = ("t:2", "tn:2,3", "N_")

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
    """The compiled catalogue of one language, read once per process."""
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
# Catalogue maintenance: python -m hbscreen.bot.i18n --update | --compile | --check


def _pybabel(*args: str) -> None:
    from babel.messages.frontend import CommandLineInterface

    CommandLineInterface().run(["pybabel", "-q", *args])


def extract(pot: Path = POT_FILE) -> None:
    """Write every marked msgid under bot/ into the template, with repo-relative locations.

    Same result as ``pybabel extract -F babel.cfg -k t:2 -k tn:2,3 -k N_ -o <pot> bot``
    run from the repository root, without depending on the current directory.
    """
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
    from babel.messages.frontend import parse_keywords, parse_mapping_cfg
    from babel.messages.pofile import write_po

    with BABEL_CFG.open(encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh, str(BABEL_CFG))
    keywords = {**DEFAULT_KEYWORDS, **parse_keywords(list(EXTRACT_KEYWORDS))}
    catalog = Catalog(
        project="hbscreen",
        version="0.1",
        copyright_holder="hbscreen contributors",
        msgid_bugs_address="https://github.com/hbscreen/hbscreen/issues",
        charset="utf-8",
    )
    base = SOURCE_DIR.relative_to(REPO_ROOT).as_posix()
    for filename, lineno, message, comments, context in extract_from_dir(
        str(SOURCE_DIR), method_map, options_map, keywords=keywords
    ):
        location = (f"{base}/{Path(filename).as_posix()}", lineno)
        catalog.add(message, None, [location], auto_comments=comments, context=context)
    if pot.exists() and _messages_of(pot) == _messages_of(catalog):
        return  # unchanged: keep the file (and its creation date) as it is
    pot.parent.mkdir(parents=True, exist_ok=True)
    with pot.open("wb") as fh:
        write_po(fh, catalog, width=0, sort_by_file=True)


def _messages_of(source: Path | Catalog) -> list[tuple[object, ...]]:
    """What a template says, ignoring its header dates."""
    from babel.messages.pofile import read_po

    if isinstance(source, Path):
        with source.open("rb") as fh:
            source = read_po(fh)
    return sorted(
        (repr(m.id), repr(m.context), repr(sorted(m.locations)), repr(m.auto_comments))
        for m in source
        if m.id
    )


def update_catalogues() -> None:
    """Merge the template into each language's .po (creating missing ones).

    A changed English msgid comes back as a fuzzy entry holding the old translation as a
    starting point; fuzzy entries are left out of the .mo and fail tests/test_i18n.py until a
    translator checks them and removes the fuzzy flag.
    """
    for lang in LANGUAGES:
        po = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
        if po.exists():
            _pybabel(
                "update",
                "--no-wrap",
                "--ignore-obsolete",  # a removed message leaves no stale entry behind
                "-D",
                DOMAIN,
                "-i",
                str(POT_FILE),
                "-d",
                str(LOCALE_DIR),
                "-l",
                lang,
            )
        else:
            _pybabel(
                "init", "--no-wrap", "-D", DOMAIN, "-i", str(POT_FILE), "-d", str(LOCALE_DIR),
                "-l", lang,
            )  # fmt: skip
    _fill_english()


def _fill_english() -> None:
    """English is the source language: its catalogue repeats each msgid, exactly."""
    from babel.messages.pofile import read_po, write_po

    po = LOCALE_DIR / DEFAULT_LANGUAGE / "LC_MESSAGES" / f"{DOMAIN}.po"
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=DEFAULT_LANGUAGE)
    for message in catalog:
        if not message.id:
            continue
        # Always the msgid itself: an English msgstr that differs is a stale copy of an old
        # text (it once made the result say "go today" twice).
        message.string = tuple(message.id) if isinstance(message.id, tuple) else message.id
        message.flags.discard("fuzzy")
    with po.open("wb") as fh:
        write_po(fh, catalog, width=0, sort_by_file=True)


def compile_catalogues() -> None:
    """Build the .mo files the bot reads (fuzzy entries are left out)."""
    _pybabel("compile", "-D", DOMAIN, "-d", str(LOCALE_DIR), "--statistics")


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
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        sample = {
            name: f"<{name}>"
            for text in ids
            for _, name, _, _ in string.Formatter().parse(text)
            if name and name != "n"
        }
        lines = [f"### {ids[0]!r}"]
        for lang in LANGUAGES:
            if isinstance(message.id, tuple):
                for n in (1, 3):
                    lines.append(f"[{lang} n={n}] {tn(lang, ids[0], ids[1], n, **sample)}")
            else:
                lines.append(f"[{lang}] {t(lang, ids[0], **sample)}")
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return len(blocks)


def _check() -> int:
    import subprocess

    test = REPO_ROOT / "tests" / "test_i18n.py"
    return subprocess.call([sys.executable, "-m", "pytest", "-q", str(test)], cwd=REPO_ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hbscreen.bot.i18n", description=__doc__.split("\n")[0]
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--update", action="store_true", help="extract, update .po, compile")
    group.add_argument("--compile", action="store_true", help="compile .po into .mo")
    group.add_argument("--check", action="store_true", help="run tests/test_i18n.py")
    group.add_argument("--render", type=Path, metavar="FILE", help="write all messages to FILE")
    args = parser.parse_args(argv)
    if args.update:
        extract()
        update_catalogues()
        compile_catalogues()
    elif args.compile:
        compile_catalogues()
    elif args.render:
        print(f"{render_all(args.render)} messages x {len(LANGUAGES)} languages -> {args.render}")
    else:
        return _check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
