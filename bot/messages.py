"""Every text the bot sends, composed from whole translatable sentences.

Messages use Telegram's HTML parse mode; anything a person typed (a patient label) is escaped.
The result message is built from a ScreeningResult: estimate, interval, WHO category, what to
do next, a plain warning where the model is not validated for the group, and the disclaimer.
"""

from __future__ import annotations

import html
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
ROUTINE_PREGNANT = N_("Anaemia is unlikely now. Keep going to your antenatal check-ups.")

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


def result_text(result: ScreeningResult, lang: str, *, label: str | None = None) -> str:
    """The message after a successful screening: what the number means and what to do."""
    assert result.hb_g_dl is not None
    parts: list[str] = []
    if label:
        parts.append(t(lang, "<b>Patient {label}</b>", label=html.escape(label)))
    parts.append(
        t(lang, "Estimated haemoglobin (Hb): <b>{hb} g/dL</b>.", hb=_num(result.hb_g_dl, lang))
    )
    interval = result.interval_95 or result.interval_80
    if interval:
        low, high = sorted(interval)
        parts.append(
            t(
                lang,
                "The real value is very likely between {low} and {high} g/dL.",
                low=_num(low, lang),
                high=_num(high, lang),
            )
        )
    parts.append(t(lang, "Group: {group}.", group=group_label(lang, result.group)))
    borderline = result.category == "none" and result.referral == "blood_test"
    if borderline and result.anaemia_below_g_dl is not None:
        parts.append(t(lang, BORDERLINE, cutoff=_num(result.anaemia_below_g_dl, lang)))
    elif result.category in CATEGORY_TEXT:
        parts.append(t(lang, CATEGORY_TEXT[result.category]))
    if result.danger_signs:
        # danger signs always make the referral urgent, which says "go today"
        parts.append(t(lang, "You told us about danger signs."))
    if result.referral == "routine" and result.group.startswith("pregnant"):
        parts.append(t(lang, ROUTINE_PREGNANT))
    else:
        parts.append(t(lang, REFERRAL_TEXT[result.referral]))
    if not result.validated_for_group:
        parts.append(not_validated_text(lang))
    parts.append(
        t(lang, "This is a screening, not a diagnosis. Only a blood test can confirm anaemia.")
    )
    return "\n\n".join(parts)


def not_validated_text(lang: str) -> str:
    return t(
        lang,
        "<b>Warning:</b> this tool was tested only on children aged 6 months to 5 years. "
        "It was not tested for this group, so the estimate may be wrong. "
        "A blood test is the safe choice.",
    )


def heatmap_caption(lang: str) -> str:
    return t(lang, "Red areas of this picture mattered most for the estimate.")


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


def summary_line(record: dict, lang: str, tz: tzinfo = timezone.utc) -> str:
    """One line of /summary: local time (the deployment's HBSCREEN_TIMEZONE), label, group,
    estimate, advice."""
    when = datetime.fromtimestamp(record["time"], tz=tz).strftime("%H:%M")
    referral = t(lang, REFERRAL_SHORT.get(record.get("referral", ""), N_("unknown")))
    label = html.escape(record.get("label") or "-")
    group = group_label(lang, record.get("group", ""))
    if record.get("hb") is None:
        return t(
            lang,
            "{time} {label}: {group}, {referral}",
            time=when,
            label=label,
            group=group,
            referral=referral,
        )
    return t(
        lang,
        "{time} {label}: {group}, Hb {hb} g/dL, {referral}",
        time=when,
        label=label,
        group=group,
        hb=_num(record["hb"], lang),
        referral=referral,
    )


def summary_text(records: list[dict], lang: str, tz: tzinfo = timezone.utc) -> str:
    if not records:
        return t(lang, "No screenings in this session yet.")
    head = tn(
        lang,
        "<b>This session: {n} screening</b>",
        "<b>This session: {n} screenings</b>",
        len(records),
    )
    return "\n".join([head, *(summary_line(r, lang, tz) for r in records[-50:])])


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


def danger_question(lang: str, pregnant: bool) -> str:
    if pregnant:
        return t(
            lang,
            "Are any of these signs present now?\n"
            "• short of breath when resting\n"
            "• fainting\n"
            "• chest pain\n"
            "• very fast heartbeat\n"
            "• very tired, cannot do daily work\n"
            "• bleeding from the vagina",
        )
    return t(
        lang,
        "Does the person have any of these signs now?\n"
        "• short of breath when resting\n"
        "• fainting\n"
        "• chest pain\n"
        "• very fast heartbeat\n"
        "• very tired, cannot do daily work",
    )


def help_text(lang: str) -> str:
    return t(
        lang,
        "<b>How to use this bot</b>\n"
        "Send /start to check for anaemia with a photo of the inside of the lower eyelid.\n\n"
        "/worker: health worker mode, for many patients\n"
        "/language: change the language\n"
        "/privacy: what we keep and why\n"
        "/delete: delete all your data\n"
        "/cancel: stop what is happening now\n"
        "/stop: stop reminders\n\n"
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
