"""Concat: forward layout, split backward, gradient check, shape errors."""

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.concat import Concat


@pytest.mark.parametrize("shape,c_a,c_b", [((2, 5, 6), 3, 4), ((3, 4, 4), 1, 1), ((2, 7, 3), 16, 2)])
def test_forward_and_gradcheck(rng, shape, c_a, c_b):
    a = rng.standard_normal(shape + (c_a,))
    b = rng.standard_normal(shape + (c_b,))
    layer = Concat()
    out = layer(a, b)
    assert out.shape == shape + (c_a + c_b,)
    np.testing.assert_array_equal(out[..., :c_a], a)
    np.testing.assert_array_equal(out[..., c_a:], b)
    report = check_module(layer, [a, b])
    assert report.passed, report
    assert set(report.errors) == {"input0", "input1"}


def test_backward_splits_and_does_not_alias(rng):
    layer = Concat()
    layer(rng.standard_normal((2, 3, 3, 2)), rng.standard_normal((2, 3, 3, 5)))
    dout = rng.standard_normal((2, 3, 3, 7)).astype(np.float32)
    da, db = layer.backward(dout)
    assert da.shape == (2, 3, 3, 2) and db.shape == (2, 3, 3, 5) and da.dtype == np.float32
    assert da.flags.c_contiguous and db.flags.c_contiguous
    np.testing.assert_array_equal(np.concatenate([da, db], axis=3), dout)
    da += 1  # a caller accumulating into the gradient must not change dout
    np.testing.assert_array_equal(dout[..., :2] + 1, da)


@pytest.mark.parametrize("shape_b", [(2, 4, 3, 2), (2, 3, 4, 2), (1, 3, 3, 2)])
def test_mismatched_sizes_are_rejected(rng, shape_b):
    with pytest.raises(ValueError, match="same \\(N, H, W\\)"):
        Concat()(rng.standard_normal((2, 3, 3, 1)), rng.standard_normal(shape_b))


def test_bad_inputs(rng):
    with pytest.raises(ValueError, match="NHWC"):
        Concat()(rng.standard_normal((3, 3, 1)), rng.standard_normal((1, 3, 3, 1)))
