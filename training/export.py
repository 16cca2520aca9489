"""ONNX export of the Hb regressor (outputs `hb` and the in-graph `heatmap`) and its card."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hbscreen.inference.modelcard import Calibration, ModelCard, TensorSpec

from .regressor import TrainedRegressor

INPUT_NAME = "crop"
OUTPUTS = {"hb": "hb", "heatmap": "heatmap"}


def export_onnx(model: TrainedRegressor, path: Path, opset: int = 17) -> None:
    """Write the graph: input 1 x (3+1) x H x W -> hb [1, 1] (g/dL), heatmap [1, 1, H, W]."""
    module = model.export_module()
    h, w = model.cfg.size
    dummy = torch.zeros(1, 4, h, w)
    dummy[:, -1] = 1.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, still exact
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(module, dummy, path, opset)


def _export(module: torch.nn.Module, dummy: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        module,
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUTS.values()),
        opset_version=opset,
        dynamo=False,
    )


def check_onnx(model: TrainedRegressor, path: Path, x: np.ndarray) -> float:
    """Max |hb difference| (g/dL) between onnxruntime and torch on inputs x (N x C x H x W)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_hb = np.array(
        [sess.run(["hb"], {INPUT_NAME: x[i : i + 1]})[0].item() for i in range(len(x))]
    )
    return float(np.abs(onnx_hb - model.predict(x)).max())


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
) -> ModelCard:
    """The JSON contract inference reads (see inference/modelcard.py)."""
    h, w = model.cfg.size
    return ModelCard(
        name="regression",
        version=version,
        task="regression",
        file=file,
        inputs=[TensorSpec(name=INPUT_NAME, shape=[1, 4, h, w])],
        outputs=dict(OUTPUTS),
        preprocessing=model.cfg.preprocessing(),
        calibration=Calibration(
            q80=q80,
            q95=q95,
            n_calibration=n_calibration,
            referral_margin=model.referral_margin,
        ),
        validated_groups=validated_groups,
        training_data=training_data,
        metrics=metrics,
        licence=licence,
        citation=citation,
        **(extra or {}),
    )


def write_card(card: ModelCard, path: Path) -> None:
    path.write_text(json.dumps(card.model_dump(mode="json"), indent=2) + "\n", "utf-8")
