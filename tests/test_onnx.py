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


def assert_classifier_matches(model, X):
    """ONNX Runtime's probabilities match ``model.predict_proba`` and its labels ``predict``;
    returns both probabilities."""
    labels, proba = run(sknn.onnx.to_onnx(model, X[:1], options={"zipmap": False}), X)
    expected = model.predict_proba(X)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=TOL)
    assert_labels_match(labels, model.predict(X), expected)
    return proba, expected


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
    assert_classifier_matches(MLPClassifier((24, 12), max_iter=4, random_state=0,
                                            **params).fit(X, y), X)


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


def _images(X, layout):
    images = X.reshape(-1, 8, 8)
    return {"gray": images, "float64": images.astype(np.float64), "flat": X,
            "uint8 channels last": (images[..., None] * 255).astype(np.uint8),
            "rgb channels first": np.stack([images, images[:, ::-1], images ** 2], axis=1),
            "rgb channels last": np.stack([images, images[:, ::-1], images ** 2], axis=3)}[layout]


@pytest.mark.parametrize("layout", ["gray", "float64", "flat", "uint8 channels last",
                                    "rgb channels first", "rgb channels last"])
@pytest.mark.parametrize("target", ["multiclass", "binary", "strings"])
def test_convnet_matches_onnx_runtime(data, layout, target):
    X, y = data
    X, y = X[:120], y[:120]
    y = {"multiclass": y, "binary": y > 4, "strings": np.array(list("abc"))[y % 3]}[target]
    images = _images(X, layout)
    params = dict(batch_norm=True, dropout=0.2) if target == "binary" else {}
    clf = ConvNetClassifier(conv_layers=(4, 8), hidden_layer_sizes=(16,), max_iter=2,
                            random_state=0, **params).fit(images, y)
    proba, expected = assert_classifier_matches(clf, images)
    assert proba.dtype == expected.dtype


@pytest.fixture(scope="module")
def photos():
    pytest.importorskip("timm")
    # larger than the model's 224 x 224: the antialiased resize shrinks them
    return np.random.RandomState(0).randint(0, 256, size=(6, 256, 300, 3)).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_default_feature_extractor_matches_onnx_runtime(photos, dtype):
    from sknn import PretrainedFeatureExtractor
    X = photos if dtype == np.uint8 else photos.astype(np.float32) / 255
    fe = PretrainedFeatureExtractor(device="cpu").fit(X)
    (features,) = run(sknn.onnx.to_onnx(fe, X[:1]), X)  # the resize to 224 x 224 inside
    expected = fe.transform(X)
    assert features.shape == expected.shape == (6, 1280)
    np.testing.assert_allclose(features, expected, rtol=0, atol=TOL * np.abs(expected).max())


def test_extractor_pipeline_matches_onnx_runtime(photos):
    from sklearn.linear_model import LogisticRegression

    from sknn import PretrainedFeatureExtractor
    y = np.array([0, 1, 0, 1, 0, 1])
    pipe = make_pipeline(PretrainedFeatureExtractor(device="cpu"), StandardScaler(),
                         LogisticRegression()).fit(photos, y)
    assert_classifier_matches(pipe, photos)


def test_what_cannot_be_converted_says_so(data):
    X, y = data
    with pytest.raises(ValueError, match="is not fitted"):
        sknn.onnx.to_onnx(MLPClassifier(), X[:1])
    images = X[:50].reshape(-1, 8, 8)
    conv = ConvNetClassifier(conv_layers=(4,), hidden_layer_sizes=(8,), max_iter=1,
                             random_state=0).fit(images, y[:50])
    with pytest.raises(ValueError, match="opset 18 or later"):
        sknn.onnx.to_onnx(conv, images[:1], target_opset=17)
