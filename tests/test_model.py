"""SA-UNetv2 / SA-UNet assembled: parameter count, names, whole-model gradient check,
PyTorch parity, determinism, and learning on a tiny batch."""

import numpy as np
import pytest

from numpyseg.devtools.gradcheck import check_module
from numpyseg.layers.module import no_grad
from numpyseg.models import SAUNet, SAUNetV2, build_model


def test_sa_unetv2_has_exactly_260521_parameters():
    assert SAUNetV2().num_parameters() == 260_521


def test_sa_unetv2_stage_parameter_counts_match_spec():
    model = SAUNetV2()
    expected = {"enc1": 2832, "enc2": 14016, "enc3": 34848, "up3": 27696, "csa3": 98,
                "dec3": 62496, "up2": 13856, "csa2": 98, "dec2": 27840, "up1": 4624,
                "csa1": 98, "dec1": 7008, "head": 17}
    for name, count in expected.items():
        assert getattr(model, name).num_parameters() == count, name
    bottleneck = sum(getattr(model, n).num_parameters() for n in ("bottleneck1", "attention", "bottleneck2"))
    assert bottleneck == 64994


def test_sa_unet_v1_is_about_half_a_million_parameters():
    assert 0.5e6 < SAUNet().num_parameters() < 0.56e6


def test_parameter_names_follow_forward_order():
    names = [n for n, _ in SAUNetV2().named_parameters()]
    assert names[:4] == ["enc1.block1.conv.weight", "enc1.block1.conv.bias",
                         "enc1.block1.norm.weight", "enc1.block1.norm.bias"]
    assert names[-2:] == ["head.weight", "head.bias"]
    assert names.index("attention.conv.weight") < names.index("bottleneck2.conv.weight")
    assert names.index("up3.weight") < names.index("csa3.conv.weight") < names.index("dec3.block1.conv.weight")
    assert len(names) == len(set(names))


def test_forward_shape_and_bad_input():
    model = SAUNetV2(base_channels=8).eval()
    x = np.random.default_rng(0).random((2, 24, 32, 3), dtype=np.float32)
    with no_grad():
        out = model(x)
    assert out.shape == (2, 24, 32, 1) and out.dtype == np.float32
    with pytest.raises(ValueError, match="divisible by 8"):
        model(np.zeros((1, 20, 24, 3), np.float32))
    with pytest.raises(ValueError, match="3 input channels"):
        model(np.zeros((1, 16, 16, 1), np.float32))


def test_summary_lists_stages_and_total():
    text = SAUNetV2().summary()
    assert "Total params: 260,521" in text
    assert "(None, 74, 74, 64)" in text and "(None, 592, 592, 1)" in text


@pytest.mark.parametrize("arch", ["sa_unetv2", "sa_unet"])
def test_whole_model_gradient_check(arch):
    # base 16: two channels per GroupNorm group, so no conv bias is cancelled exactly.
    # SA-UNet v1 is checked in eval mode: in training mode a conv bias just before a
    # BatchNorm has an exactly zero gradient (BatchNorm removes per-channel constants);
    # BatchNorm's training-mode backward has its own check in test_norm.py.
    # input_grad=True: training skips the image gradient, the check wants it too
    model = build_model({"arch": arch, "base_channels": 16, "dropblock_rate": 0.0, "seed": 3,
                         "input_grad": True})
    model.train(arch == "sa_unetv2")
    # 32x32: the bottleneck is 4x4, so every tap of the 7x7 attention kernel is used
    x = np.random.default_rng(3).standard_normal((2, 32, 32, 3))
    # v1 in eval mode (BatchNorm with its initial running statistics, no normalisation
    # of the scale) has bottleneck gradients of ~1e-2 next to a loss of ~1e2: there a
    # central difference carries rounding noise of a few u |L| / eps ~ 4e-8 per entry,
    # up to ~1e-6 relative, while a larger eps crosses ReLU kinks.  Its tolerance sits
    # above that noise floor.
    # two random directions per tensor (every entry) besides the sampled ones: the cost is
    # two forward passes per direction and per entry, for each of the ~100 tensors
    report = check_module(model, [x], max_entries=5, directions=2,
                          tolerance=1e-6 if arch == "sa_unetv2" else 3e-6)
    assert report.passed, report
    # every parameter tensor and the input were checked, and none was zero
    assert len(report.errors) == len(model.parameters()) + 1
    assert report.zero == []


@pytest.mark.parametrize("cls", [SAUNetV2, SAUNet])
def test_image_gradient_is_returned_unless_switched_off(cls):
    # With input_grad=False (as the trainer sets it: no training step uses the image
    # gradient) backward returns None and every parameter gradient is unchanged.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 16, 24, 3))
    g = rng.standard_normal((2, 16, 24, 1))
    skipping = cls(base_channels=8, dropblock_rate=0.0, seed=6, input_grad=False).to(np.float64).eval()
    full = cls(base_channels=8, dropblock_rate=0.0, seed=6).to(np.float64).eval()
    assert not skipping.input_grad and not skipping.enc1.block1.conv.needs_input_grad
    assert full.input_grad and "input_grad" not in full.config  # not part of the architecture
    grads = []
    for model in (skipping, full):
        model.zero_grad()
        model(x)
        grads.append((model.backward(g), {n: p.grad.copy() for n, p in model.named_parameters()}))
    assert grads[0][0] is None and grads[1][0].shape == x.shape
    for name, value in grads[1][1].items():
        np.testing.assert_array_equal(grads[0][1][name], value, err_msg=name)
    # the attribute switches it back on, and only the first convolution is affected
    skipping.input_grad = True
    assert skipping.enc1.block1.conv.needs_input_grad
    skipping(x)
    np.testing.assert_array_equal(skipping.backward(g), grads[1][0])
    assert all(m.needs_input_grad for n, m in skipping.named_modules() if hasattr(m, "needs_input_grad"))
    # the gradient check refuses to check an input gradient it was not given
    with pytest.raises(ValueError, match="input_grad=True"):
        check_module(cls(base_channels=8, dropblock_rate=0.0, input_grad=False), [x], max_entries=1)


def test_conv_bias_before_training_batchnorm_has_zero_gradient():
    model = build_model({"arch": "sa_unet", "base_channels": 8, "dropblock_rate": 0.0, "seed": 3}).train()
    x = np.random.default_rng(3).standard_normal((2, 16, 16, 3))
    model.zero_grad()
    model(x)
    model.backward(np.random.default_rng(4).standard_normal((2, 16, 16, 1)))
    for name, p in model.named_parameters():
        if name.endswith("conv.bias") and not name.startswith(("head", "attention")):
            assert np.abs(p.grad).max() < 1e-9, name


def test_same_seed_same_weights_and_outputs():
    a, b, c = SAUNetV2(seed=7), SAUNetV2(seed=7), SAUNetV2(seed=8)
    for (na, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
    assert not np.array_equal(a.enc1.block1.conv.weight.data, c.enc1.block1.conv.weight.data)
    x = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    # training mode: the DropBlock masks come from the same seeded generator too
    np.testing.assert_array_equal(a.train()(x), b.train()(x))


def test_state_dict_round_trip_is_bit_exact():
    a, b = SAUNetV2(seed=1), SAUNetV2(seed=2)
    b.load_state_dict(a.state_dict())
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)
    state = a.state_dict()
    state["head.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="head.weight"):
        b.load_state_dict(state)


def test_tiny_batch_is_learned():
    from numpyseg.losses import bce_mcc_loss
    from numpyseg.optim import Adam

    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 16, 3), dtype=np.float32)
    # a learnable target: bright red channel pixels are "vessels"
    y = (x[..., :1] > 0.6).astype(np.float32)
    model = SAUNetV2(base_channels=8, dropblock_rate=0.0, seed=0).train()
    opt = Adam(model.named_parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss, dlogits = bce_mcc_loss(model(x), y)
        model.backward(dlogits)
        opt.step()
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("arch", ["sa_unetv2", "sa_unet"])
def test_whole_model_matches_torch(torch, arch):
    from numpyseg.interop.torch_reference import torch_grads_as_numpy, torch_twin

    # v1 in eval mode, for the reason given in test_whole_model_gradient_check
    training = arch == "sa_unetv2"
    model = build_model({"arch": arch, "base_channels": 16, "dropblock_rate": 0.0, "seed": 5,
                         "input_grad": True})
    model.train(training)
    twin = torch_twin(model).train(training)
    rng = np.random.default_rng(5)
    x = rng.random((2, 32, 40, 3), dtype=np.float32)
    g = rng.standard_normal((2, 32, 40, 1)).astype(np.float32)
    out = model(x)
    dx = model.backward(g)
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tout = twin(tx)
    tout.backward(torch.tensor(g.transpose(0, 3, 1, 2)))
    rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))
    assert rel(out, tout.detach().numpy().transpose(0, 2, 3, 1)) < 1e-4
    assert rel(dx, tx.grad.numpy().transpose(0, 2, 3, 1)) < 1e-4
    grads = torch_grads_as_numpy(twin, model)
    worst = max(rel(p.grad, grads[name]) for name, p in model.named_parameters())
    assert worst < 1e-4, worst
