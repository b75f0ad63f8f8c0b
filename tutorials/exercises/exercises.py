"""Exercises for chapters 2-8: write the functions a layer is made of, then grade them.

Each function below is a stub: its docstring gives the shapes and the math, its body
raises NotImplementedError.  Copy this file, replace the bodies you want to try, and run

    python tutorials/exercises/grade.py my_exercises.py

The grader checks every function you wrote on small random float64 inputs against
numpyseg (the solution key, tutorials/exercises/solutions.py), runs a gradient check on
every gradient you computed, and explains in words what differs.  Functions still
raising NotImplementedError are reported as "not attempted".  Use plain NumPy (loops are
fine: the inputs are tiny).

Conventions, as in numpyseg: activations NHWC (N, H, W, C); convolution kernels HWIO
(k, k, C_in, C_out); transposed-convolution kernels (k, k, C_out, C_in); 'same' padding
p = k // 2, zeros outside the image.
"""

import numpy as np  # noqa: F401  (for your answers)


# ------------------------------------------------------------------ chapter 2
def conv2d_forward(x, w, b):
    """'same' stride-1 convolution (chapter 2).

        out[n, i, j, o] = b[o] + sum_{di, dj, c} x[n, i + di - p, j + dj - p, c] * w[di, dj, c, o]

    with p = k // 2 and x = 0 outside the image (deep-learning "convolution" is a
    cross-correlation: the kernel is not flipped).

    Args:
        x: (N, H, W, C_in).  w: (k, k, C_in, C_out), k odd.  b: (C_out,).
    Returns:
        out: (N, H, W, C_out).
    """
    raise NotImplementedError


def conv2d_backward(dout, x, w):
    """Gradients of conv2d_forward for an upstream gradient dout = dL/dout (chapter 2).

        dx[n, a, c]   = sum_{di, dj, o} dout[n, a - (di, dj) + p, o] * w[di, dj, c, o]
                        (a 'same' convolution of dout with w flipped in space and its
                        channel axes swapped)
        dw[di, dj, c, o] = sum_{n, i, j} x[n, i + di - p, j + dj - p, c] * dout[n, i, j, o]
        db[o]            = sum_{n, i, j} dout[n, i, j, o]

    Args:
        dout: (N, H, W, C_out).  x: (N, H, W, C_in).  w: (k, k, C_in, C_out).
    Returns:
        (dx, dw, db) of shapes (N, H, W, C_in), (k, k, C_in, C_out), (C_out,).
    """
    raise NotImplementedError


def col2im(cols, k):
    """The adjoint of im2col (chapter 2): put every patch back where it came from, adding overlaps.

    im2col(x)[n, i, j, di, dj, c] = x[n, i + di - p, j + dj - p, c] (0 outside the image),
    so
        col2im(cols)[n, a, b, c] = sum_{di, dj} cols[n, a - di + p, b - dj + p, di, dj, c]

    over the (i, j) = (a - di + p, b - dj + p) inside the image.  Adjoint means
    sum(col2im(cols) * x) == sum(cols * im2col(x)) for every x and cols.

    Args:
        cols: (N, H, W, k, k, C).  k: the (odd) kernel size.
    Returns:
        (N, H, W, C).
    """
    raise NotImplementedError


# ------------------------------------------------------------------ chapter 3
def maxpool2d_backward(dout, x):
    """Backward of 2x2 stride-2 max pooling (chapter 3).

    Each window x[n, 2i:2i+2, 2j:2j+2, c] passed its maximum to out[n, i, j, c]; the
    gradient goes to that entry only (to the first maximum in row-major order at a tie):

        dx[n, 2i + a, 2j + b, c] = dout[n, i, j, c] if (a, b) is the window's arg-max, else 0.

    Args:
        dout: (N, H/2, W/2, C).  x: (N, H, W, C), H and W even.
    Returns:
        dx: (N, H, W, C).
    """
    raise NotImplementedError


def conv_transpose2d_forward(x, w, b):
    """3x3 stride-2 transposed convolution with Keras 'same' alignment (chapter 3).

    Every input pixel (i, j) paints w[di, dj] @ x[n, i, j] onto output pixel
    (2i + di, 2j + dj); the output keeps the first 2H rows and 2W columns:

        out[n, r, q, o] = b[o] + sum over 2i + di = r, 2j + dj = q of sum_c x[n, i, j, c] * w[di, dj, o, c]

    Args:
        x: (N, H, W, C_in).  w: (3, 3, C_out, C_in).  b: (C_out,).
    Returns:
        out: (N, 2H, 2W, C_out).
    """
    raise NotImplementedError


# ------------------------------------------------------------------ chapter 4
def groupnorm_backward(dout, x, gamma, num_groups, eps):
    """Backward of GroupNorm (chapter 4).

    Forward, per sample n and group S of C / num_groups consecutive channels:
    mu, var = mean and (biased) variance of x over S (all H*W*C/G entries),
    sigma = sqrt(var + eps), xhat = (x - mu) / sigma, y = gamma * xhat + beta.

    With g = dout * gamma and mean(.) over the group's entries:

        dx     = (1 / sigma) * (g - mean(g) - xhat * mean(g * xhat))
        dgamma = sum_{n, i, j} dout * xhat
        dbeta  = sum_{n, i, j} dout

    Args:
        dout, x: (N, H, W, C).  gamma: (C,).  num_groups: G, divides C.  eps: float.
    Returns:
        (dx, dgamma, dbeta) of shapes (N, H, W, C), (C,), (C,).
    """
    raise NotImplementedError


# ------------------------------------------------------------------ chapter 5
def dropblock_gamma(rate, height, width, block_size):
    """DropBlock's seed probability (chapter 5).

    Seeds are drawn only where a whole block fits, (H - b + 1)(W - b + 1) centres, and
    each seed drops b*b entries; to drop a fraction `rate` of the H*W entries:

        gamma = rate / b^2 * (H * W) / ((H - b + 1)(W - b + 1))

    Args:
        rate: float in [0, 1).  height, width: H, W.  block_size: b <= min(H, W).
    Returns:
        gamma: float.
    """
    raise NotImplementedError


# ------------------------------------------------------------------ chapter 6
def cross_scale_attention_backward(dout, enc, dec, w):
    """Backward of cross-scale spatial attention (chapter 6).

    Forward: a = concat[mean_c enc, mean_c dec] (N, H, W, 2), z = conv_same(a; w)
    (no bias, (N, H, W, 1)), s = sigmoid(z), out = enc * s.

    Backward, g = dout:
        ds   = sum_c g * enc                       (N, H, W, 1)
        dz   = ds * s * (1 - s)
        da, dw = the input and weight gradients of the convolution a -> z for dz
        d_enc = g * s + da[..., 0:1] / C_e
        d_dec = da[..., 1:2] / C_d   (broadcast over the C_d channels)

    Args:
        dout, enc: (N, H, W, C_e).  dec: (N, H, W, C_d).  w: (k, k, 2, 1).
    Returns:
        (d_enc, d_dec, dw) of shapes (N, H, W, C_e), (N, H, W, C_d), (k, k, 2, 1).
    """
    raise NotImplementedError


# ------------------------------------------------------------------ chapter 7
def mcc_loss_gradient(z, y):
    """Gradient of the soft-MCC loss with respect to the logits (chapter 7).

    p = sigmoid(z); soft counts over all pixels: TP = sum p y, FP = sum p (1 - y),
    FN = sum (1 - p) y, TN = sum (1 - p)(1 - y);  N = TP TN - FP FN,
    A = (TP + FP)(TP + FN)(TN + FP)(TN + FN), D = sqrt(A), L = 1 - N / (D + eps), eps = 1e-7.

    For each count X, by the quotient rule, g_X = dL/dX = -dN/dX / (D + eps) + N dA/dX / (2 D (D + eps)^2),
    and dL/dz = p (1 - p) [ y (g_TP - g_FN) + (1 - y)(g_FP - g_TN) ].

    Args:
        z: logits (N, H, W, 1).  y: targets in {0, 1}, same shape.
    Returns:
        dL/dz, same shape as z.
    """
    raise NotImplementedError


# ------------------------------------------------------------------ chapter 8
def adam_step(theta, g, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
    """One Adam step (chapter 8; Kingma & Ba 2015, Algorithm 1).

        m      = beta1 m + (1 - beta1) g
        v      = beta2 v + (1 - beta2) g^2
        m_hat  = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)
        theta  = theta - lr m_hat / (sqrt(v_hat) + eps)

    Args:
        theta, g, m, v: arrays of one shape (the parameter, its gradient, the two moments
            before this step).  t: the step number, 1 for the first step.
    Returns:
        (theta, m, v) after the step (new arrays; do not change the inputs).
    """
    raise NotImplementedError
