"""The in-graph ONNX heatmap equals pytorch-grad-cam's GradCAM on the torch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("pytorch_grad_cam")

from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from hbscreen.training.export import (  # noqa: E402
    GROUP_NAME,
    INPUT_NAME,
    export_onnx,
)
from hbscreen.training.regressor import (  # noqa: E402
    HbNet,
    RegressorConfig,
    TrainedRegressor,
    WithFixedGroup,
)

MODELS = Path(__file__).resolve().parents[1] / "inference" / "models"


def _normalise(cam: np.ndarray) -> np.ndarray:
    """What GradCAM does with a CAM: ReLU, then min-max to [0, 1]."""
    c = np.maximum(cam, 0)
    return (c - c.min()) / (c.max() - c.min() + 1e-7)


def _gradcam(net: HbNet, x: np.ndarray, g: np.ndarray | None = None) -> np.ndarray:
    for p in net.parameters():
        p.requires_grad_(True)
    model = net if g is None else WithFixedGroup(net, torch.from_numpy(g))
    with GradCAM(model=model, target_layers=[net.features]) as cam:
        out = cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(0)])
    return out[0]


def _onnx_heatmap(path: Path, x: np.ndarray, g: np.ndarray | None = None) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: x}
    if g is not None:
        feed[GROUP_NAME] = g
    return sess.run(["heatmap"], feed)[0][0, 0]


def _random_input(rng: np.random.Generator, h: int, w: int, c: int = 3) -> np.ndarray:
    x = rng.normal(0, 1, (1, c + 1, h, w)).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    mask = (((yy - 0) / (h - 2)) ** 2 + ((xx - w / 2) / (w / 2 - 2)) ** 2 < 1).astype(np.float32)
    x[0, :c] *= mask
    x[0, c] = mask
    return x


def test_onnx_heatmap_equals_gradcam_random_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = RegressorConfig(centres=12)
    net = HbNet(rng.normal(0, 1, (12, 3)).astype(np.float32), cfg.sigma)
    with torch.no_grad():
        net.head_weight.normal_()  # both signs
        net.head_bias.fill_(0.1)
    model = TrainedRegressor(net, cfg, y_mean=10.5, y_std=1.8)
    path = tmp_path / "random.onnx"
    export_onnx(model, path)
    for _ in range(3):
        x = _random_input(rng, *cfg.size)
        ours = _onnx_heatmap(path, x)
        assert ours.min() < 0 < ours.max()
        diff = np.abs(_normalise(ours) - _gradcam(net, x)).max()
        assert diff < 1e-4, diff


def test_onnx_heatmap_equals_gradcam_with_group_input(tmp_path: Path) -> None:
    """The one model for children and adults: per-population heads selected by the group
    input, histogram + mean-colour features; Grad-CAM still equals the in-graph CAM."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    cfg = RegressorConfig(
        centres=10, colour="lab_chroma", identity=True, populations=["child", "woman", "man"]
    )
    widths = rng.uniform(0.2, 0.6, (10, 3)).astype(np.float32)  # a domain's own colour scale
    net = HbNet(rng.normal(0, 1, (10, 3)).astype(np.float32), cfg.sigma, 6, 3, widths)
    with torch.no_grad():
        net.head_weight.normal_()
        net.head_bias.copy_(torch.tensor([-0.5, 0.0, 0.7]))
    model = TrainedRegressor(net, cfg, y_mean=11.5, y_std=1.9)
    path = tmp_path / "group.onnx"
    export_onnx(model, path)
    for p in cfg.populations:
        g = model.group_matrix([p], 1)
        x = _random_input(rng, *cfg.size, c=6)
        ours = _onnx_heatmap(path, x, g)
        assert ours.min() < 0 < ours.max()
        diff = np.abs(_normalise(ours) - _gradcam(net, x, g)).max()
        assert diff < 1e-4, (p, diff)


def _torch_from_onnx(path: Path, features: dict | None = None) -> HbNet:
    """Rebuild the torch model from the shipped graph's weights (centres = W / (2 inv)); the
    card's `features` says how many centres and pooled colour channels it has."""
    import onnx
    from onnx import numpy_helper

    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    inv = float(w.get("net.features.inv", 0.5))  # unused (dropped) with per-channel widths
    features = features or {}
    proj = w["net.features.proj.weight"][:, :, 0, 0]
    n_centres = int(features.get("centres", proj.shape[0]))
    widths = None
    if "net.features.quad.weight" in w:  # per-centre, per-channel widths
        iv = -w["net.features.quad.weight"][:, :, 0, 0]
        centres = proj[:n_centres] / (2 * iv)
        widths = np.sqrt(1 / (2 * iv))
    else:
        centres = proj[:n_centres] / (2 * inv)
    head_w = w["net.head_weight"]
    net = HbNet(
        centres,
        sigma=float(np.sqrt(1 / (2 * inv))),
        identity_channels=int(features.get("identity_channels", 0)),
        populations=head_w.shape[0],
        widths=widths,
    )
    with torch.no_grad():
        net.head_weight.copy_(torch.from_numpy(head_w))
        net.head_bias.copy_(torch.from_numpy(w["net.head_bias"]))
    return net


@pytest.mark.skipif(not (MODELS / "regression.onnx").is_file(), reason="no shipped model")
def test_shipped_model_heatmap_equals_gradcam() -> None:
    """The shipped graph on a conjunctiva-like crop made by inference's own preprocessing."""
    from hbscreen.inference.modelcard import load_card
    from hbscreen.inference.preprocess import regression_input

    from .test_cpanemic import fake_cutout

    card = load_card("regression", MODELS)
    rgba = fake_cutout(np.random.default_rng(2), 9.5)
    x = regression_input(rgba[..., :3], rgba[..., 3] / 255.0, card.preprocessing)
    net = _torch_from_onnx(MODELS / card.file, card.model_extra.get("features"))
    pops = card.group_input.populations if card.group_input else [None]
    for p in pops:
        g = None
        if p is not None:
            g = np.zeros((1, len(pops)), np.float32)
            g[0, pops.index(p)] = 1.0
        ours = _onnx_heatmap(MODELS / card.file, x, g)
        assert ours.shape == tuple(card.preprocessing.size)
        diff = np.abs(_normalise(ours) - _gradcam(net, x, g)).max()
        assert diff < 1e-4, (p, diff)
