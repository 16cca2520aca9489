"""ONNX export of the Hb regressor (outputs `hb` and the in-graph `heatmap`) and its card."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hbscreen.inference.modelcard import Calibration, GroupInput, ModelCard, TensorSpec

from .regressor import COLOUR_CHANNELS, TrainedRegressor

INPUT_NAME = "crop"
GROUP_NAME = "group"
OUTPUTS = {"hb": "hb", "heatmap": "heatmap"}


def export_onnx(model: TrainedRegressor, path: Path, opset: int = 17) -> None:
    """Write the graph: inputs crop 1 x (C+1) x H x W (and group 1 x P where the model takes
    the population) -> hb [1, 1] (g/dL), heatmap [1, 1, H, W]."""
    module = model.export_module()
    h, w = model.cfg.size
    dummy = torch.zeros(1, input_channels(model), h, w)
    dummy[:, -1] = 1.0
    args: tuple = (dummy,)
    names = [INPUT_NAME]
    if model.cfg.populations:
        g = torch.zeros(1, len(model.cfg.populations))
        g[0, 0] = 1.0
        args, names = (dummy, g), [INPUT_NAME, GROUP_NAME]
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still exact
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(module, args, names, path, opset)


def input_channels(model: TrainedRegressor) -> int:
    """Colour channels + mask of the model's input tensor."""
    return COLOUR_CHANNELS.get(model.cfg.colour, 3) + 1


def _export(module: torch.nn.Module, args: tuple, names: list[str], path: Path, opset: int) -> None:
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=names,
        output_names=list(OUTPUTS.values()),
        opset_version=opset,
        dynamo=False,
    )


def check_onnx(
    model: TrainedRegressor, path: Path, x: np.ndarray, pops: list[str] | None = None
) -> float:
    """Max |hb difference| (g/dL) between onnxruntime and torch on inputs x (N x C x H x W)
    with populations `pops` (every population in turn when None and the model takes one)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if not model.cfg.populations:
        onnx_hb = np.array(
            [sess.run(["hb"], {INPUT_NAME: x[i : i + 1]})[0].item() for i in range(len(x))]
        )
        return float(np.abs(onnx_hb - model.predict(x)).max())
    worst = 0.0
    for plist in [pops] if pops is not None else [[p] * len(x) for p in model.cfg.populations]:
        g = model.group_matrix(plist, len(x))
        onnx_hb = np.array(
            [
                sess.run(["hb"], {INPUT_NAME: x[i : i + 1], GROUP_NAME: g[i : i + 1]})[0].item()
                for i in range(len(x))
            ]
        )
        worst = max(worst, float(np.abs(onnx_hb - model.predict(x, plist)).max()))
    return worst


def regression_card(
    model: TrainedRegressor,
    *,
    file: str,
    version: str,
    q80: float,
    q95: float,
    n_calibration: int,
    training_data: dict[str, Any],
    metrics: dict[str, Any],
    licence: str,
    citation: list[str],
    validated_groups: list[str],
    extra: dict[str, Any] | None = None,
    calibration: Calibration | None = None,
    group_input: GroupInput | None = None,
) -> ModelCard:
    """The JSON contract inference reads (see inference/modelcard.py)."""
    h, w = model.cfg.size
    inputs = [TensorSpec(name=INPUT_NAME, shape=[1, input_channels(model), h, w])]
    if model.cfg.populations:
        inputs.append(
            TensorSpec(name=GROUP_NAME, shape=[1, len(model.cfg.populations)], layout="NC")
        )
    return ModelCard(
        name="regression",
        version=version,
        task="regression",
        file=file,
        inputs=inputs,
        outputs=dict(OUTPUTS),
        preprocessing=model.cfg.preprocessing(),
        calibration=calibration
        or Calibration(
            q80=q80,
            q95=q95,
            n_calibration=n_calibration,
            referral_margin=model.referral_margin,
        ),
        validated_groups=validated_groups,
        group_input=group_input,
        training_data=training_data,
        metrics=metrics,
        licence=licence,
        citation=citation,
        **(extra or {}),
    )


def write_card(card: ModelCard, path: Path) -> None:
    path.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n", "utf-8")
