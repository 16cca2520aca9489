"""Unit tests of the bot's parts: pseudonyms and sealed chat ids, both stores (the same
behaviour on Redis and in memory), every message in every language, small helpers."""

from __future__ import annotations

import csv
import io
import itertools

import pytest
from telegram import Document

from hbscreen.bot import messages
from hbscreen.bot.handlers.commands import records_csv
from hbscreen.bot.handlers.flow import looks_like_a_name
from hbscreen.bot.handlers.photo import is_image_document
from hbscreen.bot.i18n import LANGUAGES, fmt_number, t
from hbscreen.bot.storage import KeyRing, MemoryStore, RedisStore, TamperedError
from hbscreen.inference.advice import GROUPS, cutoffs_for
from hbscreen.inference.quality import CHECK_CODES
from hbscreen.inference.result import ErrorInfo, Quality, QualityCheck, ScreeningResult

QUALITY_CODES = list(CHECK_CODES)  # every code the gate can answer with has its own hint


def test_pseudonyms_are_stable_keyed_and_not_the_id():
    a, b = KeyRing(b"key-one"), KeyRing(b"key-two")
    assert a.person(42) == a.person(42) != a.person(43)
    assert a.person(42) != b.person(42)
    assert "777000123" not in a.person(777000123) and len(a.person(42)) == 32


@pytest.mark.parametrize("chat_id", [777000123, -1001234567890, 2**62])
def test_sealed_chat_ids_open_only_with_the_key(chat_id):
    ring = KeyRing(b"secret")
    token = ring.seal(chat_id)
    assert ring.open(token) == chat_id
    assert ring.seal(chat_id) != token  # a fresh nonce each time: tokens cannot be linked
    assert str(chat_id) not in token
    with pytest.raises(TamperedError):
        KeyRing(b"other").open(token)
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(TamperedError):
        ring.open(tampered)
    with pytest.raises(TamperedError):
        ring.open("not-a-token")


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    s = RedisStore(url, prefix="t:", sealer=KeyRing(b"secret").records)
    yield s
    await s.close()


async def test_stored_values_are_sealed_and_a_tampered_record_is_rejected(redis_url) -> None:
    store = RedisStore(redis_url, prefix="t:", sealer=KeyRing(b"secret").records)
    try:
        await store.update_profile("p", group="pregnant-2", lang="sw")
        await store.add_record("p", {"time": 1.0, "hb": 10.4, "group": "pregnant-2"})
        await store.add_record("p", {"time": 2.0, "hb": 12.9, "group": "pregnant-2"})
        raw = await store.r.lrange("t:person:p:records", 0, -1)
        assert all("10.4" not in x and "pregnant" not in x for x in raw)
        assert "pregnant" not in str(await store.r.hgetall("t:person:p"))
        assert 0 < await store.r.ttl("t:person:p:records") <= store.record_ttl_s
        assert [r["hb"] for r in await store.records("p")] == [10.4, 12.9]

        # one bit flipped in the second record: refused with a clear error, not misread
        flipped = raw[1][:-3] + ("A" if raw[1][-3] != "A" else "B") + raw[1][-2:]
        await store.r.lset("t:person:p:records", 1, flipped)
        with pytest.raises(TamperedError, match="'records' failed authentication"):
            await store.records("p")
        # a sealed value copied to another person does not open either
        await store.r.lset("t:person:p:records", 1, raw[1])
        await store.r.rpush("t:person:q:records", raw[0])
        with pytest.raises(TamperedError):
            await store.records("q")
        # nor with another key
        other = RedisStore(redis_url, prefix="t:", sealer=KeyRing(b"other").records)
        with pytest.raises(TamperedError):
            await other.get_profile("p")
        await other.close()
    finally:
        await store.close()


async def test_migration_drops_records_of_the_old_scheme_once(redis_url) -> None:
    store = RedisStore(redis_url, prefix="t:", sealer=KeyRing(b"secret").records)
    try:
        await store.r.hset("t:person:old", mapping={"lang": '"fr"'})  # version 1: plain JSON
        await store.r.rpush("t:person:old:records", '{"hb": 11.0}')
        await store.r.hset("t:conv:screening", "old", "3")
        await store.r.zadd("t:reminders", {"old": 1.0})
        await store.r.hset("t:stats:2026-11-01", "camp|routine", 4)
        assert await store.migrate() == 4
        assert await store.get_profile("old") == {} and await store.records("old") == []
        assert await store.stats(["2026-11-01"]) == {"2026-11-01": {"camp|routine": 4}}
        await store.update_profile("new", lang="en")
        assert await store.migrate() == 0  # once only: new records stay
        assert await store.get_profile("new") == {"lang": "en"}
    finally:
        await store.close()


async def test_store_rate_limit(store):
    assert [await store.hit_rate("p", 3) for _ in range(5)] == [True] * 3 + [False] * 2
    assert await store.hit_rate("q", 3)  # per person
    assert await store.hit_rate("p", 3, window_s=0.0)  # the window slides


async def test_store_tickets_pop_once(store):
    await store.put_ticket("t1", "p", {"chat": "x"}, ttl_s=60)
    await store.update_ticket("t1", job_id="j1")
    assert await store.tickets_of("p") == ["t1"]
    assert (await store.get_ticket("t1"))["job_id"] == "j1"
    first, second = await store.pop_ticket("t1"), await store.pop_ticket("t1")
    assert first == {"chat": "x", "job_id": "j1", "h": "p"} and second is None
    assert await store.tickets_of("p") == []


async def test_store_delete_person_leaves_nothing(store):
    await store.update_profile("p", lang="fr", consent_version="v1")
    await store.update_profile("other", lang="en")
    await store.add_record("p", {"time": 1.0, "hb": 11.0})
    await store.hit_rate("p", 5)
    await store.put_ticket("t1", "p", {}, ttl_s=60)
    await store.set_reminder("p", 1.0)
    await store.set_conversation("screening", "p", 7)
    await store.count_stat("2026-11-26", "camp", "routine")
    await store.delete_person("p")
    assert await store.get_profile("p") == {}
    assert await store.records("p") == []
    assert await store.get_ticket("t1") is None
    assert await store.due_reminders(2.0) == []
    assert await store.get_conversations("screening") == {}
    assert await store.get_profile("other") == {"lang": "en"}
    assert await store.stats(["2026-11-26"]) == {"2026-11-26": {"camp|routine": 1}}
    if isinstance(store, RedisStore):
        keys = [k async for k in store.r.scan_iter(match="t:*")]
        assert not [k for k in keys if k.split(":")[2:3] == ["p"] or k.endswith(":p")], keys


async def test_store_reminders_fire_once(store):
    await store.set_reminder("p", 10.0)
    await store.set_reminder("q", 99.0)
    assert await store.due_reminders(5.0) == []
    assert await store.due_reminders(50.0) == ["p"]
    assert await store.due_reminders(50.0) == []
    await store.cancel_reminder("q")
    assert await store.due_reminders(100.0) == []


def _result(group: str, category: str, referral: str, validated: bool, danger: bool):
    return ScreeningResult(
        group=group,
        ok=True,
        hb_g_dl=10.25,
        interval_80=(9.0, 11.5),
        interval_95=(8.1, 12.4),
        category=category,
        referral=referral,
        validated_for_group=validated,
        danger_signs=danger,
        anaemia_below_g_dl=cutoffs_for(group).anaemia_below,
    )


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_result_message_renders_in_every_language(lang):
    disclaimer = t(
        lang, "This is a screening, not a diagnosis. Only a blood test can confirm anaemia."
    )
    for group, category, referral, validated, danger in itertools.product(
        GROUPS,
        ["none", "mild", "moderate", "severe"],
        ["urgent", "blood_test", "routine"],
        [True, False],
        [True, False],
    ):
        text = messages.result_text(_result(group, category, referral, validated, danger), lang)
        assert disclaimer in text
        assert (messages.not_validated_text(lang) in text) is (not validated)
        if not validated:  # the warning comes first, the number only as a range
            assert text.startswith(messages.not_validated_text(lang))
            assert t(lang, "Estimated haemoglobin (Hb): <b>{hb} g/dL</b>.", hb="10.3") not in text
        assert "{" not in text and "}" not in text
    labelled = messages.result_text(
        _result("woman", "none", "routine", False, False), lang, label="<P-1>"
    )
    assert "&lt;P-1&gt;" in labelled  # typed labels are escaped for HTML


@pytest.mark.parametrize("lang", LANGUAGES)
def test_an_estimate_above_the_cut_off_sent_for_a_test_says_why_not_normal(lang):
    text = messages.result_text(_result("child-24-59m", "none", "blood_test", True, False), lang)
    normal = t(lang, messages.CATEGORY_TEXT["none"])
    assert normal not in text
    assert t(lang, messages.BORDERLINE, cutoff=fmt_number(11.0, lang, 1)) in text
    assert t(lang, messages.REFERRAL_TEXT["blood_test"]) in text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_numbers_use_the_locale(lang):
    text = messages.result_text(_result("woman", "mild", "blood_test", True, False), lang)
    if lang == "fr":
        assert "10,3" in text and "8,1" in text
    else:
        assert "10.3" in text


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_quality_failure_has_its_own_retake_hint(lang):
    hints = set()
    for code in QUALITY_CODES:
        text = messages.retake_text([code], lang, failures=1)
        hint = t(lang, messages.RETAKE_HINTS[code])
        assert hint in text
        hints.add(hint)
    assert len(hints) == len(QUALITY_CODES)
    after_three = messages.retake_text(["too_dark"], lang, failures=3)
    assert len(after_three) > len(messages.retake_text(["too_dark"], lang, failures=1))
    assert messages.retake_text(["some_new_check"], lang, 1)  # unknown codes: generic hint


@pytest.mark.parametrize("lang", LANGUAGES)
def test_other_messages_render(lang):
    from hbscreen.inference.errors import ErrorCode

    for code in ErrorCode:
        assert messages.error_text(code.value, lang)
    records = [
        {"time": 0.0, "label": "P-1", "group": "woman", "hb": 11.0, "referral": "routine"},
        {"time": 60.0, "label": "", "group": "man", "hb": None, "referral": "retake"},
    ]
    assert "P-1" in messages.summary_text(records, lang)
    assert messages.summary_text([], lang)
    from zoneinfo import ZoneInfo

    nairobi = messages.summary_text(records, lang, ZoneInfo("Africa/Nairobi"))
    assert "03:00" in nairobi and "00:00" not in nairobi  # UTC+3, the campaign's clock
    stats = {"2026-11-26": {"camp|routine": 3, "|urgent": 1}}
    text = messages.stats_text(stats, lang, 14)
    assert "camp" in text and "3" in text
    assert messages.stats_text({}, lang, 14)
    for text in (
        messages.consent_text(lang),
        messages.photo_guide_text(lang),
        messages.help_text(lang),
        messages.privacy_text(lang, "v1", 1.7e9),
        *(messages.danger_question(lang, g) for g in GROUPS),
        messages.danger_referral_text(lang, True),
        messages.danger_referral_text(lang, False),
        messages.young_baby_text(lang, True),
        messages.young_baby_text(lang, False),
        messages.rate_limited_text(lang, 3600.0, 100.0),
        messages.could_not_process_text(lang),
        messages.heatmap_caption(lang),
    ):
        assert text.strip()


def test_a_quality_result_is_a_retake():
    q = Quality(ok=False, checks=[QualityCheck(code="too_dark", passed=False)])
    r = ScreeningResult(group="woman", ok=False, referral="retake", quality=q)
    assert r.quality.failing_codes == ["too_dark"]
    r2 = ScreeningResult(
        group="woman", ok=False, referral="retake", error=ErrorInfo(code="corrupt", message="x")
    )
    assert messages.error_text(r2.error.code, "en") == t("en", messages.ERROR_TEXT["corrupt"])


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("P-12", False),
        ("12", False),
        ("bed3", False),
        ("Amina", True),
        ("Amina Mensah", True),
        ("आमिना", True),
        ("アミナ", True),
    ],
)
def test_labels_without_digits_look_like_names(label, name):
    assert looks_like_a_name(label) is name


def test_csv_export_is_safe_for_spreadsheets():
    rows = [
        {
            "time": 0.0,
            "label": "=HYPERLINK(1)",
            "group": "woman",
            "hb": 11.04,
            "low": 9.0,
            "high": 13.0,
            "category": "none",
            "referral": "routine",
        }
    ]
    parsed = list(csv.DictReader(io.StringIO(records_csv(rows).decode())))
    assert parsed[0]["label"] == "'=HYPERLINK(1)"
    assert parsed[0]["estimate"] == "11.0" and parsed[0]["time"].startswith("1970-01-01T00:00")


@pytest.mark.parametrize(
    ("mime", "name", "ok"),
    [
        ("image/jpeg", "a.jpg", True),
        ("image/png", "a.png", True),
        ("image/heic", "a.heic", True),
        ("image/gif", "a.gif", False),
        ("application/pdf", "a.pdf", False),
        ("application/octet-stream", "a.jpg", True),
        ("application/octet-stream", "a.bin", False),
        (None, "a.jpeg", True),
        (None, "a.txt", False),
    ],
)
def test_image_documents(mime, name, ok):
    doc = Document(file_id="f", file_unique_id="u", file_name=name, mime_type=mime)
    assert is_image_document(doc) is ok
