"""Per-epoch callbacks, through scikit-learn's own callback API (``sklearn.callback``,
scikit-learn >= 1.9), and two ready-made ones: :class:`HistoryLogger` and :class:`TimeBudget`.

``MLPClassifier``, ``MLPRegressor`` and ``ConvNetClassifier`` support ``set_callbacks``, as
scikit-learn's ``LogisticRegression`` does. A fit (or a ``partial_fit`` call) is a task; each
epoch (L-BFGS: each iteration) is one leaf subtask of it. Every hook receives what
scikit-learn's estimators pass:

- ``X``, ``y``: the training data; ``metadata``: the fit's metadata (``{"sample_weight": ...}``
  when weights are given, else None), which scorers such as ``ScoringMonitor``'s receive;
- ``fitted_estimator``: a copy of the estimator as if the fit had stopped at the end of the
  task, built only when a hook asks for it. Besides the weights of that epoch it carries the
  record so far: ``n_iter_``, ``loss_`` and ``loss_curve_``, ``learning_rate_curve_``, and,
  with validation data, ``validation_scores_`` and ``validation_loss_curve_``.

An ``on_fit_task_end`` that returns True at an epoch stops training there, as early stopping
stops it: with ``early_stopping=True`` the best epoch's weights are restored.

With a scikit-learn older than 1.9, everything else works and ``set_callbacks`` is absent.
Callbacks cost nothing when none is set.
"""

import copy
import csv
import dataclasses
import json
import os
import time
from contextlib import contextmanager

try:  # scikit-learn >= 1.9
    from sklearn.callback import CallbackSupportMixin as _Support
    from sklearn.callback import with_callbacks as _with_callbacks
except ImportError:  # pragma: no cover - older scikit-learn
    _Support, _with_callbacks = None, None

__all__ = ["HistoryLogger", "TimeBudget"]

AVAILABLE = _Support is not None


class CallbackSupport(*((_Support,) if AVAILABLE else ())):
    """``set_callbacks`` where scikit-learn has its callback API, else nothing."""


def managed(method):
    """Run ``method`` (``fit``, ``partial_fit``) with scikit-learn's callback management: the
    callbacks' ``teardown`` runs however the method ends."""
    return method if _with_callbacks is None else _with_callbacks(method)


def _record(history):
    """An epoch record's fitted attributes (the public fields of sknn._engine.History), as
    copies."""
    return {f.name: copy.copy(getattr(history, f.name)) for f in dataclasses.fields(history)
            if not f.name.startswith("_")}


class _FitTask:
    """One fit as a task of scikit-learn's callback tree, each epoch a leaf subtask of it."""

    def __init__(self, est):
        self.est = est
        self.ctx = self.epoch_ctx = None

    def begin(self, X, y, sample_weight, n_subtasks):
        self.X, self.y = X, y
        self.metadata = None if sample_weight is None else {"sample_weight": sample_weight}
        self.ctx = self.est._init_callback_context(max_subtasks=n_subtasks)
        self.ctx.call_on_fit_task_begin(estimator=self.est, X=X, y=y, metadata=self.metadata)

    def _subtask(self, attributes):
        self.epoch_ctx = self.ctx.subcontext(task_name="epoch")
        self.epoch_ctx.call_on_fit_task_begin(
            estimator=self.est, X=self.X, y=self.y, metadata=self.metadata,
            reconstruction_attributes=attributes)

    def _end_subtask(self, attributes):
        ctx, self.epoch_ctx = self.epoch_ctx, None
        return ctx.call_on_fit_task_end(estimator=self.est, X=self.X, y=self.y,
                                        metadata=self.metadata,
                                        reconstruction_attributes=attributes)

    # stochastic solvers: called by sknn._engine.train

    def epoch_begins(self, member):
        self._subtask(lambda: {"module_": copy.deepcopy(member.module).eval(),
                               **_record(member.history)})

    def epoch_ends(self, member, seconds):
        """Whether a callback asks to stop."""
        return self._end_subtask(lambda: {"module_": copy.deepcopy(member.module).eval(),
                                          **_record(member.history)})

    # L-BFGS: called by sknn._engine.fit_lbfgs with the iterate's weights in the module

    def iteration_begins(self, module):
        self._subtask(lambda: {"module_": copy.deepcopy(module).eval()})

    def iteration_ends(self, module, n_iter, loss):
        return self._end_subtask(lambda: {"module_": copy.deepcopy(module).eval(),
                                          "n_iter_": n_iter, "loss_": loss})

    def close_iteration(self):
        """End the subtask L-BFGS opened for an iteration it did not run (as scikit-learn's
        LogisticRegression does): an empty task."""
        if self.epoch_ctx is not None:
            ctx, self.epoch_ctx = self.epoch_ctx, None
            ctx.call_on_fit_task_end(estimator=self.est)

    def end(self):
        if self.epoch_ctx is not None:  # an epoch ended by an error (KeyboardInterrupt...)
            self.close_iteration()
        self.ctx.call_on_fit_task_end(estimator=self.est, X=self.X, y=self.y,
                                      metadata=self.metadata, reconstruction_attributes={})


def watched(est):
    """Whether a callback can see ``est``'s fits: callbacks set on it, or a meta-estimator's
    callback context to join."""
    return AVAILABLE and ("_skl_callbacks" in est.__dict__
                          or "_parent_callback_ctx" in est.__dict__)


@contextmanager
def fit_task(est):
    """The callback task of one fit of ``est``, or None when no callback can see it."""
    if not watched(est):
        yield None
        return
    task = _FitTask(est)
    yield task
    if task.ctx is not None:
        task.end()


# --- two callbacks people ask for ----------------------------------------------------------


def _leaf(context):
    return context.max_subtasks == 0


class HistoryLogger:
    """Write each epoch's record to a file as training goes: a CSV table (``path`` ending in
    ``.csv``) or JSON lines (one object per epoch, any other name).

    Each row holds the estimator's name, the epoch, the seconds it took, and the record:
    ``loss``, ``learning_rate`` and, with validation data, ``validation_score`` and
    ``validation_loss``. The file is rewritten at the start of each fit (``append=False``) and
    flushed after every epoch, so that it can be watched while a fit runs.
    """

    def __init__(self, path, append=False):
        self.path = path
        self.append = append

    def __repr__(self):
        return f"HistoryLogger(path={self.path!r}, append={self.append!r})"

    def setup(self, estimator, context):
        self._file = open(self.path, "a" if self.append else "w", newline="",
                          encoding="utf-8")
        self._writer = None
        self._csv = os.fspath(self.path).endswith(".csv")

    def teardown(self, estimator, context):
        if getattr(self, "_file", None) is not None:
            self._file.close()
        self._file = self._writer = None

    def on_fit_task_begin(self, estimator, context):
        if _leaf(context):
            self._tic = time.perf_counter()

    def on_fit_task_end(self, estimator, context, *, fitted_estimator=None):
        if not _leaf(context) or fitted_estimator is None or getattr(
                fitted_estimator, "loss_curve_", None) is None:
            return False
        est = fitted_estimator
        scores = getattr(est, "validation_scores_", None)
        val_losses = getattr(est, "validation_loss_curve_", None)
        row = {"estimator": type(estimator).__name__, "epoch": est.n_iter_,
               "seconds": time.perf_counter() - self._tic, "loss": est.loss_curve_[-1],
               "learning_rate": est.learning_rate_curve_[-1],
               "validation_score": scores[-1] if scores else None,
               "validation_loss": val_losses[-1] if val_losses else None}
        if self._csv:
            if self._writer is None:
                self._writer = csv.DictWriter(self._file, fieldnames=list(row))
                if self._file.tell() == 0:
                    self._writer.writeheader()
            self._writer.writerow(row)
        else:
            self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        return False

    def __getstate__(self):  # the open file stays with the process that opened it
        return {k: v for k, v in self.__dict__.items() if k not in ("_file", "_writer")}


class TimeBudget:
    """Stop training after ``seconds`` of it (counted from the start of the fit), at the end
    of the epoch that crosses the budget, as early stopping stops it. ``stopped_`` tells
    whether the last fit was cut short."""

    def __init__(self, seconds):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
                seconds > 0):
            raise ValueError(f"TimeBudget: seconds must be a positive number, got {seconds!r}.")
        self.seconds = seconds

    def __repr__(self):
        return f"TimeBudget(seconds={self.seconds!r})"

    def setup(self, estimator, context):
        self._start = time.perf_counter()
        self.stopped_ = False

    def teardown(self, estimator, context):
        pass

    def on_fit_task_begin(self, estimator, context):
        pass

    def on_fit_task_end(self, estimator, context):
        if not _leaf(context):
            return False
        if time.perf_counter() - self._start >= self.seconds:
            self.stopped_ = True
            return True
        return False
