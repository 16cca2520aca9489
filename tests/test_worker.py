"""The worker end to end: real Redis, real worker processes, the real pipeline on tiny ONNX
models; metrics over HTTP; JSON logs without personal data; the batch CLI path."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from hbscreen.compose import run_worker, wire_submitter
from hbscreen.inference.jsonlog import JsonFormatter
from hbscreen.inference.pipeline import Pipeline
from hbscreen.inference.queue.batch import screen_via_queue
from hbscreen.inference.queue.protocol import Job, QueueConfig
from hbscreen.inference.queue.redis_streams import RedisJobSource, RedisSubmitter
from hbscreen.inference.worker import pipeline_process, serve
from hbscreen.settings import Settings
from tests.redis_server import QUEUE_KEY, RedisServer, free_port, noop_process, sealer_for_tests
from tests.test_pipeline import jpeg, synthetic_photo
from tests.tiny_models import build_tiny_models

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[1]
GROUP = "pregnant-2"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, bytes]]:
    good = jpeg(synthetic_photo())
    small = jpeg(synthetic_photo(480, 640))
    return [("a.jpg", good), ("b.jpg", small), ("bad.pdf", b"%PDF-1.7\n%%EOF\n")]


def comparable(result) -> dict:
    d = result.model_dump(exclude={"timings_ms", "job_id", "path"})
    return d


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def scrape_until(port: int, name: str, value: float) -> dict[str, float]:
    """Metrics once `name` reached `value` (counted just after the outcome is published)."""
    for _ in range(100):
        m = await asyncio.to_thread(scrape, port)
        if m.get(name) == value:
            return m
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} is {m.get(name)}, not {value}")


async def test_worker_process_with_real_pipeline_metrics_and_clean_logs(
    redis_server: RedisServer, tiny_dir: Path, photos: list[tuple[str, bytes]]
) -> None:
    port = free_port()
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "HBSCREEN_HEARTBEAT_S": "0.2",
        "HBSCREEN_QUEUE_KEY": QUEUE_KEY,
    }
    cmd = [sys.executable, "-m", "hbscreen.cli", "worker", "--redis", redis_server.url]
    cmd += ["--models", str(tiny_dir), "--metrics-port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    q = RedisSubmitter(redis_server.url, submitter="bot", sealer=sealer_for_tests())
    try:
        chat = "998877665544"  # must never reach the worker's logs
        ids = {}
        for path, data in photos:
            j = Job(group=GROUP, reply_to={"chat": chat, "lang": "sw"})
            ids[await q.submit(data, j)] = path
        got = {}
        it = q.outcomes()
        while len(got) < len(ids):
            o = await asyncio.wait_for(anext(it), 30)
            got[o.job.id] = o
        local = Pipeline(tiny_dir)
        for jid, o in got.items():
            path = ids[jid]
            assert o.status == "done" and o.result is not None
            assert o.job.reply_to == {"chat": chat, "lang": "sw"}
            want, want_jpeg = local.screen(dict(photos)[path], GROUP)
            assert comparable(o.result) == comparable(want)
            assert (o.heatmap_jpeg is None) == (want_jpeg is None)
        assert got and any(o.result.ok for o in got.values())
        assert any(o.result.error and o.result.error.code for o in got.values())

        m = await scrape_until(port, "hbscreen_jobs_done_total", 3)
        assert m['hbscreen_stage_seconds_count{stage="decode"}'] >= 2  # not the PDF
        assert m['hbscreen_stage_seconds_count{stage="regression"}'] >= 1
        assert m["hbscreen_worker_up"] == 1
        assert "hbscreen_queue_depth" in m
        beats = [json.loads(await q.r.get(k)) for k in await q.r.keys(q.keys.worker("*"))]
        assert len(beats) == 1 and beats[0]["done"] >= 0

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log = proc.stdout.read().decode() if proc.stdout else ""
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert any(rec["msg"] == "job finished" for rec in lines)
        assert chat not in log and "reply_to" not in log and "%PDF" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
        await q.close()


async def test_screen_via_queue_matches_in_process_screening(
    redis_server: RedisServer, tiny_dir: Path, photos: list[tuple[str, bytes]]
) -> None:
    worker_q = RedisJobSource(redis_server.url, sealer=sealer_for_tests())
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(worker_q, pipeline_process(tiny_dir), concurrency=2, stop=stop, block_s=0.1)
    )
    settings = Settings(redis_url=redis_server.url, queue_max_depth=2, queue_key=QUEUE_KEY)
    wiring = wire_submitter(settings, submitter=None)  # a private results stream
    q = wiring.queue
    try:
        items = photos * 3
        items = [(f"{i}-{p}", d) for i, (p, d) in enumerate(items)]
        outcomes = screen_via_queue(q, items, GROUP, timeout=60, max_in_flight=3)
        got = {p: o async for p, o in outcomes}
        assert sorted(got) == sorted(p for p, _ in items)
        local = Pipeline(tiny_dir)
        for path, data in items:
            want, _ = local.screen(data, GROUP)
            assert got[path].status == "done"
            assert comparable(got[path].result) == comparable(want)
        results_key = q.results_key  # type: ignore[attr-defined]
    finally:
        await q.close()
        stop.set()
        await task
        await worker_q.close()
    r = RedisSubmitter(redis_server.url)
    assert not await r.r.exists(results_key)  # the batch's stream is gone with it
    await r.close()


async def test_cli_screen_with_queue_matches_in_process(
    redis_server: RedisServer, tiny_dir: Path, photos: list[tuple[str, bytes]], tmp_path: Path
) -> None:
    """`hbscreen screen DIR --queue redis://...` against `hbscreen screen DIR`."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, data in photos:
        (folder / name.replace(".pdf", ".jpg")).write_bytes(data)
    stop = asyncio.Event()
    worker_q = RedisJobSource(redis_server.url, sealer=sealer_for_tests())
    task = asyncio.create_task(serve(worker_q, pipeline_process(tiny_dir), stop=stop))
    env = os.environ | {"PYTHONPATH": str(ROOT), "HBSCREEN_QUEUE_KEY": QUEUE_KEY}
    base = [sys.executable, "-m", "hbscreen.cli", "screen", str(folder), "--json"]
    base += ["--no-heatmap", "--group", GROUP, "--out", str(tmp_path / "out")]

    def run(*extra: str) -> dict[str, dict]:
        res = subprocess.run(
            [*base, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
        assert len(rows) == len(photos), res.stdout + res.stderr
        return {
            r["path"]: {k: v for k, v in r.items() if k not in ("timings_ms", "job_id")}
            for r in rows
        }

    try:
        local = await asyncio.to_thread(run, "--models", str(tiny_dir))
        queued = await asyncio.to_thread(run, "--queue", redis_server.url)
    finally:
        stop.set()
        await task
        await worker_q.close()
    diffs = {
        (path, k): (local[path].get(k), queued.get(path, {}).get(k))
        for path in local
        for k in local[path]
        if local[path].get(k) != queued.get(path, {}).get(k)
    }
    assert not diffs and queued.keys() == local.keys()
    assert any(r["ok"] for r in local.values()) and not all(r["ok"] for r in local.values())


async def test_broken_models_dead_letter_with_the_real_pipeline(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    root = build_tiny_models(tmp_path)
    card = json.loads((root / "regression.json").read_text())
    card["preprocessing"]["size"] = [16, 16]  # the graph wants 32x32: onnxruntime raises
    (root / "regression.json").write_text(json.dumps(card))
    w = RedisJobSource(redis_server.url, QueueConfig(max_tries=2))
    q = RedisSubmitter(redis_server.url, QueueConfig(max_tries=2), submitter="bot")
    stop = asyncio.Event()
    task = asyncio.create_task(serve(w, pipeline_process(root), stop=stop, block_s=0.1))
    try:
        jid = await q.submit(jpeg(synthetic_photo()), Job(group=GROUP))
        o = await asyncio.wait_for(anext(q.outcomes()), 15)
        assert o.job.id == jid and o.status == "dead" and o.job.tries == 2
        assert o.result is not None and o.result.error.code == "model_failed"
        assert [d["id"] for d in await q.dead_letters()] == [jid]
    finally:
        stop.set()
        await task
        await w.close()
        await q.close()


async def test_run_worker_serves_metrics_and_stops_on_the_event(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    settings = Settings(
        redis_url=redis_server.url, metrics_port=port, heartbeat_s=0.2, queue_key=QUEUE_KEY
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, process=noop_process, stop=stop))
    q = RedisSubmitter(redis_server.url, sealer=sealer_for_tests())
    try:
        jid = await q.submit(b"x", Job(group=GROUP))
        assert (await q.wait(jid, 10)).status == "done"
        await scrape_until(port, "hbscreen_jobs_done_total", 1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await q.close()
    with pytest.raises(OSError):
        await asyncio.to_thread(scrape, port)  # the metrics server is gone


def test_json_logs_drop_personal_fields_and_tokens() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter("test"))
    log = logging.getLogger("hbscreen.test.jsonlog")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        token = "123456789:AAH-abcdefghijklmnopqrstuvwxyz0123456"
        log.info(
            "calling https://api.telegram.org/bot%s/getMe",
            token,
            extra={
                "job_id": "j1",
                "chat_id": 42424242,
                "text": "my name is Amina",
                "image": b"\xff\xd8\xff",
                "detail": {"username": "amina", "stage": "decode", "blob": b"123"},
            },
        )
    finally:
        log.removeHandler(handler)
    rec = json.loads(buf.getvalue())
    assert rec["msg"] == "calling https://api.telegram.org/bot<token>/getMe"
    assert rec["job_id"] == "j1"
    assert rec["detail"] == {"stage": "decode", "blob": "<3 bytes>"}
    out = buf.getvalue()
    for secret in (token, "42424242", "Amina", "amina", "chat_id"):
        assert secret not in out
