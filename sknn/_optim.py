"""Stochastic solvers with scikit-learn's update rules, on torch tensors of any device.

Both follow ``sklearn.neural_network._stochastic_optimizers`` step for step, so that a model
trained here follows the same trajectory as scikit-learn's given the same initial weights and
minibatches. Their state (moments, step count, current learning rate) is plain tensors and
floats: it pickles, moves between devices with :meth:`to`, and goes out and back in as a dict
of tensors and plain values with ``state_dict()`` / ``load_state_dict()`` (what a checkpoint
stores: it loads with ``torch.load(weights_only=True)``).
"""

import math

import numpy as np

import torch


def _split_penalised(params):
    """Indices of the parameters the L2 penalty applies to (weights: two or more dimensions)
    and of the others (biases, normalisation scales)."""
    penalised = [i for i, p in enumerate(params) if p.ndim >= 2]
    return penalised, [i for i, p in enumerate(params) if p.ndim < 2]


def _load_tensors(name, targets, saved):
    """Copy the saved tensors ``saved`` into ``targets`` (same count and shapes), in place: they
    keep their device and dtype."""
    if not isinstance(saved, (list, tuple)) or len(saved) != len(targets) or not all(
            isinstance(s, torch.Tensor) and s.shape == t.shape for s, t in zip(saved, targets)):
        raise ValueError(f"The solver state's {name!r} does not match the network's parameters.")
    with torch.no_grad():
        for t, s in zip(targets, saved):
            t.copy_(s)


def _check_solver(state, solver):
    if not isinstance(state, dict) or state.get("solver") != solver:
        got = state.get("solver") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"Expected the state of the {solver!r} solver, got {got!r}.")


class Adam:
    """Adam as scikit-learn writes it: ``p -= lr_t * m / (sqrt(v) + eps)`` with
    ``lr_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``; ``lr`` is ``learning_rate``, which
    is ``learning_rate_init`` unless a learning-rate schedule sets it.

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
        lr_t = (self.learning_rate * math.sqrt(1 - self.beta_2**self.t)
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

    def state_dict(self):
        """The solver's state as plain values and tensors (the tensors themselves, not copies)."""
        return {"solver": "adam", "learning_rate_init": float(self.learning_rate_init),
                "learning_rate": float(self.learning_rate), "beta_1": float(self.beta_1),
                "beta_2": float(self.beta_2), "epsilon": float(self.epsilon), "t": int(self.t),
                "ms": list(self.ms), "vs": list(self.vs)}

    def load_state_dict(self, state):
        """Take the state of :meth:`state_dict`; the moments are copied into this solver's own
        tensors (its device and dtype)."""
        _check_solver(state, "adam")
        _load_tensors("ms", self.ms, state["ms"])
        _load_tensors("vs", self.vs, state["vs"])
        self.learning_rate_init = float(state["learning_rate_init"])
        self.learning_rate = float(state["learning_rate"])
        self.beta_1, self.beta_2 = float(state["beta_1"]), float(state["beta_2"])
        self.epsilon, self.t = float(state["epsilon"]), int(state["t"])
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

    def state_dict(self):
        """The solver's state as plain values and tensors (the tensors themselves, not copies)."""
        return {"solver": "sgd", "learning_rate_init": float(self.learning_rate_init),
                "learning_rate": float(self.learning_rate), "lr_schedule": str(self.lr_schedule),
                "momentum": float(self.momentum), "nesterov": bool(self.nesterov),
                "power_t": float(self.power_t), "velocities": list(self.velocities)}

    def load_state_dict(self, state):
        """Take the state of :meth:`state_dict`; the velocities are copied into this solver's
        own tensors (its device and dtype)."""
        _check_solver(state, "sgd")
        _load_tensors("velocities", self.velocities, state["velocities"])
        self.learning_rate_init = float(state["learning_rate_init"])
        self.learning_rate = float(state["learning_rate"])
        self.lr_schedule, self.momentum = str(state["lr_schedule"]), float(state["momentum"])
        self.nesterov, self.power_t = bool(state["nesterov"]), float(state["power_t"])
        return self


def make_optimizer(params, est):
    """The solver named by ``est.solver``, configured from the estimator's parameters."""
    if est.solver == "adam":
        return Adam(params, est.learning_rate_init, est.beta_1, est.beta_2, est.epsilon)
    return SGD(params, est.learning_rate_init, est.learning_rate, est.momentum,
               est.nesterovs_momentum, est.power_t)


# --- stacks: one optimizer for M members of one shape --------------------------------------------


def _members(views, members, part=slice(None)):
    """The tensors ``views[r][part]`` of each member ``r`` in ``members``, in one list (for one
    call of a ``_foreach`` or fused kernel over their own tensors)."""
    return [x for r in members for x in views[r][part]]


class StackedAdam:
    """scikit-learn's Adam (see :class:`Adam`) for a stack: member m is row m of the ``(M, P)``
    parameters and has its own learning rate, betas, epsilon and step count. Members that share
    their step's settings are updated by one call of torch's fused Adam kernel, as
    :class:`Adam` updates one network; a member idle in a step is left exactly as it was."""

    def __init__(self, params, settings):
        self.learning_rate_init = np.array([s.learning_rate_init for s in settings], float)
        self.beta_1 = np.array([s.beta_1 for s in settings], float)
        self.beta_2 = np.array([s.beta_2 for s in settings], float)
        self.epsilon = np.array([s.epsilon for s in settings], float)
        self.t = np.zeros(len(settings), dtype=np.int64)
        self.ms, self.vs = torch.zeros_like(params), torch.zeros_like(params)
        self.net = None

    def bind(self, net):
        """Per-member views of the stack's parameters, gradients and moments."""
        self.net = net
        self._views = [net.member_views(t) for t in (net.params, net.grads, self.ms, self.vs)]
        self._steps = [torch.full((), math.inf, dtype=torch.float32, device=net.params.device)
                       for _ in range(len(self._views[0][0]) * net.params.shape[0])]
        # Each member's settings as Python floats, and the kernel's tensor lists of the groups
        # of members met so far (a stack's groups recur step after step).
        self._settings = list(zip(*(getattr(self, name).tolist() for name in (
            "learning_rate_init", "beta_1", "beta_2", "epsilon"))))
        self._lists = {}

    def _tensor_lists(self, members, decayed):
        """The kernel's calls for ``members`` (a tuple of rows): ``(params, grads, ms, vs,
        steps, decayed)`` for their weights, then their biases (one call when not ``decayed``)."""
        key = (members, decayed)
        found = self._lists.get(key)
        if found is None:
            n_weights = len(self.net.shapes)
            parts = (((slice(0, n_weights), True), (slice(n_weights, None), False)) if decayed
                     else ((slice(None), False),))
            found = []
            for part, with_decay in parts:
                p = _members(self._views[0], members, part)
                found.append((p, *(_members(v, members, part) for v in self._views[1:]),
                              self._steps[:len(p)], with_decay))
            self._lists[key] = found
        return found

    def step(self, params, grads, decay, active=None):
        """One update of the members where ``active`` (a bool array; None: all); ``decay`` (M,)
        adds ``decay[m] * W`` to the gradient of member m's weights. Each member's update is
        :meth:`Adam.step`'s, bit for bit: the same step size computed the same way, and torch's
        fused kernel over its own weights (with the decay) and biases."""
        rows = np.arange(len(self.t)) if active is None else np.flatnonzero(active)
        self.t[rows] += 1
        steps, decay = self.t.tolist(), np.asarray(decay, dtype=float).tolist()
        groups, rates = {}, {}
        for r in rows.tolist():
            lr, b1, b2, eps = self._settings[r]
            t = steps[r]
            lr_t = rates.get((lr, b1, b2, t))
            if lr_t is None:
                lr_t = rates[lr, b1, b2, t] = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            groups.setdefault((lr_t, b1, b2, eps, decay[r]), []).append(r)
        for (lr, b1, b2, eps, weight_decay), members in groups.items():
            for p, g, m, v, s, with_decay in self._tensor_lists(tuple(members),
                                                                 bool(weight_decay)):
                torch._fused_adam_(p, g, m, v, [], s, lr=lr, beta1=b1, beta2=b2,
                                   weight_decay=weight_decay if with_decay else 0.0, eps=eps,
                                   amsgrad=False, maximize=False)

    def iteration_ends(self, row, time_step):
        pass

    def trigger_stopping(self, row, msg, verbose):
        return Adam.trigger_stopping(None, msg, verbose)

    def take(self, rows):
        idx = rows.cpu().numpy()
        for name in ("learning_rate_init", "beta_1", "beta_2", "epsilon", "t"):
            setattr(self, name, getattr(self, name)[idx])
        self.ms, self.vs = self.ms.index_select(0, rows), self.vs.index_select(0, rows)
        if self.net is not None:
            self.bind(self.net)

    def member(self, row, module_params):
        """Member ``row``'s state as an :class:`Adam` over its own module's parameters, for
        ``partial_fit`` or ``warm_start`` later."""
        opt = Adam(module_params, self.learning_rate_init[row], self.beta_1[row],
                   self.beta_2[row], self.epsilon[row])
        opt.t = int(self.t[row])
        torch.nn.utils.vector_to_parameters(self.ms[row], opt.ms)
        torch.nn.utils.vector_to_parameters(self.vs[row], opt.vs)
        return opt


class StackedSGD:
    """scikit-learn's SGD (see :class:`SGD`) for a stack, each member with its own learning rate
    and schedule, momentum and Nesterov setting."""

    def __init__(self, params, settings):
        self.learning_rate_init = np.array([s.learning_rate_init for s in settings], float)
        self.learning_rate = self.learning_rate_init.copy()
        self.lr_schedule = [s.learning_rate for s in settings]
        self.momentum = np.array([s.momentum for s in settings], float)
        self.nesterov = np.array([s.nesterovs_momentum for s in settings], bool)
        self.power_t = np.array([s.power_t for s in settings], float)
        self.velocities = torch.zeros_like(params)
        self.net = None

    def bind(self, net):
        """Per-member views of the stack's parameters, gradients and velocities."""
        self.net = net
        self._views = [net.member_views(t) for t in (net.params, net.grads, self.velocities)]

    def step(self, params, grads, decay, active=None):
        """One update of the members where ``active`` (a bool array; None: all); ``decay`` (M,)
        adds ``decay[m] * W`` to the gradient of member m's weights. Each member's update is
        :meth:`SGD.step`'s, bit for bit: the same operations over its own tensors, one call
        for the members that share their settings."""
        rows = range(len(self.momentum)) if active is None else np.flatnonzero(active).tolist()
        groups = {}
        for r in rows:
            key = (float(decay[r]), float(self.momentum[r]), float(self.learning_rate[r]),
                   bool(self.nesterov[r]))
            groups.setdefault(key, []).append(r)
        pv, gv, vv = self._views
        n_weights = len(self.net.shapes)
        for (weight_decay, momentum, lr, nesterov), members in groups.items():
            p, g, v = _members(pv, members), _members(gv, members), _members(vv, members)
            if weight_decay:
                weights = slice(0, n_weights)
                torch._foreach_add_(_members(gv, members, weights), _members(pv, members, weights),
                                    alpha=weight_decay)
            torch._foreach_mul_(v, momentum)
            torch._foreach_add_(v, g, alpha=-lr)
            if nesterov:
                torch._foreach_add_(p, v, alpha=momentum)
                torch._foreach_add_(p, g, alpha=-lr)
            else:
                torch._foreach_add_(p, v)

    def iteration_ends(self, row, time_step):
        if self.lr_schedule[row] == "invscaling":
            self.learning_rate[row] = (float(self.learning_rate_init[row])
                                       / (time_step + 1) ** float(self.power_t[row]))

    def trigger_stopping(self, row, msg, verbose):
        one = SGD.__new__(SGD)
        one.lr_schedule, one.learning_rate = self.lr_schedule[row], self.learning_rate[row]
        stop = SGD.trigger_stopping(one, msg, verbose)
        self.learning_rate[row] = one.learning_rate
        return stop

    def take(self, rows):
        idx = rows.cpu().numpy()
        for name in ("learning_rate_init", "learning_rate", "momentum", "nesterov", "power_t"):
            setattr(self, name, getattr(self, name)[idx])
        self.lr_schedule = [self.lr_schedule[i] for i in idx]
        self.velocities = self.velocities.index_select(0, rows)
        self.bind(self.net)

    def member(self, row, module_params):
        opt = SGD(module_params, self.learning_rate_init[row], self.lr_schedule[row],
                  self.momentum[row], bool(self.nesterov[row]), self.power_t[row])
        opt.learning_rate = float(self.learning_rate[row])
        torch.nn.utils.vector_to_parameters(self.velocities[row], opt.velocities)
        return opt


def make_stacked_optimizer(net, settings):
    """The optimizer of a :class:`~sknn.nn.StackedMLP` whose members share a solver
    (``settings[m].solver``)."""
    opt = (StackedAdam if settings[0].solver == "adam" else StackedSGD)(net.params, settings)
    opt.bind(net)
    return opt
