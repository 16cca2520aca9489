"""Every text the bot sends, composed from whole translatable sentences.

Messages use Telegram's HTML parse mode; anything a person typed (a patient label) is escaped.
The result message is built from a ScreeningResult: estimate, interval, WHO category, what to
do next, a plain warning where the model is not validated for the group, and the disclaimer.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime, timezone, tzinfo

from hbscreen.inference import quality
from hbscreen.inference.result import ScreeningResult

from .i18n import N_, fmt_date, fmt_number, t, tn

# Groups as a person reads them (inference/advice.py GROUPS are the keys).
GROUP_LABELS: dict[str, str] = {
    "child-6-23m": N_("Child, 6 to 23 months"),
    "child-24-59m": N_("Child, 2 to 4 years"),
    "child-5-11y": N_("Child, 5 to 11 years"),
    "child-12-14y": N_("Child, 12 to 14 years"),
    "woman": N_("Woman, not pregnant"),
    "pregnant-1": N_("Pregnant, months 1 to 3"),
    "pregnant-2": N_("Pregnant, months 4 to 6"),
    "pregnant-3": N_("Pregnant, months 7 to 9"),
    "man": N_("Man"),
}

CATEGORY_TEXT: dict[str, str] = {
    "none": N_("This is in the normal range for this group."),
    "mild": N_("This is in the range of mild anaemia for this group."),
    "moderate": N_("This is in the range of moderate anaemia for this group."),
    "severe": N_("This is in the range of severe anaemia for this group."),
}

# An estimate above the cut-off but within the referral margin: say why a test still helps.
BORDERLINE = N_(
    "This is close to the anaemia limit for this group ({cutoff} g/dL). "
    "A photo cannot tell the difference so finely."
)

REFERRAL_TEXT: dict[str, str] = {
    "urgent": N_("<b>Go to a health facility today.</b> Ask for a blood test for anaemia."),
    "blood_test": N_(
        "<b>Get a blood test within a week.</b> Anaemia is possible. "
        "A HemoCue or laboratory test can confirm it."
    ),
    "routine": N_("Anaemia is unlikely now. Keep your routine check-ups."),
    "retake": N_("The photo could not be judged. Please take a new photo."),
}
# Routine care, but the range shown still reaches below the cut-off: "unlikely" would
# contradict the numbers on the screen.
ROUTINE_NOT_RULED_OUT = N_(
    "The estimate is above the anaemia limit for this group ({cutoff} g/dL), "
    "but the range reaches below it, so anaemia is not ruled out. "
    "There is no hurry: ask for a blood test at the next check-up."
)
ROUTINE_CLEAR_PREGNANT = N_("Anaemia is unlikely now.")
# Every pregnant woman hears this, whatever the result: it is the WHO antenatal routine.
PREGNANCY_ADVICE = N_(
    "Keep taking your iron and folic acid tablets every day, "
    "and keep going to your antenatal visits."
)

# Short names of the referral levels, for /summary and /stats.
REFERRAL_SHORT: dict[str, str] = {
    "urgent": N_("go today"),
    "blood_test": N_("blood test"),
    "routine": N_("routine care"),
    "retake": N_("new photo needed"),
}

# One specific hint per quality check code (inference/quality.py); quality.primary_codes picks
# the ones worth saying when several checks fail.
RETAKE_HINTS: dict[str, str] = {
    "conjunctiva_not_found": N_(
        "I could not find the inside of the eyelid. "
        "Pull the lower eyelid down so the red part shows."
    ),
    "greyscale": N_(
        "This photo is black and white. Please send a colour photo: the colour is what is measured."
    ),
    "not_an_eyelid": N_(
        "This does not look like an eyelid. Pull the lower eyelid down and take the photo "
        "of the red inner part, with the white of the eye above it."
    ),
    "not_a_photo": N_(
        "This looks like a screenshot or a drawing. Send a photo taken with the camera "
        "of the pulled-down lower eyelid."
    ),
    "screenshot": N_(
        "This is a screenshot or a picture of a screen. Take a photo of the pulled-down lower "
        "eyelid with the phone's camera."
    ),
    "too_far": N_(
        "The eyelid is too small in the photo. Move closer so it fills most of the photo."
    ),
    "too_close": N_(
        "The phone is too close: the ends of the eyelid are outside the photo. "
        "Move the phone back a little, then tap the screen to focus."
    ),
    "conjunctiva_cut_off": N_(
        "Part of the eyelid is cut off at the edge. Keep the whole red part inside the photo "
        "and do not crop the photo."
    ),
    "blurry": N_("The photo is out of focus. Tap the screen on the eyelid to focus, then take it."),
    "motion_blur": N_(
        "The photo is smeared because the phone moved. Hold the phone with both hands "
        "and keep still while you take it."
    ),
    "compressed": N_(
        "The photo lost its detail when it was compressed. "
        "Send it as a file, or take it again at the best quality."
    ),
    "too_dark": N_("The photo is too dark. Move to a window or into daylight."),
    "too_bright": N_("The photo is too bright. Move out of direct sun into the shade."),
    "clipped": N_("Some parts are too bright or too dark. Use soft, even daylight."),
    "glare": N_("There are shiny spots. Turn off the flash and turn a little away from the light."),
    "colour_cast": N_("The colours look wrong. Use daylight, not coloured or yellow lamps."),
}
RETAKE_GENERIC = N_("Please take the photo again in daylight, close to the eye.")

# Refusals by inference/errors.py ErrorCode value.
ERROR_TEXT: dict[str, str] = {
    "not_an_image": N_("This file is not a photo. Please send a photo."),
    "unsupported_format": N_(
        "This picture format cannot be opened. Please send a JPG or PNG photo."
    ),
    "too_large": N_("This photo is too big. Please send a smaller photo."),
    "too_small": N_("This photo is too small. Please send a larger, sharper photo."),
    "corrupt": N_("This photo is damaged and cannot be opened. Please take it again and send it."),
    "animated": N_("Moving pictures cannot be checked. Please send a normal photo."),
}
ERROR_GENERIC = N_("Sorry, something went wrong while checking the photo. Please try again later.")

MAX_RETAKES_BEFORE_BLOOD_TEST = 3


def group_label(lang: str, group: str) -> str:
    return t(lang, GROUP_LABELS[group]) if group in GROUP_LABELS else group


def _num(x: float, lang: str) -> str:
    return fmt_number(x, lang, 1)


def result_parts(
    result: ScreeningResult, lang: str, *, label: str | None = None
) -> list[tuple[str, str]]:
    """The result as (kind, paragraph in HTML) pairs, in the order a person should read them.

    Kinds: label, warning, estimate, group, meaning, danger, advice, pregnancy, disclaimer.
    Where the model is not validated for the group, the warning comes first and the estimate
    is shown only as a range; "anaemia is unlikely" is said only when the whole range shown
    lies above the group's cut-off. The CLI prints the same paragraphs as plain text.
    """
    assert result.hb_g_dl is not None
    parts: list[tuple[str, str]] = []
    if label:
        parts.append(("label", t(lang, "<b>Patient {label}</b>", label=html.escape(label))))
    validated = result.validated_for_group
    if not validated:
        parts.append(("warning", not_validated_text(lang, result.validated_groups)))
    interval = result.interval_95 or result.interval_80
    low, high = sorted(interval) if interval else (result.hb_g_dl, result.hb_g_dl)
    if validated or not interval:
        hb = _num(result.hb_g_dl, lang)
        estimate = t(lang, "Estimated haemoglobin (Hb): <b>{hb} g/dL</b>.", hb=hb)
        if interval:
            estimate += " " + t(
                lang,
                "The real value is very likely between {low} and {high} g/dL.",
                low=_num(low, lang),
                high=_num(high, lang),
            )
    else:
        estimate = t(
            lang,
            "Haemoglobin (Hb) from the photo: <b>between {low} and {high} g/dL</b>. "
            "For this group the tool cannot give one number.",
            low=_num(low, lang),
            high=_num(high, lang),
        )
    parts.append(("estimate", estimate))
    parts.append(("group", t(lang, "Group: {group}.", group=group_label(lang, result.group))))
    cutoff = result.anaemia_below_g_dl
    borderline = result.category == "none" and result.referral == "blood_test"
    # Routine care while the range still reaches below the cut-off: the advice says both
    # halves of that, so "normal range" alone is not said first.
    not_ruled_out = result.referral == "routine" and cutoff is not None and low < cutoff
    if borderline and cutoff is not None:
        parts.append(("meaning", t(lang, BORDERLINE, cutoff=_num(cutoff, lang))))
    elif (
        validated
        and result.category in CATEGORY_TEXT
        and not (not_ruled_out and result.category == "none")
    ):
        parts.append(("meaning", t(lang, CATEGORY_TEXT[result.category])))
    if result.danger_signs:
        # danger signs always make the referral urgent, which says "go today" once
        parts.append(("danger", t(lang, "You told us about danger signs.")))
    pregnant = result.group.startswith("pregnant")
    if not_ruled_out:
        assert cutoff is not None
        advice = t(lang, ROUTINE_NOT_RULED_OUT, cutoff=_num(cutoff, lang))
    elif result.referral == "routine" and pregnant:
        advice = t(lang, ROUTINE_CLEAR_PREGNANT)
    else:
        advice = t(lang, REFERRAL_TEXT[result.referral])
    parts.append(("advice", advice))
    if pregnant:
        parts.append(("pregnancy", t(lang, PREGNANCY_ADVICE)))
    disclaimer = t(
        lang, "This is a screening, not a diagnosis. Only a blood test can confirm anaemia."
    )
    parts.append(("disclaimer", disclaimer))
    return parts


def result_text(result: ScreeningResult, lang: str, *, label: str | None = None) -> str:
    """The message after a successful screening: what the number means and what to do."""
    return "\n\n".join(text for _, text in result_parts(result, lang, label=label))


def plain(text: str) -> str:
    """A message without its HTML markup, as a terminal (the CLI) shows it."""
    return html.unescape(re.sub(r"</?[a-zA-Z][^<>]*>", "", text))


def not_validated_text(lang: str, validated_groups: Sequence[str] = ()) -> str:
    """The warning for a group the model was not validated for. Which groups it was validated
    for comes from the regression model card (via the result), never from this text."""
    if not validated_groups:
        return t(
            lang,
            "<b>Warning:</b> this tool has not been tested for this group, "
            "so the estimate may be wrong. A blood test is the safe choice.",
        )
    groups = "; ".join(group_label(lang, g) for g in validated_groups)
    return t(
        lang,
        "<b>Warning:</b> this tool was tested only for these groups: {groups}. "
        "It was not tested for this group, so the estimate may be wrong. "
        "A blood test is the safe choice.",
        groups=groups,
    )


def heatmap_caption(lang: str) -> str:
    return t(
        lang,
        "White line: the part of the eyelid the tool measured. "
        "Yellow: the areas that mattered most for the estimate.",
    )


def retake_text(codes: list[str], lang: str, failures: int) -> str:
    """Specific hints for the failing quality checks, never a generic error alone."""
    parts = [t(lang, "The photo could not be judged. Please take a new photo.")]
    # once each, in order, without the ones another failure makes moot (motion hides blur...)
    known = [c for c in quality.primary_codes(list(codes)) if c in RETAKE_HINTS]
    hints = [t(lang, RETAKE_HINTS[c]) for c in known]
    parts += [f"• {h}" for h in hints] or [t(lang, RETAKE_GENERIC)]
    if failures >= MAX_RETAKES_BEFORE_BLOOD_TEST:
        parts.append(
            t(
                lang,
                "The photos could not be judged several times. "
                "It is best to get a blood test at a health facility.",
            )
        )
    return "\n".join(parts)


def error_text(code: str | None, lang: str) -> str:
    return t(lang, ERROR_TEXT.get(code or "", ERROR_GENERIC))


def could_not_process_text(lang: str) -> str:
    return t(lang, "Sorry, we could not check your photo in time. Please send it again later.")


REFERRAL_ORDER = ("urgent", "blood_test", "routine", "retake")


def patients(records: list[dict]) -> list[dict]:
    """Records (one per photo) grouped into patients: a worker's label with its group, or for
    unlabelled records a run of the same group. Both eyes make one patient; a photo that had
    to be retaken is counted as a photo, never as a screening; a referral for danger signs
    without a photo is a line of its own (no estimate)."""
    out: list[dict] = []
    by_key: dict[tuple[str, str], dict] = {}
    for r in records:
        label, group = r.get("label") or "", r.get("group") or ""
        key = (label, group)
        p = by_key.get(key) if label else (out[-1] if out and out[-1]["key"] == key else None)
        if p is None:
            p = {"key": key, "time": r["time"], "label": label, "group": group, "eyes": []}
            p.update(referral="retake", danger=False, photos=0)
            out.append(p)
            if label:
                by_key[key] = p
        p["photos"] += 1 if r.get("photo", True) else 0
        p["danger"] = p["danger"] or bool(r.get("danger"))
        referral = r.get("referral") or "retake"
        if r.get("hb") is not None:
            p["eyes"].append(r)
        # a retake says nothing; a result, or a referral for danger signs without a photo, does
        if referral != "retake" and REFERRAL_ORDER.index(referral) < REFERRAL_ORDER.index(
            p["referral"]
        ):
            p["referral"] = referral
    return out


def _eye_value(record: dict, lang: str) -> str:
    """A validated estimate as one number, else its range (as the result message shows it)."""
    if record.get("validated", True) or record.get("low") is None:
        return _num(record["hb"], lang)
    return f"{_num(record['low'], lang)}–{_num(record['high'], lang)}"


def summary_line(patient: dict, lang: str, tz: tzinfo = timezone.utc) -> str:
    """One line of /summary per patient: local time of the first photo (the deployment's
    HBSCREEN_TIMEZONE), label, group, the estimate of each eye, the most urgent advice."""
    when = datetime.fromtimestamp(patient["time"], tz=tz).strftime("%H:%M")
    referral = t(lang, REFERRAL_SHORT.get(patient["referral"], N_("unknown")))
    label = html.escape(patient["label"] or "-")
    group = group_label(lang, patient["group"])
    mark = "⚠️ " if patient["danger"] else ""
    if not patient["eyes"]:
        return t(
            lang,
            "{time} {label}: {group}, {referral}",
            time=when,
            label=mark + label,
            group=group,
            referral=referral,
        )
    return t(
        lang,
        "{time} {label}: {group}, Hb {hb} g/dL, {referral}",
        time=when,
        label=mark + label,
        group=group,
        hb=" / ".join(_eye_value(e, lang) for e in patient["eyes"]),
        referral=referral,
    )


MESSAGE_LIMIT = 4096  # Telegram's limit for one text message, in UTF-16 code units


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def summary_text(records: list[dict], lang: str, tz: tzinfo = timezone.utc) -> str:
    """/summary: one line per patient of this session, the newest that fit in one message
    (the older ones are counted, and /export has them all)."""
    if not records:
        return t(lang, "No screenings in this session yet.")
    people = patients(records)
    screened = sum(1 for p in people if p["eyes"])
    head = tn(
        lang,
        "<b>This session: {n} patient screened</b>",
        "<b>This session: {n} patients screened</b>",
        screened,
    )
    checked = sum(1 for r in records if r.get("photo", True))
    photos = tn(lang, "{n} photo checked", "{n} photos checked", checked)
    head = f"{head} ({photos})"
    legend = t(lang, "⚠️ = danger signs: refer today.") if any(p["danger"] for p in people) else ""
    earlier = tn(
        lang,
        "{n} earlier patient: see /export.",
        "{n} earlier patients: see /export.",
        len(people),
    )
    budget = MESSAGE_LIMIT - _units(head) - _units(legend) - _units(earlier) - 4
    shown: list[str] = []
    for p in reversed(people):
        line = summary_line(p, lang, tz)
        if _units(line) + 1 > budget:
            break
        shown.append(line)
        budget -= _units(line) + 1
    shown.reverse()
    lines = [head]
    if len(shown) < len(people):
        hidden = len(people) - len(shown)
        lines.append(
            tn(
                lang,
                "{n} earlier patient: see /export.",
                "{n} earlier patients: see /export.",
                hidden,
            )
        )
    lines += shown
    if legend:
        lines.append(legend)
    return "\n".join(lines)


def stats_text(stats: dict[str, dict[str, int]], lang: str, days: int) -> str:
    """Counts per day, campaign and referral level: aggregate numbers only."""
    if not stats:
        return t(lang, "No screenings in the last {days} days.", days=days)
    lines = [t(lang, "<b>Screenings per day and campaign</b>")]
    for day in sorted(stats, reverse=True):
        per_campaign: dict[str, dict[str, int]] = {}
        for field, count in stats[day].items():
            campaign, _, referral = field.rpartition("|")
            per_campaign.setdefault(campaign, {})[referral] = count
        for campaign, counts in sorted(per_campaign.items()):
            lines.append(
                t(
                    lang,
                    "{day} {campaign}: go today {urgent}, blood test {blood_test}, "
                    "routine {routine}, new photo {retake}",
                    day=day,
                    campaign=html.escape(campaign) if campaign else t(lang, "(no campaign)"),
                    urgent=counts.get("urgent", 0),
                    blood_test=counts.get("blood_test", 0),
                    routine=counts.get("routine", 0),
                    retake=counts.get("retake", 0),
                )
            )
    return "\n".join(lines)


def consent_text(lang: str) -> str:
    return t(
        lang,
        "<b>Before we start</b>\n"
        "This bot looks at a photo of the inside of the lower eyelid. "
        "It estimates the haemoglobin (Hb) in the blood. Low Hb is called anaemia.\n\n"
        "This is a screening, not a diagnosis. Only a blood test can confirm anaemia.\n\n"
        "We do not keep your photo. It is deleted as soon as it is checked.\n"
        "We keep your answers and results under a secret code, without your name.\n"
        "You can delete everything at any time with /delete.\n\n"
        "Do you agree?",
    )


def photo_guide_text(lang: str) -> str:
    return t(
        lang,
        "<b>How to take the photo</b>\n"
        "1. Stand in daylight or near a bright window.\n"
        "2. Do not use the flash. Avoid shiny spots.\n"
        "3. Wash your hands. Pull the lower eyelid down with a clean finger.\n"
        "4. Come close. The red inside of the eyelid should fill most of the photo.\n\n"
        "Tip: send the photo as a file for the best quality.\n"
        "Now send the photo.",
    )


YOUNG_CHILD_GROUPS = ("child-6-23m", "child-24-59m")


def danger_question(lang: str, group: str) -> str:
    """The danger signs that fit the group: IMCI's general danger signs for young children,
    the obstetric ones in pregnancy, the signs of severe anaemia otherwise."""
    if group in YOUNG_CHILD_GROUPS:
        return t(
            lang,
            "Does the child have any of these danger signs now?\n"
            "• not able to drink or breastfeed\n"
            "• vomits everything\n"
            "• has had fits (convulsions)\n"
            "• lethargic or unconscious\n"
            "• fast or difficult breathing\n"
            "• severe palmar pallor (very pale palms)",
        )
    if group.startswith("child"):
        return t(
            lang,
            "Does the child have any of these danger signs now?\n"
            "• short of breath when resting\n"
            "• fainting\n"
            "• very fast heartbeat\n"
            "• lethargic, very weak or very sleepy\n"
            "• severe palmar pallor (very pale palms)",
        )
    if group.startswith("pregnant"):
        return t(
            lang,
            "Are any of these danger signs present now?\n"
            "• bleeding from the vagina\n"
            "• severe headache or blurred vision\n"
            "• fits (convulsions)\n"
            "• short of breath when resting\n"
            "• fainting\n"
            "• chest pain or very fast heartbeat\n"
            "• severe pain in the belly",
        )
    return t(
        lang,
        "Does the person have any of these danger signs now?\n"
        "• short of breath when resting\n"
        "• fainting\n"
        "• chest pain\n"
        "• very fast heartbeat\n"
        "• very tired, cannot do daily work",
    )


def danger_referral_text(lang: str, worker: bool) -> str:
    """Right after a danger sign: the urgent referral comes first, the photo only if wanted."""
    if worker:
        return t(
            lang,
            "⚠️ These are danger signs. <b>Refer the patient to a health facility today.</b> "
            "Do not delay the referral for a photo: the photo cannot show how sick the "
            "patient is.\n\nTake the photo only if you still want an estimate.",
        )
    return t(
        lang,
        "⚠️ These are danger signs. <b>Go to a health facility today.</b> "
        "Do not wait for a photo result.\n\n"
        "You can still take the photo if you want an estimate.",
    )


def young_baby_text(lang: str, worker: bool) -> str:
    """Babies under 6 months: WHO has no Hb cut-off for them and the model never saw them."""
    if worker:
        return t(
            lang,
            "Do not screen babies younger than 6 months with this tool. "
            "WHO gives no haemoglobin limit for anaemia at this age, and the tool was not "
            "made for them.\n\n"
            "Assess the baby as IMCI says for young infants. "
            "Refer today if you see severe palmar pallor or any danger sign.",
        )
    return t(
        lang,
        "This screening is not made for babies younger than 6 months.\n\n"
        "If the baby looks very pale, does not feed well or is very sleepy, "
        "take the baby to a health facility today.",
    )


def rate_limited_text(lang: str, free_at: float, now: float, tz: tzinfo = timezone.utc) -> str:
    """Too many photos: say when the next one will be accepted (local clock and minutes)."""
    minutes = max(1, int(-(-(free_at - now) // 60)))  # round up: never "in 0 minutes"
    when = datetime.fromtimestamp(free_at, tz=tz).strftime("%H:%M")
    return tn(
        lang,
        "You sent many photos in the last hour. You can send the next photo in {n} minute, "
        "at {time}. This keeps the service fair for everyone.",
        "You sent many photos in the last hour. You can send the next photo in {n} minutes, "
        "at {time}. This keeps the service fair for everyone.",
        minutes,
        time=when,
    )


def help_text(lang: str) -> str:
    return t(
        lang,
        "<b>How to use this bot</b>\n"
        "Send /start to check for anaemia with a photo of the inside of the lower eyelid.\n\n"
        "/language: change the language\n"
        "/privacy: what we keep and why\n"
        "/delete: delete all your data\n"
        "/cancel: stop what is happening now\n"
        "/stop: stop reminders\n\n"
        "<b>For health workers</b>\n"
        "/worker: health worker mode, one short label per patient\n"
        "/summary: one line per patient of this session\n"
        "/export: all your screenings as a CSV file\n"
        "After a result: screen the other eye, or go to the next patient.\n\n"
        "This is a screening, not a diagnosis.",
    )


def privacy_text(lang: str, consent_version: str | None, consent_at: float | None) -> str:
    parts = [
        t(
            lang,
            "<b>Privacy</b>\n"
            "We never keep your photo. It is deleted as soon as it is checked.\n"
            "We keep your language, your answers and your results. "
            "We keep them under a secret code, not under your name or your Telegram account.\n"
            "Campaign numbers are counted without any personal data.\n"
            "Send /delete to erase everything about you.",
        )
    ]
    if consent_version and consent_at:
        day = fmt_date(consent_at, lang)
        parts.append(
            t(
                lang,
                "You agreed on {date} (privacy text version {version}).",
                date=day,
                version=html.escape(consent_version),
            )
        )
    return "\n\n".join(parts)
