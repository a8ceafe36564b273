"""Hand-built ONNX graphs with a vidcls card, for tests of what an exported file can do wrong:
outputs that disagree with its labels, a Loop that runs 10^12 times. Built with onnx.helper in
milliseconds (no torch export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def tiny_onnx(path: Path, card: dict, classes: int, loop_trips: int | None = None) -> Path:
    """A graph taking the card's (batch, 3, T, S, S) clip to (batch, classes) logits (mean colour x a fixed
    matrix), with `card` in its metadata as `vidcls export` writes it; loop_trips adds a Loop of that
    many iterations whose result is multiplied by 0 (it changes nothing but the time taken)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    frames, size = card["input"]["frames"], card["input"]["size"]
    nodes = [helper.make_node("ReduceMean", ["video", "axes"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "weight"], ["raw"])]
    inits = [numpy_helper.from_array(np.array([2, 3, 4], np.int64), "axes"),
             numpy_helper.from_array(np.arange(3 * classes, dtype=np.float32).reshape(3, classes) / 10, "weight")]
    if loop_trips:
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Add", ["x_in", "one"], ["x_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []),
             helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [])],
            [numpy_helper.from_array(np.array(1.0, np.float32), "one")])
        nodes += [helper.make_node("Loop", ["trips", "cond", "zero"], ["count"], body=body),
                  helper.make_node("Mul", ["count", "zero"], ["nothing"]),
                  helper.make_node("Add", ["raw", "nothing"], ["logits"])]
        inits += [numpy_helper.from_array(np.array(loop_trips, np.int64), "trips"),
                  numpy_helper.from_array(np.array(True), "cond"),
                  numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    else:
        nodes.append(helper.make_node("Identity", ["raw"], ["logits"]))
    video = helper.make_tensor_value_info("video", TensorProto.FLOAT, ["batch", 3, frames, size, size])
    graph = helper.make_graph(nodes, "tiny", [video],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, {"vidcls.card": json.dumps(card)})
    onnx.save(model, str(path))
    return path
