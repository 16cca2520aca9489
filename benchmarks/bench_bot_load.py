"""Load through Telegram's limits: N new people screen themselves, arriving at a given rate.

The real bot runs as `hbscreen bot` in its own process (in-process queue and worker with the
real ONNX pipeline, or Redis with `--redis`), talking over HTTP to the Bot API stand-in, which
answers 429 with retry_after past Telegram-like limits (standin/limits.py: 30/s per bot, ~1/s
per chat with a burst of 3). Simulated people in this process go from /start to the result
(the groups rotate: woman, pregnant, child; one photo each) and wait `--think` seconds before
each tap or photo, as a person reading the card does.

Prints: chat-bound requests per screening (accepted, and attempts including refused ones),
step latency p50/p95 (a command, tap or photo until the bot's next actionable answer: the
next question, the photo guide), photo -> result p50/p95, people served and lost (no answer
within `--step-timeout`), and the stand-in's 429s.

    nice -n 10 python benchmarks/bench_bot_load.py --users 150 --rate 3
    # the same against another checkout's bot (e.g. the previous commit, with its own venv):
    nice -n 10 python benchmarks/bench_bot_load.py --users 150 --rate 3 \
        --bot-python /tmp/hb-old/.venv/bin/python --bot-cwd /tmp/hb-old

Targets (issue 13): 150 people at 3/s all served, step p95 <= 1 s, photo -> result p95 <= 2.5 s;
1,000 at 3/s all served, nothing lost. On a shared machine compare runs made together.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hbscreen.standin import CHAT_BOUND_METHODS, BotAPIStandIn, FloodControl, SimulatedUser

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "eyelid.jpg"
GROUP_PLANS = [["grp:woman"], ["grp:pregnant", "grp:pregnant-2"], ["grp:child", "grp:child-6-23m"]]


@dataclass
class Person:
    index: int
    user: SimulatedUser
    plan: list[str]
    steps: list[float] = field(default_factory=list)
    photo_to_result: float | None = None
    first_call: int = 0
    last_call: int = 0
    error: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _buttons(m) -> list[str]:
    return [b.get("callback_data", "") for b in m.buttons]


def _is_result(m) -> bool:
    return "after:done" in _buttons(m)


def _is_guide(m) -> bool:
    return m.kind == "photo" and "1." in m.content and not _is_result(m)


async def _think(seconds: float, rng: random.Random) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds * rng.uniform(0.5, 1.5))


async def screen_one(p: Person, photo: bytes, think: float, timeout: float, seed: int) -> None:
    """/start, the buttons of the plan (whichever the bot offers next), the photo, the result.
    Works with both the card flow and the older message-per-question flow."""
    rng = random.Random(seed)
    user = p.user
    plan = ["lang:en", "consent:yes", "who:me", *p.plan, "danger:no"]
    done = -1  # index in plan of the last button tapped
    t0 = time.monotonic()
    await user.send_command("/start")
    while True:
        wanted = set(plan[done + 1 :])
        guide_next = done == len(plan) - 1

        def ready(m, wanted=wanted, guide_next=guide_next) -> bool:
            return bool(wanted & set(_buttons(m))) or (guide_next and _is_guide(m))

        msg = await user.wait_for(ready, timeout, "the next question")
        p.steps.append(time.monotonic() - t0)
        if done == len(plan) - 1:  # the guide: send the photo
            break
        offered = set(_buttons(msg))
        done = max(i for i, data in enumerate(plan) if data in offered and i > done)
        await _think(think, rng)
        t0 = time.monotonic()
        await user.tap_button(plan[done], message=msg)
    await _think(think, rng)
    t0 = time.monotonic()
    await user.send_photo(photo)
    await user.wait_for(_is_result, timeout, "the result")
    p.photo_to_result = time.monotonic() - t0


def _chat_of(params: dict) -> str | None:
    """The chat a call is for: chat_id, or the chat of a setMyCommands scope."""
    chat = params.get("chat_id")
    scope = params.get("scope")
    if chat is None and scope:
        scope = json.loads(scope) if isinstance(scope, str) else scope
        chat = scope.get("chat_id")
    return None if chat is None else str(chat)


def chat_bound(standin: BotAPIStandIn, chat_id: int, *, accepted_only: bool) -> int:
    """Chat-bound requests for one chat (tests/test_bot_requests.py counts the same way)."""
    n = 0
    for call in standin.calls:
        method = call.method.lower()
        if method not in CHAT_BOUND_METHODS and method != "setmycommands":
            continue
        if _chat_of(call.params) != str(chat_id):
            continue
        if accepted_only and getattr(call, "refused", False):
            continue
        n += 1
    return n


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


@contextlib.asynccontextmanager
async def bot_process(
    standin: BotAPIStandIn,
    python: str,
    cwd: Path,
    redis_url: str | None,
    log_path: Path,
    cpu: dict[str, float],
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HBSCREEN_", "TELEGRAM_"))}
    env.pop("REDIS_URL", None)
    env.update(
        {
            "TELEGRAM_BOT_TOKEN": standin.token,
            "TELEGRAM_API_BASE_URL": standin.base_url,
            "TELEGRAM_FILE_BASE_URL": standin.base_file_url,
            "HBSCREEN_HASH_KEY": "bench-hash-key-not-a-secret",
            "HBSCREEN_LISTEN_HOST": "127.0.0.1",
            "HBSCREEN_LISTEN_PORT": str(_free_port()),
            "HBSCREEN_RATE_LIMIT_PER_HOUR": "1000",
            "HBSCREEN_LOG_LEVEL": "WARNING",
            "OMP_NUM_THREADS": "1",
        }
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    log = log_path.open("w")
    procs = [
        subprocess.Popen(
            [python, "-m", "hbscreen.cli", "bot"], cwd=cwd, env=env, stdout=log, stderr=log
        )
    ]
    if redis_url:
        procs.append(
            subprocess.Popen(
                [python, "-m", "hbscreen.cli", "worker"], cwd=cwd, env=env, stdout=log, stderr=log
            )
        )
    try:
        # Ready when the bot has polled (getUpdates) and set its menus.
        deadline = time.monotonic() + 120
        while not standin.calls_to("getUpdates"):
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bot did not start; see {log_path}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # the in-process worker loads its models
        cpu["bot_start"] = sum(_cpu_s(proc.pid) for proc in procs)
        yield
    finally:
        cpu["bot_end"] = sum(_cpu_s(proc.pid) for proc in procs)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


async def run(args: argparse.Namespace) -> dict:
    photo = PHOTO.read_bytes()
    flood = None if args.no_limits else FloodControl()
    async with BotAPIStandIn(flood_control=flood) as standin:
        _mark_refusals(standin)
        log_path = Path(tempfile.gettempdir()) / f"bench_bot_load.{os.getpid()}.log"
        cpu: dict[str, float] = {}
        bot = bot_process(standin, args.bot_python, Path(args.bot_cwd), args.redis, log_path, cpu)
        async with bot:
            self_cpu0 = time.process_time()
            rng = random.Random(args.seed)
            people = [
                Person(i, standin.user(10_000 + i, language_code="en"), GROUP_PLANS[i % 3])
                for i in range(args.users)
            ]
            tasks = []
            t_start = time.monotonic()
            for p in people:
                p.first_call = len(standin.calls)

                async def go(p: Person = p) -> None:
                    try:
                        await screen_one(
                            p, photo, args.think, args.step_timeout, args.seed + p.index
                        )
                    except Exception as e:  # a person who got no answer in time is lost
                        p.error = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"

                tasks.append(asyncio.create_task(go()))
                await asyncio.sleep(rng.expovariate(args.rate))
            await asyncio.gather(*tasks)
            wall = time.monotonic() - t_start
            await asyncio.sleep(1.0)
            self_cpu = time.process_time() - self_cpu0
    served = [p for p in people if p.error is None and p.photo_to_result is not None]
    lost = [p for p in people if p not in served]
    steps = [s for p in served for s in p.steps]
    results = [p.photo_to_result for p in served if p.photo_to_result is not None]
    accepted = [chat_bound(standin, p.user.chat_id, accepted_only=True) for p in served]
    attempts = [chat_bound(standin, p.user.chat_id, accepted_only=False) for p in served]
    return {
        "users": args.users,
        "rate": args.rate,
        "served": len(served),
        "lost": len(lost),
        "lost_examples": [p.error for p in lost[:3]],
        "requests_mean": statistics.fmean(accepted) if accepted else float("nan"),
        "requests_max": max(accepted) if accepted else 0,
        "attempts_mean": statistics.fmean(attempts) if attempts else float("nan"),
        "step_p50": _pct(steps, 50),
        "step_p95": _pct(steps, 95),
        "result_p50": _pct(results, 50),
        "result_p95": _pct(results, 95),
        "refused_overall": flood.refused_overall if flood else 0,
        "refused_chat": flood.refused_chat if flood else 0,
        "wall_s": wall,
        "bot_cpu_s": cpu.get("bot_end", float("nan")) - cpu.get("bot_start", float("nan")),
        "bench_cpu_s": self_cpu,
        "log": str(log_path),
    }


def _mark_refusals(standin: BotAPIStandIn) -> None:
    """Tag each recorded call the flood control refused, so requests can be counted both ways."""
    flood = standin.flood
    if flood is None:
        return
    check = flood.check

    def tagged(method, params):
        refusal = check(method, params)
        if refusal is not None and standin.calls:
            standin.calls[-1].refused = True
        return refusal

    flood.check = tagged


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=150)
    ap.add_argument("--rate", type=float, default=3.0, help="new people per second (Poisson)")
    ap.add_argument("--think", type=float, default=1.0, help="seconds a person takes per step")
    ap.add_argument("--step-timeout", type=float, default=60.0)
    ap.add_argument("--redis", default=None, help="REDIS_URL: bot + `hbscreen worker` on Redis")
    ap.add_argument("--no-limits", action="store_true", help="stand-in without flood control")
    ap.add_argument("--bot-python", default=sys.executable, help="python that runs the bot")
    ap.add_argument("--bot-cwd", default=str(ROOT), help="checkout the bot runs from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="this checkout")
    args = ap.parse_args(argv)
    out = asyncio.run(run(args))
    print(
        f"{args.label}: {out['users']} new people at {out['rate']:g}/s "
        f"(cores: {os.cpu_count()}, think {args.think:g} s, "
        f"limits {'off' if args.no_limits else 'on'}, {'redis' if args.redis else 'in-process'})"
    )
    print(
        f"  served {out['served']}, lost {out['lost']} {out['lost_examples'] or ''}\n"
        f"  chat-bound requests per screening: {out['requests_mean']:.1f} accepted "
        f"(max {out['requests_max']}), {out['attempts_mean']:.1f} attempts with 429s\n"
        f"  step latency p50 {out['step_p50']:.2f} s, p95 {out['step_p95']:.2f} s\n"
        f"  photo -> result p50 {out['result_p50']:.2f} s, p95 {out['result_p95']:.2f} s\n"
        f"  stand-in 429s: {out['refused_overall']} over the bot limit, "
        f"{out['refused_chat']} over a chat limit; wall {out['wall_s']:.0f} s\n"
        f"  CPU: bot process(es) {out['bot_cpu_s']:.1f} s, stand-in + simulated people "
        f"{out['bench_cpu_s']:.1f} s (load average {os.getloadavg()[0]:.1f}); log {out['log']}"
    )
    return 0 if out["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
