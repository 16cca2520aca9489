"""`hbscreen screen` as a user and a script would run it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from hbscreen.bot.i18n import t
from hbscreen.bot.messages import REFERRAL_TEXT, error_text, plain
from hbscreen.cli import main
from hbscreen.inference.result import ErrorInfo, ScreeningResult
from hbscreen.screen import _display_width, format_text
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
        "Pregnant, months 4 to 6: anaemia below 10.5 g/dL",
        "Advice",
        "Heatmap",
        "not validated",
        "not a diagnosis",
    ):
        assert needle in text
    assert (tmp_path / "o" / "a_heatmap.jpg").stat().st_size > 0


def test_text_output_in_the_persons_language(batch, models, tmp_path, capsys):
    """--lang translates the whole block, labels and numbers included, not just the sentences;
    the codes in brackets stay English for scripts."""
    args = ["screen", str(batch), "--lang", "fr", "--group", "woman", "--models", str(models)]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    for needle in (
        "Qualité de la photo",
        "Hémoglobine",
        "intervalle à 80\xa0%",
        "Catégorie OMS",
        "anémie en dessous de 12,0 g/dL",
        "[corrupt]",
        "3 photos examinées. Résumé : ",
    ):
        assert needle in text, needle
    for english in ("Photo quality", "Haemoglobin", "WHO category", "% interval", "Screened"):
        assert english not in text, english


def test_labels_line_up_in_wide_scripts():
    """Japanese labels take two terminal columns a character: the text column still lines up."""
    error = ErrorInfo(code="corrupt", message="damaged")
    result = ScreeningResult(path="x.jpg", group="woman", ok=False, referral="retake", error=error)
    rows = format_text(result, "ja").splitlines()[1:]
    texts = [plain(error_text("corrupt", "ja")), plain(t("ja", REFERRAL_TEXT["retake"]))]
    assert len(rows) == 2 and all(text in row for row, text in zip(rows, texts, strict=True))
    starts = {_display_width(row[: row.index(text)]) for row, text in zip(rows, texts, strict=True)}
    assert len(starts) == 1


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


def test_evaluate_refuses_a_previous_model_that_saw_adults_before_the_long_run(tmp_path, capsys):
    """--previous-models is the children-only version-1 graph (scored on adults it never saw);
    a later one, with a group input, or an empty folder, is refused at once, not after the
    whole evaluation."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    assert main(["evaluate", "--previous-models", str(tmp_path)]) == 2
    assert "holds no regression.json" in capsys.readouterr().err
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 3]) for name in ("crop", "group")
    ]
    out = helper.make_tensor_value_info("hb", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph(
        [helper.make_node("Add", ["crop", "group"], ["hb"])], "g", inputs, [out]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp_path / "regression.onnx"))
    (tmp_path / "regression.json").write_text(json.dumps({"version": "2.2.0"}))
    assert main(["evaluate", "--previous-models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "regression 2.2.0" in err and "group input" in err and "version-1" in err


@pytest.mark.parametrize("lang", ["en", "fr", "ja"])
def test_one_hint_per_row_with_each_measure_that_failed(lang):
    """A cut lid read from its symmetry and from its end: both fail with the same hint, which is
    printed once with both measurements, not twice."""
    from hbscreen.inference.result import Quality, QualityCheck

    hint = "Part of the eyelid is cut off at the side of the photo."
    checks = [
        QualityCheck(code="conjunctiva_cut_off", passed=False, value=0.35, threshold=0.25,
                     direction="max", message=hint),
        QualityCheck(code="conjunctiva_cut_off", passed=False, value=0.271, threshold=0.7,
                     direction="min", message=hint),
        QualityCheck(code="too_dark", passed=False, value=20.0, threshold=45.0, message="Dark."),
    ]  # fmt: skip
    result = ScreeningResult(
        path="x.jpg", group="woman", ok=False, referral="retake",
        quality=Quality(ok=False, checks=checks),
    )  # fmt: skip
    rows = [r for r in format_text(result, lang).splitlines() if "[conjunctiva_cut_off]" in r]
    assert len(rows) == 1
    for number in ("0,35" if lang == "fr" else "0.35", "0,271" if lang == "fr" else "0.271"):
        assert number in rows[0]
    assert sum("[too_dark]" in r for r in format_text(result, lang).splitlines()) == 1
