"""Epoch-level training control with Keras semantics: ReduceLROnPlateau, EarlyStopping.

Both are stepped once per epoch with the monitored metric (the spec's recipe: the
validation loss, mode 'min'):

    for epoch in range(150):
        ...train, validate...
        scheduler.step(val_loss)          # may halve optimizer.lr
        if stopper.step(val_loss):        # True: stop training
            break
        if stopper.improved:              # the best epoch so far: keep its checkpoint
            save_checkpoint(...)

"Improved" means, in mode 'min', metric < best - min_delta (mode 'max':
metric > best + min_delta); a NaN metric never improves.  Both objects have
state_dict()/load_state_dict() made of plain Python numbers, so they can ride in a
checkpoint's JSON `extra` and a resumed run continues exactly where it stopped.

References:
    keras.callbacks.ReduceLROnPlateau and keras.callbacks.EarlyStopping (the semantics
    followed); L. Prechelt, "Early stopping - but when?", in Neural Networks: Tricks of
    the Trade, Springer 1998.
    I. Loshchilov, F. Hutter, "SGDR: stochastic gradient descent with warm restarts",
    ICLR 2017, arXiv:1608.03983 (the cosine schedule).
"""

from __future__ import annotations

import math

_MODES = ("min", "max")


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def _check_patience(patience) -> int:
    if int(patience) != patience or patience < 0:
        raise ValueError(f"patience must be a non-negative integer, got {patience}")
    return int(patience)


def _is_improvement(metric: float, best: float, mode: str, min_delta: float) -> bool:
    if mode == "min":
        return metric < best - min_delta
    return metric > best + min_delta


def _load(owner: str, state: dict, keys: tuple[str, ...]) -> dict:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{owner} state dict is missing '{missing[0]}'")
    return state


class ReduceLROnPlateau:
    """Multiply optimizer.lr by `factor` after `patience` epochs without improvement.

    Keras semantics (keras.callbacks.ReduceLROnPlateau), stepped after every epoch:

        if in cooldown: cooldown_counter -= 1; wait = 0
        if improved(metric, best): best = metric; wait = 0
        elif not in cooldown:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr = max(lr * factor, min_lr); cooldown_counter = cooldown; wait = 0

    So with patience 10 the rate is cut at the 10th consecutive epoch without
    improvement, never below min_lr.  As in Keras the cooldown counter is decremented
    before it is tested, so `cooldown` = k ignores the k - 1 epochs after a cut.
    Keras' default min_delta is 1e-4; the default here is 0 (any decrease counts),
    pass min_delta=1e-4 to match Keras exactly.

    Args:
        optimizer: anything with a float attribute `lr` (Adam, SGD).
        factor: in (0, 1).
        patience: epochs without improvement before a cut.
        min_lr: lower bound of the learning rate.
        mode: 'min' (loss) or 'max' (score).
        min_delta: the margin an improvement must beat.
        cooldown: epochs after a cut during which no waiting is counted.
    """

    def __init__(self, optimizer, factor: float = 0.5, patience: int = 10, min_lr: float = 1e-6,
                 mode: str = "min", min_delta: float = 0.0, cooldown: int = 0):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if min_lr < 0 or min_delta < 0:
            raise ValueError(f"min_lr and min_delta must be >= 0, got {min_lr} and {min_delta}")
        self.optimizer = optimizer
        self.factor, self.min_lr, self.min_delta = float(factor), float(min_lr), float(min_delta)
        self.patience = _check_patience(patience)
        self.cooldown = _check_patience(cooldown)
        self.mode = _check_mode(mode)
        self.best = math.inf if mode == "min" else -math.inf
        self.wait = 0
        self.cooldown_counter = 0
        self.num_reductions = 0

    def step(self, metric: float) -> bool:
        """Record one epoch's metric; returns True when the learning rate was cut."""
        metric = float(metric)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if _is_improvement(metric, self.best, self.mode, self.min_delta):
            self.best = metric
            self.wait = 0
            return False
        if self.cooldown_counter > 0:
            return False
        self.wait += 1
        if self.wait >= self.patience and self.optimizer.lr > self.min_lr:
            self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr)
            self.cooldown_counter = self.cooldown
            self.wait = 0
            self.num_reductions += 1
            return True
        return False

    def state_dict(self) -> dict:
        """{'best', 'wait', 'cooldown_counter', 'num_reductions'} as Python numbers."""
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter,
                "num_reductions": self.num_reductions}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` (the learning rate itself lives in the optimiser's state)."""
        state = _load("ReduceLROnPlateau", state, ("best", "wait", "cooldown_counter", "num_reductions"))
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.num_reductions = int(state["num_reductions"])

    def __repr__(self):
        return (f"ReduceLROnPlateau(factor={self.factor}, patience={self.patience}, "
                f"min_lr={self.min_lr}, mode={self.mode!r}, best={self.best:g}, wait={self.wait})")


class EarlyStopping:
    """Stop after `patience` consecutive epochs without improvement (Keras semantics).

        if improved(metric, best): best = metric; best_epoch = epoch; wait = 0
        else: wait += 1
        should_stop = wait >= patience   (and never on an improving epoch)

    Attributes:
        best: the best metric so far (inf / -inf before the first step).
        best_epoch: index (0-based count of step() calls) of the best epoch, -1 before.
        improved: whether the last step() set a new best (save the best checkpoint then).
        wait: epochs since the last improvement.
        epoch: number of step() calls so far.
    """

    def __init__(self, patience: int = 20, mode: str = "min", min_delta: float = 0.0):
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.patience = _check_patience(patience)
        self.mode = _check_mode(mode)
        self.min_delta = float(min_delta)
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = -1
        self.wait = 0
        self.epoch = 0
        self.improved = False

    def step(self, metric: float) -> bool:
        """Record one epoch's metric; returns True when training should stop."""
        metric = float(metric)
        self.improved = _is_improvement(metric, self.best, self.mode, self.min_delta)
        if self.improved:
            self.best = metric
            self.best_epoch = self.epoch
            self.wait = 0
        else:
            self.wait += 1
        self.epoch += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        # wait >= 1 also for patience 0: an improving epoch never stops training.
        return self.wait >= max(self.patience, 1)

    def state_dict(self) -> dict:
        """{'best', 'best_epoch', 'wait', 'epoch'} as Python numbers."""
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        state = _load("EarlyStopping", state, ("best", "best_epoch", "wait", "epoch"))
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.epoch = int(state["epoch"])
        self.improved = False

    def __repr__(self):
        return (f"EarlyStopping(patience={self.patience}, mode={self.mode!r}, best={self.best:g}, "
                f"best_epoch={self.best_epoch}, wait={self.wait})")


class CosineAnnealing:
    """Cosine learning-rate decay over a fixed number of steps, stepped after every step.

    One cycle of SGDR (Loshchilov & Hutter, "SGDR: stochastic gradient descent with warm
    restarts", ICLR 2017, eq. 5) without restarts, after an optional linear warm-up:

        lr(t) = base_lr * (t + 1) / warmup                                t < warmup
        lr(t) = min_lr + (base_lr - min_lr) * (1 + cos(pi * s / S)) / 2   otherwise,
                s = t - warmup, S = total_steps - warmup

    t counts the steps taken (0 before the first).  After total_steps the rate stays at
    min_lr.  Unlike ReduceLROnPlateau it does not wait for the validation loss to stall:
    the rate keeps falling smoothly, which lets the weights settle late in the run.

    Args:
        optimizer: anything with a float attribute `lr`; its value is the base rate.
        total_steps: the length of the schedule (steps), >= 1.
        min_lr: the rate reached at total_steps.
        warmup_steps: steps of linear warm-up, < total_steps.
    """

    def __init__(self, optimizer, total_steps: int, min_lr: float = 0.0, warmup_steps: int = 0):
        if int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps}")
        if int(warmup_steps) != warmup_steps or not 0 <= warmup_steps < total_steps:
            raise ValueError(f"warmup_steps must be an integer in [0, total_steps), got {warmup_steps}")
        if not 0 <= min_lr <= optimizer.lr:
            raise ValueError(f"min_lr must lie in [0, lr], got {min_lr}")
        self.optimizer = optimizer
        self.base_lr, self.min_lr = float(optimizer.lr), float(min_lr)
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        self.t = 0
        self.optimizer.lr = self.lr_at(0)

    def lr_at(self, t: int) -> float:
        """The learning rate of step t (0-based)."""
        if t < self.warmup_steps:
            return self.base_lr * (t + 1) / self.warmup_steps
        span = self.total_steps - self.warmup_steps
        s = min(t - self.warmup_steps, span)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * s / span))

    def step(self) -> None:
        """One optimisation step was taken: set the rate of the next one."""
        self.t += 1
        self.optimizer.lr = self.lr_at(self.t)

    def state_dict(self) -> dict:
        """{'t', 'base_lr', 'min_lr', 'total_steps', 'warmup_steps'} as Python numbers."""
        return {"t": self.t, "base_lr": self.base_lr, "min_lr": self.min_lr,
                "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; the schedule keeps the length it was started with."""
        state = _load("CosineAnnealing", state, ("t", "base_lr", "min_lr", "total_steps", "warmup_steps"))
        self.base_lr, self.min_lr = float(state["base_lr"]), float(state["min_lr"])
        self.total_steps, self.warmup_steps = int(state["total_steps"]), int(state["warmup_steps"])
        self.t = int(state["t"])
        self.optimizer.lr = self.lr_at(self.t)

    def __repr__(self):
        return (f"CosineAnnealing(base_lr={self.base_lr:g}, min_lr={self.min_lr:g}, "
                f"total_steps={self.total_steps}, warmup_steps={self.warmup_steps}, t={self.t})")
