"""Measure a learned third segmentation stage on real photos: a small CNN that corrects the
served mask inside a crop around it (not shipped; what it would buy, honestly measured).

For each CV fold (FOLDS_DIR/fold<k>/segmentation.onnx, trained with that fold's patients held
out, as `hbscreen train` trains them), the refiner sees the crop around the served two-pass
mask (preprocess.segment_two_pass) widened by a quarter of its size, squashed to 128 x 320:
the photo's RGB and the served probability (4 channels), and returns the served logit plus a
correction (a depthwise-separable U-Net, 35 k weights, from scratch). It is trained on the
fold's TRAINING patients only (each photo re-lit, mirrored, made pale and shrunk 40 times, the
prior always from the fold's own model), then scored on the held-out patients pasted back at
1280 px, next to the served mask on the same photos. Also printed: onnxruntime latency of the
refiner on one core (the speed budget: segmentation stage <= 10 ms, pipeline <= 30 ms).

    OMP_NUM_THREADS=1 python benchmarks/seg_refiner_cnn.py \\
        --photos ../shared/data/eyes-defy-anemia --folds-dir DIR --folds 0 1 [--steps 1500]

Needs torch (the `train` extra).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from hbscreen.inference.preprocess import crop_box, main_component, segment_two_pass, shrink
from hbscreen.training.seg_augment import _pallor, _photometric
from hbscreen.training.segmentation import (
    SERVE_LONG_SIDE,
    _loss,
    cv_folds,
    iou_dice,
    load_real_photos,
    preprocessing,
)

SIZE = (128, 320)  # refiner input (h, w): the lid band is wide and thin
MARGIN = 0.25  # crop around the served mask, share of its size on each side
# the segmentation model's normalisation, so the refiner reads RGB as pass 2 does
MEAN = np.array(preprocessing().mean, np.float32)
STD = np.array(preprocessing().std, np.float32)


def seg_runner(path: Path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    card = json.loads((path.parent / "segmentation.json").read_text("utf-8"))
    margin = card.get("refine_margin")
    return lambda rgb: segment_two_pass(
        lambda x: s.run(None, {name: x})[0], rgb, preprocessing(192), 0.5, margin
    )


def box_around(prob: np.ndarray, margin: float, jitter: np.ndarray | None = None):
    if not (prob >= 0.5).any():
        return None
    y0, y1, x0, x1 = crop_box(prob, margin)
    if jitter is not None:  # each side moved by up to jitter x the box size
        hh, ww = y1 - y0, x1 - x0
        H, W = prob.shape
        y0 = int(np.clip(y0 + jitter[0] * hh, 0, H - 8))
        y1 = int(np.clip(y1 + jitter[1] * hh, y0 + 8, H))
        x0 = int(np.clip(x0 + jitter[2] * ww, 0, W - 8))
        x1 = int(np.clip(x1 + jitter[3] * ww, x0 + 8, W))
    return y0, y1, x0, x1


def sample(rgb, prob, truth, box):
    y0, y1, x0, x1 = box
    h, w = SIZE
    x = shrink(np.ascontiguousarray(rgb[y0:y1, x0:x1]), h, w)
    p = cv2.resize(prob[y0:y1, x0:x1], (w, h), interpolation=cv2.INTER_AREA)
    t = cv2.resize(
        np.asarray(truth[y0:y1, x0:x1], np.float32), (w, h), interpolation=cv2.INTER_AREA
    )
    return x, p, t


def training_samples(segment, photos, n_aug: int, seed: int):
    rng = np.random.default_rng(seed)
    X, P, T = [], [], []
    for _, it in photos:
        rgb0, m0 = it.load(long_side=SERVE_LONG_SIDE)
        for _ in range(n_aug):
            rgb, m = rgb0, m0.astype(np.float32)
            if rng.random() < 0.5:
                rgb, m = rgb[:, ::-1], m[:, ::-1]
            s = float(np.exp(rng.uniform(np.log(0.35), 0)))  # farther away: fewer pixels
            if s < 0.95:
                hw = (max(32, int(rgb.shape[1] * s)), max(32, int(rgb.shape[0] * s)))
                rgb = cv2.resize(np.ascontiguousarray(rgb), hw, interpolation=cv2.INTER_AREA)
                m = cv2.resize(np.ascontiguousarray(m), hw, interpolation=cv2.INTER_AREA)
            rgb = np.ascontiguousarray(rgb)
            if rng.random() < 0.3:
                rgb = _pallor(rng, rgb, m)
            rgb = _photometric(rng, rgb)
            prob = segment(rgb)
            box = box_around(prob, rng.uniform(0.12, 0.4), rng.uniform(-0.08, 0.08, 4))
            if box is not None:
                x, p, t = sample(rgb, prob, m, box)
                X.append(x), P.append(p), T.append(t)
    return np.stack(X), np.stack(P), np.stack(T)


def build_refiner(channels=(24, 32, 48, 64)):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def ds(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def up(x, ref):
        return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)

    class Refiner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c1, c2, c3, c4 = channels
            self.stem = nn.Sequential(
                nn.Conv2d(4, c1, 3, 2, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True)
            )
            self.e1 = ds(c1, c1)
            self.e2 = nn.Sequential(ds(c1, c2, 2), ds(c2, c2))
            self.e3 = nn.Sequential(ds(c2, c3, 2), ds(c3, c3))
            self.e4 = nn.Sequential(ds(c3, c4, 2), ds(c4, c4), ds(c4, c4))
            self.d3, self.d2, self.d1 = ds(c4 + c3, c3), ds(c3 + c2, c2), ds(c2 + c1, c1)
            self.feat = nn.Conv2d(c1, 8, 1)
            self.fine_dw = nn.Conv2d(12, 12, 3, 1, 1, groups=12)
            self.fine = nn.Conv2d(12, 1, 1)  # starts at zero: the refiner starts as the prior
            nn.init.zeros_(self.fine.weight)
            nn.init.zeros_(self.fine.bias)

        def forward(self, x):
            p = (x[:, 3:4] + 0.5).clamp(0.02, 0.98)
            prior = torch.log(p) - torch.log1p(-p)
            s1 = self.e1(self.stem(x))
            s2 = self.e2(s1)
            s3 = self.e3(s2)
            d = self.d3(torch.cat([up(self.e4(s3), s3), s3], 1))
            d = self.d2(torch.cat([up(d, s2), s2], 1))
            d = self.d1(torch.cat([up(d, s1), s1], 1))
            f = up(self.feat(d), x)
            return prior + self.fine(F.relu(self.fine_dw(torch.cat([f, x], 1))))

    return Refiner()


def tensors(X, P):
    import torch

    x = (X.astype(np.float32) - MEAN) / STD
    p = P.astype(np.float32)[..., None] - 0.5
    return torch.from_numpy(np.concatenate([x, p], -1).transpose(0, 3, 1, 2).copy())


def train(X, P, T, steps: int, batch: int = 12, lr: float = 3e-3, log=print):
    import torch

    torch.manual_seed(0)
    xt, yt = tensors(X, P), torch.from_numpy(T[:, None].astype(np.float32))
    net = build_refiner()
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    g = np.random.default_rng(0)
    for s in range(steps):
        idx = g.integers(0, len(xt), batch)
        xb, yb = xt[idx], yt[idx]
        if g.random() < 0.5:
            xb, yb = xb.flip(-1), yb.flip(-1)
        loss = _loss(net(xb), yb)  # the segmentation model's BCE + soft Dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if s % 250 == 0:
            log(f"    step {s} loss {loss.item():.3f}")
    return net.eval()


def score(net, segment, photos) -> tuple[list[float], list[float]]:
    import torch

    served, refined = [], []
    for _, it in photos:
        rgb, m = it.load(long_side=SERVE_LONG_SIDE)
        truth = m > 0.5
        prob = segment(rgb)
        served.append(iou_dice(prob >= 0.5, truth)[0])
        box = box_around(prob, MARGIN)
        if box is None:
            refined.append(served[-1])
            continue
        x, p, _ = sample(rgb, prob, m, box)
        with torch.no_grad():
            r = torch.sigmoid(net(tensors(x[None], p[None]))).numpy()[0, 0]
        y0, y1, x0, x1 = box
        out = np.zeros(truth.shape, np.float32)
        out[y0:y1, x0:x1] = cv2.resize(r, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        refined.append(iou_dice(main_component(out, 0.5) >= 0.5, truth)[0])
    return served, refined


def latency_ms(net, reps: int = 50) -> float:
    import tempfile

    import torch

    x = torch.zeros(1, 4, *SIZE)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "refiner.onnx"
        torch.onnx.export(net, x, str(path), input_names=["x"], opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        xn = x.numpy()
        for _ in range(5):
            s.run(None, {"x": xn})
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            s.run(None, {"x": xn})
            ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))


def main() -> None:
    import torch

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--folds-dir", type=Path, required=True)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--augment", type=int, default=40, help="draws per training photo")
    a = ap.parse_args()
    photos = load_real_photos(a.photos)
    held = cv_folds([p for p, _ in photos])
    for k in a.folds:
        t0 = time.time()
        segment = seg_runner(a.folds_dir / f"fold{k}" / "segmentation.onnx")
        test = set(held[k])
        train_photos = [x for x in photos if x[0] not in test]
        X, P, T = training_samples(segment, train_photos, a.augment, seed=7 * k + 1)
        print(f"fold {k}: {len(X)} training crops from {len(train_photos)} patients", flush=True)
        net = train(X, P, T, a.steps)
        served, refined = score(net, segment, [x for x in photos if x[0] in test])
        print(
            json.dumps(
                {
                    "fold": k,
                    "n_held_out": len(served),
                    "iou_served": round(float(np.mean(served)), 4),
                    "iou_refined": round(float(np.mean(refined)), 4),
                    "refiner_ms_1_thread": round(latency_ms(net), 2),
                    "minutes": round((time.time() - t0) / 60, 1),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
