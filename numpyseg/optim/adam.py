"""Adam with bias correction and optional decoupled (AdamW) weight decay.

For each parameter theta with gradient g at step t = 1, 2, ... (Kingma & Ba 2015,
Algorithm 1; the same arithmetic as torch.optim.Adam / AdamW):

    theta <- theta * (1 - lr * weight_decay)          (decoupled decay, AdamW; skipped if 0)
    m     <- beta1 * m + (1 - beta1) * g              first moment
    v     <- beta2 * v + (1 - beta2) * g^2            second moment
    m_hat  = m / (1 - beta1^t)                        bias corrections: m, v start at 0
    v_hat  = v / (1 - beta2^t)
    theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

Because of the bias correction the first step moves every entry by lr * g/(|g| + eps),
i.e. by about lr whatever the gradient's scale.

eps defaults to 1e-7, the Keras default (the authors trained with Keras); PyTorch's
default is 1e-8.  Keras folds the bias correction into the step size instead,
theta -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps), which is the
formula above with eps replaced by eps / sqrt(1 - beta2^t); the two differ only while
sqrt(v_hat) is comparable to eps (gradients of size ~1e-7).

Decoupled weight decay shrinks the weights directly instead of adding
weight_decay * theta to g, so the decay is not rescaled by 1 / sqrt(v_hat)
(Loshchilov & Hutter, "Decoupled weight decay regularization").  The spec's recipe
uses none.

References:
    D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015,
    arXiv:1412.6980.
    I. Loshchilov, F. Hutter, "Decoupled weight decay regularization", ICLR 2019,
    arXiv:1711.05101 (weight_decay).
"""

from __future__ import annotations

import math

import numpy as np

from numpyseg.layers.module import Parameter
from numpyseg.optim.optimizer import Optimizer, _in_range


class Adam(Optimizer):
    """Adam(named_params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0).

    Args:
        named_params: a Module, or (dotted name, Parameter) pairs from
            `model.named_parameters()`.
        lr: learning rate (ReduceLROnPlateau changes `optimizer.lr`).
        beta1, beta2: decay rates of the first and second moment averages, in [0, 1).
        eps: added to sqrt(v_hat); 1e-7 as in Keras.
        weight_decay: decoupled (AdamW) decay factor per unit learning rate.

    State dict keys: 'step', 'lr', 'beta1', 'beta2', 'eps', 'weight_decay',
    'm.<param name>', 'v.<param name>'.
    """

    slots = ("m", "v")
    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, named_params, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-7, weight_decay: float = 0.0):
        super().__init__(named_params, lr)
        self.beta1 = _in_range("beta1", beta1, 0.0, 1.0)
        self.beta2 = _in_range("beta2", beta2, 0.0, 1.0)
        self.eps = _in_range("eps", eps, 0.0, np.inf)
        self.weight_decay = _in_range("weight_decay", weight_decay, 0.0, np.inf)

    def _update(self, name: str, p: Parameter, slots: dict[str, np.ndarray]) -> None:
        g, m, v, t = p.grad, slots["m"], slots["v"], self.step_count
        if self.weight_decay:
            p.data *= 1.0 - self.lr * self.weight_decay
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        v += (1.0 - self.beta2) * (g * g)
        bias1 = 1.0 - self.beta1 ** t
        bias2 = 1.0 - self.beta2 ** t
        # sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2^t); lr / (1 - beta1^t) applies m_hat's correction.
        denom = np.sqrt(v) / math.sqrt(bias2) + self.eps  # Python float: keeps float32
        p.data -= (self.lr / bias1) * m / denom
