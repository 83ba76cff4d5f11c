"""TensorFlow's bilinear resize, written out as plain ONNX ops (for the ONNX export).

``tf.image.resize(x, size, "bilinear")`` (half-pixel centres, no antialias) is what the
extraction reader and the ``.keras`` export use. ONNX's own ``Resize`` (what tf2onnx emits for
it) computes the same interpolation with differently rounded coordinates: up to ~1e-2 apart on
[0, 255] pixels, ~1e-5 relative in the features, enough to move a sensitive head's
probabilities past 1e-4. This graph repeats the TensorFlow CPU kernel's float32 arithmetic step
by step (``resize_bilinear_op.cc``: ``scale = in / out``, ``in = (i + 0.5) * scale - 0.5``,
``lower = max(floor(in), 0)``, ``upper = min(ceil(in), in - 1)``, ``lerp = in - floor(in)``, then
``top = tl + (tr - tl) * x_lerp`` etc.), with ``Gather`` for the reads.

The graph maps ``image`` (uint8 ``[N, H, W, C]``, any H and W) to ``resized`` (float32
``[N, size, size, C]``). The ONNX libraries are imported inside the function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnx


def _axis_weights(nodes: list, axis: int, size: int, tag: str) -> tuple[str, str, str]:
    """Nodes computing ``lower``, ``upper`` (int64 ``[size]``) and ``lerp`` (float32, shaped to
    broadcast along ``axis`` of an NHWC tensor) for one spatial axis; returns their names."""
    from onnx import helper

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{tag}_{out}"], **attrs))
        return f"{tag}_{out}"

    n_in = node("Gather", ["shape", f"axis{axis}"], "n_in")  # int64 scalar
    n_in_f = node("Cast", [n_in], "n_in_f", to=1)
    scale = node("Div", [n_in_f, f"out_size_{tag}"], "scale")
    coord = node("Sub", [node("Mul", [f"centres_{tag}", scale], "scaled"), "half"], "coord")
    floor = node("Floor", [coord], "floor")
    lower = node("Max", [node("Cast", [floor], "floor_i", to=7), "zero_i"], "lower")
    last = node("Sub", [n_in, "one_i"], "last")
    upper = node("Min", [node("Cast", [node("Ceil", [coord], "ceil")], "ceil_i", to=7), last],
                 "upper")
    lerp = node("Sub", [coord, floor], "lerp_flat")
    lerp = node("Reshape", [lerp, f"lerp_shape_{tag}"], "lerp")
    return lower, upper, lerp


def _lerp(nodes: list, a: str, b: str, t: str, out: str) -> str:
    """``a + (b - a) * t``, rounded as TensorFlow's ``compute_lerp`` rounds it."""
    from onnx import helper

    nodes += [helper.make_node("Sub", [b, a], [f"{out}_d"]),
              helper.make_node("Mul", [f"{out}_d", t], [f"{out}_dt"]),
              helper.make_node("Add", [a, f"{out}_dt"], [out])]
    return out


def _constants(size: int) -> list:
    from onnx import numpy_helper

    centres = np.arange(size, dtype=np.float32) + np.float32(0.5)  # (i + 0.5f), exact
    values = {
        "axis1": np.array(1, np.int64), "axis2": np.array(2, np.int64),
        "half": np.array(0.5, np.float32), "zero_i": np.array(0, np.int64),
        "one_i": np.array(1, np.int64),
        "out_size_y": np.array(size, np.float32), "out_size_x": np.array(size, np.float32),
        "centres_y": centres, "centres_x": centres,
        "lerp_shape_y": np.array([1, size, 1, 1], np.int64),
        "lerp_shape_x": np.array([1, 1, size, 1], np.int64),
    }
    return [numpy_helper.from_array(v, name) for name, v in values.items()]


def bilinear_resize_graph(size: int, opset: int, channels: int = 3) -> onnx.ModelProto:
    """``image`` (uint8 ``[N, H, W, channels]``) -> ``resized`` (float32 ``[N, size, size,
    channels]``), equal to ``tf.image.resize(tf.cast(image, tf.float32), (size, size),
    "bilinear")``."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
             helper.make_node("Shape", ["image"], ["shape"])]
    y_lo, y_hi, y_t = _axis_weights(nodes, 1, size, "y")
    x_lo, x_hi, x_t = _axis_weights(nodes, 2, size, "x")
    reads = {}
    for row, y_idx in (("top", y_lo), ("bottom", y_hi)):
        nodes.append(helper.make_node("Gather", ["pixels", y_idx], [f"{row}_rows"], axis=1))
        for col, x_idx in (("left", x_lo), ("right", x_hi)):
            name = f"{row}_{col}"
            nodes.append(helper.make_node("Gather", [f"{row}_rows", x_idx], [name], axis=2))
            reads[name] = name
    top = _lerp(nodes, reads["top_left"], reads["top_right"], x_t, "top")
    bottom = _lerp(nodes, reads["bottom_left"], reads["bottom_right"], x_t, "bottom")
    _lerp(nodes, top, bottom, y_t, "resized")
    graph = helper.make_graph(
        nodes, "tf_bilinear_resize",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", channels])],
        [helper.make_tensor_value_info("resized", TensorProto.FLOAT,
                                       ["N", size, size, channels])],
        initializer=_constants(size))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
