"""Inline keyboards. Callback data is "<kind>:<value>", short and free of personal data."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from .i18n import LANGUAGES, language_name, t


def _kb(*rows: list[tuple[str, str]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(text, callback_data=data) for text, data in row] for row in rows]
    )


def languages() -> InlineKeyboardMarkup:
    return _kb(*[[(language_name(lang), f"lang:{lang}")] for lang in LANGUAGES])


def consent(lang: str, *, with_languages: bool = False) -> InlineKeyboardMarkup:
    """Yes / No; on the first card also the languages, so a person whose phone language is
    right answers in one tap and anyone else switches the card's language in place."""
    rows = [[(t(lang, "Yes, I agree"), "consent:yes"), (t(lang, "No"), "consent:no")]]
    if with_languages:
        names = [
            (("✓ " if code == lang else "") + language_name(code), f"lang:{code}")
            for code in LANGUAGES
        ]
        rows += [names[i : i + 3] for i in range(0, len(names), 3)]
    return _kb(*rows)


def who(lang: str) -> InlineKeyboardMarkup:
    return _kb(
        [(t(lang, "Me"), "who:me"), (t(lang, "Someone else"), "who:other")],
        [(t(lang, "I am a health worker"), "who:worker")],
    )


def patient_consent(lang: str) -> InlineKeyboardMarkup:
    return _kb([(t(lang, "Yes, they agree"), "pc:yes"), (t(lang, "No"), "pc:no")])


def group(lang: str, *, refuse: bool = False) -> InlineKeyboardMarkup:
    """Four broad groups (pregnancy month and child age come next); `refuse` adds a "No" for
    a person who does not agree to be screened."""
    rows = [
        [(t(lang, "Pregnant woman"), "grp:pregnant")],
        [(t(lang, "Child (under 15 years)"), "grp:child")],
        [(t(lang, "Woman, not pregnant"), "grp:woman")],
        [(t(lang, "Man (15 years or older)"), "grp:man")],
    ]
    if refuse:
        rows.append([(t(lang, "No"), "pc:no")])
    return _kb(*rows)


FLAT_GROUPS = (
    "pregnant-1",
    "pregnant-2",
    "pregnant-3",
    "baby",
    "child-6-23m",
    "child-24-59m",
    "child-5-11y",
    "child-12-14y",
    "woman",
    "man",
)


def group_flat(lang: str, *, refuse: bool = True) -> InlineKeyboardMarkup:
    """Every group in one keyboard, for health workers: one tap per patient, not two."""
    from .messages import GROUP_LABELS

    rows = []
    for code in FLAT_GROUPS:
        if code == "baby":
            label = t(lang, "Baby, younger than 6 months")
        else:
            label = t(lang, GROUP_LABELS[code])
        rows.append([(label, f"grp:{code}")])
    if refuse:
        rows.append([(t(lang, "No"), "pc:no")])
    return _kb(*rows)


def trimester(lang: str) -> InlineKeyboardMarkup:
    return _kb(
        [(t(lang, "Months 1 to 3"), "grp:pregnant-1")],
        [(t(lang, "Months 4 to 6"), "grp:pregnant-2")],
        [(t(lang, "Months 7 to 9"), "grp:pregnant-3")],
    )


def child_age(lang: str) -> InlineKeyboardMarkup:
    return _kb(
        [(t(lang, "Younger than 6 months"), "grp:baby")],
        [(t(lang, "6 to 23 months"), "grp:child-6-23m")],
        [(t(lang, "2 to 4 years"), "grp:child-24-59m")],
        [(t(lang, "5 to 11 years"), "grp:child-5-11y")],
        [(t(lang, "12 to 14 years"), "grp:child-12-14y")],
    )


def danger(lang: str, *, guide: bool = False) -> InlineKeyboardMarkup:
    """Yes / No, a way back to the group, and (once the guide was shown) the guide again."""
    rows = [
        [(t(lang, "Yes, one or more"), "danger:yes"), (t(lang, "No"), "danger:no")],
        [(t(lang, "Change the group"), "grp:change")],
    ]
    if guide:
        rows.append([(t(lang, "📷 How to take the photo"), "guide:show")])
    return _kb(*rows)


def show_guide(lang: str) -> InlineKeyboardMarkup:
    return _kb([(t(lang, "📷 How to take the photo"), "guide:show")])


def after_danger(lang: str, worker: bool) -> InlineKeyboardMarkup:
    """After a danger sign: the photo is optional, the next step is not."""
    other = t(lang, "Next patient") if worker else t(lang, "Screen someone else")
    return _kb(
        [(t(lang, "Take the photo anyway"), "danger:photo")],
        [(other, "after:other")],
        [(t(lang, "Done"), "after:done")],
    )


def young_baby(lang: str, worker: bool) -> InlineKeyboardMarkup:
    other = t(lang, "Next patient") if worker else t(lang, "Screen someone else")
    return _kb([(other, "after:other")], [(t(lang, "Done"), "after:done")])


def after_result(lang: str, worker: bool) -> InlineKeyboardMarkup:
    other = t(lang, "Next patient") if worker else t(lang, "Screen someone else")
    return _kb(
        [(t(lang, "Screen the other eye"), "after:eye")],
        [(other, "after:other")],
        [(t(lang, "Done"), "after:done")],
    )


def reminder(lang: str, weeks: int) -> InlineKeyboardMarkup:
    return _kb(
        [
            (t(lang, "Yes, remind me"), f"remind:yes:{weeks}"),
            (t(lang, "No, thank you"), "remind:no"),
        ]
    )


def delete_confirm(lang: str) -> InlineKeyboardMarkup:
    return _kb(
        [(t(lang, "Yes, delete everything"), "del:yes")], [(t(lang, "No, keep it"), "del:no")]
    )
