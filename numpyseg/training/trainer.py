"""The training loop behind `numpyseg train`: the step, validation, the epoch loop.

One optimisation step on a batch (x, y, m) of images, labels and loss mask:

    z      = model(x)                                   logits (B, H, W, 1), train mode
    L, dz  = bce_weight * BCE(z, y; m) + mcc_weight * (1 - softMCC(z, y; m))
    model.backward(dz)                                  fills every Parameter.grad
    Adam step                                           theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

The mask m is 1 on pixels that come from the image and 0 on the zero padding
(and on rotation corners); with `loss_fov` also 0 outside the field of view.

After every epoch the validation images (held out from the *training* images,
chosen by the seed) are predicted whole, in eval mode; their mean loss drives
ReduceLROnPlateau (factor 0.5, patience 10, min 1e-6) and early stopping
(patience 20), and the monitored metric (validation F1 inside the FOV by
default) picks best.npz.  last.npz is written after every epoch; both through
the atomic checkpoint writer.

Two options change this: `--schedule cosine` lowers the rate after every step
along a half cosine, from --lr to --min-lr over the run's --epochs
(optim.schedulers.CosineAnnealing), and `--ema DECAY` keeps an exponential moving
average of the weights (optim.averaging.WeightAverage), updated after every step;
the average is what is validated and what best.npz holds, and the raw weights'
validation loss, F1 and AUC are logged beside it (raw_val_*).

Read `Trainer.train_step`, `Trainer.validate` and `Trainer.fit` first; the rest
is bookkeeping, kept in its own modules:

    numpyseg.training.samples     the training images and the validation split
    numpyseg.training.batches     epoch plans and mini-batches (augmentation, loss masks)
    numpyseg.training.state       the run folder's files; what last.npz holds for an exact resume
    numpyseg.training.interrupts  Ctrl-C / SIGTERM: stop after the step, save, say how to resume

Divergence: a step whose loss, logits, weights or Adam moments are NaN/inf, or
whose loss exceeds DIVERGENCE_FACTOR (100) times the run's first loss, stops the
run with `TrainingDiverged`.  No checkpoint is ever written from non-finite
state (`save` checks), so last.npz and best.npz on disk stay the last good ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numpyseg.atomic import remove_stale_temporaries
from numpyseg.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpyseg.data.io import DataError
from numpyseg.inference import dataset_pad_size, predict_logits
from numpyseg.kernels.tiles import machine_summary
from numpyseg.layers.activations import sigmoid
from numpyseg.losses.combined import bce_mcc_loss
from numpyseg.metrics.segmentation import segmentation_metrics
from numpyseg.models.unet import build_model
from numpyseg.optim.adam import Adam
from numpyseg.optim.averaging import WeightAverage
from numpyseg.optim.schedulers import CosineAnnealing, EarlyStopping, ReduceLROnPlateau
from numpyseg.prediction import training_fov_diameter
from numpyseg.training import batches as batching
from numpyseg.training import logs
from numpyseg.training.config import MONITORS, TrainConfig
from numpyseg.training.interrupts import InterruptGuard
from numpyseg.training.portable import portable_config
from numpyseg.training.samples import check_labelled, load_training_samples, split_validation
from numpyseg.training.state import (BEST, CURVES, HISTORY_CSV, HISTORY_JSON, LAST, RUN_FILES, OptimiserState,
                                     generator_states, restore_run_state, run_state, set_generator_states)
from numpyseg.errors import ConfigError, TrainingDiverged

#: A step loss above this many times the run's first step loss counts as divergence.
DIVERGENCE_FACTOR = 100.0

# A fixed tag mixed into the seed, so the data stream is independent of the
# validation split and of the model's initialisation.
_DATA_TAG = 202


@dataclass
class TrainResult:
    """What `Trainer.fit` ended with.

    status: 'completed' (all epochs), 'early_stopped', 'time_limit' or 'interrupted'.
    """

    status: str
    epoch: int
    step_in_epoch: int
    history: list = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    saved: bool = True
    message: str = ""


class _NonFinite(Exception):
    """Raised inside the loop when `what` diverged; `fit` turns it into TrainingDiverged."""

    def __init__(self, what: str, problem: str = "became NaN/inf"):
        super().__init__(what)
        self.what = what
        self.problem = problem


def _first_non_finite(named_arrays) -> str | None:
    """The name of the first (name, array) pair holding a NaN or infinity, else None."""
    for name, value in named_arrays:
        if not np.isfinite(value).all():
            return name
    return None


class Trainer:
    """Train a model as configured, writing checkpoints and logs into `run_dir`.

    Args:
        config: the run's TrainConfig.
        run_dir: the run folder (created); holds last.npz, best.npz, history.csv,
            history.json, curves.png.
        resume: continue the run saved in run_dir/last.npz (its config must be `config`,
            see `numpyseg.training.config.merge_for_resume`).
        log: called with each progress line (default: print, flushed).
        samples: optional (train, val) lists of Sample to use instead of loading
            the configured dataset (for notebooks and tests).
        command: the command line that started this session; every session's command,
            start time and starting epoch are kept in the checkpoints ("sessions").
        progress: None or a callable receiving one-line messages about the start-up
            steps that can take a while (reading the dataset, the validation split,
            the first step, when numba compiles or loads its kernels); `numpyseg train`
            prints them on stderr unless --quiet.
    """

    def __init__(self, config: TrainConfig, run_dir, *, resume: bool = False, log=None, samples=None,
                 command: str | None = None, progress=None):
        self.config = config
        self.command = command  # the command line of this session, kept in the run's record
        self.run_dir = Path(run_dir)
        self.log = log or (lambda line: print(line, flush=True))
        self.progress = progress
        if samples is None:
            root = config.images or config.data_root
            where = f" from {root}" if config.dataset != "synthetic" and root else ""
            self._say(f"reading the {config.dataset} training images{where}")
            samples = load_training_samples(config)
            self._say(f"{len(samples)} training images read; choosing the validation split")
            self.train_samples, self.val_samples = split_validation(samples, config)
        else:
            self.train_samples, self.val_samples = (list(samples[0]), list(samples[1]))
            check_labelled(self.train_samples + self.val_samples, "training")
        if not self.train_samples:
            raise DataError("no training images")
        self.batch_hw = batching.batch_size_hw(config, self.train_samples)
        self.fov_diameter = training_fov_diameter(self.train_samples)  # the scale prediction rescales to
        self.val_pad = dataset_pad_size(config.dataset, [s.shape for s in self.val_samples])
        self.monitor = config.monitor or ("val_f1" if self.val_samples else "train_loss")
        if self.monitor.startswith("val_") and not self.val_samples:
            raise ConfigError(f"--monitor {self.monitor} needs a validation split (set --val-count or "
                             f"--val-fraction above 0), or use --monitor train_loss")
        self.plateau_key = "val_loss" if self.val_samples else "train_loss"
        self.steps_per_epoch = config.steps_per_epoch or batching.default_steps(
            [s.shape for s in self.train_samples], config.batch_size, config.patch_size)
        self.one_pass = config.patch_size == 0 and config.steps_per_epoch == 0

        model_config = config.model_config()
        self.model = build_model({**model_config, "seed": int(config.seed)})
        self.model_config = dict(self.model.config)
        self.model.input_grad = False  # no step uses dL/d(image): skip that convolution
        self.model.train()
        self.optimizer = Adam(self.model.named_parameters(), lr=config.lr)
        if config.schedule == "cosine":
            self.scheduler = CosineAnnealing(self.optimizer, config.epochs * self.steps_per_epoch,
                                             min_lr=config.min_lr,
                                             warmup_steps=config.warmup_epochs * self.steps_per_epoch)
        else:
            self.scheduler = ReduceLROnPlateau(self.optimizer, factor=config.lr_factor,
                                               patience=config.patience_lr, min_lr=config.min_lr)
        self.average = WeightAverage(self.model, config.ema) if config.ema > 0 else None
        self.state_owner = OptimiserState(self.optimizer, self.average)  # saved as the optimiser state
        self.stopper = EarlyStopping(patience=config.early_stop) if config.early_stop > 0 else None
        self.data_rng = np.random.default_rng([int(config.seed), _DATA_TAG])
        self.augmenter = batching.make_augmenter(config, self.data_rng)

        self.epoch = 0                     # completed epochs
        self.plan: list[list[int]] | None = None
        self.step_in_epoch = 0             # completed steps of the current plan
        self.epoch_stats = self._empty_stats()
        self.history: list[dict] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.elapsed_before = 0.0          # training time of earlier sessions (resume)
        self.sessions: list[dict] = []     # one entry per `numpyseg train` session
        self.reference_loss: float | None = None  # the run's first step loss (divergence check)
        self._updating = False
        self._committing = False
        if resume:
            self._resume()

    def _say(self, message: str) -> None:
        """Pass a start-up message to the progress callback, if any."""
        if self.progress is not None:
            self.progress(message)

    # ------------------------------------------------------------- one step
    def train_step(self, images, labels, masks) -> float:
        """One forward/backward/Adam step on a batch; returns the loss.

        Raises:
            _NonFinite: the logits, the loss, the updated weights or Adam moments are
                NaN/inf, or the loss exploded (see `check_loss`); `fit` turns it into
                TrainingDiverged.
        """
        self.optimizer.zero_grad()
        logits = self.model(images)
        if not np.isfinite(logits).all():
            raise _NonFinite("the logits")
        value, dlogits = self.loss(logits, labels, masks)
        self.check_loss(value)
        self.model.backward(dlogits)
        self._updating = True
        self.optimizer.step()
        if self.average is not None:
            self.average.update()
        if isinstance(self.scheduler, CosineAnnealing):
            self.scheduler.step()
        self._updating = False
        bad = self.non_finite_state()
        if bad is not None:
            raise _NonFinite(bad)
        return float(value)

    def loss(self, logits, labels, masks):
        """The training loss and its gradient (a method so it can be swapped or wrapped)."""
        c = self.config
        return bce_mcc_loss(logits, labels, masks, bce_weight=c.bce_weight, mcc_weight=c.mcc_weight,
                            pos_weight=c.pos_weight)

    def check_loss(self, value: float) -> None:
        """Raise _NonFinite if a step's loss is NaN/inf or above DIVERGENCE_FACTOR x the first one.

        The first finite loss of the run (before any update, so from the initial
        weights) becomes `reference_loss`; it is kept in the checkpoints, so a resumed
        run compares with the same number.
        """
        if not math.isfinite(value):
            raise _NonFinite("the loss")
        if self.reference_loss is None:
            self.reference_loss = float(value)
        elif self.reference_loss > 0 and value > DIVERGENCE_FACTOR * self.reference_loss:
            raise _NonFinite("the loss", f"rose to {value:.4g}, over {DIVERGENCE_FACTOR:g} times the run's "
                                         f"first loss {self.reference_loss:.4g},")

    # ------------------------------------------------------------ validation
    def validate(self) -> dict:
        """Mean loss and scores (inside the FOV) of the validation images, predicted whole.

        With a weight average (--ema) the scores are those of the averaged weights, and
        the raw weights' loss, F1 and AUC are added as raw_val_loss, raw_val_f1, raw_val_auc
        (what the average is worth, measured in the same run).
        """
        if not self.val_samples:
            return {}
        if self.average is None:
            return self._validate_weights()
        raw = self._validate_weights()
        with self.average.applied():
            scores = self._validate_weights()
        scores.update({f"raw_{key}": raw[key] for key in ("val_loss", "val_f1", "val_auc")})
        return scores

    def _validate_weights(self) -> dict:
        """validate() for the weights the model holds now."""
        c = self.config
        logits = predict_logits(self.model, [s.image for s in self.val_samples], pad_size=self.val_pad,
                                batch_size=c.batch_size)
        losses, rows = [], []
        for s, z in zip(self.val_samples, logits):
            if not np.isfinite(z).all():
                raise _NonFinite("the validation logits")
            mask = s.fov[None, :, :, None] if c.loss_fov else None
            value, _ = bce_mcc_loss(z[None, :, :, None], s.label[None, :, :, None].astype(np.float32), mask,
                                    bce_weight=c.bce_weight, mcc_weight=c.mcc_weight, pos_weight=c.pos_weight)
            losses.append(value)
            rows.append(segmentation_metrics(sigmoid(z), s.label, s.fov))
        result = {"val_loss": float(np.mean(losses))}
        for key, short in (("accuracy", "acc"), ("sensitivity", "sen"), ("specificity", "spe"), ("f1", "f1"),
                           ("iou", "iou"), ("mcc", "mcc"), ("auc", "auc")):
            values = np.array([row[key] for row in rows], dtype=np.float64)
            values = values[~np.isnan(values)]
            result[f"val_{short}"] = float(values.mean()) if values.size else float("nan")
        return result

    # -------------------------------------------------------- the epoch loop
    def fit(self) -> TrainResult:
        """Train until the epochs are done, early stopping, the time limit or Ctrl-C.

        Raises:
            TrainingDiverged: a NaN/inf loss, logit, weight or Adam moment, or an exploding
                loss (checkpoints on disk, all from finite states, are kept).
        """
        c = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for leftover in remove_stale_temporaries(self.run_dir, RUN_FILES):
            self.log(f"removed {leftover.name}, a temporary file left by a run that was killed")
        self._session_start = time.monotonic()
        self.sessions.append({"command": self.command, "started_utc": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                                  time.gmtime()),
                              "from_epoch": self.epoch, "from_step": self.step_in_epoch,
                              "elapsed_s_before": self.elapsed_before, "machine": machine_summary()})
        self._epoch_times: list[float] = []
        self._pending_snapshot = None
        self.last_loss = None
        status = "completed"
        self._say(f"{len(self.train_samples)} training and {len(self.val_samples)} validation images; first "
                  f"step of {self.position()} (the first step of a process loads or compiles the kernels)")
        with InterruptGuard(self.log) as guard:
            try:
                while self.epoch < c.epochs:
                    if self.plan is None:
                        self.plan = batching.plan_epoch(self.data_rng, len(self.train_samples),
                                                        c.batch_size, self.steps_per_epoch, self.one_pass)
                        self.step_in_epoch = 0
                        self.epoch_stats = self._empty_stats()
                    if not self._run_steps(guard):
                        self.save(LAST)
                        return self._interrupted(saved=True, by=guard.signal_name)
                    stop = self._end_epoch()
                    if guard.requested:
                        return self._interrupted(saved=True, by=guard.signal_name)
                    if stop:
                        status = "early_stopped"
                        break
                    if (c.time_limit is not None and self.epoch < c.epochs
                            and self._session_time() >= 60.0 * c.time_limit):
                        status = "time_limit"
                        break
            except _NonFinite as error:
                if self.plan is not None and self.step_in_epoch < len(self.plan):
                    where = f"epoch {self.epoch + 1}, step {self.step_in_epoch + 1}"
                else:
                    where = f"the validation of epoch {self.epoch + 1}"
                # Only finite states are ever saved, so the file on disk is good.
                kept = (f"last good checkpoint kept: {self.run_dir / LAST} (epoch {self.epoch})"
                        if (self.run_dir / LAST).exists() else "no checkpoint had been saved yet")
                raise TrainingDiverged(f"training diverged: {error.what} {error.problem} at {where} "
                                       f"(lr {self.optimizer.lr:g}); stopped; {kept}; try a lower --lr") from None
            except KeyboardInterrupt:
                return self._raw_interrupt(guard)
        return self._finished(status)

    def _run_steps(self, guard) -> bool:
        """Run the remaining steps of the current plan; False if asked to stop (Ctrl-C)."""
        stats = self.epoch_stats
        every = self._log_every()
        steps = len(self.plan)
        while self.step_in_epoch < steps:
            snapshot = self._snapshot()
            self._pending_snapshot = snapshot
            start = time.monotonic()
            indices = self.plan[self.step_in_epoch]
            images, labels, masks = batching.make_batch(self.train_samples, indices, self.batch_hw,
                                                        self.augmenter, self.config.loss_fov)
            value = self.train_step(images, labels, masks)
            took = time.monotonic() - start
            self._pending_snapshot = None
            self.step_in_epoch += 1
            stats["loss_sum"] += value
            stats["steps"] += 1
            stats["images"] += len(indices)
            stats["train_time"] += took
            self.last_loss = value
            if every and self.step_in_epoch % every == 0 and self.step_in_epoch < steps:
                rate = stats["images"] / max(stats["train_time"], 1e-9)
                eta = (steps - self.step_in_epoch) * stats["train_time"] / max(stats["steps"], 1)
                self.log(f"  epoch {self.epoch + 1} step {self.step_in_epoch}/{steps}  loss "
                         f"{stats['loss_sum'] / stats['steps']:.4f}  {rate:.1f} img/s  epoch ETA {_clock(eta)}")
            if guard.requested:
                return False
        return True

    def _end_epoch(self) -> bool:
        """Validate, record, step the schedules, write checkpoints and logs.

        Returns True when early stopping says to stop.
        """
        c = self.config
        stats = self.epoch_stats
        val_start = time.monotonic()
        scores = self.validate()
        val_time = time.monotonic() - val_start
        lr_used = float(self.optimizer.lr)
        train_loss = stats["loss_sum"] / max(stats["steps"], 1)
        epoch_time = stats["train_time"] + val_time
        record = {"epoch": self.epoch + 1, "steps": stats["steps"], "train_loss": train_loss, **scores,
                  "lr": lr_used, "images_per_s": stats["images"] / max(stats["train_time"], 1e-9),
                  "epoch_time_s": epoch_time,
                  "elapsed_s": self.elapsed()}
        if not math.isfinite(record.get("val_loss", 0.0)):
            raise _NonFinite("the validation loss")
        value = record.get(self.monitor)
        better = (value is not None and math.isfinite(value) and (
            self.best_value is None or (value < self.best_value if MONITORS[self.monitor] == "min"
                                        else value > self.best_value)))
        record["best"] = bool(better)

        self._committing = True
        self.history.append(record)
        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(record[self.plateau_key])
        stop = self.stopper.step(record[self.plateau_key]) if self.stopper is not None else False
        if better:
            self.best_value, self.best_epoch = float(value), self.epoch + 1
        self.epoch += 1
        self.plan = None
        self.step_in_epoch = 0
        self.epoch_stats = self._empty_stats()
        if better and self.average is not None:
            with self.average.applied():  # best.npz holds the averaged weights that were scored
                self.save(BEST)
        elif better:
            self.save(BEST)
        self.save(LAST)
        self._committing = False
        self._write_logs()
        self._epoch_times.append(epoch_time)

        remaining = (c.epochs - self.epoch) * float(np.mean(self._epoch_times))
        parts = [f"epoch {self.epoch}/{c.epochs}", f"steps {record['steps']}",
                 f"train {train_loss:.4f}"]
        if self.val_samples:
            parts += [f"val {record['val_loss']:.4f}", f"F1 {_fmt(record['val_f1'])}",
                      f"AUC {_fmt(record['val_auc'])}"]
        parts += [f"lr {lr_used:.1e}", f"{record['images_per_s']:.1f} img/s",
                  f"elapsed {_clock(record['elapsed_s'])}", f"ETA {_clock(remaining)}"]
        if better:
            parts.append(f"* best {self.monitor}")
        self.log("  ".join(parts))
        return stop

    def _log_every(self) -> int:
        if self.config.log_every:
            return self.config.log_every
        return max(1, self.steps_per_epoch // 10) if self.steps_per_epoch >= 20 else 0

    # --------------------------------------------------- how a run finishes
    def _finished(self, status: str) -> TrainResult:
        if status == "completed":
            done = f"finished {self.epoch} epochs"
        elif status == "early_stopped":
            done = (f"early stopping after epoch {self.epoch} ({self.plateau_key} did not improve for "
                    f"{self.config.early_stop} epochs)")
        else:
            done = f"time limit of {self.config.time_limit:g} min reached after epoch {self.epoch}"
        best = (f"best {self.monitor} {self.best_value:.4f} at epoch {self.best_epoch} -> {self.run_dir / BEST}"
                if self.best_epoch is not None else "no best checkpoint")
        message = f"{done}; {best}"
        if status == "time_limit" and self.epoch < self.config.epochs:
            message += f"; continue with: numpyseg train --out {self.run_dir} --resume"
        return TrainResult(status, self.epoch, self.step_in_epoch, self.history, self.best_value,
                           self.best_epoch, True, message)

    def _interrupted(self, saved: bool, kept_epoch: int | None = None, by: str | None = None) -> TrainResult:
        """The result of a stop by Ctrl-C / SIGTERM (`by`), with the command that resumes."""
        resume = f"numpyseg train --out {self.run_dir} --resume"
        stopped = f"interrupted by {by}" if by else "interrupted"
        if saved:
            where = (f"in epoch {self.epoch + 1} after step {self.step_in_epoch} of {len(self.plan)}"
                     if self.plan is not None else f"after epoch {self.epoch}")
            message = f"{stopped} {where}; state saved to {self.run_dir / LAST}; resume with: {resume}"
        elif kept_epoch is not None:
            message = (f"{stopped}; quit without saving; {self.run_dir / LAST} (epoch {kept_epoch}) is "
                       f"kept; resume with: {resume}")
        else:
            message = f"{stopped}; quit without saving; no checkpoint had been saved yet"
        return TrainResult("interrupted", self.epoch, self.step_in_epoch, self.history, self.best_value,
                           self.best_epoch, saved, message)

    def _raw_interrupt(self, guard) -> TrainResult:
        """A KeyboardInterrupt raised inside a step (second Ctrl-C, or no signal handler)."""
        if guard.forced or self._updating or self._committing:
            # The weights or the epoch bookkeeping may be half-updated: keep the file on disk.
            kept = None
            if (self.run_dir / LAST).exists():
                try:
                    kept = load_checkpoint(self.run_dir / LAST).epoch
                except CheckpointError:
                    kept = None
            return self._interrupted(saved=False, kept_epoch=kept, by=guard.signal_name)
        if self._pending_snapshot is not None:
            # The step did not finish: undo the random draws it made, so the resumed
            # run draws them again exactly.
            self._rollback(self._pending_snapshot)
        try:
            self.save(LAST)
        except TrainingDiverged:  # never reached in practice: each step checks the state it leaves
            return self._interrupted(saved=False, by=guard.signal_name)
        return self._interrupted(saved=True, by=guard.signal_name)

    # ------------------------------------------ saving and resuming (state.py)
    @staticmethod
    def _empty_stats() -> dict:
        return {"loss_sum": 0.0, "steps": 0, "images": 0, "train_time": 0.0}

    def _extra(self) -> dict:
        """Everything beyond weights and Adam moments that a resume needs (see state.run_state)."""
        return run_state(self)

    def _resume(self) -> None:
        restore_run_state(self)

    def elapsed(self) -> float:
        """Training time of the whole run so far (seconds), earlier sessions included."""
        return self.elapsed_before + self._session_time()

    def _session_time(self) -> float:
        start = getattr(self, "_session_start", None)
        return 0.0 if start is None else time.monotonic() - start

    def non_finite_state(self) -> str | None:
        """The first weight or Adam moment holding NaN/inf ('the weights (NAME)', ...), else None."""
        weights = _first_non_finite((name, p.data) for name, p in self.optimizer.params)
        if weights is not None:
            return f"the weights ({weights})"
        moments = _first_non_finite((f"{slot}.{name}", self.optimizer.state[slot][name])
                                    for slot in self.optimizer.slots for name, _ in self.optimizer.params)
        return None if moments is None else f"the Adam moments ({moments})"

    def save(self, name: str = LAST) -> Path:
        """Write the current state to run_dir/name (atomically).

        Raises:
            TrainingDiverged: a weight or Adam moment is NaN/inf; nothing is written (a
                checkpoint never holds non-finite state).
        """
        bad = self.non_finite_state()
        if bad is not None:
            raise TrainingDiverged(f"{bad} hold NaN/inf: {self.run_dir / name} not written (a checkpoint never "
                                   f"holds non-finite state); resume from the last good checkpoint with a lower --lr")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(self.run_dir / name, self.model, self.state_owner, config=self.model_config,
                               epoch=self.epoch, extra=self._extra(), fov_diameter=self.fov_diameter)

    def _snapshot(self):
        return self.data_rng.bit_generator.state, generator_states(self.model)

    def _rollback(self, snapshot) -> None:
        data_state, model_states = snapshot
        self.data_rng.bit_generator.state = data_state
        set_generator_states(self.model, model_states)

    # ------------------------------------------------------------- reporting
    def _write_logs(self) -> None:
        clean = self.history
        document = {"run": portable_config(self.config).to_dict(), "monitor": self.monitor,
                    "best_epoch": self.best_epoch, "best_value": self.best_value,
                    "train_images": [s.name for s in self.train_samples],
                    "val_images": [s.name for s in self.val_samples]}
        logs.write_history_csv(self.run_dir / HISTORY_CSV, clean)
        logs.write_history_json(self.run_dir / HISTORY_JSON, clean, document)
        try:
            logs.plot_curves(self.run_dir / CURVES, clean, self.monitor,
                             title=f"{self.model_config['arch']} on {self.config.dataset}")
        except Exception as error:  # a plotting problem must not end a training run
            self.log(f"warning: could not draw {CURVES}: {' '.join(str(error).split())}")

    def position(self) -> str:
        """Where the run stands, e.g. 'epoch 2 of 3, step 8 of 10' (the next step to run)."""
        where = f"epoch {self.epoch + 1} of {self.config.epochs}"
        if self.plan is not None:
            where += f", step {self.step_in_epoch + 1} of {len(self.plan)}"
        return where

    def describe(self) -> str:
        """One paragraph describing the run (printed at the start)."""
        c = self.config
        h, w = self.batch_hw
        what = f"{c.patch_size}x{c.patch_size} patches" if c.patch_size else f"whole images padded to {h}x{w}"
        return (f"{self.model_config['arch']} ({self.model.num_parameters():,} parameters), dataset "
                f"{c.dataset}: {len(self.train_samples)} training / {len(self.val_samples)} validation images; "
                f"{what}, batch {c.batch_size}, {self.steps_per_epoch} steps/epoch; Adam lr {c.lr:g} "
                f"({c.schedule} schedule{f', weight average {c.ema:g}' if c.ema else ''}); "
                f"best checkpoint by {self.monitor}; run folder {self.run_dir}")


def _clock(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _fmt(value, spec=".4f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)
