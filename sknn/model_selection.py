"""GridSearchCV and RandomizedSearchCV that train sknn MLPs of one network shape together.

Drop-in replacements for scikit-learn's: same parameters, fitted attributes and behaviours
(``cv_results_``, scoring, refit, ``error_score``, routing, callbacks). When the estimator is an
sknn ``MLPClassifier`` / ``MLPRegressor``, alone or as a Pipeline's last step, every
(candidate, fold) fit that can share a network with others trains in one stacked network (see
``sknn._fused``); each ends with the model its own fit would give, and everything else runs
through scikit-learn's own search code.
"""

from inspect import signature

import joblib
from sklearn import model_selection as _sk
from sklearn.base import is_classifier
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.utils.validation import _check_method_params, indexable

from . import _fused

__all__ = ["GridSearchCV", "RandomizedSearchCV"]

_TAKES_CALLBACKS = "callback_ctx" in signature(_sk.GridSearchCV._run_search).parameters


class _FixedSplits:
    """The splits a fused search trained on, handed to scikit-learn's search to score them."""

    def __init__(self, splits):
        self.splits = splits

    def split(self, X=None, y=None, groups=None, **kwargs):
        yield from self.splits

    def get_n_splits(self, X=None, y=None, groups=None, **kwargs):
        return len(self.splits)


class _FusedSearchMixin:
    """What both searches add to scikit-learn's: fit trains the fusable fits first."""

    _fused_plan = None

    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters, training the sknn MLP fits that share a network
        shape as stacks (see the module's docstring). Parameters as scikit-learn's
        ``fit``; ``cv_results_``'s fit times of fused fits are each fit's share of its stack's
        time plus its own steps outside the stack (see the README)."""
        if not _fused.fusable_type(_fused._final_step(self.estimator)):
            return super().fit(X, y, **params)
        X, y = indexable(X, y)
        checked = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(checked)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = list(cv.split(X, y, **routed.splitter.split))
        candidates = list(self._candidates())
        fits = _fused.FusedFits()
        captured, where = fits.capture(self.estimator, X, y, routed.estimator.fit, candidates,
                                       splits)
        fits.train(captured, where, self.n_jobs, self.pre_dispatch)
        pending = len(candidates) * len(splits) - sum(len(v) for v in where.values())
        backend = "threading" if pending and joblib.effective_n_jobs(self.n_jobs) > 1 else (
            "sequential")
        self._fused_plan = (candidates, _FixedSplits(splits), fits.seconds)
        try:
            with fits, joblib.parallel_config(backend=backend):
                return super().fit(X, y, **params)
        finally:
            del self._fused_plan

    def _fused_evaluate(self, evaluate_candidates):
        if self._fused_plan is None:
            return evaluate_candidates
        candidates, splits, _ = self._fused_plan

        def evaluate(candidate_params, cv=None, **kwargs):
            return evaluate_candidates(candidates, cv=splits, **kwargs)
        return evaluate

    if _TAKES_CALLBACKS:
        def _run_search(self, evaluate_candidates, *, callback_ctx=None):
            return super()._run_search(self._fused_evaluate(evaluate_candidates),
                                       callback_ctx=callback_ctx)
    else:  # scikit-learn < 1.9
        def _run_search(self, evaluate_candidates):
            return super()._run_search(self._fused_evaluate(evaluate_candidates))

    def _format_results(self, candidate_params, n_splits, out, more_results=None):
        if self._fused_plan is not None:
            seconds = self._fused_plan[2]
            for i, result in enumerate(out):
                result["fit_time"] += seconds.get(divmod(i, n_splits), 0.0)
        return super()._format_results(candidate_params, n_splits, out, more_results)


class GridSearchCV(_FusedSearchMixin, _sk.GridSearchCV):
    __doc__ = """Exhaustive search over a parameter grid, as :class:`sklearn.model_selection.GridSearchCV`,
    with the fits of sknn MLPs that share a network shape trained as one stacked network.

    Same parameters, attributes and methods as scikit-learn's. Fits that cannot be fused
    (``solver='lbfgs'``, ``dropout``, ``batch_norm``, ``checkpoint_path``, ``verbose``, sparse
    input, other estimators) run as ordinary fits, with identical results.
    """

    def _candidates(self):
        return ParameterGrid(self.param_grid)


class RandomizedSearchCV(_FusedSearchMixin, _sk.RandomizedSearchCV):
    __doc__ = """Randomized search over parameters, as
    :class:`sklearn.model_selection.RandomizedSearchCV`, with the fits of sknn MLPs that share a
    network shape trained as one stacked network (see :class:`GridSearchCV`).
    """

    def _candidates(self):
        return ParameterSampler(self.param_distributions, self.n_iter,
                                random_state=self.random_state)
