"""A Module called more than once in one forward pass: its caches form a stack.

Each forward pushes a cache, each backward pops the newest, so the parent's backward calls
the shared layer's backward once per call, in reverse order, and both contributions add up
in Parameter.grad.
"""

from __future__ import annotations

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers import Conv2d, MaxPool2d, Module, no_grad
from numpyseg.layers.activations import SiLU
from numpyseg.models import build_model


class TwiceConv(Module):
    """y = conv(silu(conv(x))): one Conv2d, one set of weights, used twice."""

    def __init__(self, channels=3, rng=0):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, rng=rng)
        self.act = SiLU()

    def forward(self, x):
        return self.conv(self.act(self.conv(x)))

    def backward(self, dout):
        # reverse order: the second call's backward first
        return self.conv.backward(self.act.backward(self.conv.backward(dout)))


class TwoConvs(Module):
    """The same network with two separate layers: the reference for TwiceConv."""

    def __init__(self):
        super().__init__()
        self.first, self.second = Conv2d(3, 3, 3, rng=0), Conv2d(3, 3, 3, rng=0)
        self.act = SiLU()

    def forward(self, x):
        return self.second(self.act(self.first(x)))

    def backward(self, dout):
        return self.first.backward(self.act.backward(self.second.backward(dout)))


def test_a_layer_used_twice_gets_the_sum_of_both_gradients():
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((2, 6, 5, 3)), rng.standard_normal((2, 6, 5, 3))
    twice = TwiceConv().to(np.float64)
    twice.conv.bias.data = rng.standard_normal(3)
    two = TwoConvs().to(np.float64)
    for layer in (two.first, two.second):
        layer.load_state_dict(twice.conv.state_dict())
    out = twice(x)
    np.testing.assert_allclose(out, two(x), rtol=1e-12)
    assert len(twice.conv._caches) == 2  # one cache per call
    dx = twice.backward(g)
    np.testing.assert_allclose(dx, two.backward(g), rtol=1e-10, atol=1e-12)
    for name in ("weight", "bias"):
        both = getattr(two.first, name).grad + getattr(two.second, name).grad
        np.testing.assert_allclose(getattr(twice.conv, name).grad, both, rtol=1e-10, atol=1e-12)
    assert twice.conv._caches == [] and twice.conv._cache is None  # every cache consumed


def test_a_layer_used_twice_passes_the_gradient_check():
    rng = np.random.default_rng(1)
    model = TwiceConv(rng=2)
    model.conv.bias.data = rng.standard_normal(3)
    report = check_module(model, [rng.standard_normal((2, 6, 5, 3))])
    assert report.passed, report.table()
    assert set(report.tensors) == {"input0", "conv.weight", "conv.bias"}


def test_caches_of_different_shapes_are_popped_in_reverse_order():
    class PoolTwice(Module):
        def __init__(self):
            super().__init__()
            self.pool = MaxPool2d()

        def forward(self, x):
            return self.pool(self.pool(x))

        def backward(self, dout):
            return self.pool.backward(self.pool.backward(dout))

    rng = np.random.default_rng(3)
    x = rng.permutation(2 * 8 * 8 * 2).reshape(2, 8, 8, 2) * 1e-2  # no ties
    model = PoolTwice()
    assert model(x).shape == (2, 2, 2, 2)
    assert model.backward(np.ones((2, 2, 2, 2))).shape == x.shape
    assert check_module(PoolTwice(), [x]).passed


def test_backward_more_often_than_forward_fails_clearly():
    layer = Conv2d(3, 4, 3, rng=0)
    x = np.zeros((1, 4, 4, 3), np.float32)
    layer(x)
    layer.backward(np.ones((1, 4, 4, 4), np.float32))
    with pytest.raises(RuntimeError, match=r"Conv2d.backward\(\) called without a forward .* more often"):
        layer.backward(np.ones((1, 4, 4, 4), np.float32))


def test_no_grad_keeps_nothing_and_drops_leftover_caches():
    layer = Conv2d(3, 4, 3, rng=0)
    x = np.zeros((1, 4, 4, 3), np.float32)
    layer(x)
    layer(x)  # a forward whose backward never came
    assert len(layer._caches) == 2
    with no_grad():
        layer(x)
    assert layer._caches == [] and layer._cache is None


def test_the_model_calls_each_layer_once_and_backward_consumes_every_cache():
    model = build_model({"arch": "sa_unetv2", "base_channels": 8, "dropblock_rate": 0.1, "seed": 0})
    x = np.random.default_rng(4).random((1, 16, 16, 3), dtype=np.float32)
    model.train()
    out = model(x)
    depths = {name: len(m._caches) for name, m in model.named_modules()}
    assert max(depths.values()) == 1, [name for name, d in depths.items() if d > 1]
    assert depths["enc1.block1.conv"] == depths["head"] == 1
    model.backward(np.ones_like(out))
    assert all(m._caches == [] for _, m in model.named_modules())
    # inference: eval mode under no_grad keeps nothing and gives the same output twice
    model.eval()
    with no_grad():
        first, second = model(x), model(x)
    np.testing.assert_array_equal(first, second)
    assert all(m._cache is None for _, m in model.named_modules())
