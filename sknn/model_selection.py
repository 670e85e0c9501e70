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
from sklearn.base import clone, is_classifier
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.pipeline import Pipeline
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
        if (not _fused.fusable_type(_fused._final_step(self.estimator))
                or self._callbacks_reach_fits()):
            return super().fit(X, y, **params)
        self._validate_params()  # before any training, as scikit-learn's fit checks them
        # In scikit-learn's order: the candidates are drawn before the splits (both may draw
        # from one RandomState).
        candidates = list(self._candidates())
        if not any(_fused.fusable_params(_fused._final_step(
                clone(self.estimator).set_params(**clone(c, safe=False)))) for c in candidates):
            return self._search(X, y, params, candidates)  # none can fuse: scikit-learn's
        X, y = indexable(X, y)
        checked = _check_method_params(X, params=params)
        routed = self._get_routed_params_for_fit(checked)
        cv = check_cv(self.cv, y, classifier=is_classifier(self.estimator))
        splits = _FixedSplits(list(cv.split(X, y, **routed.splitter.split)))
        fits = _fused.FusedFits()
        captured, where = fits.capture(self.estimator, X, y, routed.estimator.fit, candidates,
                                       splits.splits)
        fits.train(captured, where, self.n_jobs, self.pre_dispatch)
        pending = len(candidates) * len(splits.splits) - sum(len(v) for v in where.values())
        backend = "threading" if pending and joblib.effective_n_jobs(self.n_jobs) > 1 else (
            "sequential")
        self._fused_plan = (candidates, splits, fits.seconds)
        # scikit-learn's search scores the splits trained on (``cv`` may be a generator, used
        # up by now, or draw other splits when asked again)
        given_cv, self.cv = self.cv, splits
        try:
            with fits, joblib.parallel_config(backend=backend):
                return super().fit(X, y, **params)
        finally:
            self.cv = given_cv
            if getattr(self, "_checked_cv_orig", None) is splits:  # not the splits' indices
                self._checked_cv_orig = cv
            del self._fused_plan

    def _search(self, X, y, params, candidates):
        """scikit-learn's search over ``candidates`` (drawn already), untouched otherwise."""
        self._fused_plan = (candidates, None, {})
        try:
            return super().fit(X, y, **params)
        finally:
            del self._fused_plan

    def _callbacks_reach_fits(self):
        """Whether callbacks set on the search propagate down to the MLP's fits (scikit-learn's
        auto-propagated callbacks, as deep as their ``max_propagation_depth``): those fits then
        train as ordinary fits, so that the callbacks see each fit's epochs."""
        try:
            from sklearn.callback import AutoPropagatedCallback
        except ImportError:  # scikit-learn < 1.9: no callbacks
            return False
        depth, est = 1, self.estimator
        while isinstance(est, Pipeline):
            depth, est = depth + 1, est.steps[-1][1]
        return any(isinstance(cb, AutoPropagatedCallback)
                   and (cb.max_propagation_depth is None or cb.max_propagation_depth >= depth)
                   for cb in getattr(self, "_skl_callbacks", None) or ())

    def _fused_evaluate(self, evaluate_candidates):
        if self._fused_plan is None:
            return evaluate_candidates
        candidates, splits, _ = self._fused_plan

        def evaluate(candidate_params, cv=None, **kwargs):
            return evaluate_candidates(candidates, cv=cv if splits is None else splits, **kwargs)
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
