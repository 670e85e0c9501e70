"""Property-based tests: odd shapes, dtypes, labels, weights and parameters give either a
documented ValueError / TypeError or finite predictions (and probabilities summing to 1).

The drawn input says which error the fit must raise (invalid parameters, too few samples to hold
out a validation set, an ambiguous image layout) and which it may raise (SGD diverging on
unscaled data; as in scikit-learn, an early-stopping hold-out whose samples all weigh zero), each
with the message that names its reason. Any other exception, a refusal of valid input, or a fit
of input that had to be refused fails the test."""

import contextlib
import math
import re
import warnings
from unittest import mock

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor, _base  # noqa: E402
from sknn._base import InvalidParameterError  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def datasets(draw, classification=True):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 9))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int64, np.uint8]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.RandomState(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    X = (rng.randn(n, d) * scale)
    X = np.abs(X).astype(dtype) if dtype == np.uint8 else X.astype(dtype)
    if classification:
        k = draw(st.integers(1, 4))
        kind = draw(st.sampled_from(["int", "str", "float_labels", "bool"]))
        y = rng.randint(0, k, n)
        y = {"int": y, "str": np.array(["a", "b", "c", "d"])[y], "float_labels": y * 1.0,
             "bool": y % 2 == 0}[kind]
    else:
        y = rng.randn(n) * draw(st.sampled_from([1e-3, 1.0, 1e3]))
    weights = draw(st.sampled_from([None, "ones", "random", "some_zero"]))
    sw = {None: None, "ones": np.ones(n), "random": rng.rand(n) + 0.1,
          "some_zero": (np.arange(n) % 3 != 0).astype(float) + (n < 3)}[weights]
    return X, y, sw


PARAMS = st.fixed_dictionaries({
    "hidden_layer_sizes": st.sampled_from([(), (3,), (5, 4)]),
    "activation": st.sampled_from(["relu", "tanh", "logistic", "identity"]),
    "solver": st.sampled_from(["adam", "sgd", "lbfgs"]),
    "alpha": st.sampled_from([0.0, 1e-4, 1.0]),
    "batch_size": st.sampled_from(["auto", 1, 7]),
    "early_stopping": st.booleans(),
    "dropout": st.sampled_from([0.0, 0.3]),
    "batch_norm": st.booleans(),
})


def _check_outputs(est, X):
    pred = est.predict(X)
    assert len(pred) == len(X)
    if hasattr(est, "predict_proba"):
        proba = est.predict_proba(X)
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-4)
    else:
        assert np.isfinite(pred).all()


# Data with a value above this (X, or a regressor's y) is unscaled: the drawn scales are 1e-3,
# 1 and 1e3, and unit-scale values stay below 5.
UNSCALED = 10


def _required_error(est, X, y):
    """The error the drawn input must raise, as (exception type, message pattern), or None
    where it is valid. Decided from the parameters and the data alone, before any fit."""
    p = est.get_params()
    if p["dropout"] and p["solver"] == "lbfgs":
        return InvalidParameterError, re.escape(
            f"dropout={p['dropout']} with solver='lbfgs': L-BFGS needs a deterministic objective")
    if p["early_stopping"] and p["solver"] != "lbfgs":
        n = X.shape[0]
        n_val = math.ceil(p["validation_fraction"] * n)  # train_test_split's test size
        if n_val == n:
            return ValueError, f"With n_samples={n}, .* the resulting train set will be empty"
        counts = np.unique(y, return_counts=True)[1]
        if est._is_clf() and len(counts) == 2:  # binary: a split stratified by class
            if counts.min() < 2:
                return ValueError, r"The least populated classes in y have only 1 member"
            if n - n_val < 2:
                return ValueError, r"The train_size = 1 should be greater or equal to the number"
            if n_val < 2:
                return ValueError, r"The test_size = 1 should be greater or equal to the number"
        if n_val < 2:
            return ValueError, "The validation set is too small. Increase 'validation_fraction'"
    return None


@contextlib.contextmanager
def _recorded_splits():
    """The early-stopping splits (train, validation) the estimator draws, as it draws them."""
    splits, split = [], _base.train_test_split

    def recording(*args, **kwargs):
        splits.append(split(*args, **kwargs))
        return splits[-1]

    with mock.patch.object(_base, "train_test_split", recording):
        yield splits


def _allowed_error(est, X, y, sw, splits, error):
    """Whether ``error``, raised by a fit of valid parameters and data, has a documented cause
    in this input: the stochastic gradient diverging on unscaled data (the error names
    learning_rate_init), or, as in scikit-learn, an early-stopping hold-out whose samples all
    weigh zero (its score is undefined)."""
    p, message = est.get_params(), str(error)
    if not isinstance(error, ValueError):
        return False
    unscaled = np.abs(X).max() > UNSCALED or (
        not est._is_clf() and np.abs(y).max() > UNSCALED)
    # Diverged: at the epoch it happened, or (with early stopping, which trains on as
    # scikit-learn does) at the end, where the weights kept are not finite.
    if (p["solver"] == "sgd" and unscaled and re.search(
            r"^Solver produced (non-finite parameter weights|parameter weights whose outputs "
            r"on the training data are not finite)\. The input data may contain large "
            r"values and need to be preprocessed\. (Training diverged: the loss became NaN or "
            r"infinite at iteration \d+\. Lower the learning rate|The learning rate may also "
            r"be too large) \(learning_rate_init=" + re.escape(f"{p['learning_rate_init']})"),
            message)):
        return True
    if (sw is not None and p["early_stopping"] and splits and sw[splits[-1][1]].sum() == 0
            and message == "Sample weights must contain at least one non-zero number."):
        return True
    return False


def _fit_or_documented_error(est, X, y, sw, required=None):
    """Fit: True where it fitted, False where the input had to be refused and was, with the
    message naming why (``required``, else :func:`_required_error`). An error the input does
    not call for, or a fit of an input that had to be refused, fails the test."""
    required = required or _required_error(est, X, y)
    with warnings.catch_warnings(), _recorded_splits() as splits:
        warnings.simplefilter("ignore")
        try:
            est.fit(X, y, sample_weight=sw)
        except Exception as e:
            if required is not None:
                kind, pattern = required
                assert isinstance(e, kind) and re.search(pattern, str(e)), (
                    f"expected {kind.__name__} matching {pattern!r}, got {e!r}")
                return False
            if _allowed_error(est, X, y, sw, splits, e):
                return False
            raise AssertionError(f"valid input refused: {e!r}") from e
    assert required is None, f"fit accepted input that must raise {required}"
    return True


@SETTINGS
@given(data=datasets(classification=True), params=PARAMS)
def test_mlp_classifier_properties(data, params):
    X, y, sw = data
    est = MLPClassifier(max_iter=5, random_state=0, device="cpu", **params)
    if _fit_or_documented_error(est, X, y, sw):
        _check_outputs(est, X)


@SETTINGS
@given(data=datasets(classification=False), params=PARAMS)
def test_mlp_regressor_properties(data, params):
    X, y, sw = data
    est = MLPRegressor(max_iter=5, random_state=0, device="cpu", **params)
    if _fit_or_documented_error(est, X, y, sw):
        _check_outputs(est, X)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("n", [1, 2, 10, 11, 12])
def test_early_stopping_refuses_exactly_the_sets_too_small_to_hold_out(Est, n):
    """The boundaries the drawn sizes cross only now and then: n=1 leaves nothing to train on,
    n <= 10 holds out a single sample (validation_fraction=0.1), n=11 holds out two: valid. (The
    classifier's binary targets are stratified: for n=2 a class has one member, for n <= 10 the
    hold-out is smaller than the number of classes; errors that scikit-learn raises too.)"""
    rng = np.random.RandomState(n)
    X, y = rng.randn(n, 3), np.arange(n) % 2
    est = Est(max_iter=2, early_stopping=True, random_state=0, device="cpu")
    assert _fit_or_documented_error(est, X, y, None) == (n > 10)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(classification=True), batch_norm=st.booleans(),
       shape=st.sampled_from(["flat", "nhw", "nhwc", "nchw"]))
def test_convnet_properties(data, batch_norm, shape):
    X, y, sw = data
    n, d = X.shape
    if shape == "nhw":
        X = X.reshape(n, 1, d)
    elif shape == "nhwc":
        X = X.reshape(n, d, 1, 1)
    elif shape == "nchw":
        X = X.reshape(n, 1, 1, d)
    est = ConvNetClassifier(conv_layers=(4,), hidden_layer_sizes=(4,), max_iter=3,
                            batch_norm=batch_norm, random_state=0, device="cpu")
    # (n, d, 1, 1) and (n, 1, 1, d) are told apart by data_format='auto' only where d > 4.
    ambiguous = shape in ("nhwc", "nchw") and d <= 4
    required = (ValueError, r"Cannot tell where the channels are in X with images of shape "
                r".*: pass data_format='channels_last'") if ambiguous else None
    if _fit_or_documented_error(est, X, y, sw, required):
        _check_outputs(est, X)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5), h=st.integers(1, 12), w=st.integers(1, 12),
       channels=st.sampled_from([None, 1, 2, 3, 4, 5]),
       dtype=st.sampled_from([np.uint8, np.float32, np.float64]), seed=st.integers(0, 99))
def test_feature_extractor_properties(n, h, w, channels, dtype, seed):
    pytest.importorskip("timm")
    from sknn import PretrainedFeatureExtractor
    rng = np.random.RandomState(seed)
    shape = (n, h, w) if channels is None else (n, h, w, channels)
    X = rng.randint(0, 256, shape).astype(dtype)
    if dtype != np.uint8:
        X /= 255
    est = PretrainedFeatureExtractor(input_size=32, device="cpu",
                                     data_format="channels_last")
    if channels in (2, 5):
        with pytest.raises(ValueError, match=rf"X has images with {channels} channels: expected "
                                             r"1 \(gray\), 3 \(RGB\) or 4 \(RGBA\)"):
            est.fit(X)
        return
    out = est.fit_transform(X)
    assert out.shape == (n, 1280) and np.isfinite(out).all()
