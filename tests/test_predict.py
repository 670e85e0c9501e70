"""Inference (sknn._predict): batch invariance bit for bit, predictions that follow the module's
parameters, thread safety, bounded blocks, memmaps, and the validation fast path."""

import threading
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import make_classification

from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor, _predict

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N_ROWS = 300
# Batches that start and end inside chunks (of _predict.CHUNK_ROWS = 16 rows) and across them.
PIECES = [(0, 1), (1, 2), (2, 17), (17, 33), (33, 48), (48, 49), (49, 115), (115, N_ROWS)]
ALONE = [0, 1, 14, 15, 16, 17, 31, 32, 33, 47, 48, 100, 287, N_ROWS - 1]


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(n_samples=N_ROWS, n_features=12, n_informative=8, n_classes=3,
                               random_state=0)
    return X, y


def _model(kind, X, y):
    kw = dict(hidden_layer_sizes=(20, 7), max_iter=3, random_state=0, device="cpu")
    X32 = X.astype(np.float32)
    if kind == "float32":
        return MLPClassifier(**kw).fit(X32, y), X32
    if kind == "float64":
        return MLPClassifier(**kw).fit(X, y), X
    if kind == "logistic-binary":
        return MLPClassifier(activation="logistic", **kw).fit(X32, y > 0), X32
    if kind == "tanh-multilabel":
        Y = np.c_[y == 0, y == 1, y == 2, X[:, 0] > 0].astype(int)
        return MLPClassifier(activation="tanh", **kw).fit(X32, Y), X32
    if kind == "batch_norm-dropout":
        return MLPClassifier(batch_norm=True, dropout=0.2, **kw).fit(X32, y), X32
    if kind == "poisson":
        return MLPRegressor(loss="poisson", **kw).fit(X32, np.abs(X[:, 0]) + y), X32
    if kind == "regressor-float64":
        return MLPRegressor(**kw).fit(X, np.c_[X[:, 0], y]), X
    if kind == "784-features":  # products this wide take other kernels alone (MKL)
        wide = np.random.RandomState(0).rand(len(X), 784).astype(np.float32)
        return MLPClassifier(hidden_layer_sizes=(128,), max_iter=2, random_state=0,
                             device="cpu").fit(wide, y), wide
    if kind == "sparse":
        Xs = sp.csr_matrix(np.where(np.abs(X32) > 1, X32, 0))
        return MLPClassifier(**kw).fit(Xs, y), Xs
    raise ValueError(kind)


def _outputs(est):
    """What the estimator predicts, each a function of X."""
    if hasattr(est, "predict_proba"):
        return [est.predict_proba, est.predict_log_proba, est.predict, est.transform]
    return [est.predict, est.transform]


def _assert_batch_invariant(fn, X, pieces=PIECES, alone=ALONE):
    whole = fn(X)
    assert len(whole) == X.shape[0]
    np.testing.assert_array_equal(np.concatenate([fn(X[a:b]) for a, b in pieces]), whole)
    for i in alone:
        np.testing.assert_array_equal(fn(X[i:i + 1]), whole[i:i + 1])
    shifted = fn(X[3:])
    np.testing.assert_array_equal(shifted, whole[3:])
    # Batches of three whole chunks: the last 16 elements of a layer of odd width are computed by
    # the elementwise functions' scalar code, not by their vectorised code (as in other batches).
    for a in range(0, X.shape[0] - 48, 3):
        np.testing.assert_array_equal(fn(X[a:a + 48]), whole[a:a + 48])
    return whole


@pytest.mark.parametrize("kind", ["float32", "float64", "logistic-binary", "tanh-multilabel",
                                  "batch_norm-dropout", "poisson", "regressor-float64",
                                  "784-features", "sparse"])
def test_a_row_gets_the_same_output_alone_and_in_any_batch(data, kind):
    est, X = _model(kind, *data)
    for fn in _outputs(est):
        _assert_batch_invariant(fn, X)


def test_batch_invariant_across_blocks(data, monkeypatch):
    """Blocks of 48 rows (three chunks): batches end inside blocks, and the last block of a
    call may hold a single row (it is padded to two chunks, as a row alone is)."""
    monkeypatch.setattr(_predict, "BLOCK_ROWS", 48)
    for kind in ("float32", "float64", "784-features", "sparse"):
        est, X = _model(kind, *data)
        for fn in _outputs(est):
            _assert_batch_invariant(fn, X, pieces=[(0, 49), (49, 97), (97, 300)])


def test_float64_input_to_a_float32_model_computes_in_float32(data):
    est, X32 = _model("float32", *data)
    X64 = data[0]
    proba = est.predict_proba(X64)
    assert proba.dtype == np.float64
    np.testing.assert_array_equal(proba, est.predict_proba(X64.astype(np.float32)))
    assert est.transform(X64).dtype == np.float64
    est64, _ = _model("float64", *data)
    assert est64.predict_proba(X32).dtype == np.float32


def _numpy_forward(est, X):
    """The MLP's probabilities from its coefs_ and intercepts_, in float64."""
    h = np.asarray(X, dtype=np.float64)
    for i, (w, b) in enumerate(zip(est.coefs_, est.intercepts_)):
        h = h @ w.astype(np.float64) + b
        if i < len(est.coefs_) - 1:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predictions_follow_the_module_parameters(data, dtype):
    """Nothing is cached: predictions follow in-place edits of the parameters, partial_fit and
    a warm-started refit."""
    X, y = data
    X = X.astype(dtype)
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-13)
    est = MLPClassifier((20, 7), max_iter=3, random_state=0, device="cpu").fit(X, y)
    before = est.predict_proba(X[:20])
    np.testing.assert_allclose(before, _numpy_forward(est, X[:20]), **tol)
    with torch.no_grad():
        est.module_.weights[0].mul_(3)
        est.module_.biases[-1][0] += 1
    edited = est.predict_proba(X[:20])
    assert not np.allclose(edited, before)
    np.testing.assert_allclose(edited, _numpy_forward(est, X[:20]), **tol)
    est.partial_fit(X, y)
    np.testing.assert_allclose(est.predict_proba(X[:20]), _numpy_forward(est, X[:20]), **tol)
    est.set_params(warm_start=True, max_iter=2).fit(X, y)
    after = est.predict_proba(X[:20])
    assert not np.allclose(after, edited)
    np.testing.assert_allclose(after, _numpy_forward(est, X[:20]), **tol)


def test_predict_leaves_the_estimator_unchanged(data):
    est, X = _model("batch_norm-dropout", *data)
    state = {k: v.clone() for k, v in est.module_.state_dict().items()}
    before = dict(est.__dict__)
    y = data[1]
    for fn in _outputs(est) + [lambda X: est.score(X, y[:len(X)])]:
        fn(X)
        fn(X[:1])
    assert est.__dict__.keys() == before.keys()
    assert all(est.__dict__[k] is v for k, v in before.items())
    for k, v in est.module_.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_concurrent_predictions_from_threads_are_the_sequential_ones(data):
    est, X = _model("float32", *data)
    rng = np.random.RandomState(0)
    tasks = [np.sort(rng.choice(N_ROWS, size=rng.randint(1, 120), replace=False))
             for _ in range(40)]
    expected = [est.predict_proba(X[rows]) for rows in tasks]
    results, errors = [None] * len(tasks), []
    barrier = threading.Barrier(8)

    def work(t):
        try:
            barrier.wait()
            for k in range(t, len(tasks), 8):
                results[k] = est.predict_proba(X[tasks[k]])
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_memmap_input_is_predicted_block_by_block_into_one_array(data, tmp_path, monkeypatch):
    est, X32 = _model("float32", *data)
    path = tmp_path / "X.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X32.shape)
    mm[:] = X32
    mm.flush()
    ro = np.memmap(path, dtype=np.float32, mode="r", shape=X32.shape)
    expected = est.predict_proba(X32)
    monkeypatch.setattr(_predict, "BLOCK_ROWS", 64)
    blocks, run_dense = [], _predict.run_dense

    def recording(x, layers):
        blocks.append(x.shape[0])
        return run_dense(x, layers)

    monkeypatch.setattr(_predict, "run_dense", recording)
    with monkeypatch.context() as m:
        m.setattr(np, "concatenate", None)  # the output is filled in place, block by block
        proba = est.predict_proba(ro)
    np.testing.assert_array_equal(proba, expected)
    assert blocks == [64] * 4 + [48]  # 300 rows: four blocks of 64, then 44 padded to 48


@pytest.mark.parametrize("activation, hidden", [("relu", (8,)), ("logistic", (8,)),
                                                ("logistic", ())])
def test_convnet_image_gets_the_same_output_alone_and_in_any_batch(activation, hidden,
                                                                   monkeypatch):
    """With no dense layer, transform gives the pooled feature maps themselves: a last-bit
    difference in the convolutions' activations shows there, where the next layers' sums would
    mostly round it away."""
    rng = np.random.RandomState(0)
    X = rng.rand(140, 7, 7).astype(np.float32)  # odd sizes: elementwise ranges with tails
    y = (X[:, :4].mean((1, 2)) > X[:, 4:].mean((1, 2))).astype(int)
    clf = ConvNetClassifier(conv_layers=(3, 5), hidden_layer_sizes=hidden, activation=activation,
                            max_iter=2, random_state=0, device="cpu").fit(X, y)
    # Pieces of many sizes: where a call's elementwise ranges end, in every image and channel.
    ends = np.cumsum([1, 2, 3, 5, 7, 11, 13, 17, 4, 6, 8, 9, 10, 12, 14, 15, 3])
    pieces = list(zip(np.r_[0, ends[:-1]], ends))  # ends[-1] == 140
    for fn in (clf.predict_proba, clf.transform):
        _assert_batch_invariant(fn, X, pieces=pieces, alone=[0, 1, 15, 16, 17, 139])
    as_uint8 = (X * 255).astype(np.uint8)
    monkeypatch.setattr(_predict, "BLOCK_IMAGES", 33)  # blocks of 33, the last of 8
    _assert_batch_invariant(clf.predict_proba, as_uint8, pieces=pieces, alone=[0, 32, 33, 139])


def test_the_fast_input_check_agrees_with_validate_data(data):
    pd = pytest.importorskip("pandas")
    est, X = _model("float32", *data)
    np.testing.assert_array_equal(est.predict_proba(X), est.predict_proba(X.tolist()))
    bad = X.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.predict(bad)
    bad[5, 2] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        est.predict(bad)
    with pytest.raises(ValueError, match="12 features"):
        est.predict(X[:, :5])
    with pytest.raises(ValueError, match="0 sample"):
        est.predict(X[:0])
    named = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    fitted = MLPClassifier((5,), max_iter=2, random_state=0).fit(named, data[1])
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        fitted.predict(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by_name = fitted.predict_proba(named)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(by_name, fitted.predict_proba(named.to_numpy()))
        unnamed = MLPClassifier((5,), max_iter=2, random_state=0).fit(X, data[1])
    with pytest.warns(UserWarning, match="fitted without feature names"):
        unnamed.predict(named)
