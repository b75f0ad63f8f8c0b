"""The `Module` base class: parameters, train/eval, state dicts, grad mode.

Every layer in numpyseg is a `Module` with two methods:

    out = layer.forward(x)        # computes the output, keeps a small cache
    dx  = layer.backward(dout)    # uses the cache, *adds* dL/dparam into each
                                  # Parameter.grad, returns dL/dx

There is no autograd: a model's backward calls its children's backward in the
reverse order of its forward.

The caches form a stack, one per module: each forward pushes its cache, each
backward pops the newest.  So a module may be called more than once in one
forward pass (weight sharing, like a recurrent cell): its parent's backward
calls its backward once per call, in the reverse order, and the contributions
add up in Parameter.grad (the multivariate chain rule: a parameter used twice
gets the sum of both paths' gradients).  A forward that no backward follows
leaves its cache on the stack until a forward under `no_grad()` clears it;
inference therefore runs under `no_grad()`, which keeps nothing.

Parameters are found by walking the attributes of a module in the order they
were assigned, and get dotted names (``enc1.conv1.weight``) that key the state
dict, the optimiser state and the checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

_GRAD_ENABLED = True


def grad_enabled() -> bool:
    """True when forward passes should keep the caches a backward pass needs."""
    return _GRAD_ENABLED


@contextmanager
def no_grad():
    """Run forward passes without keeping caches (inference: less memory).

    >>> with no_grad():
    ...     logits = model(images)
    """
    global _GRAD_ENABLED
    previous = _GRAD_ENABLED
    _GRAD_ENABLED = False
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


class Parameter:
    """A learnable array and the gradient accumulated for it.

    Attributes:
        data: the values, any float dtype (float32 for training, float64 for
            gradient checks).
        grad: same shape and dtype as `data`; backward passes add into it,
            `Module.zero_grad()` clears it.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def size(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and model.

    Subclasses assign their Parameters and sub-Modules as attributes in the
    order the forward pass first uses them; `named_parameters()` then yields
    them in that order.  Non-learnable state that must be saved (BatchNorm's
    running statistics) is listed by name in the class attribute `buffers`.
    """

    buffers: tuple[str, ...] = ()

    def __init__(self):
        self.training = True
        self._caches = []  # (cache, backward) per forward pass that awaits its backward

    # ------------------------------------------------------------------ calls
    def __call__(self, *inputs):
        return self.forward(*inputs)

    def forward(self, *inputs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout):  # pragma: no cover - abstract
        raise NotImplementedError

    def _keep(self, cache, backward=None):
        """Push the forward cache when gradients are wanted; under no_grad() drop them all.

        In training mode every forward pushes (a module called twice in one pass has two
        caches, popped in reverse order by its two backwards).  In eval mode a forward
        replaces what was kept, so forwards that no backward follows (inference,
        finite differences) never pile up caches.  `backward` is the backward function
        that matches the forward that made the cache (the reference or the fast one,
        numpyseg.backends); `_take` returns both.
        """
        if not _GRAD_ENABLED:
            self._caches.clear()
            return
        if not self.training:
            self._caches.clear()
        self._caches.append((cache, backward))

    def _take_cache(self):
        """Pop the cache of the newest forward pass still awaiting its backward, or fail clearly."""
        if not self._caches:
            raise RuntimeError(
                f"{type(self).__name__}.backward() called without a forward pass that kept "
                "its cache (was it run under no_grad(), or is backward called more often than forward?)"
            )
        return self._caches.pop()[0]

    @property
    def _cache(self):
        """The newest kept cache (None when none is kept), for inspection."""
        return self._caches[-1][0] if self._caches else None

    def _take(self):
        """(backward function, cache) of the newest forward pass still awaiting its backward."""
        if not self._caches:
            self._take_cache()  # raises the clear error
        cache, backward = self._caches.pop()
        return backward, cache

    # -------------------------------------------------------------- structure
    def named_children(self) -> Iterator[tuple[str, "Module"]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield (dotted name, Parameter) in the order the forward pass uses them."""
        for name, value in vars(self).items():
            full = f"{prefix}{name}"
            if isinstance(value, Parameter):
                yield full, value
            elif isinstance(value, Module):
                yield from value.named_parameters(full + ".")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item.named_parameters(f"{full}.{i}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for prefix, module in self.named_modules():
            for name in type(module).buffers:
                yield (f"{prefix}.{name}" if prefix else name), getattr(module, name)

    # ------------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> "Module":
        for _, module in self.named_modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad[...] = 0

    def to(self, dtype) -> "Module":
        """Cast every parameter (and its gradient) and buffer to `dtype`."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = np.zeros_like(p.data)
        for prefix, module in self.named_modules():
            for name in type(module).buffers:
                setattr(module, name, getattr(module, name).astype(dtype))
        return self

    # ------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed by dotted name."""
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update({name: np.array(b, copy=True) for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into this module; names and shapes must match exactly.

        Raises:
            ValueError: one line naming the missing, unexpected or misshapen entry.
        """
        own = dict(self.named_parameters())
        buffer_owner = {}
        for prefix, module in self.named_modules():
            for name in type(module).buffers:
                buffer_owner[f"{prefix}.{name}" if prefix else name] = (module, name)
        expected = list(own) + list(buffer_owner)
        missing = [k for k in expected if k not in state]
        if missing:
            raise ValueError(f"state dict is missing {len(missing)} entries, e.g. '{missing[0]}'")
        unexpected = [k for k in state if k not in own and k not in buffer_owner]
        if unexpected:
            raise ValueError(f"state dict has unexpected entry '{unexpected[0]}'")
        for key in expected:
            value = np.asarray(state[key])
            target = own[key].data if key in own else getattr(*buffer_owner[key])
            if value.shape != target.shape:
                raise ValueError(
                    f"state dict entry '{key}' has shape {value.shape}, the model expects {target.shape}"
                )
        for key in expected:
            value = np.asarray(state[key])
            if key in own:
                own[key].data = value.astype(own[key].data.dtype, copy=True)
                own[key].grad = np.zeros_like(own[key].data)
            else:
                module, name = buffer_owner[key]
                setattr(module, name, value.astype(getattr(module, name).dtype, copy=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def check_input(layer: str, x: np.ndarray, channels: int | None = None) -> None:
    """Raise a one-line ValueError unless `x` is an NHWC float batch.

    Args:
        layer: the layer's name for the message.
        x: the input to check.
        channels: the number of channels the layer expects (None: any).
    """
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{layer} expects an NHWC array (N, H, W, C), got shape {shape}")
    if channels is not None and x.shape[3] != channels:
        raise ValueError(
            f"{layer} expects {channels} input channels (N, H, W, {channels}), got shape {x.shape}"
        )
    if x.dtype.kind != "f":
        raise ValueError(f"{layer} expects a floating-point array, got dtype {x.dtype}")
