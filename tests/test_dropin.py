"""Where sknn follows scikit-learn's MLPs to the letter: assignable coefs_ / intercepts_, the
non-finite weights error, the binary early-stopping split and its errors, and a loss that
diverges under early stopping."""

import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

import sknn
from sknn import MLPClassifier, MLPRegressor, _fused
from conftest import needs_sklearn

SKLEARN_NONFINITE = ("Solver produced non-finite parameter weights. The input data may contain "
                     "large values and need to be preprocessed.")


def _fitted(Est=MLPClassifier, dtype=np.float64, **params):
    rng = np.random.RandomState(0)
    X = rng.randn(60, 4).astype(dtype)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0) if Est is MLPClassifier else X @ [1, 2, 3, 4]
    params = dict(hidden_layer_sizes=(5, 3), max_iter=3, random_state=0, device="cpu", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return Est(**params).fit(X, y), X


def _forward(coefs, intercepts, X, out):
    """The MLP's output from its arrays, in numpy: relu hidden layers, then ``out``."""
    h = X
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        h = h @ w + b
        if i < len(coefs) - 1:
            h = np.maximum(h, 0)
    return out(h)


def _random_like(arrays, seed):
    rng = np.random.RandomState(seed)
    return [rng.randn(*a.shape) for a in arrays]


# --- assigning coefs_ and intercepts_ -----------------------------------------------------------


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_assigned_parameters_are_the_network(Est):
    est, X = _fitted(Est)
    coefs, intercepts = _random_like(est.coefs_, 1), _random_like(est.intercepts_, 2)
    est.coefs_ = coefs
    est.intercepts_ = tuple(intercepts)
    for a, b in zip(est.coefs_ + est.intercepts_, coefs + intercepts):
        np.testing.assert_array_equal(a, b)
    if Est is MLPClassifier:
        def softmax(z):
            e = np.exp(z - z.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)
        got, want = est.predict_proba(X), _forward(coefs, intercepts, X, softmax)
    else:
        got, want = est.predict(X), _forward(coefs, intercepts, X, np.ravel)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_assignment_keeps_dtype_and_state_out_of_dict(tmp_path):
    est, X = _fitted(dtype=np.float32)
    params = est.get_params()
    est.coefs_ = _random_like(est.coefs_, 3)
    assert est.coefs_[0].dtype == np.float32 and est.module_.weights[0].dtype.is_floating_point
    assert "coefs_" not in est.__dict__ and "intercepts_" not in est.__dict__
    assert est.get_params() == params and clone(est).get_params() == params
    for copy in (pickle.loads(pickle.dumps(est)), sknn.load(_saved(est, tmp_path))):
        for a, b in zip(copy.coefs_, est.coefs_):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))


def _saved(est, tmp_path):
    path = tmp_path / "model.sknn"
    sknn.save(est, path)
    return path


def test_non_finite_values_are_accepted():
    est, X = _fitted(MLPRegressor)
    coefs = est.coefs_
    coefs[-1][0, 0] = np.nan
    est.coefs_ = coefs
    assert np.isnan(est.coefs_[-1][0, 0]) and np.isnan(est.predict(X)).all()


@pytest.mark.parametrize("name, value, error, pattern", [
    ("coefs_", lambda c: c[:2], ValueError,
     r"coefs_ must have 3 arrays, one per layer, of shapes \[\(4, 5\), \(5, 3\), \(3, 3\)\]; "
     r"got 2\."),
    ("coefs_", lambda c: [c[0], c[1].T, c[2]], ValueError,
     r"coefs_\[1\] \(layer 1 to 2\) must have shape \(5, 3\); got \(3, 5\)\."),
    ("intercepts_", lambda c: [np.zeros(5), np.zeros(3), np.zeros((3, 1))], ValueError,
     r"intercepts_\[2\] \(layer 2 to 3\) must have shape \(3,\); got \(3, 1\)\."),
    ("coefs_", lambda c: np.zeros((3, 4, 5)), TypeError,
     r"coefs_ must be a list of 3 arrays, one per layer, .*; got a ndarray\."),
    ("intercepts_", lambda c: [np.zeros(5), "abc", np.zeros(3)], TypeError,
     r"intercepts_\[1\] \(layer 1 to 2\) must be an array of numbers of shape \(3,\); "
     r"got str\."),
])
def test_wrong_assignments_say_what_was_expected(name, value, error, pattern):
    est, _ = _fitted()
    before = est.coefs_ + est.intercepts_
    with pytest.raises(error, match=pattern):
        setattr(est, name, value(est.coefs_))
    for a, b in zip(est.coefs_ + est.intercepts_, before):  # nothing written
        np.testing.assert_array_equal(a, b)


def test_assignment_before_fit_says_to_fit_first():
    with pytest.raises(NotFittedError, match="fit it before assigning intercepts_"):
        MLPRegressor().intercepts_ = [np.zeros(3)]


# --- non-finite weights: scikit-learn's message -------------------------------------------------


def _huge():
    rng = np.random.RandomState(0)
    return np.finfo(np.float64).max * rng.uniform(size=(10, 2)), rng.standard_normal(size=10)


def test_non_finite_weights_raise_sklearns_message():
    X, y = _huge()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="^" + re.escape(SKLEARN_NONFINITE)
                           + " Training diverged"):
            MLPRegressor(device="cpu").fit(X, y)


def test_huge_input_under_early_stopping_ends_with_the_initial_weights():
    """As scikit-learn: every epoch's loss and score are NaN (or infinite), none improves, and
    the initial weights, finite, are restored."""
    X, y = _huge()
    params = dict(early_stopping=True, validation_fraction=0.2, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = MLPRegressor(device="cpu", **params).fit(X, y)
        theirs = SkMLPRegressor(**params).fit(X, y)
    assert np.isnan(ours.validation_scores_).all() and not np.isfinite(ours.loss_curve_).any()
    assert np.isnan(theirs.validation_scores_).all()
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_array_equal(a, b)  # the same initial weights, restored


# --- the early-stopping split -------------------------------------------------------------------


@needs_sklearn("1.8", "its stratification error lists the classes from 1.8")
def test_binary_class_of_one_member_raises_sklearns_error():
    X, y = [[1, 2], [2, 3], [3, 4], [4, 5]], ["a", "a", "a", "b"]
    with pytest.raises(ValueError, match=r"The least populated classes in y have only 1 member"
                                         r".*Classes with too few members are: \['True'\]"):
        MLPClassifier(early_stopping=True, device="cpu").fit(X, y)


def test_multiclass_class_of_one_member_still_fits():
    """scikit-learn does not stratify multiclass targets (so does not raise); sknn stratifies
    them where it can, and otherwise splits as scikit-learn does."""
    rng = np.random.RandomState(0)
    X, y = rng.randn(40, 3), np.r_[np.zeros(20), np.ones(19), 2]
    clf = MLPClassifier(early_stopping=True, max_iter=2, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    assert len(clf.validation_scores_) == 2


@needs_sklearn("1.9", "its early stopping fails on string labels before 1.9")
def test_binary_split_and_scores_are_sklearns():
    rng = np.random.RandomState(0)
    X = rng.randn(80, 4)
    y = np.where(X[:, 0] + 0.5 * rng.randn(80) > 0.8, "yes", "no")
    params = dict(early_stopping=True, hidden_layer_sizes=(6,), max_iter=6, random_state=3,
                  validation_fraction=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(device="cpu", **params).fit(X, y)
        theirs = SkMLPClassifier(**params).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12)
    np.testing.assert_array_equal(ours.validation_scores_, theirs.validation_scores_)


# --- a loss that diverges under early stopping --------------------------------------------------


def _diverging(**params):
    return MLPRegressor(**{**dict(hidden_layer_sizes=(20,), activation="identity", solver="sgd",
                                  learning_rate_init=1.0, max_iter=12, random_state=0,
                                  device="cpu"), **params})


def _iris_like():
    rng = np.random.RandomState(0)
    X = rng.rand(150, 4) * [8, 4, 7, 2.5]
    return X, X @ [0.2, -0.1, 0.3, 0.5]


def test_diverging_loss_with_early_stopping_records_nan_scores():
    X, y = _iris_like()
    est = _diverging(early_stopping=True)
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(12\)"):
        est.fit(X, y)
    scores = est.validation_scores_
    assert len(scores) == len(est.loss_curve_) == est.n_iter_ == 12
    assert all(isinstance(s, float) for s in scores) and np.isnan(scores[-1])
    assert np.isnan(est.loss_) and est.best_validation_score_ == np.nanmax(scores)
    assert np.isfinite(est.predict(X)).all()  # the best epoch's weights, restored


def test_diverging_loss_without_early_stopping_raises():
    X, y = _iris_like()
    with pytest.raises(ValueError, match="^" + re.escape(SKLEARN_NONFINITE)
                       + r" Training diverged: the loss became NaN or infinite at iteration \d+\. "
                         r"Lower the learning rate \(learning_rate_init=1\.0\)"):
        _diverging().fit(X, y)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_a_diverging_member_does_not_stop_its_stack(early_stopping):
    X, y = _iris_like()
    bad, good = (_diverging(early_stopping=early_stopping, learning_rate_init=rate)
                 for rate in (1.0, 1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        out = dict((key, (fitted, error)) for key, fitted, error, *_ in _fused._train_task(
            [("bad", bad, X, y, None), ("good", good, X, y, None)], True))
        alone = clone(good).fit(X, y)
    fitted, error = out["good"]
    assert error is None and fitted.n_iter_ == 12
    np.testing.assert_allclose(fitted.loss_curve_, alone.loss_curve_, rtol=1e-10)
    fitted, error = out["bad"]
    if early_stopping:
        assert error is None and np.isnan(fitted.validation_scores_[-1])
        assert np.isfinite(fitted.predict(X)).all()
    else:
        assert fitted is None and str(error).startswith(SKLEARN_NONFINITE)


@pytest.mark.parametrize("how", ["warm_start", "partial_fit"])
def test_a_continued_fit_takes_the_activation_set_now(how):
    """scikit-learn's MLP reads its activation at every pass: a warm-started fit or a
    partial_fit after set_params(activation=...) trains and predicts with the new one."""
    from sklearn.datasets import load_iris
    X, y = load_iris(return_X_y=True)
    probas = []
    for Est in (MLPClassifier, SkMLPClassifier):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m = Est(hidden_layer_sizes=(5,), max_iter=5, random_state=0,
                    warm_start=how == "warm_start").fit(X, y)
            m.set_params(activation="tanh")
            m.fit(X, y) if how == "warm_start" else m.partial_fit(X, y)
        probas.append(m.predict_proba(X))
    np.testing.assert_allclose(*probas, atol=1e-12)


def test_a_continued_fit_with_other_outputs_says_so():
    est, X = _fitted(MLPRegressor)
    with pytest.raises(ValueError, match="y has 2 output"):
        est.partial_fit(X, np.c_[X[:, 0], X[:, 1]])
    with pytest.raises(ValueError, match="y has 2 output"):
        est.set_params(warm_start=True).fit(X, np.c_[X[:, 0], X[:, 1]])


def test_coefs_edited_in_place_change_the_network():
    """scikit-learn's idiom for pruning a unit: its arrays are the model, and so are sknn's."""
    est, X = _fitted()
    before = est.predict_proba(X)
    est.coefs_[0][:, 0] = 0  # the first hidden unit gets no input...
    est.intercepts_[0][0] = 0  # ...nor bias
    assert not est.coefs_[0][:, 0].any() and est.intercepts_[0][0] == 0
    coefs, intercepts = est.coefs_, est.intercepts_
    want = _forward(coefs, intercepts, X, lambda z: np.exp(z - z.max(1, keepdims=True)))
    np.testing.assert_allclose(est.predict_proba(X), want / want.sum(1, keepdims=True),
                               rtol=1e-12)
    assert not np.allclose(est.predict_proba(X), before)
    est.coefs_[1] = np.zeros_like(coefs[1])  # setting an item loads it
    assert not est.coefs_[1].any()
    with pytest.raises(ValueError, match=r"coefs_\[1\] .* must have shape"):
        est.coefs_[1] = np.zeros((2, 2))
    # a list of the network's own arrays, reordered, is read before any layer is written
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(5, 5), max_iter=3, random_state=0).fit(
            X, X[:, 0] > 0)
    b = est.intercepts_
    first, second = b[0].copy(), b[1].copy()
    est.intercepts_ = [b[1], b[0], b[2]]
    np.testing.assert_array_equal(est.intercepts_[0], second)
    np.testing.assert_array_equal(est.intercepts_[1], first)


def test_a_continued_fit_that_fails_leaves_the_network_as_it_was():
    est, X = _fitted()
    before = est.predict_proba(X)
    est.set_params(warm_start=True, activation="tanh", early_stopping=True,
                   validation_fraction=0.01)
    with pytest.raises(ValueError, match="validation set is too small"):
        est.fit(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    np.testing.assert_array_equal(est.predict_proba(X), before)


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_a_continued_fit_on_another_device_moves_the_network_there(solver, monkeypatch):
    """A model fitted on one device and continued on another (device= changed, or a GPU
    model loaded on a CPU) trains where it is asked to: the network and its solver state
    move first, whatever the solver."""
    from sknn import _base
    est, X = _fitted(solver=solver)
    moved = []

    class Moved(Exception):
        pass

    def move(self, device):
        moved.append(device)
        raise Moved  # where the move happens: the rest would need that device

    monkeypatch.setattr(_base.BaseNeuralNetwork, "_move_to", move)
    monkeypatch.setattr(_base, "resolve_device", lambda device: torch.device("meta"))
    with pytest.raises(Moved):
        est.set_params(warm_start=True).fit(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    assert moved == [torch.device("meta")]
