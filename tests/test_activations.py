"""Activations: stable sigmoid, gradient checks, dtype, PyTorch parity, bad input."""

import warnings

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.activations import (
    ReLU,
    Sigmoid,
    SiLU,
    relu_backward_fast,
    relu_backward_reference,
    relu_forward_fast,
    relu_forward_reference,
    sigmoid,
    sigmoid_backward_fast,
    sigmoid_backward_reference,
    sigmoid_forward_fast,
    sigmoid_forward_reference,
    silu_backward_fast,
    silu_backward_reference,
    silu_forward_fast,
    silu_forward_reference,
)

rel = lambda a, b: np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_and_keeps_dtype(dtype):
    x = np.array([-1000, -100, -20, -1, 0, 1, 20, 100, 1000], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            s = sigmoid(x)
    assert s.dtype == dtype
    assert np.all(np.isfinite(s)) and np.all((s >= 0) & (s <= 1))
    assert s[0] == 0 and s[-1] == 1 and s[4] == 0.5
    # relative accuracy in the lower tail, where 1 - sigmoid(-x) would cancel
    exact = 1 / (1 + np.exp(np.array([100.0, 20.0, 1.0])))
    # (float32 holds sigmoid(-100) = 3.7e-44 only as a subnormal with a few bits: absolute check)
    np.testing.assert_allclose(s[1:4], exact, rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-44)
    np.testing.assert_allclose(s + sigmoid(-x), 1, rtol=1e-6)


def test_sigmoid_of_scalars_and_integers():
    assert sigmoid(np.float64(0.0)) == 0.5
    np.testing.assert_allclose(sigmoid(np.array([0, 2])), [0.5, 1 / (1 + np.exp(-2))])


def test_silu_and_relu_formulas(rng):
    x = rng.standard_normal((3, 4, 5, 2))
    s = 1 / (1 + np.exp(-x))
    for forward, backward in ((silu_forward_reference, silu_backward_reference), (silu_forward_fast, silu_backward_fast)):
        y, cache = forward(x)
        np.testing.assert_allclose(y, x / (1 + np.exp(-x)), rtol=1e-14)
        np.testing.assert_allclose(backward(np.ones_like(x), cache), s * (1 + x * (1 - s)), rtol=1e-13)
    for forward, backward in ((relu_forward_reference, relu_backward_reference), (relu_forward_fast, relu_backward_fast)):
        y, cache = forward(x)
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        np.testing.assert_array_equal(backward(np.ones_like(x), cache), (x > 0).astype(float))
    # SiLU at large |x| stays finite: x for x >> 0, -0 for x << 0
    big = np.array([-1000.0, 1000.0], dtype=np.float32)
    np.testing.assert_array_equal(SiLU()(big), [0, 1000])


@pytest.mark.parametrize("cls", [SiLU, Sigmoid, ReLU])
@pytest.mark.parametrize("shape", [(2, 4, 5, 3), (3, 3, 2, 1)])
def test_activation_gradcheck(rng, cls, shape):
    x = rng.standard_normal(shape) * 3
    if cls is ReLU:
        # keep inputs away from the kink at 0, where the function is not differentiable
        x = np.where(np.abs(x) < 0.05, 0.5, x)
    report = check_module(cls(), [x], tolerance=1e-6)
    assert report.passed, report


@pytest.mark.parametrize("cls", [SiLU, Sigmoid, ReLU])
def test_activation_keeps_float32(rng, cls):
    layer = cls()
    x = rng.standard_normal((2, 3, 3, 4)).astype(np.float32)
    assert layer(x).dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32


@pytest.mark.parametrize("name", ["SiLU", "ReLU", "Sigmoid"])
def test_activation_matches_torch(rng, torch, name):
    layer = {"SiLU": SiLU, "ReLU": ReLU, "Sigmoid": Sigmoid}[name]()
    tfun = {"SiLU": torch.nn.functional.silu, "ReLU": torch.relu, "Sigmoid": torch.sigmoid}[name]
    x = (rng.standard_normal((2, 7, 6, 5)) * 4).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    out = layer(x)
    dx = layer.backward(g)
    tx = torch.tensor(x, requires_grad=True)  # element-wise: the layout does not matter
    tout = tfun(tx)
    tout.backward(torch.tensor(g))
    assert rel(out, tout.detach().numpy()) < 1e-4
    assert rel(dx, tx.grad.numpy()) < 1e-4


@pytest.mark.parametrize("cls", [SiLU, Sigmoid, ReLU])
def test_activation_bad_input(cls):
    with pytest.raises(ValueError, match="floating-point"):
        cls()(np.ones((1, 2, 2, 1), dtype=np.int32))
    with pytest.raises(ValueError, match="type list"):
        cls()([[1.0, 2.0]])


# ------------------------------------------------------------- numba kernels vs NumPy references
@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("shape", [(), (7,), (2, 5, 3, 4), (1, 33, 17, 16)])
def test_kernels_match_numpy_references(rng, dtype, rtol, shape):
    x = (rng.standard_normal(shape) * 8).astype(dtype)
    if x.size >= 4:
        x.reshape(-1)[:4] = [100, -100, 0, -1000]  # both tails and the branch point
    dout = rng.standard_normal(shape).astype(dtype)
    y_ref, cache_ref = silu_forward_reference(x)
    y, cache = silu_forward_fast(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_allclose(y, y_ref, rtol=rtol, atol=rtol * 1e-3)
    # absolute slack near silu's minimum, where 1 + x (1 - s) cancels (float32 rounding on both sides)
    np.testing.assert_allclose(silu_backward_fast(dout, cache), silu_backward_reference(dout, cache_ref),
                               rtol=rtol, atol=rtol / 2)
    s, s_cache = sigmoid_forward_fast(x)
    # the float32 kernel flushes results below the smallest normal float32 to zero
    np.testing.assert_allclose(s, sigmoid(x), rtol=rtol, atol=float(np.finfo(dtype).tiny))
    np.testing.assert_allclose(sigmoid_backward_fast(dout, s_cache), dout * sigmoid(x) * (1 - sigmoid(x)),
                               rtol=rtol, atol=rtol / 2)
    s_ref, s_ref_cache = sigmoid_forward_reference(x)
    np.testing.assert_array_equal(s_ref, sigmoid(x))
    np.testing.assert_allclose(sigmoid_backward_reference(dout, s_ref_cache), sigmoid_backward_fast(dout, s_cache),
                               rtol=rtol, atol=rtol / 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jitted_sigmoid_twins_equal_the_numpy_sigmoid(dtype):
    """The scalar sigmoids compiled into the GroupNorm + SiLU and attention kernels are the same function."""
    import numba

    from numpyseg.kernels.activations import _sigmoid1
    from numpyseg.kernels.attention import _sigmoid

    @numba.njit
    def run(values, one):
        a, b = np.empty_like(values), np.empty_like(values)
        for i in range(values.size):
            a[i] = _sigmoid1(values[i], one)
            b[i] = _sigmoid(values[i])
        return a, b

    x = np.concatenate([np.linspace(-120, 120, 20_001), [-1000.0, -88.0, 0.0, 88.0, 1000.0]]).astype(dtype)
    kernel, attention = run(x, dtype(1))
    tiny = 2 * float(np.finfo(dtype).tiny)  # the float32 kernel flushes e^-87.33 (~ tiny) and below to zero
    rtol = 3e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(kernel, sigmoid(x), rtol=rtol, atol=tiny)
    np.testing.assert_allclose(attention, sigmoid(x), rtol=rtol, atol=tiny)


def test_silu_caches_only_its_input(rng):
    layer = SiLU()
    x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    layer(x)
    assert layer._cache is x  # s is recomputed in backward, not stored
    non_contiguous = rng.standard_normal((2, 4, 6, 3))[:, :, ::2]
    np.testing.assert_allclose(SiLU()(non_contiguous), silu_forward_reference_of(non_contiguous), rtol=1e-14)


def silu_forward_reference_of(x):
    return silu_forward_reference(x)[0]


def test_float32_exponential_is_accurate_to_float32_rounding():
    import numba

    from numpyseg.kernels.activations import exp_neg

    @numba.njit
    def run(a):
        out = np.empty_like(a)
        for i in range(a.size):
            out[i] = exp_neg(a[i])
        return out

    a = np.concatenate([np.linspace(0, 104, 2_000_001), [0.3465, 0.3466, 87.3, 87.34, 104, 110, 1e4]])
    a32 = a.astype(np.float32)
    got, want = run(a32).astype(np.float64), np.exp(-a32.astype(np.float64))
    normal = a32 < 87.33  # e^-87.33 is about the smallest normal float32
    assert np.max(np.abs(got - want)[normal] / want[normal]) < 3e-7
    assert np.all(got[~normal] == 0) and np.all(want[~normal] < 1.3e-38)  # flushed to zero
    assert run(a)[5] == np.exp(-a[5])  # float64 keeps np.exp


@pytest.mark.parametrize("dtype, rtol", [(np.float16, 1e-3), (np.longdouble, 1e-14)])
def test_other_float_dtypes_are_computed_in_float64(rng, dtype, rtol):
    """The kernels are compiled for float32 and float64; float16 and long double still work."""
    x = (rng.standard_normal((3, 5)) * 6).astype(dtype)
    x[0, :3] = [11, -11, 0]
    dout = rng.standard_normal((3, 5)).astype(dtype)
    for cls in (SiLU, Sigmoid):
        layer = cls()
        y = layer(x)
        dx = layer.backward(dout)
        assert y.dtype == dx.dtype == dtype and y.shape == dx.shape == x.shape
    y_ref, cache = silu_forward_reference(x.astype(np.float64))
    silu = SiLU()
    np.testing.assert_allclose(silu(x).astype(np.float64), y_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(silu.backward(dout).astype(np.float64),
                               silu_backward_reference(dout.astype(np.float64), cache), rtol=rtol, atol=rtol)
    # float16 holds sigmoid(-11) = 1.7e-5 only as a subnormal number, with fewer digits
    np.testing.assert_allclose(Sigmoid()(x).astype(np.float64), sigmoid(x.astype(np.float64)), rtol=rtol,
                               atol=float(np.finfo(dtype).tiny) * rtol)
