"""Advice that fits the person, and a health worker's day, message by message.

The wording rules of the result (never "unlikely" when the range shown reaches anaemia, the
warning first where the model is not validated, pregnancy advice), danger signs per group,
/summary per patient, /export in local time, the per-role rate limit and what it says, and
the CLI saying what the bot says. Journeys through the stand-in: tests/test_bot_worker_day.py.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from hbscreen.bot import messages
from hbscreen.bot.handlers.commands import CSV_COLUMNS, records_csv
from hbscreen.bot.handlers.photo import rate_limit_for
from hbscreen.bot.i18n import LANGUAGES, t
from hbscreen.bot.services import Person
from hbscreen.bot.storage import MemoryStore, RedisStore
from hbscreen.inference.advice import GROUPS, cutoffs_for
from hbscreen.inference.modelcard import load_card
from hbscreen.inference.result import ScreeningResult
from hbscreen.screen import format_text
from hbscreen.settings import Settings

VALIDATED = ["child-6-23m", "child-24-59m"]


def _result(
    group: str,
    referral: str,
    *,
    hb: float,
    half: float,
    validated: bool | None = None,
    danger: bool = False,
) -> ScreeningResult:
    cut = cutoffs_for(group).anaemia_below
    category = "none" if hb >= cut else "mild"
    return ScreeningResult(
        group=group,
        ok=True,
        hb_g_dl=hb,
        interval_80=(round(hb - half / 2, 1), round(hb + half / 2, 1)),
        interval_95=(round(hb - half, 1), round(hb + half, 1)),
        category=category,
        referral=referral,
        validated_for_group=group in VALIDATED if validated is None else validated,
        validated_groups=VALIDATED,
        danger_signs=danger,
        anaemia_below_g_dl=cut,
        path="x.jpg",
    )


UNLIKELY = [
    messages.REFERRAL_TEXT["routine"],
    messages.ROUTINE_CLEAR_PREGNANT,
]


@pytest.mark.parametrize("lang", LANGUAGES)
def test_never_unlikely_when_the_range_reaches_anaemia(lang):
    for group in GROUPS:
        cut = cutoffs_for(group).anaemia_below
        reaches = messages.result_text(_result(group, "routine", hb=cut + 1.0, half=3.5), lang)
        assert not any(t(lang, u) in reaches for u in UNLIKELY), (group, reaches)
        assert t(lang, messages.ROUTINE_NOT_RULED_OUT, cutoff=messages._num(cut, lang)) in reaches
        clear = messages.result_text(_result(group, "routine", hb=cut + 4.0, half=3.5), lang)
        assert any(t(lang, u) in clear for u in UNLIKELY), (group, clear)


def test_danger_signs_say_go_today_once():
    r = _result("child-24-59m", "urgent", hb=10.0, half=3.5, danger=True)
    text = messages.plain(messages.result_text(r, "en"))
    assert text.lower().count("today") == 1, text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_pregnancy_advice_in_every_pregnant_result(lang):
    advice = t(lang, messages.PREGNANCY_ADVICE)
    for group, referral in itertools.product(GROUPS, ["urgent", "blood_test", "routine"]):
        text = messages.result_text(_result(group, referral, hb=9.0, half=2.0), lang)
        assert (advice in text) is group.startswith("pregnant")
    assert "iron" in messages.PREGNANCY_ADVICE and "antenatal" in messages.PREGNANCY_ADVICE


@pytest.mark.parametrize("lang", LANGUAGES)
def test_unvalidated_warning_first_names_the_cards_groups_and_shows_a_range(lang):
    r = _result("woman", "blood_test", hb=10.3, half=2.1)
    parts = messages.result_parts(r, lang, label="P-7")
    kinds = [k for k, _ in parts]
    assert kinds[:3] == ["label", "warning", "estimate"]
    warning = parts[1][1]
    for g in VALIDATED:
        assert messages.group_label(lang, g) in warning
    estimate = parts[2][1]
    assert messages._num(8.2, lang) in estimate and messages._num(12.4, lang) in estimate
    assert messages._num(10.3, lang) not in estimate  # a range, not one number
    # The groups come from the result (the card), not from the text: another card, other words.
    r.validated_groups = ["man"]
    assert messages.group_label(lang, "man") in messages.result_text(r, lang)
    r.validated_groups = []
    assert messages.not_validated_text(lang) in messages.result_text(r, lang)


def test_the_shipped_card_decides_which_groups_are_validated():
    from hbscreen.inference.pipeline import Pipeline

    card = load_card("regression")
    pipe = Pipeline.shared()
    for group in GROUPS:
        result, _ = pipe.screen(b"not a photo", group)
        assert result.validated_for_group is (group in card.validated_groups)
        assert result.validated_groups == card.validated_groups


@pytest.mark.parametrize("lang", LANGUAGES)
def test_validated_result_gives_the_number_and_its_range(lang):
    text = messages.result_text(_result("child-24-59m", "blood_test", hb=10.3, half=2.1), lang)
    assert messages.not_validated_text(lang, VALIDATED) not in text
    number = t(lang, "Estimated haemoglobin (Hb): <b>{hb} g/dL</b>.", hb=messages._num(10.3, lang))
    assert number in text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_danger_signs_fit_the_group(lang):
    young = messages.danger_question("en", "child-6-23m")
    assert "breastfeed" in young and "lethargic" in young and "palmar pallor" in young
    assert "chest pain" not in young and "daily work" not in young
    assert messages.danger_question("en", "child-24-59m") == young
    older = messages.danger_question("en", "child-12-14y")
    assert "daily work" not in older and "breastfeed" not in older
    pregnant = messages.danger_question("en", "pregnant-3")
    assert "bleeding" in pregnant and "headache" in pregnant and "blurred vision" in pregnant
    assert "short of breath" in pregnant
    for group in GROUPS:
        assert messages.danger_question(lang, group).strip()
    # One term for "signs" in every question of a language.
    term = {"fr": "signe", "sw": "dalili", "hi": "लक्षण", "ja": "サイン", "en": "signs"}[lang]
    for group in GROUPS:
        assert term in messages.danger_question(lang, group)
    assert term in messages.danger_referral_text(lang, True)
    assert term in messages.danger_referral_text(lang, False)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_young_baby_advice_fits_a_health_worker(lang):
    worker = messages.young_baby_text("en", True)
    assert "IMCI" in worker and "6 months" in worker and "ask a health worker" not in worker
    imci = "PCIME" if lang == "fr" else "IMCI"  # the French programme's own name
    assert imci in messages.young_baby_text(lang, True)
    assert messages.young_baby_text(lang, False) != messages.young_baby_text(lang, True)


def _records() -> list[dict]:
    """A worker's morning: P-1 both eyes, P-2 one retake then both eyes, P-3 only retakes,
    P-4 with danger signs, one eye; times 06:00 UTC onwards."""
    base = 1_800_000_000 - 1_800_000_000 % 86400 + 6 * 3600
    rows = []

    def add(minute, label, group, hb=None, referral="retake", danger=False, validated=True):
        rows.append(
            {
                "time": base + 60 * minute,
                "label": label,
                "group": group,
                "hb": hb,
                "low": None if hb is None else hb - 3.5,
                "high": None if hb is None else hb + 3.5,
                "level": None if hb is None else 95,
                "validated": validated,
                "danger": danger,
                "category": None if hb is None else "mild",
                "referral": referral,
            }
        )

    add(0, "P-1", "child-6-23m", 10.1, "blood_test")
    add(1, "P-1", "child-6-23m", 10.6, "routine")
    add(5, "P-2", "woman", None, validated=False)
    add(6, "P-2", "woman", 11.1, "blood_test", validated=False)
    add(7, "P-2", "woman", 11.5, "blood_test", validated=False)
    add(10, "P-3", "man", None, validated=False)
    add(11, "P-3", "man", None, validated=False)
    add(15, "P-4", "child-24-59m", 9.0, "urgent", danger=True)
    # P-5: danger signs, referred without a photo (flow.record_referral_without_photo)
    rows.append({"time": base + 1200, "label": "P-5", "group": "pregnant-3", "hb": None,
                 "photo": False, "danger": True, "referral": "urgent"})  # fmt: skip
    return rows


@pytest.mark.parametrize("lang", LANGUAGES)
def test_summary_is_one_line_per_patient(lang):
    text = messages.summary_text(_records(), lang, ZoneInfo("Africa/Nairobi"))
    lines = text.splitlines()
    # heading, P-1..P-5, the danger legend
    assert len(lines) == 1 + 5 + 1, text
    head = lines[0]
    assert head.startswith(
        messages.tn(
            lang,
            "<b>This session: {n} patient screened</b>",
            "<b>This session: {n} patients screened</b>",
            3,
        )
    )  # P-3 had only retakes: not a screening
    assert messages.tn(lang, "{n} photo checked", "{n} photos checked", 8) in head
    p1, p2, p3, p4, p5 = lines[1:6]
    assert p1.startswith("09:00 P-1")  # Nairobi is UTC+3
    assert "10.1 / 10.6" in p1.replace(",", ".")  # both eyes on one line
    assert t(lang, "blood test") in p1  # the more urgent of the two eyes
    assert "–" in p2  # not validated for women: ranges, as the result shows them
    assert t(lang, "new photo needed") in p3 and "Hb" not in p3
    assert p4.startswith("09:15 ⚠️ P-4") and t(lang, "go today") in p4
    assert p5.startswith("09:20 ⚠️ P-5") and t(lang, "go today") in p5 and "Hb" not in p5


def test_csv_export_in_local_time_with_danger_level_and_validation():
    rows = list(
        csv.DictReader(io.StringIO(records_csv(_records(), ZoneInfo("Asia/Kolkata")).decode()))
    )
    assert list(rows[0]) == CSV_COLUMNS
    assert rows[0]["time"].endswith("+05:30") and "T11:30:00" in rows[0]["time"]
    assert rows[0]["validated_for_group"] == "yes" and rows[3]["validated_for_group"] == "no"
    assert rows[7]["danger_signs"] == "yes" and rows[0]["danger_signs"] == "no"
    assert rows[0]["interval_level"] == "95%" and rows[2]["interval_level"] == ""
    assert rows[0]["group"] == "child-6-23m"
    assert rows[8]["referral"] == "urgent" and rows[8]["estimate"] == ""  # referred, no photo


@pytest.mark.parametrize("lang", LANGUAGES)
def test_rate_limit_says_when_to_go_on(lang):
    tz = ZoneInfo("Africa/Nairobi")
    now = 1_800_000_000  # 08:00 UTC, 11:00 in Nairobi
    text = messages.rate_limited_text(lang, now + 12 * 60 + 5, now, tz)
    assert "11:12" in text and "13" in text  # minutes round up, local clock time
    assert "1" in messages.rate_limited_text(lang, now + 5, now, tz)  # never "0 minutes"


def test_rate_limit_per_role_is_configurable():
    settings = Settings(telegram_bot_token=None)
    worker = Person("h", 1, {"mode": "worker"})
    person = Person("h", 1, {"mode": "self"})
    assert rate_limit_for(settings, worker) == 200
    assert rate_limit_for(settings, person) == 20
    custom = Settings(telegram_bot_token=None, worker_rate_limit_per_hour=60)
    assert rate_limit_for(custom, worker) == 60


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    s = RedisStore(request.getfixturevalue("redis_url"), prefix="t:")
    yield s
    await s.close()


async def test_store_says_when_a_slot_frees(store):
    start = time.time()
    assert await store.rate_free_at("p", 2) <= time.time()  # free now
    assert await store.hit_rate("p", 2) and await store.hit_rate("p", 2)
    assert not await store.hit_rate("p", 2)
    free = await store.rate_free_at("p", 2)
    assert start + 3600 <= free <= time.time() + 3600


def _plain_result(r: ScreeningResult, lang: str = "en") -> str:
    return messages.plain(messages.result_text(r, lang))


def test_cli_says_what_the_bot_says():
    borderline = _result("child-24-59m", "blood_test", hb=11.1, half=3.5)
    borderline.category = "none"
    text = format_text(borderline)
    assert "no anaemia" not in text
    assert messages.plain(t("en", messages.BORDERLINE, cutoff="11.0")) in text
    assert messages.plain(t("en", messages.REFERRAL_TEXT["blood_test"])) in text
    routine = format_text(_result("child-24-59m", "routine", hb=12.0, half=3.5))
    assert "unlikely" not in routine  # the range reaches below 11.0
    unvalidated = format_text(_result("pregnant-2", "blood_test", hb=10.0, half=3.5))
    lines = unvalidated.splitlines()
    assert lines[1].split()[0] == "Caution"  # the warning first
    assert messages.plain(messages.not_validated_text("en", VALIDATED)) in unvalidated
    assert "between 6.5 and 13.5 g/dL" in unvalidated
    assert messages.plain(t("en", messages.PREGNANCY_ADVICE)) in unvalidated
    # No HTML in a terminal.
    assert not re.search(r"</?b>", unvalidated)
    french = format_text(_result("woman", "urgent", hb=7.0, half=3.5, danger=True), "fr")
    assert "aujourd’hui" in french or "aujourd'hui" in french


def test_cli_text_in_another_language(tmp_path, capsys):
    from hbscreen.cli import main
    from tests.synthetic import jpeg, synthetic_photo
    from tests.tiny_models import build_tiny_models

    models = build_tiny_models(tmp_path / "models")
    photo = tmp_path / "a.jpg"
    photo.write_bytes(jpeg(synthetic_photo()))
    args = ["screen", str(photo), "--group", "pregnant-2", "--models", str(models)]
    assert main([*args, "--out", str(tmp_path / "o"), "--lang", "fr"]) == 0
    text = capsys.readouterr().out
    assert t("fr", messages.PREGNANCY_ADVICE) in text
    disclaimer = "This is a screening, not a diagnosis. Only a blood test can confirm anaemia."
    assert t("fr", disclaimer) in text
    assert "no anaemia" not in text and "<b>" not in text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_long_day_fits_one_message(lang):
    """Two hundred patients: the newest lines that fit in Telegram's 4096, the rest counted."""
    base = 1_800_000_000
    records = [
        {"time": base + 60 * i, "label": f"P-{i:017d}", "group": "pregnant-3", "hb": 9.0,
         "low": 5.5, "high": 12.5, "level": 95, "validated": False, "danger": i % 7 == 0,
         "category": "moderate", "referral": "blood_test"}
        for i in range(200)
    ]  # fmt: skip
    text = messages.summary_text(records, lang)
    assert messages._units(text) <= messages.MESSAGE_LIMIT
    lines = text.splitlines()
    assert f"P-{199:017d}" in lines[-2]  # the newest patient is there, before the legend
    shown = sum(1 for x in lines if "P-0" in x)
    earlier = messages.tn(
        lang, "{n} earlier patient: see /export.", "{n} earlier patients: see /export.", 200 - shown
    )
    assert lines[1] == earlier


def test_cli_refusal_in_the_persons_language():
    """A refused photo's hint is the bot's sentence in the chosen language (real models)."""
    from hbscreen.inference.pipeline import Pipeline

    photo = Path(__file__).resolve().parent.parent / "examples" / "blurry.jpg"
    result, _ = Pipeline.shared().screen(photo.read_bytes(), "woman")
    assert not result.ok
    french = format_text(result, "fr")
    assert t("fr", messages.RETAKE_HINTS["blurry"]) in french and "[blurry]" in french
    assert result.quality is not None and result.quality.failing[0].message in format_text(result)
