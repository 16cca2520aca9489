"""The wheel: one top-level package, the data the runtime reads, and a runtime without torch.

Builds the wheel from this checkout, then installs it without extras into a fresh virtual
environment and screens the committed example photo there, as README command 1 does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(REPO)],
        check=True,
    )  # fmt: skip
    (whl,) = out.glob("hbscreen-*.whl")
    return whl


def test_wheel_has_one_top_level_package_and_its_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"hbscreen"}
    for needed in (
        "hbscreen/inference/who_anaemia_2024.json",
        "hbscreen/inference/models/segmentation.onnx",
        "hbscreen/inference/models/segmentation.json",
        "hbscreen/inference/models/regression.onnx",
        "hbscreen/inference/models/regression.json",
        "hbscreen/bot/assets/photo_guide.jpg",
        "hbscreen/standin/server.py",  # demo-chat ships; the stand-in is its own subpackage
        "hbscreen/inference/queue/redis_streams/lua/submit.lua",
        "hbscreen/inference/queue/redis_streams/lua/finish.lua",
    ):
        assert needed in names, needed
    for lang in ("fr", "sw", "hi", "ja"):  # English is the source language: no catalogue
        assert f"hbscreen/bot/locale/{lang}/LC_MESSAGES/messages.mo" in names
    assert not any(n.startswith("hbscreen/tests/") for n in names)


def test_runtime_requirements_have_no_torch(wheel: Path) -> None:
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA"))
    lines = zipfile.ZipFile(wheel).read(meta).decode().splitlines()
    runtime = [ln for ln in lines if ln.startswith("Requires-Dist:") and "extra ==" not in ln]
    assert runtime and not [ln for ln in runtime if "torch" in ln.lower()]


def test_plain_install_screens_a_photo_without_torch(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True)
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"
    assert subprocess.run([str(py), "-c", probe]).returncode == 0, "torch is importable"
    out = subprocess.run(
        [str(env_dir / "bin" / "hbscreen"), "screen", str(REPO / "examples" / "eyelid.jpg"),
         "--group", "pregnant-2", "--json", "--out", str(tmp_path / "out")],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    line = json.loads(out.stdout.strip().splitlines()[0])
    assert line["hb_g_dl"] is not None, line
