"""Learning-rate schedules for the stochastic solvers ('adam' and 'sgd'), the values of the
``learning_rate_schedule`` parameter.

A schedule gives, for each epoch, a factor of ``learning_rate_init``: the rate of that epoch is
``learning_rate_init * factor``. It changes the rate between epochs, never within one, and the
rates used are recorded in ``learning_rate_curve_``. The parameter accepts:

- ``'cosine'`` or :class:`CosineAnnealing` (linear warm-up, then a cosine decay);
- ``'plateau'`` or :class:`ReduceOnPlateau` (cut the rate when the watched value stalls);
- a callable ``f(epoch) -> factor`` (``epoch`` counts from 0), as PyTorch's ``LambdaLR``.

scikit-learn's own ``learning_rate`` parameter ('constant', 'invscaling', 'adaptive') keeps
its meaning (it drives solver='sgd' only); a schedule requires ``learning_rate='constant'``.
A fit works on its own copy of the schedule: the parameter itself is never changed.
"""

import copy
import math
import numbers

__all__ = ["CosineAnnealing", "ReduceOnPlateau"]


class CosineAnnealing:
    """Linear warm-up over ``warmup`` epochs, then a cosine decay to ``min_factor`` at epoch
    ``period`` (None: the fit's ``max_iter``), held there afterwards.

    Factor of epoch ``e`` (from 0): ``(e + 1) / (warmup + 1)`` during the warm-up, then
    ``min_factor + (1 - min_factor) * (1 + cos(pi * (e - warmup) / (period - warmup))) / 2``.
    """

    def __init__(self, warmup=0, min_factor=0.0, period=None):
        self.warmup = warmup
        self.min_factor = min_factor
        self.period = period

    def __repr__(self):
        return (f"CosineAnnealing(warmup={self.warmup!r}, min_factor={self.min_factor!r}, "
                f"period={self.period!r})")

    def _check(self, max_iter):
        _check_number(self, "warmup", int, 0)
        _check_number(self, "min_factor", numbers.Real, 0.0, 1.0)
        if self.period is not None:
            _check_number(self, "period", int, 1)
        period = max_iter if self.period is None else self.period
        if self.warmup >= period:
            raise ValueError(f"CosineAnnealing: warmup={self.warmup} must be smaller than the "
                             f"period ({period} epochs): no epoch would be left to decay.")
        return period

    def start(self, max_iter):
        """A running copy for one fit of at most ``max_iter`` epochs."""
        return _Running(self, self._check(max_iter))

    def factor(self, epoch, period):
        if epoch < self.warmup:
            return (epoch + 1) / (self.warmup + 1)
        if epoch >= period:
            return float(self.min_factor)
        progress = (epoch - self.warmup) / (period - self.warmup)
        return self.min_factor + (1 - self.min_factor) * (1 + math.cos(math.pi * progress)) / 2


class ReduceOnPlateau:
    """Multiply the rate by ``factor`` when the value watched has not improved by more than
    ``threshold`` for ``patience`` consecutive epochs (then wait ``cooldown`` epochs before
    counting again); never below ``min_factor`` of ``learning_rate_init``.

    The value watched is the one the stopping rule watches: the validation score with
    ``early_stopping=True``, else the training loss. ``threshold=None`` takes the estimator's
    ``tol``. Keep ``patience`` below ``n_iter_no_change`` (default 10), or training stops
    before the rate is ever cut.
    """

    def __init__(self, factor=0.2, patience=5, threshold=None, cooldown=0, min_factor=1e-4):
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.cooldown = cooldown
        self.min_factor = min_factor

    def __repr__(self):
        return (f"ReduceOnPlateau(factor={self.factor!r}, patience={self.patience!r}, "
                f"threshold={self.threshold!r}, cooldown={self.cooldown!r}, "
                f"min_factor={self.min_factor!r})")

    def start(self, max_iter):
        _check_number(self, "factor", numbers.Real, 0.0, 1.0, open_=True)
        _check_number(self, "patience", int, 0)
        _check_number(self, "cooldown", int, 0)
        _check_number(self, "min_factor", numbers.Real, 0.0, 1.0)
        if self.threshold is not None:
            _check_number(self, "threshold", numbers.Real, 0.0)
        return _Running(self, None)


def _check_number(schedule, name, kind, low, high=None, open_=False):
    value = getattr(schedule, name)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok:
        ok = value >= low and (high is None or value <= high) and not (
            open_ and value in (low, high))
    if not ok:
        what = "an int" if kind is int else "a number"
        bounds = f" in {'(' if open_ else '['}{low}, {high}{')' if open_ else ']'}" if (
            high is not None) else f" >= {low}"
        raise ValueError(f"{type(schedule).__name__}: {name} must be {what}{bounds}, got "
                         f"{value!r}.")


class _Running:
    """A schedule during one fit: the epoch count and, for ReduceOnPlateau, the current factor
    and its counters. Its state goes into checkpoints (:meth:`state_dict`), so that a resumed
    fit continues the schedule exactly."""

    def __init__(self, schedule, period):
        self.schedule, self.period = schedule, period
        self.epoch = 0
        self.current = 1.0          # ReduceOnPlateau: the factor now
        self.best = None            # ... the best value watched so far (higher is better)
        self.bad_epochs = 0
        self.cooldown_left = 0

    def factor(self):
        """The factor of the epoch about to run."""
        s = self.schedule
        if isinstance(s, CosineAnnealing):
            return s.factor(self.epoch, self.period)
        if isinstance(s, ReduceOnPlateau):
            return self.current
        value = s(self.epoch)
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (
                math.isfinite(value) and value > 0):
            raise ValueError(f"learning_rate_schedule({self.epoch}) returned {value!r}: a "
                             "schedule callable must return a positive, finite factor of "
                             "learning_rate_init.")
        return float(value)

    def epoch_ends(self, watched, tol):
        """Count the epoch that ran; ``watched``: the value the stopping rule watches this
        epoch, higher is better (a validation score, or minus the training loss)."""
        self.epoch += 1
        s = self.schedule
        if not isinstance(s, ReduceOnPlateau) or watched != watched:  # NaN: no information
            return
        threshold = tol if s.threshold is None else s.threshold
        if self.best is None or watched > self.best + threshold:
            self.best, self.bad_epochs = watched, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        elif self.bad_epochs >= s.patience:
            self.current = max(self.current * s.factor, s.min_factor)
            self.bad_epochs, self.cooldown_left = 0, s.cooldown

    def state_dict(self):
        return {"epoch": self.epoch, "current": self.current, "best": self.best,
                "bad_epochs": self.bad_epochs, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state):
        self.epoch, self.current = int(state["epoch"]), float(state["current"])
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs, self.cooldown_left = int(state["bad_epochs"]), int(state["cooldown_left"])


def start(schedule, max_iter):
    """The running schedule of a fit for the ``learning_rate_schedule`` parameter (None: no
    schedule). The parameter is copied, never changed."""
    if schedule is None:
        return None
    if isinstance(schedule, str):
        if schedule == "cosine":
            return CosineAnnealing().start(max_iter)
        if schedule == "plateau":
            return ReduceOnPlateau().start(max_iter)
        raise ValueError(f"learning_rate_schedule must be None, 'cosine', 'plateau', a "
                         f"CosineAnnealing or ReduceOnPlateau, or a callable of the epoch; got "
                         f"{schedule!r}.")
    if isinstance(schedule, (CosineAnnealing, ReduceOnPlateau)):
        return copy.deepcopy(schedule).start(max_iter)
    if callable(schedule):
        return _Running(schedule, None)
    raise TypeError(f"learning_rate_schedule must be None, 'cosine', 'plateau', a "
                    f"CosineAnnealing or ReduceOnPlateau, or a callable of the epoch; got "
                    f"{type(schedule).__name__}.")
