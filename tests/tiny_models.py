"""Tiny ONNX models with the same contract as the shipped ones, for fast mechanical tests.

They are real ONNX graphs run by onnxruntime, but their outputs are simple colour rules, not
learned: use the shipped models wherever a test is about accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEG_SIZE = 64
REG_SIZE = 32
HB_MEAN, HB_STD = 11.0, 1.5


def _save(model: onnx.ModelProto, path: Path) -> None:
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _segmentation(path: Path) -> None:
    # logit = 10 * ((R - G) / 128 - 0.6): a red-against-skin rule.
    w = np.zeros((1, 3, 1, 1), np.float32)
    w[0, 0, 0, 0], w[0, 1, 0, 0] = 10.0, -10.0
    b = np.array([-6.0], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"])],
        "tiny_segmentation",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SEG_SIZE, SEG_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, SEG_SIZE, SEG_SIZE])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    _save(helper.make_model(graph), path)


def _regression(path: Path) -> None:
    # Conv features -> GAP -> linear head; heatmap = 1x1 conv with the head weights, upsampled.
    rng = np.random.default_rng(0)
    wf = rng.normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32)
    wh = rng.normal(0, 0.5, (1, 4)).astype(np.float32)
    bh = np.array([0.0], np.float32)
    inits = [
        numpy_helper.from_array(wf, "wf"),
        numpy_helper.from_array(wh, "wh"),
        numpy_helper.from_array(bh, "bh"),
        numpy_helper.from_array(wh.reshape(1, 4, 1, 1), "wh_conv"),
        numpy_helper.from_array(np.array([HB_STD], np.float32), "std"),
        numpy_helper.from_array(np.array([HB_MEAN], np.float32), "mean"),
        numpy_helper.from_array(np.array([1, 1, REG_SIZE, REG_SIZE], np.int64), "sizes"),
    ]
    nodes = [
        helper.make_node("Conv", ["crop", "wf"], ["f0"]),
        helper.make_node("Relu", ["f0"], ["feat"]),
        helper.make_node("GlobalAveragePool", ["feat"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wh", "bh"], ["z"], transB=1),
        helper.make_node("Mul", ["z", "std"], ["zs"]),
        helper.make_node("Add", ["zs", "mean"], ["hb"]),
        helper.make_node("Conv", ["feat", "wh_conv"], ["cam_small"]),
        helper.make_node(
            "Resize",
            ["cam_small", "", "", "sizes"],
            ["heatmap"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_regression",
        [helper.make_tensor_value_info("crop", TensorProto.FLOAT, [1, 3, REG_SIZE, REG_SIZE])],
        [
            helper.make_tensor_value_info("hb", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [1, 1, REG_SIZE, REG_SIZE]),
        ],
        inits,
    )
    _save(helper.make_model(graph), path)


def _card(name: str, task: str, size: int, input_name: str, outputs: dict, **extra) -> dict:
    return {
        "name": name,
        "version": "0.0.0-tiny",
        "task": task,
        "file": f"{name}.onnx",
        "inputs": [{"name": input_name, "shape": [1, 3, size, size]}],
        "outputs": outputs,
        "preprocessing": {"size": [size, size], "mean": [127, 127, 127], "std": [128, 128, 128]},
        "licence": "test only",
        **extra,
    }


def build_tiny_models(root: Path) -> Path:
    """Write segmentation.{onnx,json} and regression.{onnx,json} into `root`; return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _segmentation(root / "segmentation.onnx")
    _regression(root / "regression.onnx")
    cards = {
        "segmentation": _card(
            "segmentation",
            "segmentation",
            SEG_SIZE,
            "image",
            {"logits": "logits"},
            threshold=0.5,
        ),
        "regression": _card(
            "regression",
            "regression",
            REG_SIZE,
            "crop",
            {"hb": "hb", "heatmap": "heatmap"},
            calibration={"q80": 1.5, "q95": 2.6, "n_calibration": 100},
            validated_groups=["child-6-23m", "child-24-59m"],
        ),
    }
    for name, card in cards.items():
        (root / f"{name}.json").write_text(json.dumps(card, indent=2), "utf-8")
    return root
