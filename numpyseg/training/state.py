"""What a training run keeps on disk, and how a resume reads it back.

A run folder holds the files RUN_FILES names: last.npz (written after every epoch
and on an interruption), best.npz (the best epoch by the monitored metric),
history.csv, history.json and curves.png.

Resuming continues the *same* run.  last.npz carries, besides the weights and
the Adam moments (and the weight average's, with --ema: `OptimiserState`), in
its JSON `extra` (`run_state`): the run's config, the history, the scheduler and
early-stopping states, the states of every random generator (the data generator
used for shuffling, cropping and augmentation, and the model's DropBlock
generator), the current epoch's plan of batches and how many of its steps are
done.  A run interrupted and resumed therefore produces the same weights and
the same history as one that was never interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from numpyseg.checkpoint import CheckpointError, load_checkpoint, restore
from numpyseg.data.io import DataError
from numpyseg.errors import ConfigError
from numpyseg.optim.averaging import PREFIX as AVERAGE_PREFIX
from numpyseg.optim.averaging import WeightAverage
from numpyseg.training.config import TrainConfig

LAST, BEST = "last.npz", "best.npz"
HISTORY_CSV, HISTORY_JSON, CURVES = "history.csv", "history.json", "curves.png"
#: Every file a run writes into its folder.
RUN_FILES = (LAST, BEST, HISTORY_CSV, HISTORY_JSON, CURVES)
STATE_FORMAT = "numpyseg-train-state-1"


# ------------------------------------------------------------------- run folder


def check_run_folder(out, *, resume: bool, overwrite: bool) -> None:
    """Refuse a `train --out` folder whose files a new run or a resume would destroy.

    A new run needs an absent or empty folder, or one holding only a run's own
    files (RUN_FILES, leftover temporaries), and with last.npz present --overwrite;
    a resume needs last.npz.

    Raises:
        ConfigError: one line saying what is in the way and what to do.
    """
    out, last = Path(out), Path(out) / LAST
    if resume:
        if overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: pass one of them")
        if not last.exists():
            raise ConfigError(f"--resume: {last} not found (nothing to resume in {out}): drop --resume "
                              f"to start a new run")
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: choose a folder for the run")
    if last.exists() and not overwrite:
        raise ConfigError(f"{out} already holds a run ({last}): pass --resume to continue it, "
                          f"--overwrite to start again, or choose another --out")
    if out.is_dir():
        temporaries = [f".{name}." for name in RUN_FILES]
        foreign = sorted(entry.name for entry in out.iterdir()
                         if entry.name not in RUN_FILES and not entry.name.startswith(tuple(temporaries)))
        if foreign:
            raise ConfigError(f"--out {out} is not empty and holds no numpyseg run (it has {foreign[0]}"
                              f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}): choose a "
                              f"new or empty folder")


def saved_run(run_dir) -> tuple[TrainConfig, int]:
    """(config, completed epochs) of the run saved in run_dir/last.npz, for `numpyseg train --resume`.

    Raises:
        CheckpointError: last.npz is missing, unreadable, or not a training state.
    """
    last = Path(run_dir) / LAST
    checkpoint = load_checkpoint(last)
    if checkpoint.extra.get("format") != STATE_FORMAT or "train_config" not in checkpoint.extra:
        raise CheckpointError(f"checkpoint {last}: not a training state written by numpyseg train")
    return TrainConfig.from_dict(checkpoint.extra["train_config"]), int(checkpoint.epoch)


# ------------------------------------------------------------------ random states


def generator_states(model) -> dict:
    """The bit-generator state of every np.random.Generator attribute of the model's modules.

    Returns {'generators': [state, ...], 'owners': {'<module path>:<attr>': index}};
    modules sharing one generator point at the same index.
    """
    generators, owners, index_of = [], {}, {}
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                if id(value) not in index_of:
                    index_of[id(value)] = len(generators)
                    generators.append(value.bit_generator.state)
                owners[f"{prefix}:{attr}"] = index_of[id(value)]
    return {"generators": generators, "owners": owners}


def set_generator_states(model, saved: dict) -> None:
    """Restore `generator_states` into a model of the same architecture."""
    found = {}
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                found[f"{prefix}:{attr}"] = value
    owners = saved.get("owners", {})
    if set(owners) != set(found):
        raise ValueError("the saved random-generator states do not match the model's DropBlock layers")
    for key, generator in found.items():
        generator.bit_generator.state = saved["generators"][owners[key]]


def _encode_state(state: dict) -> str:
    # 128-bit integers of PCG64 survive JSON as text exactly.
    return json.dumps(state)


def _decode_state(text: str) -> dict:
    return json.loads(text)


# --------------------------------------------------------- the saved run state


class OptimiserState:
    """The optimiser's state and the weight average's (if any), saved and restored as one
    optimiser state: the average's entries are 'ema.<param name>' beside Adam's 'm.' / 'v.'."""

    def __init__(self, optimizer, average: WeightAverage | None):
        self.optimizer, self.average = optimizer, average

    def state_dict(self) -> dict:
        state = self.optimizer.state_dict()
        if self.average is not None:
            state.update(self.average.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        mine = {k: v for k, v in state.items() if k.startswith(AVERAGE_PREFIX)}
        if self.average is not None:
            self.average.load_state_dict(mine)
        elif mine:
            raise ValueError("holds a weight average (--ema) but this run has none")
        self.optimizer.load_state_dict({k: v for k, v in state.items() if not k.startswith(AVERAGE_PREFIX)})


def run_state(trainer) -> dict:
    """Everything beyond weights and Adam moments that a resume needs: the checkpoint's `extra` (JSON).

    `trainer` is a numpyseg.training.trainer.Trainer; the keys are the format STATE_FORMAT names.
    """
    return {
        "format": STATE_FORMAT,
        "train_config": trainer.config.to_dict(),
        "history": trainer.history,
        "plan": trainer.plan,
        "step_in_epoch": trainer.step_in_epoch,
        "epoch_stats": trainer.epoch_stats,
        "rng": {"data": _encode_state(trainer.data_rng.bit_generator.state),
                "model": _encode_state(generator_states(trainer.model))},
        "scheduler": trainer.scheduler.state_dict(),
        "early_stopping": None if trainer.stopper is None else trainer.stopper.state_dict(),
        "monitor": trainer.monitor,
        "best_value": trainer.best_value,
        "best_epoch": trainer.best_epoch,
        "elapsed_s": trainer.elapsed(),
        "train_images": [s.name for s in trainer.train_samples],
        "val_images": [s.name for s in trainer.val_samples],
        "val_pad_size": None if trainer.val_pad is None else list(trainer.val_pad),
        "num_parameters": int(trainer.model.num_parameters()),
        "sessions": trainer.sessions,
        "reference_loss": trainer.reference_loss,
    }


def restore_run_state(trainer) -> None:
    """Load run_dir/last.npz into `trainer` (built with the same config): weights, Adam moments and `run_state`.

    Raises:
        CheckpointError: not a training state, non-finite weights or moments, or an incomplete state.
        DataError: the training images differ from those of the saved run.
    """
    path = trainer.run_dir / LAST
    checkpoint = load_checkpoint(path)
    extra = checkpoint.extra
    if extra.get("format") != STATE_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a training state written by numpyseg train")
    saved_names = extra.get("train_images"), extra.get("val_images")
    names = [s.name for s in trainer.train_samples], [s.name for s in trainer.val_samples]
    if list(saved_names[0] or []) != names[0] or list(saved_names[1] or []) != names[1]:
        raise DataError(f"the training images differ from those of the run saved in {path}: "
                        f"resume needs the same dataset")
    restore(trainer.model, checkpoint, trainer.state_owner)
    bad = trainer.non_finite_state()
    if bad is not None:
        raise CheckpointError(f"checkpoint {path}: {bad} hold NaN/inf (saved by an older numpyseg "
                              f"from a diverged run): start a new run with a lower --lr")
    try:
        trainer.data_rng.bit_generator.state = _decode_state(extra["rng"]["data"])
        set_generator_states(trainer.model, _decode_state(extra["rng"]["model"]))
        trainer.scheduler.load_state_dict(extra["scheduler"])
        if trainer.stopper is not None and extra.get("early_stopping") is not None:
            trainer.stopper.load_state_dict(extra["early_stopping"])
        trainer.epoch = int(checkpoint.epoch)
        trainer.plan = extra.get("plan")
        trainer.step_in_epoch = int(extra.get("step_in_epoch", 0))
        trainer.epoch_stats = dict(extra.get("epoch_stats") or trainer.epoch_stats)  # fresh: empty
        trainer.history = list(extra.get("history", []))
        trainer.best_value = extra.get("best_value")
        trainer.best_epoch = extra.get("best_epoch")
        trainer.elapsed_before = float(extra.get("elapsed_s", 0.0))
        trainer.sessions = list(extra.get("sessions", []))
        reference = extra.get("reference_loss")
        if reference is None and trainer.history:  # a run saved before the first loss was kept
            reference = trainer.history[0].get("train_loss")
        trainer.reference_loss = None if reference is None else float(reference)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: incomplete or mismatched training state "
                              f"({' '.join(str(error).split())})") from None
