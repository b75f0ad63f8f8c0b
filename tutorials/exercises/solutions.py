"""The solution key of exercises.py: every exercise answered by numpyseg itself.

Each answer runs the library's layer (a Module, in float64) or function, taken from
grade.LIBRARY, so the key is exactly what the network computes.  To see how each is
*written*, read the layer's file in numpyseg/layers/ (the reference beside the fast path).
The helpers at the end (forward passes) are what the grader's gradient checks differentiate.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grade import LIBRARY  # noqa: E402  (tutorials/exercises/grade.py, beside this file)


def _conv_layer(w, b):
    k, _, c_in, c_out = w.shape
    layer = LIBRARY["Conv2d"](c_in, c_out, k, bias=True, rng=0).to(np.float64)
    layer.weight.data = np.array(w, dtype=np.float64)
    layer.bias.data = np.zeros(c_out) + b
    return layer


def conv2d_forward(x, w, b):
    return _conv_layer(w, b)(x)


def conv2d_backward(dout, x, w):
    layer = _conv_layer(w, 0.0)
    layer(x)
    dx = layer.backward(dout)
    return dx, layer.weight.grad, layer.bias.grad


def col2im(cols, k):
    return LIBRARY["col2im"](cols, k)


def maxpool2d_backward(dout, x):
    pool = LIBRARY["MaxPool2d"]()
    pool(x)
    return pool.backward(dout)


def conv_transpose_layer(w, b):
    """A float64 ConvTranspose2d(3x3, stride 2) holding w (3, 3, C_out, C_in) and b (C_out,)."""
    k, _, c_out, c_in = w.shape
    layer = LIBRARY["ConvTranspose2d"](c_in, c_out, k, stride=2, rng=0).to(np.float64)
    layer.weight.data = np.array(w, dtype=np.float64)
    layer.bias.data = np.zeros(c_out) + b
    return layer


def conv_transpose2d_forward(x, w, b):
    return conv_transpose_layer(w, b)(x)


def _groupnorm_layer(gamma, beta, num_groups, eps):
    layer = LIBRARY["GroupNorm"](len(gamma), num_groups, eps).to(np.float64)
    layer.weight.data = np.array(gamma, dtype=np.float64)
    layer.bias.data = np.array(beta, dtype=np.float64)
    return layer


def groupnorm_forward(x, gamma, beta, num_groups, eps):
    return _groupnorm_layer(gamma, beta, num_groups, eps)(x)


def groupnorm_backward(dout, x, gamma, num_groups, eps):
    layer = _groupnorm_layer(gamma, np.zeros_like(gamma), num_groups, eps)
    layer(x)
    dx = layer.backward(dout)
    return dx, layer.weight.grad, layer.bias.grad


def dropblock_gamma(rate, height, width, block_size):
    return LIBRARY["dropblock_gamma"](rate, height, width, block_size, block_size)


def _attention_layer(w):
    layer = LIBRARY["CrossScaleSpatialAttention"](w.shape[0], rng=0).to(np.float64)
    layer.conv.weight.data = np.array(w, dtype=np.float64)
    return layer


def cross_scale_attention_forward(enc, dec, w):
    return _attention_layer(w)(enc, dec)


def cross_scale_attention_backward(dout, enc, dec, w):
    layer = _attention_layer(w)
    layer(enc, dec)
    d_enc, d_dec = layer.backward(dout)
    return d_enc, d_dec, layer.conv.weight.grad


def mcc_loss_gradient(z, y):
    return LIBRARY["mcc_loss"](z, y)[1]


def adam_step(theta, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
    param = LIBRARY["Parameter"](np.array(theta, dtype=np.float64))
    param.grad = np.array(g, dtype=np.float64)
    adam = LIBRARY["Adam"]([("theta", param)], lr=lr, beta1=beta1, beta2=beta2, eps=eps)
    adam.state["m"]["theta"] = np.array(m, dtype=np.float64)
    adam.state["v"]["theta"] = np.array(v, dtype=np.float64)
    adam.step_count = t - 1  # step() counts this step as t
    adam.step()
    return param.data, adam.state["m"]["theta"], adam.state["v"]["theta"]
