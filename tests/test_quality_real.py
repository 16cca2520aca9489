"""The quality gate on real eye photos (Eyes-defy-anemia, read-only from ../shared; skipped
when absent), as served: every photo, good or degraded, is judged on the mask the pipeline's
own segmentation gives it (Pipeline.segment), never on the expert's. Good photos pass, the same
photos degraded on purpose are refused with the code whose hint fixes them. Thresholds were
chosen on the calibration half (hbscreen.training.quality_calibration --masks model); this
checks both halves, held-out included.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hbscreen.training import quality_calibration as qc

DATA = Path(
    os.environ.get(
        "HBSCREEN_EYES_DEFY", Path(__file__).resolve().parents[2] / "shared/data/eyes-defy-anemia"
    )
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA / "photos.csv").is_file(), reason="Eyes-defy-anemia not available"
    ),
]


@pytest.fixture(scope="module")
def halves() -> dict[str, list[qc.RealPhoto]]:
    cal, held = qc.split_by_patient(qc.load_photos(DATA))
    return {"calibration": cal, "held-out": held}


def test_split_is_by_patient(halves) -> None:
    a, b = ({p.patient for p in h} for h in halves.values())
    assert a and b and not a & b


def test_good_real_photos_are_accepted(halves) -> None:
    """The target: >= 95% of the real photos accepted (65/65 when written); each half >= 90%."""
    refused = {}
    for half, photos in halves.items():
        r = {p.name: qc.verdict(p.rgb) for p in photos}
        refused[half] = {k: v for k, v in r.items() if v}
        assert len(refused[half]) <= 0.10 * len(photos), (half, refused[half])
    n = sum(len(p) for p in halves.values())
    assert sum(len(r) for r in refused.values()) <= 0.05 * n, refused


# Targets not reached on the served masks (see the calibration table). Strict: fixing them
# shows up here.
NOT_REACHED: dict[str, str] = {}


@pytest.mark.parametrize(
    "deg",
    [
        pytest.param(d, marks=pytest.mark.xfail(strict=True, reason=NOT_REACHED[d.name]))
        if d.name in NOT_REACHED
        else d
        for d in qc.DEGRADATIONS
    ],
    ids=lambda d: d.name,
)
def test_degraded_real_photos_are_caught_with_the_right_code(halves, deg) -> None:
    # All the held-out photos, as in the table: on half of them one photo is 6% of the row, so
    # a subset passes or fails by chance. (The masks are the same on every x86 CPU now: the
    # sessions ask for exact int8 sums where VNNI is missing; before, the saturating ones moved
    # a photo or two per row.)
    photos = halves["held-out"]
    told = []
    for i, p in enumerate(photos):
        rgb, _ = deg.fn(p.rgb, p.mask, i)  # (the expert mask only places glare and crops)
        told.append(qc.verdict(rgb))
    hit = sum(deg.caught(v) for v in told)
    assert hit >= 0.9 * len(photos), (deg.name, told)


@pytest.mark.parametrize("variant", qc.HARMLESS[:4], ids=lambda d: d.name)
def test_what_phones_and_messengers_do_is_not_refused(halves, variant) -> None:
    photos = halves["held-out"][::2]
    refused = []
    for i, p in enumerate(photos):
        rgb, _ = variant.fn(p.rgb, p.mask, i)
        if qc.verdict(rgb):
            refused.append(p.name)
    assert len(refused) <= 0.05 * len(photos) + 1, refused
