"""ONNX export (sknn.onnx, the `onnx` extra): ONNX Runtime's outputs match sknn's."""

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

pytest.importorskip("skl2onnx")
rt = pytest.importorskip("onnxruntime")

import sknn.onnx  # noqa: E402  (registers the converters)
from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

TOL = 1e-4


def run(onx, X):
    sess = rt.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: X})


def assert_labels_match(labels, expected, proba):
    """Equal labels, except where the two top probabilities lie within TOL."""
    top2 = np.sort(proba, axis=1)[:, -2:] if proba.ndim == 2 and proba.shape[1] > 1 else None
    close = np.zeros(len(labels), bool) if top2 is None else (top2[:, 1] - top2[:, 0]) < TOL
    assert np.array_equal(np.asarray(labels)[~close], np.asarray(expected)[~close])


@pytest.fixture(scope="module")
def data(digits):
    X, _, y, _ = digits
    return X[:400].astype(np.float32), y[:400]


@pytest.mark.parametrize("target", ["multiclass", "binary", "strings", "multilabel"])
@pytest.mark.parametrize("params", [dict(activation="relu"), dict(activation="tanh"),
                                    dict(activation="logistic"), dict(activation="identity"),
                                    dict(batch_norm=True, dropout=0.3)])
def test_classifier_matches_onnx_runtime(data, target, params):
    X, y = data
    y = {"multiclass": y, "binary": (y > 4).astype(int), "strings": np.array(list("abc"))[y % 3],
         "multilabel": np.stack([y > 4, y % 2 == 0, y == 3], 1).astype(int)}[target]
    clf = MLPClassifier((24, 12), max_iter=4, random_state=0, **params).fit(X, y)
    labels, proba = run(sknn.onnx.to_onnx(clf, X[:1], options={"zipmap": False}), X)
    expected = clf.predict_proba(X)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=TOL)
    assert_labels_match(labels, clf.predict(X), expected)


def test_pipeline_with_zipmap_default_and_float64_input(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), MLPClassifier((32,), max_iter=5, random_state=0))
    pipe.fit(X, y)
    labels, proba = run(sknn.onnx.to_onnx(pipe, X[:1]), X)  # zipmap: a dict per row
    expected = pipe.predict_proba(X)
    got = np.array([[row[c] for c in pipe.classes_] for row in proba])
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    assert_labels_match(labels, pipe.predict(X), expected)
    # float64 input: the graph computes in float64 (the float32 weights widened)
    X64 = X.astype(np.float64)
    labels, proba = run(sknn.onnx.to_onnx(pipe, X64[:1], options={"zipmap": False}), X64)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, pipe.predict_proba(X64), rtol=0, atol=TOL)


@pytest.mark.parametrize("params,outputs", [(dict(), 1), (dict(), 2), (dict(loss="poisson"), 1),
                                            (dict(batch_norm=True, activation="tanh"), 2)])
def test_regressor_matches_onnx_runtime(diabetes, params, outputs):
    X, y = diabetes
    X = X.astype(np.float32)
    y = np.exp(y / 2) if params.get("loss") == "poisson" else y  # the fixture's is standardised
    y = y if outputs == 1 else np.stack([y, y / 3], 1)
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=20, random_state=0, **params).fit(X, y)
    (pred,) = run(sknn.onnx.to_onnx(reg, X[:1]), X)
    expected = reg.predict(X)
    assert pred.shape == (len(X), outputs)
    np.testing.assert_allclose(pred.reshape(expected.shape), expected, rtol=0,
                               atol=TOL * max(1.0, np.abs(expected).max()))


def test_what_cannot_be_converted_says_so(data):
    X, y = data
    with pytest.raises(ValueError, match="is not fitted"):
        sknn.onnx.to_onnx(MLPClassifier(), X[:1])
    images = X.reshape(-1, 8, 8)
    conv = ConvNetClassifier(conv_layers=(4,), hidden_layer_sizes=(8,), max_iter=1,
                             random_state=0).fit(images[:50], y[:50])
    with pytest.raises(NotImplementedError, match="ConvNetClassifier cannot be converted"):
        sknn.onnx.to_onnx(conv, images[:1])
