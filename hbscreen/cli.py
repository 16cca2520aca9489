"""`hbscreen` command line: screen, worker, bot, demo-chat, train, evaluate.

Each subcommand imports its machinery lazily, so `hbscreen --help` and `hbscreen screen` work
without the training extra installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__


def _add_screen(sub: argparse._SubParsersAction) -> None:
    from .screen import add_screen_parser

    add_screen_parser(sub)


def _add_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run a screening worker against Redis",
        description="Process screening jobs from a Redis queue until SIGTERM.",
    )
    p.add_argument("--redis", metavar="URL", help="Redis URL (default: $REDIS_URL)")
    p.add_argument("--threads", type=int, help="onnxruntime intra-op threads per job")
    p.add_argument("--concurrency", type=int, help="jobs in flight in this process")
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics port (0: off)")
    p.add_argument("--models", type=Path, help="models folder (default: the shipped models)")
    # Tests and benchmarks only: "module:function" processes jobs instead of the pipeline.
    p.add_argument("--process", help=argparse.SUPPRESS)
    p.set_defaults(func=_run_worker)


def _run_worker(args: argparse.Namespace) -> int:
    from .compose import load_process, worker_main
    from .settings import get_settings

    overrides = {
        "redis_url": args.redis,
        "ort_threads": args.threads,
        "worker_concurrency": args.concurrency,
        "metrics_port": args.metrics_port,
        "models_dir": args.models,
    }
    settings = get_settings().model_copy(
        update={k: v for k, v in overrides.items() if v is not None}
    )
    if not settings.redis_url:
        print(
            "hbscreen worker: set REDIS_URL or pass --redis redis://HOST:PORT/DB", file=sys.stderr
        )
        return 2
    if settings.queue_key is None:
        from .compose import NO_QUEUE_KEY

        print(f"hbscreen worker: {NO_QUEUE_KEY}", file=sys.stderr)
        return 2
    worker_main(settings, process=load_process(args.process) if args.process else None)
    return 0


def _add_bot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bot",
        help="run the Telegram bot",
        description=(
            "Run the Telegram bot: polling by default, a webhook when HBSCREEN_WEBHOOK_URL is "
            "set. Without REDIS_URL it screens in-process (one machine)."
        ),
    )
    p.set_defaults(func=_run_bot)


def _run_bot(args: argparse.Namespace) -> int:
    from hbscreen.bot.app import run_bot

    from .settings import get_settings

    settings = get_settings()
    if settings.telegram_bot_token is None:
        print(
            "hbscreen bot: set TELEGRAM_BOT_TOKEN (from @BotFather); "
            "or try `hbscreen demo-chat`, which needs no token",
            file=sys.stderr,
        )
        return 2
    return run_bot(settings)


def _add_optional(sub: argparse._SubParsersAction, module: str, func: str, name: str) -> None:
    """Register a subcommand whose code may be absent (e.g. training without the extra)."""
    try:
        mod = __import__(module, fromlist=[func])
        getattr(mod, func)(sub)
    except ImportError as e:
        p = sub.add_parser(name, help=f"(unavailable: {e.name} is not installed)")
        p.set_defaults(func=lambda _a, e=e: _unavailable(name, e))


def _unavailable(name: str, e: ImportError) -> int:
    print(
        f"hbscreen {name}: needs {e.name}; install the training extra: pip install '.[train]'",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hbscreen",
        description=(
            "Anaemia screening from a photo of the inside of the lower eyelid. "
            "A screening estimate, not a diagnosis."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hbscreen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_screen(sub)
    _add_worker(sub)
    _add_bot(sub)
    _add_optional(sub, "hbscreen.standin.demo", "add_demo_parser", "demo-chat")
    _add_optional(sub, "hbscreen.training.cli", "add_train_parser", "train")
    _add_optional(sub, "hbscreen.training.cli", "add_evaluate_parser", "evaluate")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `hbscreen screen DIR --json | head`: the reader has had enough
        # Python flushes stdout again at exit: point it at /dev/null so that flush is silent
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
