"""A health worker's morning, end to end: ten patients through the real bot, the Bot API
stand-in over HTTP, Redis and a worker running the shipped ONNX models.

Both eyes for most patients, a retake, a baby under 6 months (not screened), danger signs with
and without a photo, then /summary, /export and /help. Set HBSCREEN_TRANSCRIPT=FILE to keep the
conversation as she saw it (it is also printed when the test fails).
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

from hbscreen.bot.i18n import t
from hbscreen.bot.messages import danger_referral_text, young_baby_text
from hbscreen.inference.modelcard import load_card
from tests.bot_harness import (
    bot_settings,
    buttons_of,
    press,
    real_worker,
    running_bot,
    tap,
)
from tests.synthetic import jpeg

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RESULT_WAIT = 60.0
# label, group, eyes (photos that give a result), what happens
PATIENTS = [
    ("P-01", "child-6-23m", 2, ""),
    ("P-02", "child-24-59m", 2, ""),
    ("P-03", "pregnant-2", 2, ""),
    ("P-04", "woman", 2, "retake"),  # a dark photo first
    ("P-05", "baby", 0, "baby"),  # younger than 6 months: not screened
    ("P-06", "child-24-59m", 1, "danger-photo"),  # danger signs, then a photo all the same
    ("P-07", "man", 1, ""),
    ("P-08", "child-5-11y", 2, ""),
    ("P-09", "pregnant-3", 0, "danger"),  # danger signs, referred without a photo
    ("P-10", "child-6-23m", 2, ""),
]


def plain(text: str) -> str:
    return text.replace("<b>", "").replace("</b>", "")


def is_result(m) -> bool:
    return "after:done" in buttons_of(m) and "after:eye" in buttons_of(m)


def dark(photo: bytes) -> bytes:
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), np.float32)
    return jpeg((rgb * 0.12).astype(np.uint8))


async def _one_patient(
    user, label: str, group: str, eyes: int, what: str, photo: bytes, *, first: bool
):
    """One patient as the card flow has it: the label (asked by a message for the first
    patient, by a toast after "Next patient"), one flat group keyboard on a card that then
    asks the danger signs, the photo(s)."""
    lang = "en"
    if first:
        await user.wait_for_text("P-12")  # the label prompt
    await user.send_text(label)
    card = await user.wait_for(
        lambda m: label in m.content and "grp:man" in buttons_of(m), 15, f"the card of {label}"
    )
    await user.tap_button(f"grp:{group}", message=card)
    if group == "baby":
        await user.wait_for_text(plain(young_baby_text(lang, worker=True)).split("\n")[0])
        await press(user, "after:other")
        return
    await user.wait_for(
        lambda m: m.message_id == card.message_id and "danger:no" in buttons_of(m),
        15,
        "the danger question",
    )
    danger = what.startswith("danger")
    await user.tap_button("danger:yes" if danger else "danger:no", message=card)
    if danger:
        urgent = await user.wait_for_text(plain(danger_referral_text(lang, True)).split("\n")[0])
        assert "danger:photo" in buttons_of(urgent)
        if what == "danger":
            await press(user, "after:other")
            return
        # She sends the photo without tapping "Take the photo anyway": that is her answer.
    if what == "retake":
        await user.send_photo(dark(photo))
        await user.wait_for_text(t(lang, "The photo could not be judged. Please take a new photo."))
    for eye in range(eyes):
        if eye:
            await press(user, "after:eye")  # answered with a toast: the next step is hers
        await user.send_photo(photo)
        result = await user.wait_for(is_result, RESULT_WAIT, f"the result for {label}")
        assert label in result.content
    await press(user, "after:other")


async def test_a_health_workers_morning_of_ten_patients(standin, redis_url, models_dir, photo):
    tz = "Africa/Nairobi"
    settings = bot_settings(standin, redis_url, timezone=tz)
    user = standin.user(301, "Grace", language_code="en")
    try:
        async with running_bot(settings), real_worker(settings, models_dir):
            await user.send_command("/worker")
            await tap(user, "consent:yes")  # one card: consent, with English already marked
            for n, patient in enumerate(PATIENTS):
                await _one_patient(user, *patient, photo=photo, first=n == 0)
            await user.wait_idle(0.5)  # "Next patient" after P-10: ready for an eleventh
            await user.send_command("/summary")
            summary = await user.wait_for_text("P-10")
            await user.send_command("/export")
            doc = await user.wait_for_document()
            await user.send_command("/help")
            help_msg = await user.wait_for_text("/summary")
            await user.wait_idle(0.5)
    finally:
        if os.environ.get("HBSCREEN_TRANSCRIPT"):
            Path(os.environ["HBSCREEN_TRANSCRIPT"]).write_text(user.transcript(), "utf-8")

    lines = summary.content.splitlines()
    # heading; P-01..P-10 without the baby (never screened, nothing kept); the danger legend
    patient_lines = [x for x in lines if x[:5].count(":") == 1 and " P-" in x]
    assert len(patient_lines) == 9, summary.content
    assert "8 patients screened" in lines[0]  # P-05 not screened, P-09 referred without photo
    assert "15 photos checked" in lines[0]  # 14 results + 1 retake
    p04 = next(x for x in patient_lines if "P-04" in x)
    assert p04.count(" / ") == 1  # both eyes on one line, the retake not counted
    assert any("⚠️ P-09" in x and t("en", "go today") in x for x in patient_lines)
    assert any("⚠️ P-06" in x for x in patient_lines)

    assert re.fullmatch(r"screenings-\d{4}-\d{2}-\d{2}\.csv", doc.file_name or ""), doc
    rows = list(csv.DictReader(io.StringIO(doc.data.decode())))
    assert len(rows) == 16  # 14 results, 1 retake, 1 referral without a photo
    assert all(r["time"].endswith("+03:00") for r in rows)  # Nairobi, no daylight saving
    assert {r["label"] for r in rows} == {p[0] for p in PATIENTS} - {"P-05"}
    p06 = [r for r in rows if r["label"] == "P-06"]
    assert p06[0]["danger_signs"] == "yes" and p06[0]["referral"] == "urgent"
    validated = load_card("regression").validated_groups  # the card decides, not this test
    for r in rows:
        if r["label"] == "P-09":  # referred without a photo: no model was asked
            assert r["validated_for_group"] == "" and r["estimate"] == ""
        else:
            assert r["validated_for_group"] == ("yes" if r["group"] in validated else "no")
    assert {r["interval_level"] for r in rows if r["estimate"]} == {"95%"}

    for command in ("/worker", "/summary", "/export"):
        assert command in help_msg.content
