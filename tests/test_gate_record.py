"""The quality gate's calibration table as recorded in the model card (no dataset needed)."""

from __future__ import annotations

import json
from pathlib import Path

from hbscreen.training import quality_calibration as qc
from hbscreen.training.card_sections import replace_section
from hbscreen.training.model_card_md import QUALITY_GATE, gate_section_md

ROOT = Path(__file__).resolve().parents[1]
CARD = "# card\n\n## Segmentation\n\nseg text\n\n## Licence and citation\n\nCC BY\n"


def _measured(accepted: bool) -> qc.Measured:
    v = {} if accepted else {"colourfulness": 0.0}  # no colour at all: refused as greyscale
    return qc.Measured(
        good=[{}, v],
        harmless={d.name: [{}] for d in qc.HARMLESS},
        degraded={d.name: [v] for d in qc.DEGRADATIONS},
        not_eyelid={k: [v] for k in qc.NOT_EYELIDS},
    )


def test_record_has_every_row_of_both_halves() -> None:
    rec = qc.table_record(
        {"calibration": _measured(True), "held-out": _measured(False)}, "model", "seg 1"
    )
    rows = {r["item"]: r for r in rec["rows"]}
    assert rows["good real photos"]["calibration"] == [2, 2]
    assert rows["good real photos"]["held-out"] == [1, 2]
    assert rows["greyscale"]["held-out"] == [1, 1]
    assert {d.name for d in qc.DEGRADATIONS} <= set(rows)
    assert json.loads(json.dumps(rec)) == rec


def test_gate_section_goes_before_the_licence_and_is_replaced_in_place() -> None:
    rec = qc.table_record({"calibration": _measured(True)}, "model", "seg 1")
    once = replace_section(CARD, gate_section_md(rec))
    assert once.index("## Segmentation") < once.index("## Quality gate") < once.index("## Lic")
    assert "| greyscale | greyscale | 0/1 (0%) |" in once
    rec["rows"][0]["calibration"] = [1, 2]
    twice = replace_section(once, gate_section_md(rec))
    assert twice.count("## Quality gate") == 1 and "| 1/2 (50%) |" in twice
    assert twice.endswith("## Licence and citation\n\nCC BY\n")


def test_committed_card_shows_the_committed_gate_table() -> None:
    """MODEL_CARD.md's Quality gate section is what reports/quality_gate.json says."""
    rec = json.loads((ROOT / QUALITY_GATE).read_text("utf-8"))
    card = (ROOT / qc.MODEL_CARD_MD).read_text("utf-8")
    assert replace_section(card, gate_section_md(rec)) == card
    assert len(rec["rows"]) == len(qc.table(_measured(True)))


def test_the_written_card_is_what_re_measuring_a_section_leaves(tmp_path, monkeypatch) -> None:
    """MODEL_CARD.md as `hbscreen train` writes it is unchanged by replacing its segmentation
    or gate section with the same content (quality_calibration --record and --attach-cv
    replace them later): one blank line between sections either way."""
    import shutil

    from hbscreen.inference.modelcard import load_card
    from hbscreen.training.model_card_md import write_model_card_md
    from hbscreen.training.segmentation import card_section_md

    models = ROOT / "inference" / "models"
    for name in ("segmentation.json", "regression.json", "regression.onnx"):
        shutil.copy(models / name, tmp_path / name)
    monkeypatch.chdir(ROOT)  # the gate record is read from reports/, as in a training run
    write_model_card_md(tmp_path / "MODEL_CARD.md", load_card("regression", tmp_path), 1.0)
    text = (tmp_path / "MODEL_CARD.md").read_text("utf-8")
    rec = json.loads((ROOT / QUALITY_GATE).read_text("utf-8"))
    seg = json.loads((tmp_path / "segmentation.json").read_text("utf-8"))
    assert replace_section(text, gate_section_md(rec)) == text
    assert replace_section(text, card_section_md(seg)) == text
