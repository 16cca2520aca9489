"""Limits shared by every entry point (bot, CLI, workers, the Bot API stand-in), defined once.

No imports: the bot and the CLI read these without loading the image stack.
"""

from __future__ import annotations

# Telegram's getFile limit for bots, so the bot cannot receive more; the CLI and the workers
# refuse more too, so a photo gets the same answer whichever way it comes.
MAX_BYTES = 20 * 1024 * 1024

# File name endings taken as photos (a document sent to the bot, a file in a folder given to
# the CLI): what intake decodes (JPEG, PNG, WebP, HEIC/HEIF) and BMP/TIFF, which it recognises
# and refuses with their own answer rather than "not a photo".
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".bmp", ".tif", ".tiff"}
)
