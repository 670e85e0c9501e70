"""Property-based tests: odd shapes, dtypes, labels, weights and parameters give either a
documented ValueError / TypeError or finite predictions (and probabilities summing to 1)."""

import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor  # noqa: E402

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


def _fit_or_documented_error(est, X, y, sw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est.fit(X, y, sample_weight=sw)
        except (ValueError, TypeError) as e:
            assert str(e), "errors must say what was wrong"
            return False
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
    if _fit_or_documented_error(est, X, y, sw):
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
    try:
        out = est.fit_transform(X)
    except (ValueError, TypeError) as e:
        assert channels in (2, 5) and "channels" in str(e)
        return
    assert out.shape == (n, 1280) and np.isfinite(out).all()
