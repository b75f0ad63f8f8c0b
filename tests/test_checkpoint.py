"""Checkpoints: bit-exact round trips, atomic writes, and one-line errors for bad files."""

import json

import numpy as np
import pytest

import numpyseg.checkpoint as ckpt
from numpyseg.checkpoint import (FORMAT_VERSION, Checkpoint, CheckpointError, load_checkpoint, restore,
                                 save_checkpoint)
from numpyseg.layers.conv import Conv2d
from numpyseg.layers.module import Module
from numpyseg.optim.adam import Adam
from numpyseg.optim.schedulers import EarlyStopping, ReduceLROnPlateau


class Net(Module):
    """Two convolutions and an architecture config, like a (very) small U-Net."""

    def __init__(self, base=4, kernel=3, seed=0):
        super().__init__()
        self.config = {"base": base, "kernel": kernel, "channels": (3, 1)}
        self.enc1 = Conv2d(3, base, kernel, rng=seed)
        self.head = Conv2d(base, 1, 1, rng=seed + 1)


def trained(seed=0, steps=3, **config):
    """A Net and an Adam optimiser after a few steps with random gradients."""
    rng = np.random.default_rng(seed)
    net = Net(seed=seed, **config)
    opt = Adam(net, lr=1e-3)
    for _ in range(steps):
        for p in net.parameters():
            p.grad[...] = rng.standard_normal(p.shape)
        opt.step()
    return net, opt


def assert_one_line_naming(info, path, *fragments):
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_round_trip_is_bit_exact(tmp_path):
    net, opt = trained()
    sched, stopper = ReduceLROnPlateau(opt, patience=2), EarlyStopping(patience=5)
    for metric in (1.0, 0.8, 0.9, 0.95):
        sched.step(metric)
        stopper.step(metric)
    path = tmp_path / "last.npz"
    extra = {"scheduler": sched.state_dict(), "early_stopping": stopper.state_dict(), "val_loss": 0.95}
    assert save_checkpoint(path, net, opt, config=net.config, epoch=4, extra=extra) == path

    # Plain NumPy can read it without pickle.
    with np.load(path, allow_pickle=False) as raw:
        assert "model/enc1.weight" in raw.files and "optim/m.head.bias" in raw.files and "meta" in raw.files

    loaded = load_checkpoint(path)
    assert (loaded.epoch, loaded.version, loaded.path) == (4, FORMAT_VERSION, str(path))
    assert loaded.config == {"base": 4, "kernel": 3, "channels": [3, 1]}
    assert loaded.extra == extra

    net2 = Net(seed=7)
    opt2 = Adam(net2, lr=0.5)
    sched2, stopper2 = ReduceLROnPlateau(opt2, patience=2), EarlyStopping(patience=5)
    assert restore(net2, path, opt2).epoch == 4
    sched2.load_state_dict(loaded.extra["scheduler"])
    stopper2.load_state_dict(loaded.extra["early_stopping"])
    for key, value in net.state_dict().items():
        other = net2.state_dict()[key]
        assert other.dtype == value.dtype
        np.testing.assert_array_equal(other, value, err_msg=key)
    for key, value in opt.state_dict().items():
        other = opt2.state_dict()[key]
        assert np.asarray(other).dtype == np.asarray(value).dtype, key
        np.testing.assert_array_equal(other, value, err_msg=key)
    assert opt2.step_count == 3 and opt2.lr == opt.lr
    assert sched2.state_dict() == sched.state_dict() and stopper2.state_dict() == stopper.state_dict()


def test_checkpoint_without_optimizer(tmp_path):
    net, _ = trained()
    path = tmp_path / "weights.npz"
    save_checkpoint(path, net, config=net.config, epoch=1)
    loaded = load_checkpoint(path)
    assert loaded.optim_state == {} and loaded.extra == {}
    net2 = Net(seed=3)
    restore(net2, loaded)
    np.testing.assert_array_equal(net2.enc1.weight.data, net.enc1.weight.data)
    with pytest.raises(CheckpointError, match="has no optimiser state") as info:
        restore(net2, loaded, Adam(net2))
    assert_one_line_naming(info, path)


def _temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "best.npz"
    old_net, old_opt = trained(seed=1)
    save_checkpoint(path, old_net, old_opt, config=old_net.config, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz"]
    old_bytes = path.read_bytes()

    new_net, new_opt = trained(seed=2)

    def disk_full(fileobj, arrays):
        fileobj.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_npz", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, new_net, new_opt, config=new_net.config, epoch=2)
    assert path.read_bytes() == old_bytes and _temp_files(tmp_path) == []
    monkeypatch.undo()

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ckpt.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        save_checkpoint(path, new_net, new_opt, config=new_net.config, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes and _temp_files(tmp_path) == []
    assert load_checkpoint(path).epoch == 1

    save_checkpoint(path, new_net, new_opt, config=new_net.config, epoch=2)
    assert load_checkpoint(path).epoch == 2 and _temp_files(tmp_path) == []


def test_unserialisable_config_is_rejected_before_writing(tmp_path):
    net, _ = trained()
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "x.npz", net, config={"f": object()}, epoch=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", ["half", "tail", "head"])
def test_truncated_file(tmp_path, cut):
    net, opt = trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, net, opt, config=net.config, epoch=1)
    data = path.read_bytes()
    keep = {"half": len(data) // 2, "tail": len(data) - 30, "head": 10}[cut]
    path.write_bytes(data[:keep])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line_naming(info, path)


def test_corrupt_and_missing_files(tmp_path):
    net, opt = trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, net, opt, config=net.config, epoch=1)
    data = bytearray(path.read_bytes())
    data[200:220] = b"\xff" * 20  # inside the first zip member: a CRC mismatch
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt") as info:
        load_checkpoint(path)
    assert_one_line_naming(info, path)

    for content, message in [(b"", "file is empty"), (b"not a zip at all", "not an .npz file")]:
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(path)
        assert_one_line_naming(info, path)

    missing = tmp_path / "nope.npz"
    with pytest.raises(CheckpointError, match="file not found") as info:
        load_checkpoint(missing)
    assert_one_line_naming(info, missing)
    with pytest.raises(CheckpointError, match="file not found"):
        restore(net, missing)


def _write_raw(path, meta_bytes, **arrays):
    np.savez(path, meta=np.frombuffer(meta_bytes, dtype=np.uint8), **arrays)


def test_bad_metadata_and_wrong_version(tmp_path):
    path = tmp_path / "raw.npz"
    weights = {"model/w": np.zeros(3)}
    good = {"format": "numpyseg-checkpoint", "version": FORMAT_VERSION, "config": {}, "epoch": 0, "extra": {}}
    cases = [
        (b'{"format": "numpyseg-checkpoint", "version": 1, "config": {', "bad metadata JSON"),
        (b"\xff\xfe", "bad metadata JSON"),
        (json.dumps({**good, "version": FORMAT_VERSION + 1}).encode(),
         rf"format version {FORMAT_VERSION + 1} is newer than this numpyseg reads .*upgrade numpyseg"),
        (json.dumps({**good, "version": "1"}).encode(), "bad format version '1'"),
        (json.dumps({**good, "version": 0}).encode(), "bad format version 0"),
        (json.dumps({**good, "format": "other"}).encode(), "does not describe a numpyseg checkpoint"),
        (json.dumps({k: v for k, v in good.items() if k != "epoch"}).encode(), "metadata has no 'epoch'"),
    ]
    for meta, message in cases:
        _write_raw(path, meta, **weights)
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(path)
        assert_one_line_naming(info, path)
    np.savez(path, **weights)
    with pytest.raises(CheckpointError, match="no 'meta' entry"):
        load_checkpoint(path)
    _write_raw(path, json.dumps(good).encode(), stray=np.zeros(1), **weights)
    with pytest.raises(CheckpointError, match="unexpected entry 'stray'"):
        load_checkpoint(path)
    _write_raw(path, json.dumps(good).encode(), **weights)
    assert load_checkpoint(path).model_state.keys() == {"w"}


def test_every_writer_stamps_the_format_version_and_older_versions_load(tmp_path, monkeypatch):
    net, opt = trained()
    path = save_checkpoint(tmp_path / "now.npz", net, opt, config=net.config, epoch=1)
    with np.load(path) as data:
        assert json.loads(data["meta"].tobytes())["version"] == FORMAT_VERSION
    # a numpyseg that reads a later format still reads this file, and keeps its version
    monkeypatch.setattr(ckpt, "FORMAT_VERSION", FORMAT_VERSION + 1)
    old = ckpt.load_checkpoint(path)
    assert old.version == FORMAT_VERSION
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(old.model_state[key], value)


def test_shipped_weights_carry_a_format_version():
    from numpyseg.inference import SHIPPED_WEIGHTS

    assert 1 <= load_checkpoint(SHIPPED_WEIGHTS).version <= FORMAT_VERSION


def test_missing_array(tmp_path):
    net, opt = trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, net, opt, config=net.config, epoch=1)
    loaded = load_checkpoint(path)
    del loaded.model_state["head.bias"]
    target = Net(seed=5)
    before = target.state_dict()
    with pytest.raises(CheckpointError, match="missing 1 entries, e.g. 'head.bias'") as info:
        restore(target, loaded)
    assert_one_line_naming(info, path)
    np.testing.assert_array_equal(target.enc1.weight.data, before["enc1.weight"])

    loaded = load_checkpoint(path)
    del loaded.optim_state["v.enc1.weight"]
    target_opt = Adam(target)
    with pytest.raises(CheckpointError, match="optimiser .*'v.enc1.weight'") as info:
        restore(target, loaded, target_opt)
    assert_one_line_naming(info, path)
    # All or nothing: the model was not changed by the half-done restore.
    for key, value in before.items():
        np.testing.assert_array_equal(target.state_dict()[key], value, err_msg=key)
    assert target_opt.step_count == 0


def test_misshapen_array(tmp_path):
    # Plain Conv2d modules have no `config`, so only the shape check can catch this.
    path = tmp_path / "conv.npz"
    save_checkpoint(path, Conv2d(2, 3, rng=0), config={}, epoch=0)
    with pytest.raises(CheckpointError, match=r"'weight' has shape \(3, 3, 2, 3\), the model expects "
                                              r"\(3, 3, 2, 4\)") as info:
        restore(Conv2d(2, 4, rng=0), path)
    assert_one_line_naming(info, path)


def test_other_architecture_config(tmp_path):
    net, opt = trained()
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, net, opt, config=net.config, epoch=1)
    with pytest.raises(CheckpointError, match="architecture config differs at 'kernel': "
                                              "checkpoint has 3, model has 5") as info:
        restore(Net(kernel=5), path)
    assert_one_line_naming(info, path)
    other = Net()
    other.config = {**other.config, "dropblock": 7}
    with pytest.raises(CheckpointError, match="differs at 'dropblock': checkpoint has '<absent>'"):
        restore(other, path)
    restore(Net(seed=9), path)  # tuple (3, 1) in the model equals list [3, 1] from JSON


def test_checkpoint_dataclass_defaults():
    c = Checkpoint(model_state={}, optim_state={}, config={}, epoch=0)
    assert c.extra == {} and c.version == FORMAT_VERSION and c.path == "<memory>"
    assert issubclass(CheckpointError, ValueError)
