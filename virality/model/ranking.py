"""The paper's pairwise ranking loss (Dubey & Agarwal 2016, Sec. 2.4, Eqs. 1-4).

For a pair (I1, I2) with scores f1 = f_r(I1), f2 = f_r(I2) and label y (+1 when I1
is the more viral image, -1 when I2 is):

    g1 = exp(f1) / (exp(f1) + exp(f2)),  g2 = 1 - g1          (Eq. 4)
    E_c = max(0, y * (g2 - g1))^2                              (Eq. 2)
    E_r = 1 / (f2 - f1)^2                                      (Eq. 3)
    E_p = sum over the batch of (E_c + lambda * E_r)           (Eq. 1)

Numerics. With d = f1 - f2, g1 = sigmoid(d) = (1 + tanh(d/2)) / 2, so
g2 - g1 = -tanh(d/2): no exponential is ever formed and nothing overflows for
any finite score. E_r is singular at f1 = f2, exactly where a freshly initialised
net starts; we use E_r = 1 / ((f2 - f1)^2 + epsilon) with a documented
``epsilon`` > 0 (docs/LOSS.md). It changes E_r by a relative epsilon / (f2 - f1)^2
(under 1% once |f2 - f1| >= 3.2 with the default 0.1), bounds lambda * E_r by
lambda / epsilon, and bounds its gradient by lambda * (9/8) * sqrt(epsilon/3) / epsilon^2.

Everything is computed in float64 and returned as float64; callers cast. The sum runs
pair by pair in plain Python: a training batch holds tens of pairs, and for so few
values a loop costs a third of what two dozen numpy calls do, once Caffe's layers
have pushed them out of the caches (the loss layer's share of a step, BENCHMARKS.md).
"""
import math
from dataclasses import dataclass

import numpy as np

#: Eq. 1's weight of the regularisation term (Sec. 3: "lambda = 0.001").
DEFAULT_LAMBDA = 0.001
#: Bound of the E_r singularity at f1 = f2 (our decision, docs/LOSS.md): epsilon > 2 sqrt(lambda)
#: (0.063) leaves no spurious equilibrium with the pairs in the wrong order near f1 = f2.
DEFAULT_EPSILON = 0.1


@dataclass(frozen=True)
class LossConfig:
    """Configuration of the ranking loss.

    lam:       weight of E_r in Eq. 1 (the paper's lambda), >= 0.
    epsilon:   E_r = 1 / ((f2 - f1)^2 + epsilon), > 0.
    normalize: False sums over the batch (the paper's Eq. 1); True divides by N.
    """

    lam: float = DEFAULT_LAMBDA
    epsilon: float = DEFAULT_EPSILON
    normalize: bool = False

    def __post_init__(self):
        if not np.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lambda must be a finite number >= 0, got {self.lam!r}")
        if not np.isfinite(self.epsilon) or self.epsilon <= 0:
            raise ValueError(
                f"epsilon must be a finite number > 0 (it bounds E_r = 1/((f2-f1)^2 + epsilon) "
                f"at f1 = f2), got {self.epsilon!r}")


class LossResult:
    """Loss value and its gradients with respect to f1 and f2 (both shape (N,)); the terms
    E_c and E_r per pair; the batch's pairwise_accuracy, counted in the same pass."""

    __slots__ = ("loss", "grad_f1", "grad_f2", "accuracy", "_e_c", "_e_r")

    def __init__(self, loss, grad_f1, grad_f2, accuracy, e_c, e_r):
        self.loss, self.grad_f1, self.grad_f2, self.accuracy = loss, grad_f1, grad_f2, accuracy
        self._e_c, self._e_r = e_c, e_r

    @property
    def e_c(self):
        """E_c of each pair (Eq. 2), shape (N,)."""
        return np.array(self._e_c, dtype=np.float64)

    @property
    def e_r(self):
        """E_r of each pair (Eq. 3, bounded), shape (N,)."""
        return np.array(self._e_r, dtype=np.float64)


def check_labels(y):
    """Return y as a float64 vector; raise ValueError unless every label is +1 or -1."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    bad = ~((y == 1.0) | (y == -1.0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"labels must be +1 (I1 more viral) or -1 (I2 more viral); "
            f"{int(bad.sum())} of {y.size} are not, e.g. y[{first}] = {y[first]!r}")
    return y


def ranking_loss(f1, f2, y, config=LossConfig()):
    """E_p of Eq. 1 and its gradients for scores f1, f2 and labels y (all length N)."""
    # Python floats (float32 inputs convert exactly), computed in double precision.
    f1, f2, labels = np.ravel(f1).tolist(), np.ravel(f2).tolist(), np.ravel(y).tolist()
    if not (len(f1) == len(f2) == len(labels)):
        raise ValueError(f"f1, f2 and y must have the same length, got {len(f1)}, {len(f2)}, {len(labels)}")

    lam, epsilon = config.lam, config.epsilon
    e_c, e_r, grad_d = [], [], []
    loss = right = 0.0
    for a, b, label in zip(f1, f2, labels):
        if label != 1.0 and label != -1.0:
            check_labels(y)                   # raises, naming the first bad label
        d = a - b
        t = math.tanh(0.5 * d)                # g1 - g2 (Eq. 4)
        hinge = max(-label * t, 0.0)          # max(0, y (g2 - g1)); NaN stays NaN
        denom = d * d + epsilon
        e_c.append(hinge * hinge)             # Eq. 2
        e_r.append(1.0 / denom)               # Eq. 3, bounded at d = 0
        loss += hinge * hinge + lam / denom   # Eq. 1
        # dE_c/dd = 2 hinge * (-y) * d(tanh(d/2))/dd = -y * hinge * (1 - t^2)
        # dE_r/dd = -2 d / (d^2 + epsilon)^2
        grad_d.append(-label * hinge * (1.0 - t * t) - lam * 2.0 * d / (denom * denom))
        right += 0.5 if d == 0.0 else float(d * label > 0.0)   # as pairwise_accuracy

    grad = np.array(grad_d, dtype=np.float64)
    n = len(labels)
    if config.normalize and n:
        loss /= n
        grad /= n
    return LossResult(loss=loss, grad_f1=grad, grad_f2=-grad, accuracy=right / n if n else float("nan"),
                      e_c=e_c, e_r=e_r)


def pair_probability(f1, f2):
    """P(I1 more viral than I2) = g1 of Eq. 4, computed without overflow."""
    d = np.asarray(f1, dtype=np.float64) - np.asarray(f2, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * d))


def pairwise_accuracy(f1, f2, y):
    """Share of pairs whose predicted order agrees with y.

    The prediction for a pair is "I1 is more viral" iff f1 > f2 and "I2" iff
    f1 < f2. A tie (f1 == f2) predicts neither order and counts as half right,
    the expected accuracy of breaking it at random. Empty input gives NaN.
    """
    f1 = np.asarray(f1, dtype=np.float64).reshape(-1)
    f2 = np.asarray(f2, dtype=np.float64).reshape(-1)
    y = check_labels(y)
    if y.size == 0:
        return float("nan")
    agree = np.sign(f1 - f2) * y
    return float(np.mean(np.where(agree == 0, 0.5, agree > 0)))
