"""Fused fits: many (candidate, fold) fits of an sknn MLP trained as stacks of one network shape.

A fused search runs in three phases, and scikit-learn's own search code does everything but the
training:

1. **capture**: each (candidate, fold) estimator is fitted on its training rows with the MLP's
   ``fit`` intercepted: a Pipeline's other steps fit as usual, and the MLP records the data it
   was given instead of training;
2. **train**: the captured MLPs are grouped by network shape and trained as stacks, each stack a
   joblib task (``n_jobs`` and the dask / Ray backends spread them); each member ends with the
   model its own fit would give. MLPs that cannot be fused train alone, by their own ``fit``;
3. **replay**: scikit-learn's search runs as usual; when an MLP's ``fit`` is called with the
   parameters and data of a trained member, it takes that member's fitted state (or raises its
   error) instead of training again. Anything not trained in phase 2 (another estimator, data
   that differ) simply trains.

A member is found by a hash of its class, parameters and data, so a replayed fit can only ever
receive the model of the very same fit.
"""

import copy
import threading
import time
import warnings

import joblib
import numpy as np
import scipy.sparse as sp

from . import _threads, callbacks

# Phase 1 records into its own thread's list (``_LOCAL.capture``) while it runs: fits in other
# threads train as usual. Phase 3 looks members up in the registries (dicts) of the searches
# running in this process; its fits may run in joblib's threads, and a member's key holds its
# fit's parameters and data, so only the very same fit can find it.
_LOCAL = threading.local()
_REGISTRIES = []
_LOCK = threading.Lock()


def active():
    """Whether a fit may be intercepted: this thread captures, or a fused search replays."""
    return getattr(_LOCAL, "capture", None) is not None or bool(_REGISTRIES)


def fusable_type(est):
    from .mlp import MLPClassifier, MLPRegressor
    return type(est) in (MLPClassifier, MLPRegressor)


def _hash(value):
    """joblib's hash of ``value``, or None where it cannot be hashed (a parameter that does not
    pickle, such as a local function): such a fit is not fused, and trains as usual."""
    try:
        return joblib.hash(value)
    except Exception:  # noqa: BLE001 - pickling errors of any kind
        return None


def data_key(X, y, sample_weight):
    return _hash((X, y, sample_weight))


def member_key(est, X, y, sample_weight, data=None):
    """What identifies a fit: the estimator's class and parameters, and its data (``data``: the
    data's :func:`data_key`, when known); None where they cannot be hashed."""
    if data is None:
        data = data_key(X, y, sample_weight)
    return None if data is None else _hash((type(est).__name__, est.get_params(deep=False), data))


def intercept(est, X, y, sample_weight, capturable=True):
    """Called by ``fit`` of every sknn estimator while a fused search runs: the fitted estimator
    when this fit has been trained already (or its error, raised), None to fit as usual. While
    this thread captures, a fit is recorded (when ``capturable``: a fit given its own
    validation data is not) and not trained: the search trains it, or its replay does."""
    capture = getattr(_LOCAL, "capture", None)
    if capture is not None and fusable_type(est):
        if capturable:
            capture.append((est, X, y, sample_weight))
        return est
    if not capturable or not _REGISTRIES or not fusable_type(est):
        return None
    key = member_key(est, X, y, sample_weight)
    if key is None:
        return None
    with _LOCK:
        registry = next((r for r in _REGISTRIES if key in r), None)
        if registry is None:
            return None
        fitted, error, uses, given = registry[key]
        registry[key] = (fitted, error, uses - 1, given)
    for message, category in given:  # the warnings its fit gave, as its own fit gives them
        warnings.warn(message, category)
    if error is not None:
        raise copy.copy(error)
    params = est.get_params(deep=False)
    state = {k: v for k, v in fitted.__dict__.items() if k not in params}
    # The last fit expected to take this model takes it as it is; any other, a copy.
    est.__dict__.update(state if uses == 1 else copy.deepcopy(state))
    return est


# Largest minibatch x widest layer that is fused. Above it a single fit's products are large
# enough to run near the CPU's peak on their own, and a stack was measured slower than its fits
# one by one (2 cores, AVX-512, 20,000 x 100 rows, 4 members: batch 200 x 1,024 units fused in
# 0.79x the time, 200 x 2,048 in 1.27x, 1,000 x 1,024 in 1.22x; benchmarks/bench_search.py).
FUSE_MAX_WORK = 256 * 1024


def fusable_params(est):
    """Whether this MLP's parameters let it train inside a stack: a plain MLP trained by a
    stochastic solver, with no per-epoch randomness of its own nor per-epoch output (training
    controls that act per member each epoch run in ordinary fits)."""
    return (fusable_type(est) and est.solver in ("adam", "sgd") and not est.dropout
            and not est.batch_norm and est.checkpoint_path is None and not est.verbose
            and est.scoring is None and est.learning_rate_schedule is None
            and not callbacks.watched(est))


def fusable(est, X):
    """Whether this fit can train inside a stack: :func:`fusable_params`, on dense data, and
    small enough that batching it with others pays (see FUSE_MAX_WORK)."""
    if not fusable_params(est) or sp.issparse(X):
        return False
    try:
        from ._base import hidden_layers
        n, d = _shape(X)
        width = max([d, *hidden_layers(est)])
        batch = _batch_rows(est, n)
    except (TypeError, ValueError, AttributeError, IndexError):
        return True  # invalid parameters or data: the member's own checks will say so
    return batch * width <= FUSE_MAX_WORK


def _shape(X):
    """(rows, features) of a fit's X: an array, a sparse matrix, a DataFrame or nested lists
    (ValueError where it is not 2-D)."""
    shape = X.shape if hasattr(X, "shape") else np.shape(X)
    if len(shape) != 2:
        raise ValueError(f"X has shape {shape}")
    return shape


def _batch_rows(est, n):
    """The rows of a full minibatch of ``est`` on ``n`` training samples."""
    return min(200 if est.batch_size == "auto" else int(est.batch_size), n)


@_threads.honours_limits
def _train_task(entries, fuse):
    """One joblib task: train ``entries`` [(key, est, X, y, sample_weight)], as stacks when
    ``fuse``, else one by one through their own ``fit``. Returns [(key, fitted or None, error,
    seconds, warnings)], the warnings a stack's member's fit gives, to be given when the search
    replays it (a fit alone gives its own as it trains)."""
    from . import _engine
    out = []
    if not fuse:
        for key, est, X, y, sw in entries:
            tic = time.perf_counter()
            try:
                est.fit(X, y, sample_weight=sw)
                out.append((key, est, None, time.perf_counter() - tic, []))
            except Exception as e:  # noqa: BLE001 - handed to the search's error_score
                out.append((key, None, e, time.perf_counter() - tic, []))
        return out
    groups = {}
    for key, est, X, y, sw in entries:
        tic = time.perf_counter()
        try:
            member = est._prepare_fit(X, y, sw)
        except Exception as e:  # noqa: BLE001
            out.append((key, None, e, time.perf_counter() - tic, []))
            continue
        member.seconds = time.perf_counter() - tic
        groups.setdefault(_signature(member), []).append((key, est, member))
    for group in groups.values():
        members = [m for _, _, m in group]
        try:
            _engine.train(members)
        except Exception as e:  # noqa: BLE001 - one member alone raises its own error
            if len(members) > 1:
                raise
            members[0].error = e
        for key, est, member in group:
            if member.error is not None:
                out.append((key, None, member.error, member.seconds, member.warnings))
            else:
                est._finish_fit(member)
                out.append((key, est, None, member.seconds, member.warnings))
    return out


def _signature(member):
    """What members of one stack must share (a member whose data stays on the host, too large
    for its device, trains alone)."""
    module = member.module
    if member.data.stream:
        return ("alone", id(member))
    return (tuple(tuple(w.shape) for w in module.weights), module.activation,
            member.settings.solver, member.settings.batch_size, member.data.dtype,
            str(member.data.device), type(member.loss).__name__, member.loss.report_scale)


def _group_key(est, X, y):
    """A cheap guess, before any weights are drawn, of the stack a captured fit will join
    (:func:`_signature` decides, inside the task). A fit whose parameters or data are not valid
    gets a group of its own: it trains alone, and its own checks say what is wrong."""
    try:
        return _guess_group(est, X, y)
    except (TypeError, ValueError, AttributeError, IndexError):
        return ("alone", id(est))


def _guess_group(est, X, y):
    from sklearn.base import is_classifier
    from ._data import resolve_device
    n, d = _shape(X)
    if is_classifier(est):
        y_arr = np.asarray(y)
        target = ("multilabel", y_arr.shape[1]) if y_arr.ndim == 2 else (
            "labels", len(np.unique(y_arr)))
    else:
        target = ("values", 1 if np.ndim(y) == 1 else np.shape(y)[1], est.loss)
    n_train = n - int(np.ceil(est.validation_fraction * n)) if est.early_stopping else n
    batch = _batch_rows(est, n_train)
    dtype = getattr(X, "dtype", None) == np.float32
    try:
        device = str(resolve_device(est.device))
    except (ValueError, TypeError):
        device = repr(est.device)
    return (type(est).__name__, repr(est.hidden_layer_sizes), est.activation, est.solver, d,
            target, batch, dtype, device)


def stack_nbytes(entries):
    """Bytes a stack of these fits holds on its device, at 8 bytes a value: each member's rows
    (and a shuffled copy of them), its parameters with their gradients and the solver's two
    moments, and what its steps write (each layer's outputs and deltas, and the weights'
    gradients, for a full batch and a shorter last one)."""
    from sklearn.base import is_classifier
    from ._base import hidden_layers
    total = 0
    for _, est, X, y, _ in entries:
        try:
            n, d = _shape(X)
            hidden = hidden_layers(est)
            batch = _batch_rows(est, n)
        except (TypeError, ValueError, AttributeError, IndexError):  # its fit will say why
            continue
        width = d + (np.shape(y)[1] if np.ndim(y) == 2 else 1) + 1
        total += 2 * n * width * 8
        outputs = (np.shape(y)[1] if np.ndim(y) == 2
                   else len(np.unique(y)) if is_classifier(est) else 1)
        units = [d, *hidden, outputs]
        params = sum((a + 1) * b for a, b in zip(units[:-1], units[1:]))
        total += (4 * params + 2 * (2 * batch * sum(units[1:]) + params)) * 8
    return total


# Largest stack, in bytes of stacked data (see stack_nbytes); larger groups are split.
STACK_BUDGET = 1 << 30


def plan_tasks(captured, n_tasks_hint=1):
    """Tasks from captured fits [(key, est, X, y, sw)]: stacks of the fits that can share one
    (split to stay within STACK_BUDGET, and into ``n_tasks_hint`` parts for parallel workers),
    and the rest, one task each. Returns [(entries, fuse)]."""
    groups, tasks = {}, []
    for entry in captured:
        _, est, X, y, _ = entry
        if fusable(est, X):
            groups.setdefault(_group_key(est, X, y), []).append(entry)
        else:
            tasks.append(([entry], False))
    for group in groups.values():
        parts = max(n_tasks_hint if len(group) >= 2 * n_tasks_hint else 1,
                    int(np.ceil(stack_nbytes(group) / STACK_BUDGET)))
        for chunk in np.array_split(np.arange(len(group)), min(parts, len(group))):
            tasks.append(([group[i] for i in chunk], len(chunk) > 1))
    return tasks


class FusedFits:
    """Phases 1 and 2 of a fused search, and the registry phase 3 reads (a context manager)."""

    def __init__(self):
        self.results = {}
        self.seconds = {}

    def capture(self, estimator, X, y, fit_params, candidates, splits):
        """Phase 1: fit every (candidate, fold) with the MLP intercepted. Returns the captured
        fits [(key, est, X, y, sw)] and, per key, the (candidate, split) pairs that gave it."""
        from sklearn.base import clone
        from sklearn.utils.metaestimators import _safe_split
        from sklearn.utils.validation import _check_method_params
        captured, where, seen = {}, {}, {}
        for c, params in enumerate(candidates):
            for s, (train, _) in enumerate(splits):
                est = clone(estimator).set_params(**clone(params, safe=False))
                if not fusable_type(_final_step(est)):
                    continue
                # The MLP's data depends on the fold and the steps before it only: candidates
                # that differ in the MLP's parameters alone share it (the replay checks it).
                prefix = (s, _prefix_key(est))
                if prefix[1] is not None and prefix in seen:
                    Xm, ym, sw, data = seen[prefix]
                    mlp = _final_step(est)
                    key = member_key(mlp, Xm, ym, sw, data)
                    if key is None:
                        continue
                    self.seconds[(c, s)] = 0.0
                    where.setdefault(key, []).append((c, s))
                    if key not in captured:
                        captured[key] = (key, mlp, Xm, ym, sw)
                    continue
                X_train, y_train = _safe_split(est, X, y, train)
                kwargs = _check_method_params(X, params=fit_params, indices=train)
                tic = time.perf_counter()
                outer = getattr(_LOCAL, "capture", None)  # a search within a captured fit
                _LOCAL.capture = got = []
                try:  # warnings' filters are global: left as they are (another thread's)
                    est.fit(X_train, y_train, **kwargs)
                except Exception:  # noqa: BLE001 - the replay meets the same error
                    got = []
                finally:
                    _LOCAL.capture = outer
                if len(got) != 1:
                    continue
                mlp, Xm, ym, sw = got[0]
                data = data_key(Xm, ym, sw)
                key = member_key(mlp, Xm, ym, sw, data)
                if key is None:
                    continue
                if prefix[1] is not None:
                    seen[prefix] = (Xm, ym, sw, data)
                self.seconds[(c, s)] = time.perf_counter() - tic
                where.setdefault(key, []).append((c, s))
                if key not in captured:
                    captured[key] = (key, mlp, Xm, ym, sw)
        return list(captured.values()), where

    def train(self, captured, where, n_jobs, pre_dispatch="2*n_jobs"):
        """Phase 2: the stacks and lone fits as joblib tasks (through scikit-learn's Parallel,
        which carries the caller's configuration and warning filters to the workers)."""
        from sklearn.utils.parallel import Parallel, delayed
        n_workers = joblib.effective_n_jobs(n_jobs)
        tasks = plan_tasks(captured, n_workers)
        parallel = Parallel(n_jobs=n_jobs, pre_dispatch=pre_dispatch)
        for out in parallel(delayed(_train_task)(entries, fuse) for entries, fuse in tasks):
            for key, fitted, error, seconds, given in out:
                self.results[key] = (fitted, error, len(where[key]), given)
                for pair in where[key]:
                    self.seconds[pair] = self.seconds.get(pair, 0.0) + seconds / len(where[key])

    def __enter__(self):
        with _LOCK:
            _REGISTRIES.append(self.results)
        return self

    def __exit__(self, *exc):
        with _LOCK:
            _REGISTRIES[:] = [r for r in _REGISTRIES if r is not self.results]
        return False


def _prefix_key(est):
    """A hash of what comes before the MLP: the parameters of a flat Pipeline's other steps
    ("" for a bare MLP), or None where that is not known (nested pipelines, parameters that do
    not pickle)."""
    from sklearn.pipeline import Pipeline
    if not isinstance(est, Pipeline):
        return ""
    last = est.steps[-1][0]
    if isinstance(est.steps[-1][1], Pipeline):
        return None
    params = {k: v for k, v in est.get_params(deep=True).items()
              if k != "steps" and k != last and not k.startswith(last + "__")}
    return _hash(params)


def _final_step(est):
    from sklearn.pipeline import Pipeline
    while isinstance(est, Pipeline):
        est = est.steps[-1][1]
    return est
