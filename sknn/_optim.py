"""Stochastic solvers with scikit-learn's update rules, on torch tensors of any device.

Both follow ``sklearn.neural_network._stochastic_optimizers`` step for step, so that a model
trained here follows the same trajectory as scikit-learn's given the same initial weights and
minibatches. Their state (moments, step count, current learning rate) is plain tensors and
floats: it pickles, and moves between devices with :meth:`to`.
"""

import math

import torch


def _split_penalised(params):
    """Indices of the parameters the L2 penalty applies to (weights: two or more dimensions)
    and of the others (biases, normalisation scales)."""
    penalised = [i for i, p in enumerate(params) if p.ndim >= 2]
    return penalised, [i for i, p in enumerate(params) if p.ndim < 2]


class Adam:
    """Adam as scikit-learn writes it: ``p -= lr_t * m / (sqrt(v) + eps)`` with
    ``lr_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``.

    The update runs in torch's fused Adam kernel, which also adds the L2 term ``decay * p`` to the
    gradients of the penalised parameters (one call for those, one for the rest). scikit-learn
    folds the bias corrections into ``lr_t``; we do the same and give the kernel an infinite step
    count, at which its own corrections ``1 - beta**step`` are exactly 1.
    """

    def __init__(self, params, learning_rate_init=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = learning_rate_init
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.t = 0
        self.ms = [torch.zeros_like(p) for p in params]
        self.vs = [torch.zeros_like(p) for p in params]
        self._steps = [torch.full((), math.inf, dtype=torch.float32, device=p.device) for p in params]
        self._penalised, self._rest = _split_penalised(params)

    def step(self, params, grads, decay=0.0):
        """One update; ``decay`` adds ``decay * p`` to the gradient of each penalised parameter."""
        self.t += 1
        # The fused kernel walks each gradient in its parameter's memory order: a gradient laid
        # out otherwise (autograd may return one, e.g. channels last) is copied into that layout.
        grads = [g if g.stride() == p.stride() else torch.empty_like(p).copy_(g)
                 for p, g in zip(params, grads)]
        lr_t = (self.learning_rate_init * math.sqrt(1 - self.beta_2**self.t)
                / (1 - self.beta_1**self.t))
        groups = ((self._penalised, decay), (self._rest, 0.0)) if decay else (
            (range(len(params)), 0.0),)
        for idx, weight_decay in groups:
            if idx:
                torch._fused_adam_(
                    [params[i] for i in idx], [grads[i] for i in idx],
                    [self.ms[i] for i in idx], [self.vs[i] for i in idx], [],
                    [self._steps[i] for i in idx], lr=lr_t, beta1=self.beta_1,
                    beta2=self.beta_2, weight_decay=weight_decay, eps=self.epsilon,
                    amsgrad=False, maximize=False)

    def iteration_ends(self, time_step):
        pass

    def trigger_stopping(self, msg, verbose):
        if verbose:
            print(msg + " Stopping.")
        return True

    def to(self, device):
        for name in ("ms", "vs", "_steps"):
            setattr(self, name, [t.to(device) for t in getattr(self, name)])
        return self


class SGD:
    """SGD with (Nesterov) momentum and scikit-learn's learning-rate policies:
    ``v = momentum * v - lr * g``; ``p += v`` (or ``p += momentum * v - lr * g`` for Nesterov).
    """

    def __init__(self, params, learning_rate_init=0.1, lr_schedule="constant", momentum=0.9,
                 nesterov=True, power_t=0.5):
        self.learning_rate_init = learning_rate_init
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule, self.momentum, self.nesterov, self.power_t = (
            lr_schedule, momentum, nesterov, power_t)
        self.velocities = [torch.zeros_like(p) for p in params]
        self._penalised = _split_penalised(params)[0]

    def step(self, params, grads, decay=0.0):
        """One update; ``decay`` adds ``decay * p`` to the gradient of each penalised parameter."""
        if decay:
            torch._foreach_add_([grads[i] for i in self._penalised],
                                [params[i] for i in self._penalised], alpha=decay)
        v = self.velocities
        torch._foreach_mul_(v, self.momentum)
        torch._foreach_add_(v, grads, alpha=-self.learning_rate)
        if self.nesterov:
            torch._foreach_add_(params, v, alpha=self.momentum)
            torch._foreach_add_(params, grads, alpha=-self.learning_rate)
        else:
            torch._foreach_add_(params, v)

    def iteration_ends(self, time_step):
        if self.lr_schedule == "invscaling":
            self.learning_rate = float(self.learning_rate_init) / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        if self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False

    def to(self, device):
        self.velocities = [t.to(device) for t in self.velocities]
        return self


def make_optimizer(params, est):
    """The solver named by ``est.solver``, configured from the estimator's parameters."""
    if est.solver == "adam":
        return Adam(params, est.learning_rate_init, est.beta_1, est.beta_2, est.epsilon)
    return SGD(params, est.learning_rate_init, est.learning_rate, est.momentum,
               est.nesterovs_momentum, est.power_t)
