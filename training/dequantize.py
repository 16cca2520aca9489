"""An int8 QDQ graph as the equivalent float graph, so PyTorch eager can run the model served.

Weights become float initializers holding exactly the dequantised int8 values, and each
activation QuantizeLinear -> DequantizeLinear pair is removed (a float graph does not round
activations), or becomes a Relu where its range starts at zero: the quantiser folds a ReLU
into the pair that follows it. What remains is the served network in float: the fair eager
counterpart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def dequantized(path: Path):
    """Load an ONNX model and return a float ModelProto without Q/DQ nodes."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts = {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in graph.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
    }
    values = {**consts, **inits}
    nodes = list(graph.node)  # index-addressed: protobuf wrappers have no stable identity
    rename: dict[str, str] = {}  # DQ output -> the float tensor that replaces it
    new_inits, drop, relus = [], set(), []
    for k, node in enumerate(nodes):
        if node.op_type == "DequantizeLinear" and node.input[0] in values:
            q = values[node.input[0]].astype(np.float32)
            scale = values[node.input[1]].astype(np.float32)
            zp = values[node.input[2]].astype(np.float32) if len(node.input) > 2 else 0.0
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if np.ndim(scale) == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale = scale.reshape(shape)
                zp = np.reshape(zp, shape) if np.ndim(zp) == 1 else zp
            new_inits.append(numpy_helper.from_array((q - zp) * scale, node.output[0]))
            drop.add(k)
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    for k, node in enumerate(nodes):
        if node.op_type == "DequantizeLinear" and k not in drop:
            j = producer.get(node.input[0])
            if j is not None and nodes[j].op_type == "QuantizeLinear":
                drop.update((k, j))
                q = nodes[j]
                zp = values.get(q.input[2]) if len(q.input) > 2 else None
                if zp is not None and zp.dtype == np.uint8 and not np.any(zp):
                    relus.append(onnx.helper.make_node("Relu", [q.input[0]], [node.output[0]]))
                else:
                    rename[node.output[0]] = q.input[0]
    kept = [
        onnx.NodeProto.FromString(n.SerializeToString())
        for k, n in enumerate(nodes)
        if k not in drop
    ]
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
    known = {i.name for i in graph.input} | set(values) | {i.name for i in new_inits}
    kept = _topological(kept + relus, known)
    for out in graph.output:
        out.name = rename.get(out.name, out.name)
    used = {i for n in kept for i in n.input}
    floats = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(floats + [i for i in new_inits if i.name in used])
    return model


def is_quantized(path: Path) -> bool:
    import onnx

    return any(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)


def _topological(nodes: list, available: set[str]) -> list:
    """Order nodes so each runs after its inputs exist (the Relus are appended unsorted)."""
    out, pending, have = [], list(nodes), set(available) | {""}
    while pending:
        ready = [n for n in pending if all(i in have for i in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or a missing input")
        for n in ready:
            out.append(n)
            have.update(n.output)
        pending = [n for n in pending if n not in ready]
    return out
