"""Stochastic gradient descent with optional momentum and L2 weight decay.

For each parameter theta with gradient g (the arithmetic of torch.optim.SGD with
dampening 0, nesterov off):

    g     <- g + weight_decay * theta        (L2 penalty (wd/2)|theta|^2 added to the loss)
    b     <- momentum * b + g                (b starts at 0, so the first b is g)
    theta <- theta - lr * b                  (momentum = 0: theta - lr * g)

Keras writes momentum as a velocity u <- momentum * u - lr * g, theta <- theta + u;
that is u = -lr * b and gives the same trajectory while lr stays constant.
"""

from __future__ import annotations

import numpy as np

from numpyseg.layers.module import Parameter
from numpyseg.optim.optimizer import Optimizer, _in_range


class SGD(Optimizer):
    """SGD(named_params, lr, momentum=0.0, weight_decay=0.0).

    Args:
        named_params: a Module, or (dotted name, Parameter) pairs.
        lr: learning rate.
        momentum: in [0, 1); 0 keeps no state.
        weight_decay: L2 coefficient added to the gradient.

    State dict keys: 'step', 'lr', 'momentum', 'weight_decay' and, when momentum > 0,
    'b.<param name>' (the momentum buffers).
    """

    hyperparameters = ("lr", "momentum", "weight_decay")

    def __init__(self, named_params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        momentum = _in_range("momentum", momentum, 0.0, 1.0)
        # The slot list depends on momentum, so it is set per instance before the
        # base class allocates the buffers.
        self.slots = ("b",) if momentum > 0 else ()
        super().__init__(named_params, lr)
        self.momentum = momentum
        self.weight_decay = _in_range("weight_decay", weight_decay, 0.0, np.inf)

    def _update(self, name: str, p: Parameter, slots: dict[str, np.ndarray]) -> None:
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.slots:
            b = slots["b"]
            b *= self.momentum
            b += g
            g = b
        p.data -= self.lr * g
