"""`hbscreen demo-chat`: the whole product in one process, without a Telegram token.

The real bot (`hbscreen.bot.app.build_application`), the in-process queue with a worker
running the real models, and the Bot API stand-in (`hbscreen.standin`) run on one event
loop. A scripted person (or you, with --interactive) talks to the bot through the stand-in
over real HTTP; the conversation prints to the terminal, and every image or file the bot sends
is saved under --out.

A script is one step per line (see DEFAULT_SCRIPT):
    /start [payload]      a command (anything starting with "/")
    text: hello           a text message
    tap: lang:en          tap a button by its callback data or text; waits for it to appear
    tap?: danger:no       the same, but skipped if the button does not appear in a few seconds
    photo: PATH           send a photo (as a Telegram client does: several sizes)
    doc: PATH             send a file (a document)
    wait: photo           wait for the bot to send a photo (also: wait: text SUBSTRING)
    # ...                 a comment
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import mimetypes
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from .polling import serve_polling
from .server import BotAPIStandIn
from .state import ChatEvent, ChatMessage
from .user import ConversationTimeout, SimulatedUser

if TYPE_CHECKING:
    from hbscreen.inference.worker import Process
    from hbscreen.settings import Settings

# The committed example, as the README runs it from a clone; elsewhere pass --photo.
DEFAULT_PHOTO = Path("examples") / "eyelid.jpg"
DEFAULT_SCRIPT = """\
# A pregnant woman screening herself (the first journey of the design).
/start
tap: lang:{lang}
tap: consent:yes
tap: who:me
tap: grp:pregnant
tap: grp:pregnant-2
tap?: danger:no
photo: {photo}
wait: photo
tap: after:done
"""
OPTIONAL_WAIT_S = 4.0
IDLE_S = 0.6


@dataclass
class Step:
    kind: str  # command, text, tap, tap?, photo, doc, wait
    arg: str
    line: int = 0


def parse_script(text: str) -> list[Step]:
    """Steps from the script format in the module docstring; ValueError on a bad line."""
    steps = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("/"):
            steps.append(Step("command", line, n))
            continue
        kind, sep, arg = line.partition(":")
        kind, arg = kind.strip().lower(), arg.strip()
        if not sep or kind not in ("text", "tap", "tap?", "photo", "doc", "wait") or not arg:
            raise ValueError(f"script line {n}: cannot read {raw!r}")
        steps.append(Step(kind, arg, n))
    return steps


class Transcript:
    """Prints the chat as it happens, numbers the buttons, saves what the bot sent."""

    def __init__(self, user: SimulatedUser, out_dir: Path, echo: Callable[[str], None]):
        self.user = user
        self.out_dir = out_dir
        self.echo = echo
        self.lines: list[str] = []
        self.saved: list[Path] = []
        self.numbered: list[dict[str, Any]] = []  # the buttons a number taps, in order
        self._printed = 0
        self._shown: dict[int, str] = {}  # message id -> the text last printed

    def say(self, text: str) -> None:
        self.lines.append(text)
        self.echo(text)

    async def follow(self) -> None:
        while True:
            events = await self.user.next_events(self._printed)
            if not events:
                return
            self._printed += len(events)
            for event in events:
                self._print(event)

    def flush(self) -> None:
        """Print whatever happened and was not printed yet (at the end)."""
        events = self.user.events[self._printed :]
        self._printed += len(events)
        for event in events:
            self._print(event)

    def _print(self, e: ChatEvent) -> None:
        m = e.snapshot  # as it was then: a later edit must not show up early
        if e.kind == "message" and m is not None:
            if m.from_bot:
                self.say(self._bot_message(m, "\nbot "))
            else:
                self.say(f"\nyou  ▸ {self._own(m)}")
        elif e.kind == "edit" and m is not None:
            before = self._shown.get(m.message_id, "")
            if before and m.content.startswith(before) and not m.buttons:
                # The usual edit: the question stays, the answer is appended, buttons go.
                tail = m.content[len(before) :].strip().replace("\n", "\n" + " " * 7)
                self._shown[m.message_id] = m.content
                self.say(f"bot  ✎ (message {m.message_id} keeps its text, adds) {tail}")
            else:
                self.say(f"bot  ✎ (edits message {m.message_id}):")
                self.say(self._bot_message(m, "bot "))
        elif e.kind == "delete" and m is not None:
            self.say(f"bot  ✗ (deletes message {m.message_id})")
        elif e.kind == "action":
            self.say(f"bot  … ({e.detail})")
        elif e.kind == "tap":
            self.say(f"\nyou  ▸ (tap) {e.detail}")
        elif e.kind == "answer" and e.detail:
            self.say(f"bot  ◂ (pop-up) {e.detail}")

    def _own(self, m: ChatMessage) -> str:
        if m.kind == "text":
            return m.text or ""
        size = f", {len(m.data)} bytes" if m.data is not None else ""
        name = f" {m.file_name}" if m.file_name else ""
        return f"[{m.kind}{name}{size}]" + (f" {m.caption}" if m.caption else "")

    def _bot_message(self, m: ChatMessage, who: str) -> str:
        lines = []
        if m.kind != "text":
            path = self._save(m)
            lines.append(f"[{m.kind} saved to {path}]" if path else f"[{m.kind}]")
        if m.content:
            lines.extend(m.content.splitlines())
        self._shown[m.message_id] = m.content
        rows = m.inline_keyboard or m.reply_keyboard
        if rows:
            self.numbered = [b for row in rows for b in row]
            n = 0
            for row in rows:
                cells = []
                for button in row:
                    n += 1
                    cells.append(f"[{n}] {button.get('text', '')}")
                lines.append("   ".join(cells))
        if m.reply_markup and m.reply_markup.get("remove_keyboard"):
            lines.append("(the keyboard closes)")
        pad = "\n" + " " * 7
        return f"{who} ◂ " + pad.join(lines)

    def _save(self, m: ChatMessage) -> Path | None:
        if m.data is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if m.kind == "photo":
            name = f"{len(self.saved) + 1:02d}-photo-{m.message_id}.jpg"
        else:
            ext = Path(m.file_name or "").suffix or (
                mimetypes.guess_extension(m.mime_type or "") or ".bin"
            )
            stem = Path(m.file_name or m.kind).stem
            name = f"{len(self.saved) + 1:02d}-{stem}-{m.message_id}{ext}"
        path = self.out_dir / name
        path.write_bytes(m.data)  # what the bot sent (heatmaps, CSV): never the person's photo
        self.saved.append(path)
        return path


async def _run_step(
    user: SimulatedUser, step: Step, timeout: float, idle_s: float = IDLE_S
) -> None:
    """One scripted step. Before acting, the person waits until the bot has finished talking."""
    if step.kind != "wait":
        await user.wait_idle(idle_s, timeout)
        user.skip_to_end()  # a later "wait:" step reads only what follows this action
    if step.kind == "command":
        command, _, payload = step.arg.partition(" ")
        await user.send_command(command, payload or None)
    elif step.kind == "text":
        await user.send_text(step.arg)
    elif step.kind in ("tap", "tap?"):
        try:
            await user.wait_for_button(
                step.arg, OPTIONAL_WAIT_S if step.kind == "tap?" else timeout
            )
        except ConversationTimeout:
            if step.kind == "tap?":
                return
            raise
        await user.wait_idle(idle_s, timeout)  # let the bot finish what it is saying first
        await user.tap_button(step.arg)
    elif step.kind in ("photo", "doc"):
        path = Path(step.arg).expanduser()
        data = path.read_bytes()
        if step.kind == "photo":
            await user.send_photo(data)
        else:
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            await user.send_document(data, path.name, mime)
    elif step.kind == "wait":
        what, _, arg = step.arg.partition(" ")
        if what == "photo":
            await user.wait_for_photo(timeout)
        elif what == "text":
            await user.wait_for_text(arg, timeout)
        elif what == "document":
            await user.wait_for_document(timeout)
        else:
            raise ValueError(f"script line {step.line}: wait for photo, document or text")


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed on stdin, read by a daemon thread (Ctrl-C must not wait for Enter)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the demo is over
            for line in iter(sys.stdin.readline, ""):
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="demo-stdin", daemon=True).start()
    return queue


async def _interactive(user: SimulatedUser, transcript: Transcript) -> None:
    lines = _stdin_lines()
    transcript.say(
        "\nType a message and press Enter. A number taps that button. /photo PATH sends a photo,"
        " /doc PATH a file, /sticker /voice /video send those; /quit (or Ctrl-D) ends."
    )
    while True:
        line = await lines.get()
        if line is None:
            return
        line = line.strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        try:
            if word == "/quit":
                return
            if line.isdigit():
                n = int(line)
                if not 1 <= n <= len(transcript.numbered):
                    transcript.say(
                        f"(no button {n}; the last buttons are 1-{len(transcript.numbered)})"
                    )
                    continue
                button = transcript.numbered[n - 1]
                await user.tap_button(button.get("callback_data") or button["text"])
            elif word in ("/photo", "/doc"):
                await _run_step(user, Step(word[1:], rest.strip()), 120)
                continue
            elif word == "/sticker":
                await user.send_sticker()
            elif word == "/voice":
                await user.send_voice()
            elif word == "/video":
                await user.send_video()
            elif word.startswith("/"):
                await user.send_command(word, rest or None)
            else:
                await user.send_text(line)
        except (OSError, LookupError) as exc:
            transcript.say(f"({exc})")
            continue
        with contextlib.suppress(ConversationTimeout):
            await user.wait_idle(IDLE_S, 120)


def demo_settings(standin: BotAPIStandIn, models_dir: Path | None = None) -> Settings:
    """The environment's settings, pointed at the stand-in and the in-process queue."""
    from hbscreen.settings import Settings

    update: dict[str, Any] = {
        "telegram_bot_token": SecretStr(standin.token),
        "telegram_api_base_url": standin.base_url,
        "telegram_file_base_url": standin.base_file_url,
        "redis_url": None,
        "webhook_url": None,
        "hash_key": SecretStr("demo-chat-not-a-secret"),
    }
    if models_dir is not None:
        update["models_dir"] = models_dir
    return Settings().model_copy(update=update)


async def run_demo(
    *,
    out_dir: Path,
    script: list[Step] | None = None,
    interactive: bool = False,
    models_dir: Path | None = None,
    language_code: str = "en",
    process: Process | None = None,
    step_timeout: float = 120.0,
    idle_s: float = IDLE_S,
    echo: Callable[[str], None] = print,
) -> int:
    """Run the demo; 0 when the script (or the session) ended normally, 1 when a step failed,
    2 when the models cannot be loaded."""
    from hbscreen.bot.app import build_application
    from hbscreen.compose import wire_submitter

    if process is None:  # load the models first: a missing model fails here, clearly
        from hbscreen.inference.worker import pipeline_process

        try:
            process = await asyncio.get_running_loop().run_in_executor(
                None, pipeline_process, models_dir, 1
            )
        except (OSError, ValueError) as exc:
            echo(f"demo-chat: cannot load the models: {exc}")
            return 2
    async with BotAPIStandIn() as standin:
        settings = demo_settings(standin, models_dir)
        wiring = wire_submitter(settings, submitter="bot", process=process)
        queue = wiring.queue
        user = standin.user(10_001, first_name="Demo", language_code=language_code)
        transcript = Transcript(user, out_dir, echo)
        try:
            application = build_application(settings, queue)
            async with serve_polling(application, poll_timeout=5):
                printer = asyncio.create_task(transcript.follow())
                try:
                    if interactive:
                        await _interactive(user, transcript)
                    else:
                        for step in script or []:
                            await _run_step(user, step, step_timeout, idle_s)
                        await user.wait_idle(idle_s, step_timeout)
                    return 0
                except (ConversationTimeout, LookupError, OSError, ValueError) as exc:
                    await asyncio.sleep(0)
                    transcript.flush()
                    first = str(exc).split("\n", 1)[0]
                    transcript.say(f"\ndemo-chat: stopped: {first}")
                    return 1
                finally:
                    printer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await printer
                    transcript.flush()
        finally:
            await wiring.close()
            if transcript.saved:
                transcript.say(f"\nSaved {len(transcript.saved)} file(s) in {out_dir}/")
            if transcript.lines:
                out_dir.mkdir(parents=True, exist_ok=True)
                (out_dir / "transcript.txt").write_text("\n".join(transcript.lines) + "\n")


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `hbscreen demo-chat` (the lead wires this into hbscreen/cli.py)."""
    p = subparsers.add_parser(
        "demo-chat",
        help="talk to the real bot in the terminal, without a Telegram token",
        description=(
            "Run the real bot, a worker with the models and a local stand-in for the Telegram "
            "Bot API in one process, and talk to the bot: a scripted conversation by default "
            "(/start, language, consent, group, a photo, the result), or your own with "
            "--interactive. Images the bot sends are saved in --out."
        ),
    )
    p.add_argument("--interactive", action="store_true", help="type the messages yourself")
    p.add_argument("--lang", default="en", help="language for the scripted user (en fr sw hi ja)")
    p.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help="the photo the script sends")
    p.add_argument("--script", type=Path, help="a script file instead of the default one")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="where to save images")
    p.add_argument("--models", type=Path, help="models folder (default: the shipped models)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each step")
    p.add_argument("--verbose", action="store_true", help="show the bot's and worker's logs")
    p.set_defaults(func=_run_demo_command)


def _run_demo_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    script = None
    if not args.interactive:
        if args.script:
            text = args.script.read_text()
        else:
            if not args.photo.exists():
                print(f"demo-chat: no photo at {args.photo}; pass --photo PATH", file=sys.stderr)
                return 2
            text = DEFAULT_SCRIPT.format(lang=args.lang, photo=args.photo)
        try:
            script = parse_script(text)
        except ValueError as exc:
            print(f"demo-chat: {exc}", file=sys.stderr)
            return 2
    mode = "interactive" if args.interactive else "scripted"
    print(f"hbscreen demo-chat ({mode}): the real bot, worker and models; no Telegram needed.")
    return asyncio.run(
        run_demo(
            out_dir=args.out,
            script=script,
            interactive=args.interactive,
            models_dir=args.models,
            language_code=args.lang,
            step_timeout=args.timeout,
        )
    )
