r"""SA-UNetv2 / SA-UNet as an ONNX model, built from numpyseg's own model and weights.

Optional: needs `pip install numpyseg[onnx]` (the `onnx` package; the extra also
brings onnxruntime, to run the model).  The graph is written node by node with
`onnx.helper`, reading the numpyseg UNet3 layer by layer, so every ONNX node below
maps to one numpyseg layer (and to one line of the spec):

The model's interface (opset 17):

    input   "image"        float32 (N, H, W, C_in)   NHWC, as numpyseg: RGB in [0, 1]
                                                      (numpyseg.data.io.read_image);
                                                      N, H, W dynamic, H and W multiples of 8
    output  "logits"       float32 (N, H, W, 1)       what numpyseg's model returns
    output  "probability"  float32 (N, H, W, 1)       sigmoid(logits), the vessel probability

Pad an image to multiples of 8 at the bottom and right before the model and crop
the outputs back, as numpyseg.inference does (for DRIVE, to 592 x 592).  Other sizes
give an error in the Concat of the first skip whose halves differ in size.

Inside, the tensors are NCHW (ONNX's convolutions are NCHW): one Transpose after the
input and one before each output.  Weights change layout accordingly:

    Conv           numpyseg (kh, kw, in, out)  -> ONNX (out, in, kh, kw)   w.transpose(3, 2, 0, 1)
    ConvTranspose  numpyseg (kh, kw, out, in)  -> ONNX (in, out, kh, kw)   w.transpose(3, 2, 0, 1)

Layer semantics (numpyseg's, that is the authors' Keras model):

* Conv 3x3 'same': pads 1 on every side; the 1x1 head: no padding.
* ConvTranspose 3x3, stride 2, Keras 'same': out[j] = sum over 2i + k = j of x[i] w[k],
  exactly 2H x 2W.  ONNX's output size is 2(H - 1) + 3 - pad_begin - pad_end, and its
  pads crop the full output, so pads = (0, 0, 1, 1) keeps the first 2H rows and
  columns and drops the last: exactly this alignment (not PyTorch's padding=1,
  output_padding=1, which is shifted by one pixel).
* GroupNorm (8 groups, eps 1e-3), written out rather than as the GroupNormalization
  op, whose scale and bias were per group in opset 18 and per channel from opset 21:
      x (N, C, H, W) -> (N, G, C/G * H * W); mu, var (biased) over the last axis;
      xhat = (x - mu) / sqrt(var + eps) -> (N, C, H, W); y = gamma[c] * xhat + beta[c].
* SiLU: x * sigmoid(x).  BatchNorm (SA-UNet v1, inference): the running statistics,
  then ReLU.  DropBlock: the identity at inference, so absent.
* SpatialAttention: a = concat[mean_c x, max_c x]; x * sigmoid(conv7x7(a)).
  CSA(enc, dec): a = concat[mean_c enc, mean_c dec]; enc * sigmoid(conv7x7(a)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numpyseg.atomic import atomic_write_bytes
from numpyseg.interop.weights import load_weights, require

OPSET = 17
INPUT, LOGITS, PROBABILITY = "image", "logits", "probability"


class GraphBuilder:
    """Collects ONNX nodes and initialisers; every method returns its output's name.

    Args:
        helper: the `onnx.helper` module; numpy_helper: `onnx.numpy_helper`.
    """

    def __init__(self, helper, numpy_helper):
        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers = [], []
        self._count = 0

    def constant(self, name: str, value) -> str:
        """Store an array (float32, or int64 for shapes/axes) as an initialiser named `name`."""
        value = np.asarray(value)
        value = value.astype(np.int64 if value.dtype.kind in "iu" else np.float32)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attributes) -> str:
        """Append one node; its single output is `name` or a fresh name."""
        self._count += 1
        output = name or f"{op_type.lower()}_{self._count}"
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], name=output, **attributes))
        return output


# ------------------------------------------------------------------ layers
def conv(g: GraphBuilder, x: str, name: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
    """Conv2d 'same', stride 1: numpyseg weight (kh, kw, in, out), odd kh = kw."""
    k = weight.shape[0]
    inputs = [x, g.constant(f"{name}.weight", weight.transpose(3, 2, 0, 1))]
    if bias is not None:
        inputs.append(g.constant(f"{name}.bias", bias))
    return g.op("Conv", inputs, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[1, 1])


def conv_transpose(g: GraphBuilder, x: str, name: str, weight: np.ndarray, bias: np.ndarray) -> str:
    """ConvTranspose 3x3 stride 2, Keras 'same': numpyseg weight (kh, kw, out, in); 2H x 2W out."""
    k = weight.shape[0]
    inputs = [x, g.constant(f"{name}.weight", weight.transpose(3, 2, 0, 1)), g.constant(f"{name}.bias", bias)]
    return g.op("ConvTranspose", inputs, kernel_shape=[k, k], strides=[2, 2], pads=[0, 0, 1, 1])


def channel_vector(g: GraphBuilder, name: str, values: np.ndarray) -> str:
    """A per-channel vector (C,) as (1, C, 1, 1), which broadcasts over N, H, W."""
    return g.constant(name, np.asarray(values).reshape(1, -1, 1, 1))


def group_norm(g: GraphBuilder, x: str, name: str, gamma, beta, groups: int = 8, eps: float = 1e-3) -> str:
    """GroupNorm on NCHW, from Reshape / ReduceMean / Sqrt (see the module docstring)."""
    grouped = g.op("Reshape", [x, g.constant(f"{name}.group_shape", [0, groups, -1])])
    mean = g.op("ReduceMean", [grouped], axes=[2], keepdims=1)
    centred = g.op("Sub", [grouped, mean])
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred])], axes=[2], keepdims=1)
    sigma = g.op("Sqrt", [g.op("Add", [var, g.constant(f"{name}.eps", np.float32(eps))])])
    xhat = g.op("Reshape", [g.op("Div", [centred, sigma]), g.op("Shape", [x])])
    scaled = g.op("Mul", [xhat, channel_vector(g, f"{name}.weight", gamma)])
    return g.op("Add", [scaled, channel_vector(g, f"{name}.bias", beta)])


def silu(g: GraphBuilder, x: str) -> str:
    """SiLU(x) = x * sigmoid(x)."""
    return g.op("Mul", [x, g.op("Sigmoid", [x])])


def conv_block(g: GraphBuilder, x: str, name: str, state: dict, norm: str) -> str:
    """Conv 3x3 -> (DropBlock: identity) -> GroupNorm + SiLU (v2) or BatchNorm + ReLU (v1)."""
    y = conv(g, x, f"{name}.conv", state[f"{name}.conv.weight"], state[f"{name}.conv.bias"])
    gamma, beta = state[f"{name}.norm.weight"], state[f"{name}.norm.bias"]
    if norm == "group":
        return silu(g, group_norm(g, y, f"{name}.norm", gamma, beta))
    inputs = [y, g.constant(f"{name}.norm.weight", gamma), g.constant(f"{name}.norm.bias", beta),
              g.constant(f"{name}.norm.running_mean", state[f"{name}.norm.running_mean"]),
              g.constant(f"{name}.norm.running_var", state[f"{name}.norm.running_var"])]
    return g.op("Relu", [g.op("BatchNormalization", inputs, epsilon=1e-3)])


def double_block(g: GraphBuilder, x: str, name: str, state: dict, norm: str) -> str:
    """Two conv blocks (one U-Net stage)."""
    return conv_block(g, conv_block(g, x, f"{name}.block1", state, norm), f"{name}.block2", state, norm)


def channel_mean(g: GraphBuilder, x: str) -> str:
    """mean over channels, (N, C, H, W) -> (N, 1, H, W)."""
    return g.op("ReduceMean", [x], axes=[1], keepdims=1)


def attention_gate(g: GraphBuilder, x: str, first: str, second: str, name: str, state: dict) -> str:
    """x * sigmoid(conv7x7(concat[first, second])), the gate of both attention layers."""
    a = g.op("Concat", [first, second], axis=1)
    return g.op("Mul", [x, g.op("Sigmoid", [conv(g, a, f"{name}.conv", state[f"{name}.conv.weight"], None)])])


def spatial_attention(g: GraphBuilder, x: str, name: str, state: dict) -> str:
    """x * sigmoid(conv7x7(concat[mean_c x, max_c x]))."""
    return attention_gate(g, x, channel_mean(g, x), g.op("ReduceMax", [x], axes=[1], keepdims=1), name, state)


def cross_scale_attention(g: GraphBuilder, enc: str, dec: str, name: str, state: dict) -> str:
    """enc * sigmoid(conv7x7(concat[mean_c enc, mean_c dec]))."""
    return attention_gate(g, enc, channel_mean(g, enc), channel_mean(g, dec), name, state)


def max_pool(g: GraphBuilder, x: str) -> str:
    """MaxPool 2x2, stride 2."""
    return g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])


def unet3(g: GraphBuilder, x: str, state: dict, norm: str, csa: bool) -> str:
    """The three-level U-Net of numpyseg.models.unet.UNet3, NCHW in, NCHW logits out."""
    skips = [double_block(g, x, "enc1", state, norm)]
    skips.append(double_block(g, max_pool(g, skips[-1]), "enc2", state, norm))
    skips.append(double_block(g, max_pool(g, skips[-1]), "enc3", state, norm))
    d = conv_block(g, max_pool(g, skips[-1]), "bottleneck1", state, norm)
    d = conv_block(g, spatial_attention(g, d, "attention", state), "bottleneck2", state, norm)
    for level in (3, 2, 1):
        up = conv_transpose(g, d, f"up{level}", state[f"up{level}.weight"], state[f"up{level}.bias"])
        enc = skips.pop()
        second = cross_scale_attention(g, enc, up, f"csa{level}", state) if csa else enc
        d = double_block(g, g.op("Concat", [up, second], axis=1), f"dec{level}", state, norm)
    return conv(g, d, "head", state["head.weight"], state["head.bias"])


# ------------------------------------------------------------------ the model
def onnx_model(model):
    """An onnx.ModelProto computing `model` (a numpyseg SAUNetV2 or SAUNet) at inference.

    Raises:
        ConfigError: the onnx package is missing (pip install numpyseg[onnx]).
    """
    onnx = require("onnx", "onnx")
    from onnx import TensorProto, helper, numpy_helper

    cfg = model.config
    state = {k: np.asarray(v, dtype=np.float32) for k, v in model.state_dict().items()}
    g = GraphBuilder(helper, numpy_helper)
    nchw = g.op("Transpose", [INPUT], perm=[0, 3, 1, 2])
    logits = unet3(g, nchw, state, "group" if cfg["arch"] == "sa_unetv2" else "batch",
                   csa=cfg["arch"] == "sa_unetv2")
    g.op("Transpose", [logits], name=LOGITS, perm=[0, 2, 3, 1])
    g.op("Sigmoid", [LOGITS], name=PROBABILITY)

    shape_in = ["N", "H", "W", cfg["in_channels"]]
    graph = helper.make_graph(
        g.nodes, cfg["arch"], [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", "H", "W", 1])
         for name in (LOGITS, PROBABILITY)],
        initializer=g.initializers)
    graph.doc_string = ("NHWC float32 image in [0, 1], H and W multiples of 8 -> logits and "
                        "probability (N, H, W, 1)")
    proto = helper.make_model(graph, producer_name="numpyseg", opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = min(proto.ir_version, 8)  # readable by older runtimes too
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(source, out, which: str = "best") -> Path:
    """Write the ONNX model of the weights in `source` (an .npz or a run folder) to `out`.

    Args:
        source: a numpyseg weights .npz (e.g. the shipped weights) or a run folder.
        which: for a run folder, its 'best' or 'last' checkpoint.
        out: the .onnx file to write (atomically).
    Returns:
        The path written.
    Raises:
        CheckpointError: the weights cannot be read.  ConfigError: onnx is not installed.
    """
    model, _ = load_weights(source, which)
    proto = onnx_model(model)
    return atomic_write_bytes(Path(out), proto.SerializeToString())
