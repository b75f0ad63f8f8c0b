"""Optimisers and epoch schedulers: hand-computed steps, PyTorch parity, state round trips."""

import math

import numpy as np
import pytest

from numpyseg.layers.conv import Conv2d
from numpyseg.layers.module import Module, Parameter
from numpyseg.optim.adam import Adam
from numpyseg.optim.schedulers import EarlyStopping, ReduceLROnPlateau
from numpyseg.optim.sgd import SGD


class Tiny(Module):
    """A module holding one parameter, for steps that can be followed by hand."""

    def __init__(self, values, dtype=np.float64):
        super().__init__()
        self.w = Parameter(np.array(values, dtype=dtype))


def step_with(opt, param, grad):
    param.grad[...] = grad
    opt.step()


def test_adam_hand_computed_steps():
    model = Tiny([1.0])
    opt = Adam(model, lr=0.1)  # beta1 0.9, beta2 0.999, eps 1e-7
    p = model.w

    # t = 1, g = 0.5: m = 0.05, v = 0.00025, m_hat = 0.5, v_hat = 0.25 (bias corrections
    # 1 - 0.9 = 0.1 and 1 - 0.999 = 0.001), step = 0.1 * 0.5 / (0.5 + 1e-7).
    step_with(opt, p, 0.5)
    p1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-7)
    assert p.data[0] == pytest.approx(p1, rel=1e-15)
    assert p.data[0] == pytest.approx(0.90000002, abs=1e-12)  # first step ~ lr

    # t = 2, g = -0.2: m = 0.9*0.05 + 0.1*(-0.2) = 0.025, v = 0.999*0.00025 + 0.001*0.04
    # = 0.00028975; corrections 1 - 0.81 = 0.19 and 1 - 0.998001 = 0.001999.
    step_with(opt, p, -0.2)
    p2 = p1 - 0.1 * (0.025 / 0.19) / (math.sqrt(0.00028975 / 0.001999) + 1e-7)
    assert p.data[0] == pytest.approx(p2, rel=1e-14)
    assert p.data[0] == pytest.approx(0.8654394, abs=1e-7)

    # t = 3, g = 0.1: m = 0.9*0.025 + 0.01 = 0.0325, v = 0.999*0.00028975 + 0.001*0.01
    # = 0.00029946025; corrections 1 - 0.729 = 0.271 and 1 - 0.997002999 = 0.002997001.
    step_with(opt, p, 0.1)
    p3 = p2 - 0.1 * (0.0325 / 0.271) / (math.sqrt(0.00029946025 / 0.002997001) + 1e-7)
    assert p.data[0] == pytest.approx(p3, rel=1e-14)
    assert opt.step_count == 3


def test_adam_first_step_is_lr_whatever_the_gradient_scale():
    model = Tiny(np.zeros(4))
    opt = Adam(model, lr=0.01)
    step_with(opt, model.w, np.array([1e-3, -1.0, 1e3, -1e5]))
    np.testing.assert_allclose(model.w.data, [-0.01, 0.01, -0.01, 0.01], rtol=1e-4)


def test_adam_decoupled_weight_decay():
    # With zero gradient the Adam part is 0 / (0 + eps) = 0 and only the decay acts:
    # theta <- theta * (1 - lr * wd) = theta * 0.99 per step.
    model = Tiny([2.0, -4.0])
    opt = Adam(model, lr=0.1, weight_decay=0.1)
    for t in range(1, 4):
        step_with(opt, model.w, 0.0)
        np.testing.assert_allclose(model.w.data, np.array([2.0, -4.0]) * 0.99 ** t, rtol=1e-15)
    # With a gradient: decay first, then the usual Adam step.
    model = Tiny([2.0])
    opt = Adam(model, lr=0.1, weight_decay=0.1)
    step_with(opt, model.w, 0.5)
    assert model.w.data[0] == pytest.approx(2.0 * 0.99 - 0.1 * 0.5 / (0.5 + 1e-7), rel=1e-15)


def test_sgd_hand_computed_steps():
    model = Tiny([0.0])
    opt = SGD(model, lr=0.1, momentum=0.9)
    # b = 1, 1.9, 2.71 for a constant gradient of 1.
    for expected in (-0.1, -0.29, -0.561):
        step_with(opt, model.w, 1.0)
        assert model.w.data[0] == pytest.approx(expected, rel=1e-14)
    # Plain SGD with L2 decay: g = 1 + 0.5 * 2 = 2, theta = 2 - 0.1 * 2.
    model = Tiny([2.0])
    opt = SGD(model, lr=0.1, weight_decay=0.5)
    step_with(opt, model.w, 1.0)
    assert model.w.data[0] == pytest.approx(1.8, rel=1e-15)
    assert opt.state_dict().keys() == {"step", "lr", "momentum", "weight_decay"}


def quadratic_run(make_opt, params, target, noise, steps):
    """Minimise 0.5 * |p - target|^2 with a fixed noise sequence added to the gradient."""
    for t in range(steps):
        for (name, p), tgt in zip(params, target):
            p.grad[...] = (p.data - tgt) + noise[t][name]
        make_opt.step()


def _conv_model(rng, dtype):
    model = Conv2d(3, 2, 3, rng=rng)
    model.bias.data[:] = rng.standard_normal(2)
    return model.to(dtype)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_trajectories_match_torch(rng, torch, kind, dtype, tol):
    model = _conv_model(rng, dtype)
    named = list(model.named_parameters())
    target = [rng.standard_normal(p.shape).astype(dtype) for _, p in named]
    steps = 25
    noise = [{n: (0.3 * rng.standard_normal(p.shape)).astype(dtype) for n, p in named} for _ in range(steps)]

    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for _, p in named]
    if kind == "adam":
        ours = Adam(model, lr=0.05, eps=1e-7)
        theirs = torch.optim.Adam(tparams, lr=0.05, eps=1e-7)
    elif kind == "adamw":
        ours = Adam(model, lr=0.05, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.1)
        theirs = torch.optim.AdamW(tparams, lr=0.05, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.1)
    else:
        ours = SGD(model, lr=0.05, momentum=0.9, weight_decay=0.01)
        theirs = torch.optim.SGD(tparams, lr=0.05, momentum=0.9, weight_decay=0.01)

    quadratic_run(ours, named, target, noise, steps)
    for t in range(steps):
        for (name, _), tp, tgt in zip(named, tparams, target):
            tp.grad = (tp.detach() - torch.tensor(tgt)) + torch.tensor(noise[t][name])
        theirs.step()
    for (name, p), tp in zip(named, tparams):
        ref = tp.detach().numpy()
        assert p.data.dtype == dtype
        assert np.linalg.norm(p.data - ref) / np.linalg.norm(ref) < tol, name


@pytest.mark.parametrize("make", [lambda m: Adam(m, lr=0.01, weight_decay=0.01),
                                  lambda m: SGD(m, lr=0.01, momentum=0.9)])
def test_state_dict_round_trip_continues_identically(rng, make):
    model = _conv_model(rng, np.float32)
    named = list(model.named_parameters())
    target = [rng.standard_normal(p.shape).astype(np.float32) for _, p in named]
    noise = [{n: rng.standard_normal(p.shape).astype(np.float32) for n, p in named} for _ in range(10)]
    opt = make(model)
    quadratic_run(opt, named, target, noise[:5], 5)

    # A second model + optimiser restored from the state dicts (arrays copied via savez
    # semantics: scalars become 0-d arrays) continues bit for bit.
    state = {k: np.asarray(v) for k, v in opt.state_dict().items()}
    twin = Conv2d(3, 2, 3, rng=99).to(np.float32)
    twin.load_state_dict(model.state_dict())
    twin_opt = make(twin)
    twin_opt.load_state_dict(state)
    twin_named = list(twin.named_parameters())
    quadratic_run(opt, named, target, noise[5:], 5)
    quadratic_run(twin_opt, twin_named, target, noise[5:], 5)
    for (name, p), (_, q) in zip(named, twin_named):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)
    assert twin_opt.step_count == opt.step_count == 10
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(value, twin_opt.state_dict()[key], err_msg=key)


def test_state_is_keyed_by_dotted_name(rng):
    class Net(Module):
        def __init__(self):
            super().__init__()
            self.enc1 = Conv2d(1, 2, 3, rng=rng)
            self.head = Conv2d(2, 1, 1, rng=rng)

    net = Net()
    opt = Adam(net.named_parameters())
    keys = set(opt.state_dict())
    assert {"step", "lr", "beta1", "beta2", "eps", "weight_decay"} <= keys
    assert {"m.enc1.weight", "v.enc1.bias", "m.head.weight", "v.head.bias"} <= keys
    assert opt.state_dict()["m.enc1.weight"].shape == (3, 3, 1, 2)


def test_load_state_dict_errors_are_one_line_and_change_nothing(rng):
    model = _conv_model(rng, np.float32)
    opt = Adam(model, lr=0.01)
    model.weight.grad[...] = 1.0
    opt.step()
    good = opt.state_dict()

    def broken(**changes):
        state = dict(good)
        for k, v in changes.items():
            if v is None:
                del state[k]
            else:
                state[k] = v
        return state

    cases = [
        (broken(**{"m.weight": None}), "missing 1 entries, e.g. 'm.weight'"),
        (broken(lr=None), "missing 1 entries, e.g. 'lr'"),
        (broken(**{"v.bias": np.zeros(3)}), r"'v.bias' has shape \(3,\), the parameter has shape \(2,\)"),
        (broken(**{"m.extra": np.zeros(2)}), "unexpected entry 'm.extra'"),
        (broken(step=np.zeros(2)), "'step' should be a scalar"),
    ]
    fresh = Adam(model, lr=0.5)
    for state, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            fresh.load_state_dict(state)
        assert "\n" not in str(info.value)
        assert fresh.lr == 0.5 and fresh.step_count == 0 and not fresh.state["m"]["weight"].any()
    with pytest.raises(ValueError, match="missing"):
        SGD(model, lr=0.1, momentum=0.9).load_state_dict(good)


def test_optimizer_follows_replaced_arrays(rng):
    # Module.load_state_dict and Module.to replace p.data; the optimiser must keep
    # updating the model's current arrays (it holds Parameters, not arrays).
    model = _conv_model(rng, np.float32)
    opt = Adam(model, lr=0.1)
    model.load_state_dict({k: v + 1 for k, v in model.state_dict().items()})
    before = model.weight.data.copy()
    model.weight.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(model.weight.data, before - 0.1, rtol=1e-5)
    model.to(np.float64)
    model.weight.grad[...] = 1.0
    opt.step()
    assert model.weight.data.dtype == np.float64 and opt.state["m"]["weight"].dtype == np.float64


def test_zero_grad_and_shared_parameters(rng):
    model = Tiny([1.0, 2.0])
    model.w.grad[...] = 3.0
    opt = SGD([("a", model.w), ("b", model.w)], lr=1.0)  # the same Parameter twice
    assert [n for n, _ in opt.params] == ["a"]
    opt.step()
    np.testing.assert_array_equal(model.w.data, [-2.0, -1.0])  # updated once, not twice
    opt.zero_grad()
    assert not model.w.grad.any()


def test_constructor_errors():
    model = Tiny([1.0])
    for call, message in [
        (lambda: Adam([]), "empty parameter list"),
        (lambda: Adam([model.w]), "Module or \\(name, Parameter\\) pairs"),
        (lambda: Adam([("a", model.w), ("a", Parameter(np.zeros(1)))]), "two parameters named 'a'"),
        (lambda: Adam(model, lr=0.0), "lr must be a positive number"),
        (lambda: Adam(model, beta2=1.0), r"beta2 must lie in \[0.0, 1.0\)"),
        (lambda: SGD(model, lr=0.1, momentum=-0.1), "momentum"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


# ---------------------------------------------------------------------- schedulers
class FakeOptimizer:
    def __init__(self, lr):
        self.lr = lr


def test_reduce_lr_on_plateau_keras_semantics():
    opt = FakeOptimizer(1e-3)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=2, min_lr=2e-4)
    lrs = []
    for metric in [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.9, 0.85, 0.9, 0.9, 0.9, 0.9]:
        sched.step(metric)
        lrs.append(opt.lr)
    # Cut at the 2nd consecutive epoch without improvement (index 3), the counter then
    # restarts; 0.8 is a new best; cuts at index 7 and 9, then floored at min_lr.
    assert lrs == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2e-4, 2e-4, 2e-4, 2e-4]
    assert sched.best == 0.8 and sched.num_reductions == 3


def test_reduce_lr_on_plateau_min_delta_mode_max_and_cooldown():
    opt = FakeOptimizer(1.0)
    sched = ReduceLROnPlateau(opt, patience=1, min_delta=0.1, mode="max", cooldown=2, min_lr=0.0)
    cuts = [sched.step(m) for m in [0.5, 0.55, 0.58, 0.59, 0.6, 0.61, 0.62]]
    # 0.55 does not beat 0.5 + 0.1: cut.  As in Keras the cooldown counter is decremented
    # at the start of each epoch before it is tested, so cooldown=2 skips one epoch (0.58)
    # and 0.59 counts again: cut.  0.6 is skipped; 0.61 beats 0.6: new best; 0.62 does not
    # beat 0.71: cut.
    assert cuts == [False, True, False, True, False, False, True]
    assert opt.lr == 0.125 and sched.best == 0.61


def test_reduce_lr_on_plateau_resumes_from_state():
    metrics = [1.0, 0.9, 0.95, 0.97, 0.99, 0.85, 0.9, 0.91, 0.92, 0.93, 0.94]
    opt_a = FakeOptimizer(1e-3)
    a = ReduceLROnPlateau(opt_a, patience=3)
    for m in metrics[:4]:
        a.step(m)
    opt_b = FakeOptimizer(opt_a.lr)
    b = ReduceLROnPlateau(opt_b, patience=3)
    b.load_state_dict(a.state_dict())
    for m in metrics[4:]:
        assert a.step(m) == b.step(m)
        assert opt_a.lr == opt_b.lr
    assert a.state_dict() == b.state_dict()
    with pytest.raises(ValueError, match="missing 'wait'"):
        b.load_state_dict({"best": 1.0})


def test_early_stopping():
    stopper = EarlyStopping(patience=3)
    results = [(stopper.step(m), stopper.improved) for m in [5.0, 4.0, 4.5, 4.2, 3.9, 4.0, 4.1, 4.05]]
    assert results == [(False, True), (False, True), (False, False), (False, False),
                       (False, True), (False, False), (False, False), (True, False)]
    assert stopper.best == 3.9 and stopper.best_epoch == 4 and stopper.wait == 3
    nan_stopper = EarlyStopping(patience=1)
    assert nan_stopper.step(1.0) is False
    assert nan_stopper.step(float("nan")) is True  # NaN never improves
    maxer = EarlyStopping(patience=2, mode="max", min_delta=0.01)
    assert [maxer.step(m) for m in [0.5, 0.505, 0.6, 0.6, 0.605]] == [False, False, False, False, True]
    assert EarlyStopping(patience=0).step(1.0) is False  # an improving epoch never stops


def test_early_stopping_resumes_from_state():
    metrics = [3.0, 2.0, 2.5, 2.4, 1.5, 1.6, 1.7, 1.8]
    a = EarlyStopping(patience=3)
    for m in metrics[:3]:
        a.step(m)
    b = EarlyStopping(patience=3)
    b.load_state_dict(a.state_dict())
    assert [a.step(m) for m in metrics[3:]] == [b.step(m) for m in metrics[3:]]
    assert (a.best, a.best_epoch, a.epoch) == (b.best, b.best_epoch, b.epoch) == (1.5, 4, 8)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        EarlyStopping(mode="auto")


# ------------------------------------------------------------- cosine schedule, weight average


def test_cosine_annealing_follows_the_formula_and_resumes():
    from numpyseg.optim.schedulers import CosineAnnealing

    p = Parameter(np.zeros(2))
    opt = SGD([("p", p)], lr=0.1)
    schedule = CosineAnnealing(opt, total_steps=10, min_lr=0.01, warmup_steps=2)
    rates = [opt.lr]
    for _ in range(12):
        schedule.step()
        rates.append(opt.lr)
    assert rates[0] == pytest.approx(0.05) and rates[1] == pytest.approx(0.1)   # warm-up 0.1 * (t+1)/2
    for t in range(2, 11):                                                        # then the half cosine
        expected = 0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * (t - 2) / 8))
        assert rates[t] == pytest.approx(expected)
    assert rates[10] == pytest.approx(0.01) and rates[12] == pytest.approx(0.01)  # stays at min_lr after
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))
    other = CosineAnnealing(SGD([("p", p)], lr=0.1), total_steps=10, min_lr=0.01, warmup_steps=2)
    other.load_state_dict(schedule.state_dict())
    assert other.optimizer.lr == opt.lr and other.t == 12
    with pytest.raises(ValueError, match="warmup_steps"):
        CosineAnnealing(opt, total_steps=3, warmup_steps=3)


def test_weight_average_hand_computed_and_applied():
    from numpyseg.optim.averaging import WeightAverage

    p = Parameter(np.array([0.0, 10.0]))
    average = WeightAverage([("w", p)], decay=0.5)
    p.data[...] = [1.0, 20.0]
    average.update()          # d = min(0.5, 1/10) = 0.1: avg = 0.1 * [0, 10] + 0.9 * [1, 20]
    assert np.allclose(average.average["w"], [0.9, 19.0])
    p.data[...] = [3.0, 0.0]
    average.update()          # d = min(0.5, 2/11)
    d = 2 / 11
    assert np.allclose(average.average["w"], d * np.array([0.9, 19.0]) + (1 - d) * np.array([3.0, 0.0]))
    expected = average.average["w"].copy()
    with average.applied():
        assert np.array_equal(p.data, expected)
    assert np.array_equal(p.data, [3.0, 0.0])   # the trained weights come back
    restored = WeightAverage([("w", Parameter(np.zeros(2)))], decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 2 and np.array_equal(restored.average["w"], expected)
    with pytest.raises(ValueError, match="ema.w"):
        restored.load_state_dict({"ema.updates": 1, "ema.w": np.zeros(3)})
