"""Sections of MODEL_CARD.md replaced in place by the step that measured them."""

from __future__ import annotations

LICENCE_HEADING = "## Licence and citation"  # the card's last section: new ones go before it


def replace_section(text: str, section: list[str]) -> str:
    """`text` (a MODEL_CARD.md) with the section headed by section[0] replaced, or inserted
    before the licence section where it has none."""
    heading = section[0]
    body = "\n".join(section).rstrip("\n") + "\n\n"
    start = text.find(heading + "\n")
    if start < 0:
        at = text.find(LICENCE_HEADING + "\n")
        at = len(text) if at < 0 else at
        return text[:at] + body + text[at:]
    end = text.find("\n## ", start + len(heading))
    return text[:start] + body + (text[end + 1 :] if end >= 0 else "")
