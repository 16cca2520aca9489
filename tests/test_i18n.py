"""The five catalogues are complete, current and safe to send, and numbers read right per locale.

Fails on: a msgid without a translation in any language, a fuzzy entry, placeholders or HTML
tags that differ from the English, a .mo older than its .po, a .pot older than the code (as
`pybabel extract` sees it); and
renders every message in every language so str.format errors surface here, not in a chat.
"""

from __future__ import annotations

import gettext
import io
import re
import string
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from hbscreen.bot import i18n
from hbscreen.bot.i18n import (
    ADMIN_COMMANDS,
    COMMANDS,
    DEFAULT_LANGUAGE,
    LANGUAGES,
    LOCALE_DIR,
    POT_FILE,
    commands_for,
    fmt_date,
    fmt_number,
    language_name,
    pick_language,
    t,
    tn,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
UPDATE = "pybabel extract && pybabel update"
# Any message may become a photo caption (the photo guide is one), and captions stop at 1024.
CAPTION_LIMIT = 1024
TRANSLATED = [lang for lang in LANGUAGES if lang != DEFAULT_LANGUAGE]
# Tags Telegram accepts in HTML parse mode.
TELEGRAM_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a",
    "code", "pre", "blockquote", "tg-emoji",
}  # fmt: skip
TAG_RE = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(?:\s[^<>]*)?>")
# A translation may equal its English msgid only when there are no words to translate.
WORD_RE = re.compile(r"[A-Za-z]{3,}")
KEEP_AS_IS = {"g/dL", "OK", "CSV", "Hb", "HemoCue", "Telegram", "WHO", "English"}
# The same English term gets the same word in each language (bot/locale/GLOSSARY.md), and the
# word for "diagnosis" appears only where the English says diagnosis.
GLOSSARY: dict[str, dict[str, str]] = {
    r"\bscreenings?\b": {"fr": "dépistage", "sw": "uchunguzi", "hi": "जाँच", "ja": "チェック"},
    r"\bdiagnosis\b": {"fr": "diagnostic", "sw": "utambuzi", "hi": "पक्की पहचान", "ja": "診断"},
    r"\banaemia\b": {
        "fr": "anémie",
        "sw": r"upungufu (\w+ ){0,2}wa damu",
        "hi": "खून की.*कमी",
        "ja": "貧血",
    },
    r"\bblood test\b": {
        "fr": "prise de sang",
        "sw": "kipimo cha damu|pim\\w* damu",
        "hi": "खून की जाँच",
        "ja": "血液検査",
    },
    r"\bhaemoglobin\b": {
        "fr": "hémoglobine",
        "sw": "hemoglobini",
        "hi": "हीमोग्लोबिन",
        "ja": "ヘモグロビン",
    },
    r"\bhealth facility\b": {
        "fr": "centre de santé",
        "sw": "kituo cha afya",
        "hi": "स्वास्थ्य केंद्र",
        "ja": "病院",
    },
    r"\beyelid\b": {"fr": "paupière", "sw": "kope", "hi": "पलक", "ja": "まぶた"},
    # One term for "signs" (danger signs) per language, and WHO's name for the moderate band.
    r"\bsigns?\b": {"fr": "signe", "sw": "dalili", "hi": "लक्षण", "ja": "サイン"},
    r"\bmoderate\b": {"fr": "modérée", "sw": "wastani", "hi": "मध्यम", "ja": "中"},
    r"\bhealth worker\b": {
        "fr": "agent de santé",
        "sw": "mhudumu wa afya",
        "hi": "स्वास्थ्य कार्यकर्ता",
        "ja": "医療スタッフ",
    },
}
# ... and the other words for the same thing, which must not come back.
NOT_THE_TERM: dict[str, str] = {"hi": "संकेत", "ja": "兆候|徴候", "fr": "anémie moyenne"}
SCRIPT_RE = {
    "hi": re.compile(r"[\u0900-\u097F]"),
    "ja": re.compile(r"[\u3040-\u30FF\u4E00-\u9FFF]"),
}


def _po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"


def _read_po(path: Path, lang: str | None = None) -> Catalog:
    with path.open("rb") as fh:
        return read_po(fh, locale=lang)


def _ids(catalog: Catalog) -> set[str | tuple[str, str]]:
    return {m.id if isinstance(m.id, str) else tuple(m.id) for m in catalog if m.id}


def _strings(message) -> list[str]:
    return list(message.string) if isinstance(message.string, tuple) else [message.string]


def _sources(message) -> list[str]:
    return list(message.id) if isinstance(message.id, tuple) else [message.id]


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def _tags(text: str) -> list[str]:
    return sorted(f"{'/' if close else ''}{name}" for close, name in TAG_RE.findall(text))


def _balanced(text: str) -> bool:
    stack: list[str] = []
    for close, name in TAG_RE.findall(text):
        if close:
            if not stack or stack.pop() != name:
                return False
        else:
            stack.append(name)
    return not stack


def _pot() -> Catalog:
    return _read_po(POT_FILE)


def _messages() -> list:
    return [m for m in _pot() if m.id]


def _sample(name: str, spec: str) -> object:
    if name == "n" or spec.endswith("d"):
        return 3
    if spec and spec[-1:] in "eEfFgG%":
        return 10.5
    return f"‹{name}›"


def _kwargs(text: str) -> dict[str, object]:
    return {
        name: _sample(name, spec or "")
        for _, name, spec, _ in string.Formatter().parse(text)
        if name is not None
    }


# --- catalogues ------------------------------------------------------------------------------


def test_template_has_messages():
    ids = _ids(_pot())
    assert len(ids) >= len(COMMANDS) + len(ADMIN_COMMANDS)
    for _, description in COMMANDS + ADMIN_COMMANDS:
        assert description in ids


@pytest.mark.parametrize("lang", TRANSLATED)
def test_no_obsolete_entries(lang):
    """A removed message leaves no stale (#~) entry behind."""
    assert not list(_read_po(_po_path(lang), lang).obsolete), f"{lang}: obsolete (#~) entries"


def test_template_matches_the_code(tmp_path, monkeypatch):
    """Re-extract with `pybabel extract` (pyproject's [tool.babel]) and compare msgid sets: the
    .pot is not stale."""
    fresh = tmp_path / "fresh.pot"
    monkeypatch.chdir(REPO_ROOT)  # pybabel reads pyproject.toml from the current folder
    CommandLineInterface().run(["pybabel", "-q", "extract", "-o", str(fresh)])
    current, extracted = _ids(_pot()), _ids(_read_po(fresh))
    assert extracted == current, (
        f"bot/locale/messages.pot is stale; run `{UPDATE}`.\n"
        f"new in code: {sorted(extracted - current)}\nonly in .pot: {sorted(current - extracted)}"
    )


def test_english_is_the_source_language():
    """English has no catalogue: msgids are the English text, so nothing can drift from them."""
    assert DEFAULT_LANGUAGE not in TRANSLATED
    assert not (LOCALE_DIR / DEFAULT_LANGUAGE).exists()
    assert t("en", COMMANDS[0][1]) == COMMANDS[0][1]


@pytest.mark.parametrize("lang", TRANSLATED)
def test_catalogue_is_complete(lang):
    catalog = _read_po(_po_path(lang), lang)
    problems: list[str] = []
    for source in _messages():
        message = catalog.get(source.id, source.context)
        if message is None:
            problems.append(f"missing: {source.id!r}")
            continue
        if message.fuzzy:
            problems.append(f"fuzzy: {source.id!r}")
        if not all(s.strip() for s in _strings(message)):
            problems.append(f"untranslated: {source.id!r}")
    assert not problems, f"{lang}: run `{UPDATE}` and translate:\n" + "\n".join(problems)


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_are_not_english(lang):
    catalog = _read_po(_po_path(lang), lang)
    problems = []
    for source in _messages():
        message = catalog.get(source.id, source.context)
        if message is None:
            continue
        for src, text in zip(_sources(message), _strings(message), strict=False):
            words = set(WORD_RE.findall(string.Formatter().vformat(src, (), _Blank())))
            if text == src and words - KEEP_AS_IS:
                problems.append(f"same as English: {src!r}")
            if lang in SCRIPT_RE and words - KEEP_AS_IS and not SCRIPT_RE[lang].search(text):
                problems.append(f"not in {lang} script: {text!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lang", TRANSLATED)
def test_terms_follow_the_glossary(lang):
    catalog = _read_po(_po_path(lang), lang)
    problems = []
    for source in _messages():
        message = catalog.get(source.id, source.context)
        if message is None:
            continue
        for src, text in zip(_sources(message), _strings(message), strict=False):
            for english, words in GLOSSARY.items():
                if re.search(english, src, re.IGNORECASE) and not re.search(
                    words[lang], text, re.I
                ):
                    problems.append(f"{english} is not {words[lang]!r} in: {text!r}")
            if lang in NOT_THE_TERM and re.search(NOT_THE_TERM[lang], text):
                problems.append(f"{NOT_THE_TERM[lang]!r} instead of the glossary term: {text!r}")
            diagnosis = GLOSSARY[r"\bdiagnosis\b"][lang]
            if re.search(diagnosis, text, re.I) and "diagnos" not in src.lower():
                problems.append(f"'diagnosis' where the English has none: {text!r}")
    assert not problems, f"{lang}:\n" + "\n".join(problems)


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


@pytest.mark.parametrize("lang", TRANSLATED)
def test_placeholders_and_tags_match(lang):
    catalog = _read_po(_po_path(lang), lang)
    problems = []
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        src = _sources(message)[0]
        for text in _strings(message):
            if not text:
                continue
            try:
                fields = _fields(text)
            except ValueError as exc:
                problems.append(f"bad braces ({exc}): {text!r}")
                continue
            plural_ok = isinstance(message.id, tuple) and fields <= _fields(message.id[1]) | {"n"}
            if fields != _fields(src) and not plural_ok:
                problems.append(f"placeholders {sorted(fields)} != {sorted(_fields(src))}: {src!r}")
            if _tags(text) != _tags(src):
                problems.append(f"tags {_tags(text)} != {_tags(src)}: {src!r}")
            if not _balanced(text):
                problems.append(f"unbalanced tags: {text!r}")
            unknown = {name for _, name in TAG_RE.findall(text)} - TELEGRAM_TAGS
            if unknown:
                problems.append(f"tags Telegram refuses {sorted(unknown)}: {text!r}")
            stripped, stripped_src = TAG_RE.sub("", text), TAG_RE.sub("", src)
            for char in "<>&":
                if stripped.count(char) > stripped_src.count(char):
                    problems.append(f"stray {char!r} breaks HTML mode: {text!r}")
    assert not problems, f"{lang}:\n" + "\n".join(problems)


@pytest.mark.parametrize("lang", TRANSLATED)
def test_compiled_catalogue_is_current(lang):
    """The shipped .mo holds exactly what compiling the .po gives now."""
    catalog = _read_po(_po_path(lang), lang)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    fresh = gettext.GNUTranslations(buffer)
    mo = _po_path(lang).with_suffix(".mo")
    assert mo.exists(), f"{mo} missing; run `pybabel compile`"
    with mo.open("rb") as fh:
        shipped = gettext.GNUTranslations(fh)
    assert shipped._catalog == fresh._catalog, f"{mo} is stale; run `pybabel compile`"


# --- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", [*LANGUAGES, "xx"])
def test_every_message_renders(lang):
    for message in _messages():
        if isinstance(message.id, tuple):
            singular, plural = message.id
            for n in (0, 1, 2, 5, 21):
                kwargs = {**_kwargs(singular), **_kwargs(plural)}
                kwargs.pop("n", None)
                text = tn(lang, singular, plural, n, **kwargs)
                assert text.strip(), (lang, message.id)
                assert len(text) <= CAPTION_LIMIT
        else:
            text = t(lang, message.id, **_kwargs(message.id))
            assert text.strip(), (lang, message.id)
            assert "{" not in text.replace("{{", "") or "{" in message.id.replace("{{", "")
            assert len(text) <= CAPTION_LIMIT, (lang, message.id)


def test_renders_use_the_catalogue():
    assert t("fr", COMMANDS[0][1]) != COMMANDS[0][1]
    assert t("xx", COMMANDS[0][1]) == COMMANDS[0][1]
    assert t(None, COMMANDS[0][1]) == COMMANDS[0][1]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_command_menu(lang):
    menu = commands_for(lang, admin=True)
    assert len(menu) == len(COMMANDS) + len(ADMIN_COMMANDS)
    assert len({c for c, _ in menu}) == len(menu)
    for command, description in menu:
        assert re.fullmatch(r"[a-z0-9_]{1,32}", command)
        assert 1 <= len(description) <= 256
        assert "<" not in description


# --- numbers and languages -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "expected"),
    [("en", "10.5"), ("fr", "10,5"), ("sw", "10.5"), ("hi", "10.5"), ("ja", "10.5")],
)
def test_fmt_number_decimal_separator(lang, expected):
    assert fmt_number(10.5, lang) == expected


def test_fmt_number_rounding_and_digits():
    assert fmt_number(10.25, "en") == "10.3"  # half up, as people round
    assert fmt_number(9.96, "fr") == "10,0"
    assert fmt_number(7, "en", digits=0) == "7"
    assert fmt_number(11.456, "fr", digits=2) == "11,46"
    assert fmt_number(12345, "fr", digits=0) == "12\u202f345"
    assert fmt_number(12345, "en", digits=0) == "12,345"
    assert fmt_number(1234567, "hi", digits=0) == "12,34,567"  # Indian grouping, Latin digits
    assert fmt_number(10.5, "xx") == "10.5"


def test_fmt_date_per_locale():
    day = date(2027, 1, 5)
    assert [fmt_date(day, lang) for lang in LANGUAGES] == [
        "January 5, 2027",
        "5 janvier 2027",
        "5 Januari 2027",
        "5 जनवरी 2027",
        "2027年1月5日",
    ]
    assert fmt_date(datetime(2027, 1, 5, 23, 0, tzinfo=timezone.utc), "fr") == "5 janvier 2027"
    assert fmt_date(1799107200.0 + 3600, "en") == "January 5, 2027"  # a Unix timestamp, UTC


def test_language_names_and_picking():
    assert [language_name(lang) for lang in LANGUAGES] == [
        "English",
        "Français",
        "Kiswahili",
        "हिन्दी",
        "日本語",
    ]
    assert pick_language(None) == "en"
    assert pick_language("") == "en"
    assert pick_language("fr-CA") == "fr"
    assert pick_language("SW") == "sw"
    assert pick_language("hi_IN") == "hi"
    assert pick_language("ja") == "ja"
    assert pick_language("de") == "en"


def test_broken_translation_falls_back_to_english(monkeypatch):
    class Broken(gettext.NullTranslations):
        def gettext(self, message):
            return "{nope}"

    monkeypatch.setattr(i18n, "_translations", lambda lang: Broken())
    assert t("fr", "Hb {hb}", hb="10,5") == "Hb 10,5"


def test_render_all_writes_every_language(tmp_path):
    out = tmp_path / "all.txt"
    count = i18n.render_all(out)
    text = out.read_text("utf-8")
    assert count == len(_messages())
    for lang in LANGUAGES:
        assert text.count(f"[{lang}") >= count
