"""Message formatting as Telegram does it: HTML / Markdown parse modes into plain text plus
entities, lengths in UTF-16 code units, /command entities in what people type.

Why: the stand-in refuses markup Telegram would refuse, so such bugs show up in tests.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ApiError, bad_request


def utf16_len(text: str) -> int:
    """Telegram counts lengths and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _markup_error(what: str) -> ApiError:
    return bad_request(f"can't parse entities: {what}")


_HTML_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG_RE = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)"
    r"((?:\s+[a-zA-Z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>\"']+))?)*)\s*>"
)
_ATTR_RE = re.compile(r"([a-zA-Z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+)))?")
_HTML_CHARREF_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")
_NAMED_REFS = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


class _TextBuilder:
    """Collects parsed text and its entities with UTF-16 offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.entities: list[dict[str, Any]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.pos += utf16_len(text)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.pos > start:  # Telegram drops empty entities
            self.entities.append(
                {"type": kind, "offset": start, "length": self.pos - start, **extra}
            )

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), self.entities


def _byte_offset(src: str, index: int) -> int:
    return len(src[:index].encode("utf-8"))


def parse_html(src: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: the supported tags only, <, > and & escaped, tags closed."""
    out = _TextBuilder()
    stack: list[tuple[str, int, dict[str, Any]]] = []
    i = 0
    while i < len(src):
        c = src[i]
        if c == "<":
            m = _TAG_RE.match(src, i)
            if not m:
                raise _markup_error(
                    f"Unexpected start of a tag or an unescaped '<' at byte offset "
                    f"{_byte_offset(src, i)}"
                )
            name = m.group(2).lower()
            if m.group(1):
                if not stack or stack[-1][0] != name:
                    expected = f'"</{stack[-1][0]}>"' if stack else "no end tag"
                    raise _markup_error(
                        f"Unmatched end tag at byte offset {_byte_offset(src, i)}, expected "
                        f'{expected}, found "</{name}>"'
                    )
                tag, start, extra = stack.pop()
                out.entity(_HTML_ENTITY_TYPES[tag], start, **extra)
            else:
                if name not in _HTML_ENTITY_TYPES:
                    raise _markup_error(
                        f'Unsupported start tag "{name}" at byte offset {_byte_offset(src, i)}'
                    )
                attrs = {
                    a.group(1).lower(): a.group(2) or a.group(3) or a.group(4) or ""
                    for a in _ATTR_RE.finditer(m.group(3))
                }
                extra = {}
                if name == "a":
                    extra["url"] = attrs.get("href", "")
                elif name == "span" and attrs.get("class") != "tg-spoiler":
                    raise _markup_error('Tag "span" must have class "tg-spoiler"')
                elif name == "tg-emoji":
                    extra["custom_emoji_id"] = attrs.get("emoji-id", "")
                stack.append((name, out.pos, extra))
            i = m.end()
            continue
        if c == "&":
            m = _HTML_CHARREF_RE.match(src, i)
            if m:
                ref = m.group(1)
                if ref.startswith(("#x", "#X")):
                    out.add(chr(int(ref[2:], 16)))
                elif ref.startswith("#"):
                    out.add(chr(int(ref[1:])))
                else:
                    out.add(_NAMED_REFS[ref])
                i = m.end()
                continue
        out.add(c)
        i += 1
    if stack:
        raise _markup_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return out.result()


_MDV2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_MD_ENTITY_TYPES = {
    "*": "bold",
    "_": "italic",
    "__": "underline",
    "~": "strikethrough",
    "||": "spoiler",
    "[": "text_link",
}


def parse_markdown(src: str, *, v2: bool) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's MarkdownV2 (reserved characters must be escaped) or legacy Markdown."""
    out = _TextBuilder()
    stack: list[tuple[str, int, int]] = []  # marker, utf16 start, source index
    markers = ("||", "__", "*", "_", "~", "[") if v2 else ("*", "_", "[")
    i, n = 0, len(src)

    def unterminated(marker: str, index: int) -> ApiError:
        what = _MD_ENTITY_TYPES.get(marker, "code")
        return _markup_error(
            f"Can't find end of {what} entity at byte offset {_byte_offset(src, index)}"
        )

    while i < n:
        c = src[i]
        if c == "\\" and i + 1 < n and (v2 or src[i + 1] in "_*`["):
            out.add(src[i + 1])
            i += 2
            continue
        if c == "`":
            fence = "```" if src.startswith("```", i) else "`"
            j = src.find(fence, i + len(fence))
            if j < 0:
                raise unterminated("`", i)
            body = src[i + len(fence) : j]
            if v2:
                body = re.sub(r"\\([`\\])", r"\1", body)
            start = out.pos
            if fence == "```":
                first, nl, rest = body.partition("\n")
                language = first if nl and first and " " not in first else ""
                out.add(rest if language else body)
                out.entity("pre", start, **({"language": language} if language else {}))
            else:
                out.add(body)
                out.entity("code", start)
            i = j + len(fence)
            continue
        if c == "]" and stack and stack[-1][0] == "[":
            if src[i + 1 : i + 2] != "(":
                if v2:
                    raise _markup_error(
                        "Character ']' is reserved and must be escaped with the preceding '\\'"
                    )
            else:
                j = src.find(")", i + 2)
                if j < 0:
                    raise unterminated("[", stack[-1][2])
                url = src[i + 2 : j].replace("\\)", ")").replace("\\\\", "\\")
                _, start, _ = stack.pop()
                out.entity("text_link", start, url=url)
                i = j + 1
                continue
        marker = next((m for m in markers if src.startswith(m, i)), None)
        if marker == "_" and v2 and src.startswith("__", i):
            marker = "__"
        if marker is not None:
            if stack and stack[-1][0] == marker and marker != "[":
                _, start, _ = stack.pop()
                out.entity(_MD_ENTITY_TYPES[marker], start)
            elif marker in [s[0] for s in stack] and marker != "[":
                raise unterminated(stack[-1][0], stack[-1][2])
            elif not v2 and stack:
                out.add(marker)  # legacy Markdown does not nest
            else:
                stack.append((marker, out.pos, i))
            i += len(marker)
            continue
        if v2 and c == ">" and (i == 0 or src[i - 1] == "\n"):
            start = out.pos
            j = src.find("\n", i)
            j = n if j < 0 else j
            line, _ = parse_markdown(src[i + 1 : j], v2=True)
            out.add(line)
            out.entity("blockquote", start)
            i = j
            continue
        if v2 and c in _MDV2_RESERVED:
            raise _markup_error(
                f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            )
        out.add(c)
        i += 1
    if stack:
        raise unterminated(stack[-1][0], stack[-1][2])
    return out.result()


def render_text(
    text: str, parse_mode: str | None, entities: list[dict[str, Any]] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """What a person sees and the entities Telegram returns; outer whitespace trimmed."""
    mode = (parse_mode or "").lower()
    if entities:
        plain, ents = text, list(entities)
    elif mode == "html":
        plain, ents = parse_html(text)
    elif mode == "markdownv2":
        plain, ents = parse_markdown(text, v2=True)
    elif mode == "markdown":
        plain, ents = parse_markdown(text, v2=False)
    elif mode:
        raise bad_request(f"unsupported parse_mode {parse_mode!r}")
    else:
        plain, ents = text, []
    stripped = plain.lstrip()
    shift = utf16_len(plain) - utf16_len(stripped)
    plain = stripped.rstrip()
    limit = utf16_len(plain)
    trimmed = []
    for e in ents:
        start = max(0, e["offset"] - shift)
        end = min(limit, e["offset"] + e["length"] - shift)
        if end > start:
            trimmed.append({**e, "offset": start, "length": end - start})
    return plain, trimmed


def command_entities(text: str) -> list[dict[str, Any]]:
    """Telegram marks /commands in what people type; PTB's CommandHandler needs offset 0."""
    out = []
    for m in re.finditer(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?", text):
        out.append(
            {
                "type": "bot_command",
                "offset": utf16_len(text[: m.start()]),
                "length": utf16_len(m.group()),
            }
        )
    return out
