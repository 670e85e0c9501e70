"""The one training loop: minibatch solvers (adam, sgd) and full-batch L-BFGS.

Estimators say *what* to train (a module, a loss, the data); this module says *how*. It follows
scikit-learn's ``BaseMultilayerPerceptron`` fitting logic (same minibatches from the same random
state, same L2 penalty, same stopping rules, same fitted history) on torch tensors:

- the data lives on the device once; each epoch gathers it in the shuffled order (batch by
  batch for large data), so that minibatches are slices;
- per batch: forward and backward (the module's own backpropagation, else
  ``torch.autograd.grad``), then one optimizer step, which adds the L2 term to the weight
  gradients. No ``.item()`` per batch: losses are gathered and read once per epoch.

The L2 penalty (``alpha``) applies to weights (parameters with two or more dimensions), not to
biases or normalisation scales, and is divided by the batch's total sample weight, as in
scikit-learn.
"""

import os
import sys
import time
import warnings

import numpy as np
import scipy.optimize
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import shuffle as sk_shuffle

from ._optim import make_optimizer


def _penalised(params):
    return [p for p in params if p.ndim >= 2]


def objective_and_grads(module, loss, xb, yb, wb, scale, alpha, params, generator=None):
    """``scale * loss`` on a batch and the gradients of ``scale * (loss + alpha/2 * sum||W||^2)``
    for ``params``: by the module's own backpropagation where it has one, else by autograd."""
    if getattr(module, "supports_backprop", False):
        return module.backprop(xb, yb, wb, loss, scale, alpha * scale)
    objective = loss(module(xb, generator, wb), yb, wb) * scale
    grads = list(torch.autograd.grad(objective, params))
    if alpha:
        decayed = [(g, p) for g, p in zip(grads, params) if p.ndim >= 2]
        with torch.no_grad():
            torch._foreach_add_([g for g, _ in decayed], [p for _, p in decayed],
                                alpha=alpha * scale)
    return objective.detach(), grads


class Progress:
    """``verbose`` output: scikit-learn's per-epoch lines on stdout, plus, where tqdm is
    installed, a progress bar over the epochs showing loss, validation score and epoch time."""

    def __init__(self, est, total):
        self.bar = None
        if est.verbose:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=type(est).__name__, unit="epoch", leave=False)

    def line(self, text):
        if self.bar is None:
            print(text)
        else:
            self.bar.write(text, file=sys.stdout)

    def epoch(self, **values):
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)
            self.bar.update()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _diverged(est, where):
    return ValueError(
        f"Training diverged: the loss became NaN or infinite {where}. Lower the learning rate "
        f"(learning_rate_init={est.learning_rate_init}) or scale the input, e.g. with "
        "StandardScaler."
    )


def resolve_batch_size(batch_size, n_samples, auto=200):
    if batch_size == "auto":
        return min(auto, n_samples)
    if batch_size > n_samples:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to "
                      "be clipped")
    return int(np.clip(batch_size, 1, n_samples))


_HISTORY = ("n_iter_", "t_", "loss_", "loss_curve_", "best_loss_", "validation_scores_",
            "best_validation_score_", "_no_improvement_count")


class Checkpoint:
    """The whole training state, written to ``path`` after every epoch (atomically: a crash
    while writing leaves the previous one), so that a fit that crashed resumes where it was and
    ends with the same model as an uninterrupted one. ``fingerprint`` identifies the estimator's
    parameters and data: a checkpoint of another fit is refused, with ``hint`` in the message."""

    def __init__(self, path, fingerprint, hint=""):
        self.path, self.fingerprint, self.hint = os.fspath(path), fingerprint, hint

    def save(self, est, module, best_state, sample_idx, generator):
        state = {
            "fingerprint": self.fingerprint, "module": module.state_dict(),
            "optimizer": est._optimizer, "history": {k: getattr(est, k) for k in _HISTORY},
            "rng": est._random_state.get_state(), "sample_idx": sample_idx,
            "generator": None if generator is None else generator.get_state(),
            "best_state": best_state,
        }
        tmp = self.path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self):
        if not os.path.exists(self.path):
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"The checkpoint {self.path!r} was written by a fit with other "
                             "parameters or data: delete it, or choose another checkpoint_path"
                             + (f" ({self.hint})." if self.hint else "."))
        return state

    def remove(self):
        if os.path.exists(self.path):
            os.remove(self.path)


def fit_stochastic(est, module, loss, data, *, validation=None, incremental=False, generator=None,
                   checkpoint=None):
    """Minibatch training of ``module`` on ``data`` with ``est``'s solver and stopping rules.

    Reads the estimator's hyper-parameters and writes its fitted history: ``n_iter_``, ``t_``,
    ``loss_``, ``loss_curve_``, ``best_loss_``, ``validation_scores_``,
    ``best_validation_score_``; keeps the solver state in ``est._optimizer`` for ``partial_fit``
    and ``warm_start``. ``validation`` is a callable returning the current validation score
    (early stopping), or None; ``generator`` feeds the module's training-time randomness;
    ``checkpoint`` (a :class:`Checkpoint`, or None) saves the state after every epoch and
    resumes from a saved one.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    decayed = _penalised(params)
    if not incremental or not hasattr(est, "_optimizer"):
        est._optimizer = make_optimizer(params, est)
    optimizer = est._optimizer
    alpha = float(est.alpha)

    n = data.n_samples
    batch_size = resolve_batch_size(est.batch_size, n, getattr(est, "_auto_batch_size", 200))
    starts = np.arange(0, n, batch_size)
    stops = np.minimum(starts + batch_size, n)
    bounds = list(zip(starts.tolist(), stops.tolist()))
    lengths = torch.as_tensor(stops - starts, dtype=data.dtype, device=data.device)
    sample_idx = np.arange(n)
    best_state = None
    if validation is not None:
        best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    est.n_iter_ = 0
    resumed = checkpoint.load() if checkpoint is not None and not incremental else None
    if resumed is not None:
        module.load_state_dict(resumed["module"])
        est._optimizer = optimizer = resumed["optimizer"].to(data.device)
        for k, v in resumed["history"].items():
            setattr(est, k, v)
        est._random_state.set_state(resumed["rng"])
        sample_idx, best_state = resumed["sample_idx"], resumed["best_state"]
        if generator is not None:
            generator.set_state(resumed["generator"])
        if best_state is not None:
            best_state = {k: v.to(data.device) for k, v in best_state.items()}
    module.train()
    progress = Progress(est, est.max_iter - est.n_iter_)
    try:
        for _ in range(est.max_iter - est.n_iter_):
            tic = time.perf_counter()
            # Drop the last epoch's shuffled copy (the last batch's views hold it too) before
            # the next one is made: one copy at a time.
            xb = yb = wb = None
            epoch_data = data
            if est.shuffle:
                sample_idx = sk_shuffle(sample_idx, random_state=est._random_state)
                idx = torch.from_numpy(sample_idx).to(data.device)
                epoch_data = data.permuted(idx)
            sums = data.batch_weight_sums(sample_idx if est.shuffle else None, starts, stops)
            objectives, norms, used = [], [], []
            for k, ((a, b), s) in enumerate(zip(bounds, sums)):
                if s <= 0:  # every sample weighs zero: nothing to learn from this batch
                    continue
                if epoch_data is None:  # large or streamed data: gather this batch only
                    xb, yb, wb = data.batch(idx[a:b], sample_idx[a:b])
                else:
                    xb, yb, wb = epoch_data.batch(slice(a, b))
                # The L2 term of the gradients is added by the optimizer's update.
                objective, grads = objective_and_grads(module, loss, xb, yb, wb, 1.0 / s, 0.0,
                                                       params, generator)
                with torch.no_grad():
                    if alpha:
                        norms.extend(torch._foreach_norm(decayed))
                    optimizer.step(params, grads, alpha / s)
                objectives.append(objective)
                used.append(k)

            # One read of the device per epoch: the epoch's loss, as scikit-learn reports it.
            with torch.no_grad():
                batch_loss = torch.stack(objectives) * loss.report_scale
                if alpha:
                    s_used = torch.as_tensor([sums[k] for k in used], dtype=data.dtype,
                                             device=data.device)
                    norms = torch.stack(norms).view(len(used), -1)
                    batch_loss = batch_loss + 0.5 * alpha * norms.square().sum(1) / s_used
                # A batch whose samples all weigh zero was skipped: it counts for nothing.
                est.loss_ = (float((batch_loss * lengths[used]).sum())
                             / int((stops - starts)[used].sum()))
            if not np.isfinite(est.loss_):
                raise _diverged(est, f"at iteration {est.n_iter_ + 1}")

            est.n_iter_ += 1
            est.t_ += n
            est.loss_curve_.append(est.loss_)
            seconds = time.perf_counter() - tic
            if est.verbose:
                progress.line("Iteration %d, loss = %.8f, time = %.3fs"
                              % (est.n_iter_, est.loss_, seconds))

            if validation is not None:
                module.eval()
                score = validation()
                module.train()
                est.validation_scores_.append(score)
                if est.verbose:
                    progress.line("Validation score: %f" % score)
                if score < est.best_validation_score_ + est.tol:
                    est._no_improvement_count += 1
                else:
                    est._no_improvement_count = 0
                if score > est.best_validation_score_:
                    est.best_validation_score_ = score
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                if est.loss_curve_[-1] > est.best_loss_ - est.tol:
                    est._no_improvement_count += 1
                else:
                    est._no_improvement_count = 0
                if est.loss_curve_[-1] < est.best_loss_:
                    est.best_loss_ = est.loss_curve_[-1]

            optimizer.iteration_ends(est.t_)
            progress.epoch(loss=f"{est.loss_:.5f}", time=f"{seconds:.2f}s", **(
                {"val": f"{est.validation_scores_[-1]:.4f}"} if validation is not None else {}))

            if est._no_improvement_count > est.n_iter_no_change:
                what = "Validation score" if validation is not None else "Training loss"
                msg = (f"{what} did not improve more than tol={est.tol:f} for "
                       f"{est.n_iter_no_change} consecutive epochs.")
                if optimizer.trigger_stopping(msg, est.verbose):
                    break
                est._no_improvement_count = 0

            if checkpoint is not None and not incremental:
                checkpoint.save(est, module, best_state, sample_idx, generator)
            if incremental:
                break
            if est.n_iter_ == est.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the "
                    "optimization hasn't converged yet.", ConvergenceWarning)
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.")
        checkpoint = None  # keep it: a later fit can resume from it
    finally:
        progress.close()
        module.eval()

    if best_state is not None:
        module.load_state_dict(best_state)
    if checkpoint is not None:
        checkpoint.remove()  # the fit completed: nothing to resume


# Rows per chunk when L-BFGS evaluates its objective over sparse or host-held data.
LBFGS_CHUNK_ROWS = 8192


def fit_lbfgs(est, module, loss, data):
    """Full-batch L-BFGS-B (scipy) on the module's flattened parameters, gradients by autograd.

    scipy sees scikit-learn's objective: the loss as scikit-learn reports it (its squared error
    is a mean over outputs, though its gradient is that of the sum) plus the L2 penalty.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    decayed = _penalised(params)
    alpha = float(est.alpha)
    norms = [m for m in module.modules() if isinstance(m, (torch.nn.BatchNorm1d,
                                                           torch.nn.BatchNorm2d))]
    n = data.n_samples
    s = float(n if data.sample_weight is None else data.sample_weight.sum())
    if data.stream and not norms:
        # Sparse or host-held data: the objective is a sum over samples, evaluated over chunks
        # of rows, so that the whole set is never dense on the device at once. (Batch norm
        # needs the whole set's statistics: it takes it in one piece.)
        starts = range(0, n, LBFGS_CHUNK_ROWS)
        chunks = lambda: (data.batch(slice(a, a + LBFGS_CHUNK_ROWS)) for a in starts)  # noqa: E731
    else:
        whole = data.all()
        chunks = lambda: (whole,)  # noqa: E731
    module.train()
    last = {}

    def set_params(flat):
        torch.nn.utils.vector_to_parameters(
            torch.from_numpy(flat).to(device=data.device, dtype=data.dtype), params)

    def objective_and_grad(flat):
        with torch.no_grad():
            set_params(flat)
        objective, grads = 0.0, None
        for k, (X, Y, W) in enumerate(chunks()):  # the L2 term of the gradient: once
            part, part_grads = objective_and_grads(module, loss, X, Y, W, 1.0 / s,
                                                   0.0 if k else alpha, params)
            objective += float(part)
            grads = part_grads if grads is None else [g + h for g, h in zip(grads, part_grads)]
        value = objective * loss.report_scale
        if alpha:
            value += 0.5 * alpha / s * sum(float(p.detach().square().sum()) for p in decayed)
        last["x"], last["value"] = flat.copy(), value
        flat_grad = torch.cat([g.reshape(-1) for g in grads])
        return value, flat_grad.cpu().numpy().astype(np.float64)

    def report(flat):
        # scipy calls this after each iteration with the point it accepted (its own buffer,
        # which it overwrites: copy it), kept for Ctrl-C. The accepted point is the last one
        # evaluated: print its value rather than evaluate again, which would also move
        # batch-norm statistics.
        accepted["x"], accepted["nit"] = flat.copy(), accepted["nit"] + 1
        if est.verbose:
            value = (last["value"] if np.array_equal(flat, last.get("x"))
                     else objective_and_grad(flat)[0])
            print("Iteration %d, loss = %.8f" % (accepted["nit"], value))

    x0 = torch.nn.utils.parameters_to_vector(params).detach().cpu().numpy().astype(np.float64)
    accepted = {"x": x0, "nit": 0}
    res = None
    try:
        res = scipy.optimize.minimize(
            objective_and_grad, x0, method="L-BFGS-B", jac=True, callback=report,
            options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol})
    except KeyboardInterrupt:
        # As the stochastic solvers do: stop with a usable model, here the last point L-BFGS
        # accepted (the lowest objective of its iterates; the initial one before the first).
        warnings.warn("Training interrupted by user.")
    finally:
        module.eval()
    if res is not None and not np.isfinite(res.fun):
        raise _diverged(est, "during L-BFGS")
    x, n_iter = (accepted["x"], accepted["nit"]) if res is None else (res.x, int(res.nit))
    momenta = [m.momentum for m in norms]
    with torch.no_grad():
        set_params(x)
        # One pass in training mode at the solution: the loss of the objective minimised, and
        # batch-norm running statistics set to the whole training set's (the evaluations of
        # the line search left them a mix of the points it tried).
        for m in norms:
            m.momentum = 1.0
        module.train()
        try:
            data_term = sum(float(loss(module(X, None, W), Y, W)) for X, Y, W in chunks()) / s
        finally:
            module.eval()
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
        penalty = 0.5 * alpha * float(sum(p.square().sum() for p in decayed)) / s
    est.loss_ = data_term * loss.report_scale + penalty
    est.n_iter_ = n_iter
    if res is not None and res.status != 0:
        msg = res.message.decode() if isinstance(res.message, bytes) else res.message
        warnings.warn(
            f"lbfgs failed to converge after {res.nit} iteration(s) (status={res.status}):\n"
            f"{msg}.\n\nIncrease the number of iterations (max_iter) or scale the data "
            "as shown in:\n    https://scikit-learn.org/stable/modules/preprocessing.html",
            ConvergenceWarning)
