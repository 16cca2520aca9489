"""`hbscreen screen` as a user and a script would run it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from hbscreen.cli import main
from tests.synthetic import jpeg, synthetic_photo
from tests.tiny_models import build_tiny_models

REQUIRED = {"path", "hb_g_dl", "interval_80", "interval_95", "category", "referral", "quality"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def batch(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(synthetic_photo()))
    (folder / "b_truncated.jpg").write_bytes(jpeg(synthetic_photo())[:5000])
    (folder / "c.png").write_bytes(b"%PDF-1.4 not really a png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_json_lines_for_a_batch_and_the_run_goes_on(batch, models, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["screen", str(batch), "--json", "--models", str(models), "--out", str(out)])
    assert code == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["path"].rsplit("/", 1)[1] for x in lines] == ["a.jpg", "b_truncated.jpg", "c.png"]
    good, truncated, fake = lines
    assert set(good) >= REQUIRED and good["ok"] and good["heatmap_path"]
    assert truncated["error"]["code"] == "corrupt" and truncated["error"]["message"]
    assert fake["error"]["code"] == "not_an_image"
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["error_code"] for r in rows] == ["", "corrupt", "not_an_image"]


def test_text_output_for_one_photo(batch, models, tmp_path, capsys):
    code = main(
        [
            "screen",
            str(batch / "a.jpg"),
            "--group",
            "pregnant-2",
            "--models",
            str(models),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    for needle in (
        "Haemoglobin",
        "80% interval",
        "WHO category",
        "pregnant, 2nd trimester",
        "Advice",
        "Heatmap",
        "not validated",
        "not a diagnosis",
    ):
        assert needle in text
    assert (tmp_path / "o" / "a_heatmap.jpg").stat().st_size > 0


def test_a_reader_that_stops_early_gets_no_traceback(batch, models, tmp_path):
    """`hbscreen screen DIR --json | head -1`: the pipe closes while results are still coming;
    the command ends quietly, as a Unix tool does."""
    cmd = [sys.executable, "-m", "hbscreen.cli", "screen", str(batch), "--json"]
    cmd += ["--models", str(models), "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_usage_errors_exit_non_zero(tmp_path, capsys):
    assert main(["screen", str(tmp_path / "missing.jpg")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["screen", "x.jpg", "--group", "pregnant"])
    assert e.value.code == 2
