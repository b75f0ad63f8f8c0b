"""The shared part of every optimiser: named parameters and name-keyed state.

An optimiser holds the model's `Parameter` objects under their dotted names
(``enc1.conv1.weight``) and keeps one slot array per parameter and per kind of
state (Adam: first moment 'm' and second moment 'v').  Keying by name rather than
by id() is what lets a checkpoint written by one process be loaded by another: the
flat state dict looks like

    {'step': 12, 'lr': 0.001, ..., 'm.enc1.conv1.weight': array, 'v.enc1.conv1.weight': array}

and is stored in a checkpoint next to the model's own state dict.

The optimiser reads `p.data` and `p.grad` afresh at every step, so it keeps working
after `Module.load_state_dict` or `Module.to(dtype)` replace those arrays; the slot
arrays follow the parameter's dtype.

References:
    D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015 (the
    optimiser built on this base class, numpyseg.optim.adam).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from numpyseg.layers.module import Module, Parameter


def named_parameter_list(params) -> list[tuple[str, Parameter]]:
    """[(name, Parameter)] from a Module or an iterable of (name, Parameter) pairs.

    A Parameter reachable under two names (a shared sub-module) is kept once, under
    its first name, so it is not updated twice per step.

    Raises:
        ValueError: one line, for an empty list, a non-Parameter or a repeated name.
    """
    pairs = params.named_parameters() if isinstance(params, Module) else params
    out, names, seen = [], set(), set()
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Parameter)):
            raise ValueError("optimiser expects a Module or (name, Parameter) pairs, e.g. "
                             f"model.named_parameters(); got an item of type {type(item).__name__}")
        name, p = item
        if name in names:
            raise ValueError(f"optimiser got two parameters named '{name}'")
        if id(p) in seen:
            continue
        names.add(name)
        seen.add(id(p))
        out.append((str(name), p))
    if not out:
        raise ValueError("optimiser got an empty parameter list")
    return out


class Optimizer:
    """Base class: `step()`, `zero_grad()`, `state_dict()`, `load_state_dict()`.

    Subclasses set `slots` (names of the per-parameter arrays, e.g. ('m', 'v')) and
    `hyperparameters` (names of the float attributes saved with the state, always
    starting with 'lr'), and implement `_update(name, p, slots)`.
    """

    slots: tuple[str, ...] = ()
    hyperparameters: tuple[str, ...] = ("lr",)

    def __init__(self, params: Module | Iterable[tuple[str, Parameter]], lr: float):
        self.params = named_parameter_list(params)
        self.lr = _positive("lr", lr)
        self.step_count = 0
        self.state: dict[str, dict[str, np.ndarray]] = {
            slot: {name: np.zeros_like(p.data) for name, p in self.params} for slot in self.slots
        }

    def zero_grad(self) -> None:
        """Set every parameter's gradient to 0 (backward passes add into it)."""
        for _, p in self.params:
            p.grad[...] = 0

    def step(self) -> None:
        """Update every p.data in place from p.grad (one optimisation step)."""
        self.step_count += 1
        for name, p in self.params:
            if p.grad.shape != p.data.shape:
                raise ValueError(f"parameter '{name}' has gradient shape {p.grad.shape}, "
                                 f"data shape {p.data.shape}")
            slots = {}
            for slot in self.slots:
                buf = self.state[slot][name]
                if buf.dtype != p.data.dtype:  # the model was cast with Module.to()
                    buf = self.state[slot][name] = buf.astype(p.data.dtype)
                slots[slot] = buf
            self._update(name, p, slots)

    def _update(self, name: str, p: Parameter, slots: dict[str, np.ndarray]) -> None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------ state dicts
    def state_dict(self) -> dict:
        """Flat dict: 'step', the hyperparameters, and '<slot>.<param name>' arrays (copies)."""
        state: dict = {"step": self.step_count}
        state.update({h: float(getattr(self, h)) for h in self.hyperparameters})
        for slot in self.slots:
            for name, _ in self.params:
                state[f"{slot}.{name}"] = self.state[slot][name].copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()` (scalars may be 0-d arrays, as read from an .npz).

        Everything is checked before anything changes, so a failed load leaves the
        optimiser as it was.

        Raises:
            ValueError: one line naming the missing, unexpected or misshapen entry.
        """
        kind = type(self).__name__
        scalars = ("step",) + self.hyperparameters
        arrays = [f"{slot}.{name}" for slot in self.slots for name, _ in self.params]
        missing = [k for k in scalars + tuple(arrays) if k not in state]
        if missing:
            raise ValueError(f"{kind} state dict is missing {len(missing)} entries, e.g. '{missing[0]}'")
        unexpected = [k for k in state if k not in scalars and k not in arrays]
        if unexpected:
            raise ValueError(f"{kind} state dict has unexpected entry '{unexpected[0]}'")
        shapes = {f"{slot}.{name}": p.data.shape for slot in self.slots for name, p in self.params}
        for key in arrays:
            shape = np.shape(state[key])
            if shape != shapes[key]:
                raise ValueError(f"{kind} state dict entry '{key}' has shape {shape}, "
                                 f"the parameter has shape {shapes[key]}")
        for key in scalars:
            if np.ndim(state[key]) != 0:
                raise ValueError(f"{kind} state dict entry '{key}' should be a scalar, "
                                 f"got shape {np.shape(state[key])}")
        self.step_count = int(state["step"])
        for h in self.hyperparameters:
            setattr(self, h, float(state[h]))
        for slot in self.slots:
            for name, p in self.params:
                self.state[slot][name] = np.array(state[f"{slot}.{name}"], dtype=p.data.dtype, copy=True)

    def __repr__(self) -> str:
        hp = ", ".join(f"{h}={getattr(self, h):g}" for h in self.hyperparameters)
        return f"{type(self).__name__}({len(self.params)} parameters, {hp})"


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value}")
    return value


def _in_range(name: str, value: float, low: float, high: float) -> float:
    """value in [low, high), else a one-line ValueError."""
    value = float(value)
    if not (low <= value < high):
        raise ValueError(f"{name} must lie in [{low}, {high}), got {value}")
    return value
