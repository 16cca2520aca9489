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

from hbscreen.training.export import INPUT_NAME, export_onnx  # noqa: E402
from hbscreen.training.regressor import HbNet, RegressorConfig, TrainedRegressor  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "inference" / "models"


def _normalise(cam: np.ndarray) -> np.ndarray:
    """What GradCAM does with a CAM: ReLU, then min-max to [0, 1]."""
    c = np.maximum(cam, 0)
    return (c - c.min()) / (c.max() - c.min() + 1e-7)


def _gradcam(net: HbNet, x: np.ndarray) -> np.ndarray:
    for p in net.parameters():
        p.requires_grad_(True)
    with GradCAM(model=net, target_layers=[net.features]) as cam:
        out = cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(0)])
    return out[0]


def _onnx_heatmap(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["heatmap"], {INPUT_NAME: x})[0][0, 0]


def _random_input(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    x = rng.normal(0, 1, (1, 4, h, w)).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    mask = (((yy - 0) / (h - 2)) ** 2 + ((xx - w / 2) / (w / 2 - 2)) ** 2 < 1).astype(np.float32)
    x[0, :3] *= mask
    x[0, 3] = mask
    return x


def test_onnx_heatmap_equals_gradcam_random_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    cfg = RegressorConfig(centres=12)
    net = HbNet(rng.normal(0, 1, (12, 3)).astype(np.float32), cfg.sigma)
    with torch.no_grad():
        net.head.weight.normal_()  # both signs
        net.head.bias.fill_(0.1)
    model = TrainedRegressor(net, cfg, y_mean=10.5, y_std=1.8)
    path = tmp_path / "random.onnx"
    export_onnx(model, path)
    for _ in range(3):
        x = _random_input(rng, *cfg.size)
        ours = _onnx_heatmap(path, x)
        assert ours.min() < 0 < ours.max()
        diff = np.abs(_normalise(ours) - _gradcam(net, x)).max()
        assert diff < 1e-4, diff


def _torch_from_onnx(path: Path) -> HbNet:
    """Rebuild the torch model from the shipped graph's weights (centres = W / (2 inv))."""
    import onnx
    from onnx import numpy_helper

    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    inv = float(w["net.features.inv"])
    centres = w["net.features.proj.weight"][:, :, 0, 0] / (2 * inv)
    net = HbNet(centres, sigma=float(np.sqrt(1 / (2 * inv))))
    with torch.no_grad():
        net.head.weight.copy_(torch.from_numpy(w["net.head.weight"]))
        net.head.bias.copy_(torch.from_numpy(w["net.head.bias"]))
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
    ours = _onnx_heatmap(MODELS / card.file, x)
    assert ours.shape == tuple(card.preprocessing.size)
    net = _torch_from_onnx(MODELS / card.file)
    diff = np.abs(_normalise(ours) - _gradcam(net, x)).max()
    assert diff < 1e-4, diff
