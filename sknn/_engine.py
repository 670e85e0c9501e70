"""The one training loop: minibatch solvers (adam, sgd) for a stack of M >= 1 networks, and
full-batch L-BFGS.

Estimators say *what* to train (a module, a loss, the data: a :class:`Member`); this module
says *how*. It follows scikit-learn's ``BaseMultilayerPerceptron`` fitting logic (same
minibatches from the same random state, same L2 penalty, same stopping rules, same fitted
history) on torch tensors:

- :func:`train` runs epochs of its members until each has stopped; an ordinary fit is one
  member (:class:`SingleStack`: the module's own backpropagation, the solver's fused update),
  a fused search trains many plain MLPs of one shape at once (:class:`FusedStack`);
- the data lives on the device once; each epoch gathers it in the shuffled order (batch by
  batch for large data), so that minibatches are slices;
- no ``.item()`` per batch: losses are gathered and read once per epoch;
- a fit's settings come in as a :class:`TrainSettings`, its record goes out as a
  :class:`History`, which the estimator copies onto its fitted attributes.

The L2 penalty (``alpha``) applies to weights (parameters with two or more dimensions), not to
biases or normalisation scales, and is divided by the batch's total sample weight, as in
scikit-learn.
"""

import functools
import os
import pickle
import struct
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from . import _predict
from ._optim import make_optimizer, make_stacked_optimizer
from .nn import StackedMLP, Workspace


def _penalised(params):
    return [p for p in params if p.ndim >= 2]


def objective_and_grads(module, loss, xb, yb, wb, scale, alpha, params, generator=None,
                        workspace=None):
    """``scale * loss`` on a batch and the gradients of ``scale * (loss + alpha/2 * sum||W||^2)``
    for ``params``: by the module's own backpropagation where it has one (writing into
    ``workspace``, a :class:`~sknn.nn.Workspace`, when given), else by autograd."""
    if getattr(module, "supports_backprop", False):
        if workspace is not None:
            return module.backprop(xb, yb, wb, loss, scale, alpha * scale, workspace)
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

    def __init__(self, settings, total):
        self.bar = None
        if settings.verbose:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=total, desc=settings.name, unit="epoch", leave=False)

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


# scikit-learn's error for weights that are not finite after a fit, verbatim: sknn's
# messages for a fit that diverged start with it.
NONFINITE_WEIGHTS = ("Solver produced non-finite parameter weights. The input data may contain "
                     "large values and need to be preprocessed.")


def _diverged(settings, where):
    """The error for a stochastic solver's loss that turned NaN or infinite; ``settings``: the
    estimator or its :class:`TrainSettings`."""
    return ValueError(
        f"{NONFINITE_WEIGHTS} Training diverged: the loss became NaN or infinite {where}. Lower "
        f"the learning rate (learning_rate_init={settings.learning_rate_init}) or scale the "
        "input, e.g. with StandardScaler."
    )


def reshuffle(order, rng):
    """``sklearn.utils.shuffle(order, random_state=rng)``, the draw scikit-learn's MLP makes each
    epoch, without its input checks (a permutation of positions, drawn by ``rng.shuffle``)."""
    positions = np.arange(len(order))
    rng.shuffle(positions)
    return order[positions]


def resolve_batch_size(batch_size, n_samples, auto=200):
    if batch_size == "auto":
        return min(auto, n_samples)
    if batch_size > n_samples:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to "
                      "be clipped")
    return int(np.clip(batch_size, 1, n_samples))


# --- what a fit trains with, and what it leaves ------------------------------------------------


@dataclass
class TrainSettings:
    """An estimator's training settings as plain values: what the loop needs, nothing else."""

    solver: str
    learning_rate_init: float
    learning_rate: str
    power_t: float
    momentum: float
    nesterovs_momentum: bool
    beta_1: float
    beta_2: float
    epsilon: float
    alpha: float
    batch_size: int
    max_iter: int
    shuffle: bool
    tol: float
    n_iter_no_change: float
    verbose: int
    name: str = ""
    early_stopping: bool = False

    @classmethod
    def from_estimator(cls, est, n_samples):
        return cls(
            solver=est.solver, learning_rate_init=float(est.learning_rate_init),
            learning_rate=est.learning_rate, power_t=float(est.power_t),
            momentum=float(est.momentum), nesterovs_momentum=bool(est.nesterovs_momentum),
            beta_1=float(est.beta_1), beta_2=float(est.beta_2), epsilon=float(est.epsilon),
            alpha=float(est.alpha),
            batch_size=resolve_batch_size(est.batch_size, n_samples,
                                          getattr(est, "_auto_batch_size", 200)),
            max_iter=int(est.max_iter), shuffle=bool(est.shuffle), tol=float(est.tol),
            n_iter_no_change=est.n_iter_no_change, verbose=int(est.verbose),
            name=type(est).__name__, early_stopping=bool(est.early_stopping))


@dataclass
class History:
    """A fit's record, copied onto the estimator's fitted attributes of the same names."""

    n_iter_: int = 0
    t_: int = 0
    loss_: float = None
    loss_curve_: list = field(default_factory=list)
    best_loss_: float = None
    validation_scores_: list = None
    best_validation_score_: float = None
    validation_loss_curve_: list = None
    learning_rate_curve_: list = field(default_factory=list)
    _no_improvement_count: int = 0

    @classmethod
    def from_estimator(cls, est):
        return cls(**{f.name: getattr(est, f.name, None) for f in fields(cls)})

    def apply(self, est):
        for f in fields(self):
            setattr(est, f.name, getattr(self, f.name))


class Validation:
    """Validation data, scored after every epoch: ``X`` as the estimator predicts it, its
    targets (``y`` as given, ``Y`` encoded as the network trains on them) and weights.

    ``scorer`` says what the score is: None, the estimator's own (accuracy or R²); ``'loss'``,
    minus the validation loss; else a scikit-learn scorer, ``scorer(estimator, X, y)``. The
    validation loss is the training loss's data term (the L2 penalty, which does not depend on
    the data, is left out), averaged over the validation samples' weights.
    """

    def __init__(self, est, X, y, sample_weight, Y, scorer=None):
        self.est, self.X, self.y, self.sample_weight = est, X, y, sample_weight
        self.Y, self.scorer = Y, scorer
        self.total = float(len(Y) if sample_weight is None else np.sum(sample_weight))
        self._targets = None

    def evaluate(self, module):
        """(score, loss) of ``module`` as it is now; the outputs are computed as ``predict``
        computes them, so that the score is the one the estimator's predictions give."""
        dtype = next(module.parameters()).dtype
        z = _predict.predict(module, self.X, self.est.n_outputs_,
                             out_dtype=torch.empty((), dtype=dtype).numpy().dtype)
        return self.evaluate_output(torch.from_numpy(z))

    def evaluate_output(self, z):
        """(score, loss) of the raw network outputs ``z`` (a CPU tensor, ``(n, n_outputs)``,
        computed as ``predict`` computes them)."""
        est, loss = self.est, self.est._loss
        if self._targets is None or self._targets[0].dtype != z.dtype:
            self._targets = (torch.as_tensor(self.Y, dtype=z.dtype), None if (
                self.sample_weight is None) else torch.as_tensor(self.sample_weight, dtype=z.dtype))
        Y, w = self._targets
        with torch.no_grad():  # validation rows that all weigh zero: no loss to tell (NaN)
            value = (float(loss(z, Y, w)) / self.total * loss.report_scale if self.total > 0
                     else float("nan"))
        if isinstance(self.scorer, str):  # 'loss'
            return -value, value
        if self.scorer is not None:
            kwargs = {} if self.sample_weight is None else {"sample_weight": self.sample_weight}
            return float(self.scorer(est, self.X, self.y, **kwargs)), value
        link = _predict.output_link(loss)
        with torch.no_grad():
            out = link(z.clone()).numpy()
        if self.X.dtype.kind == "f":  # as predict returns it
            out = out.astype(self.X.dtype, copy=False)
        return est._score_output(out, self.y, self.sample_weight), value


class Member:
    """One network to train: its module, loss, data, settings, random streams and record. An
    ordinary fit trains one member; a fused search, many at once."""

    def __init__(self, module, loss, data, settings, history, rng, *, generator=None,
                 validation=None, optimizer=None, checkpoint=None, schedule=None, hooks=None):
        self.module, self.loss, self.data = module, loss, data
        self.settings, self.history, self.rng = settings, history, rng
        self.generator, self.validation = generator, validation
        self.optimizer, self.checkpoint = optimizer, checkpoint
        self.schedule = schedule  # a running learning-rate schedule (sknn.schedules), or None
        self.hooks = hooks  # per-epoch callbacks (sknn.callbacks), or None
        self.sample_idx = np.arange(data.n_samples)
        self.best_state = None
        self.error = None
        self.seconds = 0.0  # this member's share of the training time
        self.warnings = []  # a stack's member: the warnings its fit gives, (message, category)

    def end_epoch(self, loss, score, val_loss, progress, seconds):
        """Record one epoch; the stopping rule (scikit-learn's ``_update_no_improvement_count``):
        on the validation score with early stopping, else on the training loss. Returns whether
        the early-stopping record improved (the weights to keep)."""
        h, s = self.history, self.settings
        h.n_iter_ += 1
        h.t_ += self.data.n_samples
        h.loss_ = loss
        h.loss_curve_.append(loss)
        if s.verbose:
            progress.line("Iteration %d, loss = %.8f, time = %.3fs" % (h.n_iter_, loss, seconds))
        improved = False
        if score is not None:
            h.validation_scores_.append(score)
            h.validation_loss_curve_.append(val_loss)
            if s.verbose:
                progress.line("Validation score: %f" % score)
            improved = score > h.best_validation_score_
            if s.early_stopping:
                h._no_improvement_count = (h._no_improvement_count + 1
                                           if score < h.best_validation_score_ + s.tol else 0)
            if improved:
                h.best_validation_score_ = score
        if not s.early_stopping:
            h._no_improvement_count = (h._no_improvement_count + 1
                                       if loss > h.best_loss_ - s.tol else 0)
            if loss < h.best_loss_:
                h.best_loss_ = loss
        if self.schedule is not None:
            self.schedule.epoch_ends(score if s.early_stopping else -loss, s.tol)
        progress.epoch(loss=f"{loss:.5f}", time=f"{seconds:.2f}s",
                       **({"val": f"{score:.4f}"} if score is not None else {}))
        return improved and s.early_stopping

    def no_improvement_message(self):
        h, s = self.history, self.settings
        if h._no_improvement_count <= s.n_iter_no_change:
            return None
        what = "Validation score" if s.early_stopping else "Training loss"
        return (f"{what} did not improve more than tol={s.tol:f} for {s.n_iter_no_change} "
                "consecutive epochs.")


CHECKPOINT_VERSION = 2  # 1 (no "version" key): a pickle, read with weights_only=False


def _plain(value, where="checkpoint"):
    """``value`` with numpy scalars made Python numbers; anything else that is not a tensor or
    a plain value (dict, list, tuple, str, int, float, bool, None) is refused, so that what a
    checkpoint holds always loads with ``torch.load(weights_only=True)``."""
    if isinstance(value, np.generic):  # before float: numpy.float64 is a float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, dict):
        plain = type(value)((k, _plain(v, f"{where}[{k!r}]")) for k, v in value.items())
        if hasattr(value, "_metadata"):  # a module's state_dict: its layers' versions
            plain._metadata = _plain(value._metadata, f"{where}._metadata")
        return plain
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} holds a {type(value).__name__}, which a checkpoint cannot store "
                    "as data.")


class Checkpoint:
    """The whole training state, written to ``path`` after every epoch (atomically: a crash
    while writing leaves the previous one), so that a fit that crashed resumes where it was and
    ends with the same model as an uninterrupted one. ``fingerprint`` identifies the estimator's
    parameters and data: a checkpoint of another fit is refused, with ``hint`` in the message.

    The file holds data only: tensors and plain values (dict, list, tuple, str, int, float, bool,
    None), written by ``torch.save`` and read by ``torch.load(weights_only=True)``, which builds
    no other object and so runs no code from the file. Format (``"version": 2``)::

        {"version": 2, "fingerprint": (str, ...), "module": module.state_dict(),
         "optimizer": optimizer.state_dict(),            # see sknn._optim.Adam / SGD
         "history": dataclasses.asdict(History),         # numpy scalars as Python numbers
         "rng": {"bit_generator": "MT19937", "keys": int64 tensor (624,), "pos": int,
                 "has_gauss": int, "cached_gaussian": float},   # RandomState.get_state()
         "sample_idx": int64 tensor, "generator": uint8 tensor or None,
         "best_state": {name: tensor} or None,
         "schedule": {"epoch": int, "current": float, "best": float or None,
                      "bad_epochs": int, "cooldown_left": int} or None}  # sknn.schedules
    """

    def __init__(self, path, fingerprint, hint=""):
        self.path, self.fingerprint, self.hint = os.fspath(path), fingerprint, hint
        # Checked before any epoch: where the file cannot be written, say so now
        if os.path.isdir(self.path):
            raise ValueError(f"checkpoint_path {self.path!r} is a directory; give the path of a "
                             "file (it need not exist yet).")
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ValueError(f"checkpoint_path {self.path!r}: its folder {folder!r} does not "
                             "exist.")

    def save(self, member):
        name, keys, pos, has_gauss, cached_gaussian = member.rng.get_state()
        state = _plain({
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint, "module": member.module.state_dict(),
            "optimizer": member.optimizer.state_dict(), "history": asdict(member.history),
            "rng": {"bit_generator": name, "keys": torch.from_numpy(keys.astype(np.int64)),
                    "pos": pos, "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
            "sample_idx": torch.from_numpy(np.array(member.sample_idx, dtype=np.int64)),
            "generator": None if member.generator is None else member.generator.get_state(),
            "best_state": member.best_state,
            "schedule": None if member.schedule is None else member.schedule.state_dict(),
        })
        tmp = self.path + ".tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self):
        if not os.path.exists(self.path):
            return None
        older = (f"The checkpoint {self.path!r} was written in an older format, or is not a "
                 "checkpoint sknn can read safely (checkpoints are read as data, with "
                 "torch.load(weights_only=True)): delete it to start the fit afresh.")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        # UnpicklingError: a global weights_only refuses; the others: no torch.save file
        except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError,
                struct.error) as err:
            raise ValueError(older) from err
        if not isinstance(state, dict) or "version" not in state:
            raise ValueError(older)
        if state["version"] != CHECKPOINT_VERSION:
            raise ValueError(
                f"The checkpoint {self.path!r} has format version {state['version']!r}, which "
                f"this version of sknn does not read (it reads version {CHECKPOINT_VERSION}): "
                "delete it to start the fit afresh.")
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"The checkpoint {self.path!r} was written by a fit with other "
                             "parameters or data: delete it, or choose another checkpoint_path"
                             + (f" ({self.hint})." if self.hint else "."))
        return state

    def resume(self, member, state):
        device = member.data.device
        member.module.load_state_dict(state["module"])
        member.optimizer.load_state_dict(state["optimizer"])
        member.history = History(**state["history"])
        rng = state["rng"]
        member.rng.set_state((rng["bit_generator"], rng["keys"].numpy().astype(np.uint32),
                              rng["pos"], rng["has_gauss"], rng["cached_gaussian"]))
        member.sample_idx = state["sample_idx"].numpy().astype(np.intp)
        member.best_state = state["best_state"]
        if member.generator is not None:
            member.generator.set_state(state["generator"])
        if member.schedule is not None:
            member.schedule.load_state_dict(state["schedule"])
        if member.best_state is not None:
            member.best_state = {k: v.to(device) for k, v in member.best_state.items()}

    def remove(self):
        if os.path.exists(self.path):
            os.remove(self.path)


# --- the loop -----------------------------------------------------------------------------------


def train(members, *, incremental=False):
    """Minibatch training of ``members`` (M >= 1 networks) with their solvers and stopping rules,
    one epoch of all of them at a time. An ordinary fit is one member; several members must share
    a network shape, solver family, batch size, dtype and device (see :class:`FusedStack`).

    Each member keeps its own data and shuffles, weights, learning rate and schedule, penalty,
    solver settings and stopping; one that stops is frozen and leaves the stack. On return each
    member's module holds its final weights (the best epoch's, with early stopping), its
    ``history`` its record and ``optimizer`` its solver state. A member whose loss turns
    non-finite without early stopping, or whose final weights are not finite, gets the error in
    ``error`` (one member alone: it is raised).
    """
    single = len(members) == 1
    if not single:  # in order of size: the members whose batches have one length are adjacent
        members = sorted(members, key=lambda m: m.data.n_samples)
    stack = SingleStack(members[0], incremental) if single else FusedStack(members)
    live = [m for m in members if incremental or m.history.n_iter_ < m.settings.max_iter]
    # Stacks hold no verbose member (see sknn._fused.fusable): only an ordinary fit shows one.
    progress = Progress(members[0].settings,
                        members[0].settings.max_iter - members[0].history.n_iter_)
    completed = True
    try:
        while live:
            for row, m in enumerate(live):
                if m.schedule is not None:
                    stack.set_learning_rate(row, m.settings.learning_rate_init
                                            * m.schedule.factor())
                m.history.learning_rate_curve_.append(stack.learning_rate(row))
                if m.hooks is not None:
                    m.hooks.epoch_begins(m)
            tic = time.perf_counter()
            losses = stack.run_epoch()
            seconds = time.perf_counter() - tic
            evaluations = stack.validation_scores()
            done = []
            for row, (m, loss, (score, val_loss)) in enumerate(zip(live, losses, evaluations)):
                # Without early stopping a loss that turns NaN or infinite ends the fit with an
                # error at once (scikit-learn trains on to max_iter, then raises). With it, as in
                # scikit-learn, the epoch is recorded like any other, its validation score NaN
                # where the predictions are not finite (a NaN score never counts as an
                # improvement, and resets the count of epochs without one), training goes on,
                # and the best epoch's weights are restored at the end.
                if not np.isfinite(loss) and not m.settings.early_stopping:
                    m.error = _diverged(m.settings, f"at iteration {m.history.n_iter_ + 1}")
                    if single:
                        raise m.error
                    done.append(row)
                    continue
                if m.end_epoch(loss, score, val_loss, progress, seconds):
                    stack.snapshot(row)
                stack.iteration_ends(row, m.history.t_)
                if m.hooks is not None and m.hooks.epoch_ends(m, seconds):
                    done.append(row)  # a callback asked to stop: as early stopping stops
                    continue
                msg = m.no_improvement_message()
                if msg is not None:
                    if stack.trigger_stopping(row, msg, m.settings.verbose):
                        done.append(row)
                        continue
                    m.history._no_improvement_count = 0
                if m.checkpoint is not None and not incremental:
                    m.checkpoint.save(m)
                if incremental:
                    done.append(row)
                elif m.history.n_iter_ >= m.settings.max_iter:
                    message = (f"Stochastic Optimizer: Maximum iterations ({m.settings.max_iter}) "
                               "reached and the optimization hasn't converged yet.")
                    if single:
                        warnings.warn(message, ConvergenceWarning)
                    else:  # given by the member's own fit, when the search replays it
                        m.warnings.append((message, ConvergenceWarning))
                    done.append(row)
            elapsed = time.perf_counter() - tic
            for m in live:
                m.seconds += elapsed / len(live)
            if done:
                for row in done:
                    stack.finish(row, live[row])
                live = stack.keep([r for r in range(len(live)) if r not in done], live)
    except KeyboardInterrupt:
        if not single:
            raise
        warnings.warn("Training interrupted by user.")
        completed = False  # keep the checkpoint: a later fit can resume from it
    finally:
        progress.close()
    for row, m in enumerate(live):
        stack.finish(row, m)
    for m in members:
        m.module.eval()
        if m.error is None:
            m.error = _nonfinite(m)
            if m.error is not None and single:
                raise m.error
        if m.checkpoint is not None and completed:
            m.checkpoint.remove()  # the fit completed: nothing to resume


def _nonfinite(member):
    """The error for a trained member whose weights, or outputs on its first training rows, are
    not finite (the loss is read before each update: the last one can still overflow); None
    when they are finite."""
    advice = ("The learning rate may also be too large "
              f"(learning_rate_init={member.settings.learning_rate_init}).")
    if not all(bool(torch.isfinite(p).all()) for p in member.module.parameters()):
        return ValueError(f"{NONFINITE_WEIGHTS} {advice}")
    xb = member.data.batch(slice(0, min(member.data.n_samples, 64)))[0]
    with torch.no_grad():
        if bool(torch.isfinite(member.module(xb)).all()):
            return None
    return ValueError("Solver produced parameter weights whose outputs on the training data are "
                      "not finite. The input data may contain large values and need to be "
                      f"preprocessed. {advice}")


def epoch_loss(values, norms, alpha, sums, lengths, count, report_scale):
    """An epoch's loss as scikit-learn reports it, from its batches' scaled losses ``values``,
    the weight norms read before each batch's update ``norms`` (batches, layers; None without
    ``alpha``), the batches' weights ``sums`` and row counts ``lengths`` (1-D tensors), and
    ``count`` rows in all. One code for an ordinary fit and a stack's member: the same bits."""
    batch_loss = values * report_scale
    if alpha:
        batch_loss = batch_loss + 0.5 * alpha * norms.square().sum(1) / sums
    return float((batch_loss * lengths).sum()) / count


class SingleStack:
    """One network: its module's own backpropagation (else autograd) and the solver's fused
    update, on minibatch slices of each epoch's shuffled copy of the data."""

    def __init__(self, member, incremental):
        self.m = m = member
        self.params = [p for p in m.module.parameters() if p.requires_grad]
        self.decayed = _penalised(self.params)
        # The module's products write into these, batch after batch (its gradients are
        # consumed by the update before the next batch overwrites them).
        self.workspace = Workspace()
        if m.optimizer is None:
            m.optimizer = make_optimizer(self.params, m.settings)
        n, bs = m.data.n_samples, m.settings.batch_size
        self.starts = np.arange(0, n, bs)
        self.stops = np.minimum(self.starts + bs, n)
        self.bounds = list(zip(self.starts.tolist(), self.stops.tolist()))
        self.lengths = torch.as_tensor(self.stops - self.starts, dtype=m.data.dtype,
                                       device=m.data.device)
        if m.settings.early_stopping:
            self.snapshot(0)
        if m.checkpoint is not None and not incremental:
            state = m.checkpoint.load()
            if state is not None:
                m.checkpoint.resume(m, state)
        m.module.train()

    def run_epoch(self):
        m, data, loss = self.m, self.m.data, self.m.loss
        alpha, optimizer, params = m.settings.alpha, m.optimizer, self.params
        starts, stops = self.starts, self.stops
        epoch_data = data
        if m.settings.shuffle:
            m.sample_idx = reshuffle(m.sample_idx, m.rng)
            idx = torch.from_numpy(m.sample_idx).to(data.device)
            epoch_data = data.permuted(idx)
        sums = data.batch_weight_sums(m.sample_idx if m.settings.shuffle else None, starts, stops)
        objectives, norms, used = [], [], []
        xb = yb = wb = None
        for k, ((a, b), s) in enumerate(zip(self.bounds, sums)):
            if s <= 0:  # every sample weighs zero: nothing to learn from this batch
                continue
            if epoch_data is None:  # large or streamed data: gather this batch only
                xb, yb, wb = data.batch(idx[a:b], m.sample_idx[a:b], reuse=True)
            else:
                xb, yb, wb = epoch_data.batch(slice(a, b))
            # The L2 term of the gradients is added by the optimizer's update.
            objective, grads = objective_and_grads(m.module, loss, xb, yb, wb, 1.0 / s, 0.0,
                                                   params, m.generator, self.workspace)
            with torch.no_grad():
                if alpha:
                    norms.extend(torch._foreach_norm(self.decayed))
                optimizer.step(params, grads, alpha / s)
            objectives.append(objective)
            used.append(k)
        if not used:
            raise ValueError("Every sample the network trains on weighs zero (sample_weight): "
                             "there is nothing to learn from.")
        # Drop this epoch's shuffled copy (the last batch's views hold it too) before the next
        # one is made: one copy at a time.
        del epoch_data, xb, yb, wb
        # One read of the device per epoch: the epoch's loss, as scikit-learn reports it. A
        # batch whose samples all weigh zero was skipped: it counts for nothing.
        with torch.no_grad():
            s_used = torch.as_tensor([sums[k] for k in used], dtype=data.dtype,
                                     device=data.device)
            return [epoch_loss(torch.stack(objectives), torch.stack(norms).view(len(used), -1)
                               if alpha else None, alpha, s_used, self.lengths[used],
                               int((stops - starts)[used].sum()), loss.report_scale)]

    def validation_scores(self):
        """Each member's (validation score, validation loss), (None, None) without one."""
        if self.m.validation is None:
            return [(None, None)]
        self.m.module.eval()
        evaluation = self.m.validation.evaluate(self.m.module)
        self.m.module.train()
        return [evaluation]

    def learning_rate(self, row):
        return float(self.m.optimizer.learning_rate)

    def set_learning_rate(self, row, rate):
        self.m.optimizer.learning_rate = rate

    def snapshot(self, row):
        self.m.best_state = {k: v.detach().clone() for k, v in self.m.module.state_dict().items()}

    def iteration_ends(self, row, time_step):
        self.m.optimizer.iteration_ends(time_step)

    def trigger_stopping(self, row, msg, verbose):
        return self.m.optimizer.trigger_stopping(msg, verbose)

    def finish(self, row, member):
        if member.best_state is not None:
            member.module.load_state_dict(member.best_state)
            member.best_state = None

    def keep(self, rows, live):
        return [live[r] for r in rows]


class FusedStack:
    """M plain MLPs of one shape trained as one :class:`~sknn.nn.StackedMLP`: every step is
    one batched product per layer for all members (one product per member where batching
    would change a member's bits: :func:`~sknn.nn.batched_is_exact`), and one update of all
    of them.

    Each member trains on its own rows in its own shuffled order and ends with the model its
    own fit gives, bit for bit (on the BLAS route of products, see
    :func:`~sknn.nn.linear_route`): every step runs its fit's operations,
    batched (:meth:`StackedMLP.backprop`, :class:`~sknn._optim.StackedAdam`), and its epoch
    losses and validation scores are computed as its fit computes them. Members whose last
    batches differ in length take that step in one pass per length, never with padding rows
    (which change a product's bits). A member with fewer batches in an epoch, or a batch whose
    samples weigh nothing, sits that step out untouched.
    """

    def __init__(self, members):
        first = members[0]
        self.net = StackedMLP([m.module for m in members])
        self.loss = first.loss
        self.device, self.dtype = first.data.device, first.data.dtype
        self.batch_size = first.settings.batch_size
        self.optimizer = make_stacked_optimizer(self.net, [m.settings for m in members])
        self._stack_data(members)
        self.live = list(members)
        for row, m in enumerate(members):  # as an ordinary fit: the initial weights first
            if m.settings.early_stopping:
                self.snapshot(row)

    def _stack_data(self, members):
        """Every member's rows padded to a common length, with one zero row (index n_max) that
        the steps a member sits out point to."""
        M = len(members)
        n_max = max(m.data.n_samples for m in members)
        first = members[0].data
        d, o = first.X.shape[1], first.Y.shape[1]
        self.X = torch.zeros(M, n_max + 1, d, dtype=self.dtype, device=self.device)
        self.Y = torch.zeros(M, n_max + 1, o, dtype=first.Y.dtype, device=self.device)
        self.W = torch.zeros(M, n_max + 1, dtype=self.dtype, device=self.device)
        for row, m in enumerate(members):
            n = m.data.n_samples
            X, Y, W = m.data.all()
            self.X[row, :n] = X
            self.Y[row, :n] = Y
            self.W[row, :n] = 1.0 if W is None else W
        self.n_max = n_max
        self.weighted = any(m.data.sample_weight is not None for m in members)

    def run_epoch(self):
        live, bs = self.live, self.batch_size
        M, n_max = len(live), self.n_max  # rows per member in the stacked tensors, padding aside
        K = -(-max(m.data.n_samples for m in live) // bs)
        order = np.full((M, K * bs), n_max, dtype=np.int64)  # padding: the zero row
        sums = np.zeros((M, K))
        lengths = np.zeros((M, K))
        for row, m in enumerate(live):
            n = m.data.n_samples
            if m.settings.shuffle:
                m.sample_idx = reshuffle(m.sample_idx, m.rng)
            order[row, :n] = m.sample_idx
            starts = np.arange(0, n, bs)
            k = len(starts)
            lengths[row, :k] = np.minimum(starts + bs, n) - starts
            sums[row, :k] = (lengths[row, :k] if m.data.sample_weight is None else
                             np.add.reduceat(m.data.sample_weight[m.sample_idx], starts))
        # One gather per epoch, laid out (batch, member, row) so that each step is contiguous.
        order += (n_max + 1) * np.arange(M)[:, None]  # rows of the members' stacked rows
        idx = torch.from_numpy(order.reshape(M, K, bs).transpose(1, 0, 2).reshape(-1)).to(
            self.device)
        X, Y, W = (t.view(M * (n_max + 1), -1).index_select(0, idx).view(K, M, bs, -1)
                   for t in (self.X, self.Y, self.W))
        W = W.squeeze(3) if self.weighted else None
        alpha = np.array([m.settings.alpha for m in live])
        active = sums > 0
        safe = np.where(active, sums, 1.0)
        # As an ordinary fit: the loss scaled by 1 / batch weight, and the L2 term's decay
        # alpha / batch weight (divided, not multiplied by the scale: the same bits).
        scale = np.where(active, 1.0 / safe, 0.0)
        decay = np.where(active, alpha[:, None] / safe, 0.0)
        values, norms, steps = [], [], []
        net, params = self.net, self.net.params
        scales = torch.as_tensor(scale.T.copy(), dtype=self.dtype, device=self.device)
        # Per step: whether any member takes it, all do, and whether their batches are as long
        any_on, all_on = active.any(0).tolist(), active.all(0).tolist()
        uniform = (np.where(active, lengths, np.inf).min(0)
                   == np.where(active, lengths, -np.inf).max(0)).tolist()
        decayed = bool(alpha.any())
        for k in range(K):
            if not any_on[k]:
                continue
            on = active[:, k]
            scale_k = scales[k]
            if decayed:
                norms.append(net.norms())
            if uniform[k]:  # each member's batch, without padding rows: its fit's bits
                b = int(lengths[on, k][0])
                value, grads = net.backprop(X[k][:, :b], Y[k][:, :b],
                                            None if W is None else W[k][:, :b], self.loss, scale_k)
            else:  # the members' last batches differ in length: one pass per length, over
                # the rows that have it (adjacent: members are in order of size, see train)
                value = scale_k.new_zeros(M)
                for b in np.unique(lengths[on, k]).astype(int):
                    found = np.flatnonzero(on & (lengths[:, k] == b))
                    rows = slice(int(found[0]), int(found[-1]) + 1)
                    value[rows], grads = net.backprop(
                        X[k][rows, :b], Y[k][rows, :b], None if W is None else W[k][rows, :b],
                        self.loss, scale_k[rows], rows)
            self.optimizer.step(params, grads, decay[:, k], None if all_on[k] else on)
            values.append(value)
            steps.append(k)
        del X, Y, W
        return self._epoch_losses(live, values, norms, steps, active, sums, lengths)

    def _epoch_losses(self, live, values, norms, steps, active, sums, lengths):
        """Each member's epoch loss, as scikit-learn reports it: computed from its batches'
        values as :meth:`SingleStack.run_epoch` computes an ordinary fit's, operation for
        operation, so that the stopping rule sees the same numbers."""
        values = torch.stack(values)  # (steps, members)
        norms = torch.stack(norms) if norms else None  # (steps, members, layers)
        alphas = [m.settings.alpha for m in live]
        if active[:, steps].all() and (all(alphas) or not any(alphas)):
            # Every member used every step: the same operations for all members at once, a
            # member's along its own row (each reduction over the last, contiguous axis).
            batch_loss = values.t().contiguous() * self.loss.report_scale
            if alphas[0]:
                half_alpha = torch.as_tensor([0.5 * a for a in alphas], dtype=self.dtype,
                                             device=self.device).view(-1, 1)
                batch_loss = batch_loss + (
                    norms.transpose(0, 1).contiguous().square().sum(2) * half_alpha
                    / torch.as_tensor(sums[:, steps], dtype=self.dtype, device=self.device))
            counted = torch.as_tensor(lengths[:, steps], dtype=self.dtype, device=self.device)
            totals = (batch_loss * counted).sum(1).tolist()
            return [t / int(n) for t, n in zip(totals, lengths[:, steps].sum(1))]
        losses = []
        as_tensor = functools.partial(torch.as_tensor, dtype=self.dtype, device=self.device)
        for row, m in enumerate(live):
            used = [i for i, k in enumerate(steps) if active[row, k]]
            ks = [steps[i] for i in used]
            index = torch.as_tensor(used, device=self.device)
            losses.append(epoch_loss(
                values[:, row].index_select(0, index),
                norms[:, row].index_select(0, index) if m.settings.alpha else None,
                m.settings.alpha, as_tensor(sums[row, ks]), as_tensor(lengths[row, ks]),
                int(lengths[row, ks].sum()), self.loss.report_scale))
        return losses

    def validation_scores(self):
        """Each member scored as its own fit scores itself: its module, as it predicts."""
        scores = []
        for row, m in enumerate(self.live):
            if m.validation is None:
                scores.append((None, None))
                continue
            self.net.write_to(m.module, self.net.params[row])
            m.module.eval()
            scores.append(m.validation.evaluate(m.module))
            m.module.train()
        return scores

    def learning_rate(self, row):
        opt = self.optimizer
        return float((opt.learning_rate if hasattr(opt, "learning_rate")
                      else opt.learning_rate_init)[row])

    def set_learning_rate(self, row, rate):
        raise NotImplementedError("Learning-rate schedules are not fused (sknn._fused.fusable).")

    def snapshot(self, row):
        self.live[row].best_state = self.net.params[row].clone()

    def iteration_ends(self, row, time_step):
        self.optimizer.iteration_ends(row, time_step)

    def trigger_stopping(self, row, msg, verbose):
        return self.optimizer.trigger_stopping(row, msg, verbose)

    def finish(self, row, member):
        """Write a member's final weights (the best epoch's, with early stopping) and its
        solver state back to its own module and optimizer."""
        final = member.best_state if member.best_state is not None else self.net.params[row]
        self.net.write_to(member.module, final)
        member.optimizer = self.optimizer.member(row, list(member.module.parameters()))
        member.best_state = None

    def keep(self, rows, live):
        """Only the members at ``rows`` train on."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        if not rows:
            self.live = []
            return self.live
        self.net.take(index)
        self.optimizer.take(index)
        self.X, self.Y, self.W = (t.index_select(0, index) for t in (self.X, self.Y, self.W))
        self.live = [live[r] for r in rows]
        return self.live


# Rows per chunk when L-BFGS evaluates its objective over sparse or host-held data.
LBFGS_CHUNK_ROWS = 8192


def fit_lbfgs(est, module, loss, data, task=None):
    """Full-batch L-BFGS-B (scipy) on the module's flattened parameters, gradients by autograd.

    scipy sees scikit-learn's objective: the loss as scikit-learn reports it (its squared error
    is a mean over outputs, though its gradient is that of the sum) plus the L2 penalty.
    ``task`` (sknn.callbacks): each iteration is a subtask; a callback's request to stop ends
    the optimisation at the iterate just accepted.
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
        if est.verbose or task is not None:
            value = (last["value"] if np.array_equal(flat, last.get("x"))
                     else objective_and_grad(flat)[0])
        if est.verbose:
            print("Iteration %d, loss = %.8f" % (accepted["nit"], value))
        if task is not None:
            with torch.no_grad():
                set_params(flat)
            if task.iteration_ends(module, accepted["nit"], value):
                accepted["stopped"] = True
                raise StopIteration  # scipy ends the optimisation at this iterate
            task.iteration_begins(module)

    import scipy.optimize  # lazy: only L-BFGS needs it, and it adds to sknn's import time

    x0 = torch.nn.utils.parameters_to_vector(params).detach().cpu().numpy().astype(np.float64)
    accepted = {"x": x0, "nit": 0, "stopped": False}
    res = None
    if task is not None:
        task.iteration_begins(module)
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
        if task is not None:
            task.close_iteration()
    if res is not None and not np.isfinite(res.fun):
        # Refused, where scikit-learn raises only if the weights are not finite, and otherwise
        # keeps the point L-BFGS stopped at (often the initial one) with a loss_ of NaN.
        weights = "" if np.isfinite(res.x).all() else NONFINITE_WEIGHTS + " "
        raise ValueError(f"{weights}Training diverged: the loss became NaN or infinite during "
                         "L-BFGS. The input data may contain large values: scale it, e.g. with "
                         "StandardScaler.")
    x, n_iter = ((accepted["x"], accepted["nit"]) if res is None or accepted["stopped"]
                 else (res.x, int(res.nit)))
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
    if res is not None and res.status != 0 and not accepted["stopped"]:
        msg = res.message.decode() if isinstance(res.message, bytes) else res.message
        warnings.warn(
            f"lbfgs failed to converge after {res.nit} iteration(s) (status={res.status}):\n"
            f"{msg}.\n\nIncrease the number of iterations (max_iter) or scale the data "
            "as shown in:\n    https://scikit-learn.org/stable/modules/preprocessing.html",
            ConvergenceWarning)
