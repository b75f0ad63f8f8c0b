"""An exponential moving average (EMA) of the weights, kept beside the optimiser.

After every optimisation step each parameter's average moves towards its new value:

    d_t     = min(decay, (1 + t) / (10 + t))          t = updates so far (0, 1, ...)
    avg    <- d_t * avg + (1 - d_t) * theta           avg starts as the initial theta

The average over the last ~1 / (1 - decay) steps smooths out the noise of single
mini-batch steps, so it usually validates better than the raw weights it follows
(Polyak & Juditsky, "Acceleration of stochastic approximation by averaging", SIAM J.
Control Optim. 30(4), 1992; the warm-up d_t as in TensorFlow's
tf.train.ExponentialMovingAverage with num_updates).  The average is never trained:
the gradient steps act on theta, and the average only reads it.

    ema = WeightAverage(model, decay=0.995)
    for batch in batches:
        ...; optimizer.step(); ema.update()
    with ema.applied():          # the model holds the averaged weights inside
        validate(model)

State dict keys: 'ema.updates' and 'ema.<param name>' (copies), so the average rides in
a checkpoint beside the Adam moments and a resumed run continues it exactly.

References:
    B. T. Polyak, A. B. Juditsky, "Acceleration of stochastic approximation by
    averaging", SIAM J. Control Optim. 30(4), 1992.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from numpyseg.optim.optimizer import named_parameter_list

PREFIX = "ema."


class WeightAverage:
    """WeightAverage(named_params, decay): an EMA of every parameter (see the module docstring).

    Args:
        named_params: a Module, or (dotted name, Parameter) pairs.
        decay: in (0, 1); the average spans about 1 / (1 - decay) steps.
    """

    def __init__(self, named_params, decay: float = 0.995):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), got {decay}")
        self.params = named_parameter_list(named_params)
        self.decay = float(decay)
        self.updates = 0
        self.average = {name: p.data.copy() for name, p in self.params}

    def update(self) -> None:
        """Move the average towards the current weights (call after each optimiser step)."""
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for name, p in self.params:
            avg = self.average[name]
            avg *= d
            avg += (1.0 - d) * p.data
        self.updates += 1

    @contextmanager
    def applied(self):
        """Inside the block the parameters hold the averaged weights; restored after."""
        saved = {name: p.data.copy() for name, p in self.params}
        try:
            for name, p in self.params:
                p.data[...] = self.average[name]
            yield
        finally:
            for name, p in self.params:
                p.data[...] = saved[name]

    def state_dict(self) -> dict:
        """{'ema.updates': int, 'ema.<name>': array copy, ...}."""
        state: dict = {PREFIX + "updates": self.updates}
        state.update({PREFIX + name: avg.copy() for name, avg in self.average.items()})
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; everything is checked before anything changes.

        Raises:
            ValueError: a missing or misshapen entry, named.
        """
        for name, p in self.params:
            key = PREFIX + name
            if key not in state:
                raise ValueError(f"weight-average state is missing '{key}'")
            if np.shape(state[key]) != p.data.shape:
                raise ValueError(f"weight-average entry '{key}' has shape {np.shape(state[key])}, "
                                 f"the parameter has shape {p.data.shape}")
        if PREFIX + "updates" not in state:
            raise ValueError(f"weight-average state is missing '{PREFIX}updates'")
        self.updates = int(state[PREFIX + "updates"])
        self.average = {name: np.array(state[PREFIX + name], dtype=p.data.dtype, copy=True)
                        for name, p in self.params}
