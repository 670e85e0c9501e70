"""MLPClassifier / MLPRegressor: scikit-learn's behaviours, sknn's additions, bad input."""

import importlib.util
import os
import pickle

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import make_multilabel_classification
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknn import MLPClassifier, MLPRegressor
from conftest import needs_sklearn

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")





# --- the same model as scikit-learn's -----------------------------------------------------------


@pytest.mark.parametrize("params", [
    dict(solver="adam"),
    dict(solver="sgd", learning_rate="constant"),
    dict(solver="sgd", learning_rate="invscaling", nesterovs_momentum=False),
    dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.5, momentum=0.5),
    dict(solver="adam", activation="tanh", alpha=0.1, batch_size=64),
    dict(solver="adam", activation="logistic", shuffle=False),
    dict(solver="adam", early_stopping=True, n_iter_no_change=3, binary=True),
])
def test_classifier_follows_sklearns_trajectory(digits, params):
    """Same random_state, float64: the same init, minibatches and updates as scikit-learn.
    (Early stopping: on binary targets, the one case scikit-learn's hold-out is stratified.)"""
    X, _, y, _ = digits
    if params.pop("binary", False):
        X, y = X[y < 2], y[y < 2]
    ours = MLPClassifier(max_iter=15, random_state=1, **params).fit(X, y)
    theirs = SkMLPClassifier(max_iter=15, random_state=1, **params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
    if params.get("early_stopping"):
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
        assert ours.best_validation_score_ == theirs.best_validation_score_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
@needs_sklearn("1.7", "MLPRegressor(loss=) came in 1.7")
def test_regressor_follows_sklearns_trajectory(diabetes, loss):
    X, y = diabetes
    if loss == "poisson":
        y = y - y.min()
    ours = MLPRegressor(loss=loss, max_iter=10, random_state=0).fit(X, y)
    theirs = SkMLPRegressor(loss=loss, max_iter=10, random_state=0).fit(X, y)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-5, atol=1e-8)


def test_lbfgs_matches_sklearn(iris):
    X, y = iris
    ours = MLPClassifier(solver="lbfgs", max_iter=50, random_state=0).fit(X, y)
    theirs = SkMLPClassifier(solver="lbfgs", max_iter=50, random_state=0).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    assert not hasattr(ours, "loss_curve_") and not hasattr(ours, "partial_fit")


def test_lbfgs_multi_output_regressor_matches_sklearn():
    """scikit-learn's L-BFGS objective reports the squared error as a mean over outputs: the
    line search sees that value, so ours must too to take the same steps."""
    X = np.random.RandomState(0).randn(200, 3)
    Y = np.c_[X @ [1.0, 2.0, 3.0], np.sin(X[:, 0])]
    kw = dict(solver="lbfgs", hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    ours, theirs = MLPRegressor(**kw).fit(X, Y), SkMLPRegressor(**kw).fit(X, Y)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-6)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-6, atol=1e-8)


def test_lbfgs_verbose_prints_loss_without_changing_the_model(iris, capsys):
    X, y = iris
    kw = dict(solver="lbfgs", batch_norm=True, max_iter=20, random_state=0)
    quiet = MLPClassifier(**kw).fit(X, y)
    loud = MLPClassifier(verbose=True, **kw).fit(X, y)
    np.testing.assert_array_equal(quiet.predict_proba(X), loud.predict_proba(X))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("Iteration")]
    assert len(lines) == loud.n_iter_
    assert float(lines[-1].split("=")[-1]) == pytest.approx(loud.loss_, rel=1e-6)


def test_lbfgs_batch_norm_keeps_the_statistics_of_the_whole_training_set(iris):
    """L-BFGS trains on one batch, the whole set: the running statistics are that batch's at the
    solution (not a mix of the points the line search tried)."""
    X, y = iris
    clf = MLPClassifier(solver="lbfgs", batch_norm=True, max_iter=30, random_state=0).fit(X, y)
    norm = clf.module_.norms[0]
    fitted = norm.running_mean.clone(), norm.running_var.clone()
    norm.momentum = 1.0  # one more training-mode pass: the statistics of X at these weights
    clf.module_.train()
    with torch.no_grad():
        clf.module_(torch.as_tensor(X))
    torch.testing.assert_close(fitted, (norm.running_mean, norm.running_var))


# --- fitted attributes and predictions ----------------------------------------------------------


def test_fitted_attributes(digits):
    X, Xt, y, yt = digits
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=5, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(64, 32), (32, 16), (16, 10)]
    assert [i.shape for i in clf.intercepts_] == [(32,), (16,), (10,)]
    assert clf.n_layers_ == 4 and clf.n_outputs_ == 10 and clf.n_features_in_ == 64
    assert clf.out_activation_ == "softmax" and clf.n_iter_ == 5 and clf.t_ == 5 * len(X)
    assert len(clf.loss_curve_) == 5 and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    proba = clf.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(clf.predict_log_proba(Xt), np.log(proba))
    np.testing.assert_array_equal(clf.predict(Xt), clf.classes_[proba.argmax(axis=1)])


def test_learns_digits(digits):
    X, Xt, y, yt = digits
    assert MLPClassifier(random_state=0).fit(X, y).score(Xt, yt) > 0.95


def test_binary_string_labels_and_single_output_shapes(iris):
    X, y = iris
    labels = np.where(y == 0, "setosa", "other").astype(object)
    clf = MLPClassifier(max_iter=50, random_state=0).fit(X, labels)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert clf.predict_proba(X).shape == (150, 2)
    assert set(clf.predict(X)) <= {"setosa", "other"}
    assert clf.score(X, labels) > 0.95


def test_multilabel(iris):
    X, Y = make_multilabel_classification(n_samples=200, n_classes=4, random_state=0)
    clf = MLPClassifier(max_iter=300, random_state=0).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    assert clf.predict(X).shape == Y.shape and clf.predict_proba(X).shape == Y.shape
    assert clf.score(X, Y) > 0.5


def test_multioutput_regression(diabetes):
    X, y = diabetes
    Y = np.c_[y, -2 * y]
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (len(X), 2) and reg.n_outputs_ == 2
    assert reg.score(X, Y) > 0.4


def test_poisson_requires_nonnegative_targets(diabetes):
    X, y = diabetes
    with pytest.raises(ValueError, match="y >= 0"):
        MLPRegressor(loss="poisson").fit(X, y)


def test_lbfgs_on_sparse_input_densifies_a_chunk_at_a_time(digits, monkeypatch):
    """L-BFGS evaluates its full-batch objective over chunks of rows of a sparse X: the same
    model as on the dense copy, without the whole matrix ever dense."""
    from sknn import _data, _engine
    X, _, y, _ = digits
    kw = dict(solver="lbfgs", max_iter=15, random_state=0)
    dense = MLPClassifier(**kw).fit(X, y)
    monkeypatch.setattr(_engine, "LBFGS_CHUNK_ROWS", 100)
    densified = []
    sparse_rows = _data.sparse_rows
    monkeypatch.setattr(_data, "sparse_rows", lambda X, rows, *a: densified.append(
        len(range(*rows.indices(X.shape[0]))) if isinstance(rows, slice) else len(rows))
        or sparse_rows(X, rows, *a))
    sparse = MLPClassifier(**kw).fit(sp.csr_matrix(X), y)
    assert densified and max(densified) <= 100
    assert sparse.n_iter_ == dense.n_iter_
    assert sparse.loss_ == pytest.approx(dense.loss_, rel=1e-9)
    np.testing.assert_allclose(sparse.predict_proba(X), dense.predict_proba(X), atol=1e-9)


def test_sparse_input_matches_dense(digits):
    X, Xt, y, _ = digits
    dense = MLPClassifier(max_iter=5, random_state=0).fit(X, y)
    for fmt in (sp.csr_matrix, sp.csc_matrix):
        sparse = MLPClassifier(max_iter=5, random_state=0).fit(fmt(X), y)
        np.testing.assert_allclose(sparse.predict_proba(fmt(Xt)), dense.predict_proba(Xt),
                                   rtol=1e-6, atol=1e-9)


def test_float32_trains_in_float32_and_predicts_batch_invariantly(digits):
    X, Xt, y, _ = digits
    clf = MLPClassifier(max_iter=5, random_state=0).fit(X.astype(np.float32), y)
    assert clf.coefs_[0].dtype == np.float32
    Xt32 = Xt.astype(np.float32)
    proba = clf.predict_proba(Xt32)
    assert proba.dtype == np.float32
    alone = np.vstack([clf.predict_proba(Xt32[i:i + 1]) for i in range(20)])
    np.testing.assert_array_equal(alone, proba[:20])


def test_transform_gives_last_hidden_layer_features(digits):
    X, Xt, y, yt = digits
    clf = MLPClassifier(hidden_layer_sizes=(40, 12), max_iter=30, random_state=0).fit(X, y)
    features = clf.transform(Xt)
    assert features.shape == (len(Xt), 12) and (features >= 0).all()  # relu
    assert list(clf.get_feature_names_out()) == [f"mlpclassifier{i}" for i in range(12)]
    pipe = make_pipeline(MLPClassifier(hidden_layer_sizes=(40,), max_iter=30, random_state=0),
                         LogisticRegression(max_iter=1000))
    assert pipe.fit(X, y).score(Xt, yt) > 0.9


# --- partial_fit, warm_start, early stopping ----------------------------------------------------


def test_partial_fit_loop(digits):
    X, Xt, y, yt = digits
    clf = MLPClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X[:100], y[:100])
    for epoch in range(10):
        for start in range(0, len(X), 300):
            clf.partial_fit(X[start:start + 300], y[start:start + 300], classes=np.arange(10))
    assert clf.score(Xt, yt) > 0.85
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X[:5], np.full(5, 11))


def test_partial_fit_regressor_and_restrictions(diabetes):
    X, y = diabetes
    reg = MLPRegressor(random_state=0)
    for _ in range(3):
        reg.partial_fit(X, y)
    assert reg.n_iter_ == 1 and reg.t_ == 3 * len(X)
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")
    with pytest.raises(ValueError, match="early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X, y)


def test_warm_start_continues_training(iris):
    X, y = iris
    clf = MLPClassifier(max_iter=5, warm_start=True, random_state=0).fit(X, y)
    first = clf.loss_curve_[:]
    clf.fit(X, y)
    assert len(clf.loss_curve_) == 10 and clf.loss_curve_[:5] == first
    with pytest.raises(ValueError, match="warm_start can only be used"):
        clf.fit(X[y < 2], y[y < 2])


class _HoldOutRecorder(MLPClassifier):
    """Keeps the rows early stopping scores each epoch: the hold-out as the fit drew it."""

    def _prepare_fit(self, *args, **kwargs):
        member = super()._prepare_fit(*args, **kwargs)
        self.held_out_ = member.validation.X.copy(), member.validation.y.copy()
        return member


def test_early_stopping_restores_best_weights_of_a_stratified_hold_out(digits):
    X, _, y, _ = digits
    # A large learning rate: the validation score peaks, then falls before training stops.
    clf = _HoldOutRecorder(early_stopping=True, n_iter_no_change=2, learning_rate_init=0.05,
                           random_state=0).fit(X, y)
    assert clf.best_loss_ is None and clf.best_validation_score_ > 0.95  # it learned
    best_epoch = int(np.argmax(clf.validation_scores_)) + 1
    assert clf.best_validation_score_ == clf.validation_scores_[best_epoch - 1]
    assert best_epoch < clf.n_iter_ and clf.validation_scores_[-1] < clf.best_validation_score_
    # Stratified: each class is held out in proportion, to within one sample.
    per_class, held_out = np.bincount(y), np.bincount(clf.held_out_[1], minlength=10)
    assert np.all(np.abs(held_out - 0.1 * per_class) <= 1), (held_out, 0.1 * per_class)

    # Replay the estimator's stream: the initial weights (drawn as scikit-learn draws them),
    # then the stratified split.
    rng = np.random.RandomState(0)
    units = [X.shape[1], 100, 10]
    for fan_in, fan_out in zip(units[:-1], units[1:]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        rng.uniform(-bound, bound, (fan_in, fan_out))
        rng.uniform(-bound, bound, fan_out)
    train, val = train_test_split(np.arange(len(X)), random_state=rng, test_size=0.1, stratify=y)
    X_val, y_val = X[val], y[val]
    np.testing.assert_array_equal(clf.held_out_[0], X_val)  # the hold-out the fit scored
    np.testing.assert_array_equal(clf.held_out_[1], y_val)
    assert clf.t_ == clf.n_iter_ * len(train)  # trained on the rest only

    # The restored weights are the best epoch's, not the last one's.
    assert clf.score(X_val, y_val) == clf.best_validation_score_


# --- weights -----------------------------------------------------------------------------------


def test_sample_weight_zero_and_integer_match_removal_and_repetition(iris):
    X, y = iris
    rng = np.random.RandomState(0)
    sw = rng.randint(0, 3, size=len(y))
    weighted = MLPClassifier(max_iter=20, random_state=0).fit(X, y, sample_weight=sw)
    repeated = MLPClassifier(max_iter=20, random_state=0).fit(np.repeat(X, sw, 0), np.repeat(y, sw))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-6)


def test_batches_of_zero_weight_leave_the_loss_as_without_them(iris):
    """A minibatch whose samples all weigh zero teaches nothing and is skipped: the reported
    loss is that of the batches that were used, as if those samples were not there."""
    X, y = iris
    kw = dict(shuffle=False, batch_size=50, max_iter=3, tol=0, random_state=0)
    weight = np.r_[np.zeros(50), np.ones(100)]
    order = np.r_[np.arange(0, 150, 3), np.arange(1, 150, 3), np.arange(2, 150, 3)]  # classes mixed
    X, y = X[order], y[order]
    skipped = MLPClassifier(**kw).fit(X, y, sample_weight=weight)
    without = MLPClassifier(**kw).fit(X[50:], y[50:])
    np.testing.assert_allclose(skipped.loss_curve_, without.loss_curve_, rtol=1e-12)


def test_class_weight(iris):
    X, y = iris
    mask = (y != 2) | (np.arange(len(y)) % 10 == 0)  # class 2 made rare
    X, y = X[mask], y[mask]
    recall = lambda m: (m.predict(X[y == 2]) == 2).mean()  # noqa: E731
    kw = dict(hidden_layer_sizes=(8,), max_iter=50, learning_rate_init=0.01)
    for seed in (0, 2, 3):  # unweighted, the 5 rare samples are all missed; balanced, all found
        plain = MLPClassifier(random_state=seed, **kw).fit(X, y)
        balanced = MLPClassifier(class_weight="balanced", random_state=seed, **kw).fit(X, y)
        assert (recall(plain), recall(balanced)) == (0.0, 1.0), seed
    as_dict = MLPClassifier(max_iter=5, class_weight={0: 1.0, 1: 1.0, 2: 3.0}, random_state=0)
    weighted = MLPClassifier(max_iter=5, random_state=0)
    as_dict.fit(X, y)
    weighted.fit(X, y, sample_weight=np.where(y == 2, 3.0, 1.0))
    np.testing.assert_allclose(as_dict.loss_curve_, weighted.loss_curve_)
    with pytest.raises(ValueError, match="class_weight"):
        MLPClassifier(class_weight="heavy").fit(X, y)


# --- scikit-learn tools ------------------------------------------------------------------------


def test_pipeline_grid_search_parallel_and_cross_val(digits):
    X, Xt, y, yt = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(16,), (32,)],
                               "mlpclassifier__learning_rate_init": [1e-3, 1e-2]},
                        cv=2, n_jobs=2).fit(X, y)
    assert grid.best_score_ > 0.85 and grid.score(Xt, yt) > 0.85
    scores = cross_val_score(MLPRegressor(max_iter=50, random_state=0), X, y.astype(float), cv=3)
    assert scores.shape == (3,)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_transform_follows_set_output(iris, Est):
    pd = pytest.importorskip("pandas")
    X, y = iris
    est = Est(hidden_layer_sizes=(4,), max_iter=3).set_output(transform="pandas").fit(X, y)
    for out in (est.transform(X), est.fit_transform(X, y)):
        assert isinstance(out, pd.DataFrame)
        assert list(out.columns) == list(est.get_feature_names_out())


def test_pandas_dataframe_feature_names(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = MLPClassifier(max_iter=10, random_state=0).fit(df, pd.Series(y))
    assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
    clf.predict(df)
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(df.rename(columns={"a": "z"}))


# --- randomness, persistence, devices ------------------------------------------------------------


def test_random_state_reproducible_and_global_rngs_untouched(digits):
    X, _, y, _ = digits
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a = MLPClassifier(max_iter=3, dropout=0.2, early_stopping=True, random_state=3).fit(X, y)
    b = MLPClassifier(max_iter=3, dropout=0.2, early_stopping=True, random_state=3).fit(X, y)
    assert torch.equal(torch_state, torch.get_rng_state())
    assert all(np.array_equal(u, v) for u, v in zip(np_state, np.random.get_state()))
    for u, v in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(u, v)
    c = MLPClassifier(max_iter=3, dropout=0.2, random_state=4).fit(X, y)
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


def test_random_state_none_draws_from_numpys_global_generator_as_sklearn_does(digits):
    """random_state=None, as in scikit-learn: numpy's global generator is drawn from, so seeding
    it reproduces the fit; torch's global generator is left alone (dropout included)."""
    X, _, y, _ = digits
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    kw = dict(max_iter=3, dropout=0.2, early_stopping=True)
    try:
        np.random.seed(0)
        a = MLPClassifier(**kw).fit(X, y)
        np.random.seed(0)
        b = MLPClassifier(**kw).fit(X, y)
        c = MLPClassifier(**kw).fit(X, y)  # not reseeded: other draws
        for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
            np.testing.assert_array_equal(u, v)
        assert not np.array_equal(a.coefs_[0], c.coefs_[0])

        # The same draws as scikit-learn's: the same model, the generator left in the same state.
        np.random.seed(0)
        ours = MLPClassifier(max_iter=3).fit(X, y)
        after_ours = np.random.get_state()
        np.random.seed(0)
        theirs = SkMLPClassifier(max_iter=3).fit(X, y)
        assert all(np.array_equal(u, v) for u, v in zip(after_ours, np.random.get_state()))
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-6)
        assert torch.equal(torch_state, torch.get_rng_state())
    finally:
        np.random.set_state(np_state)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_pickle_and_joblib_round_trip_bit_identical(digits, tmp_path, Est):
    X, Xt, y, _ = digits
    est = Est(max_iter=5, batch_norm=True, random_state=0).fit(X, y)
    expected = est.predict(Xt)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(Xt), expected)
    joblib.dump(est, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")
    np.testing.assert_array_equal(loaded.predict(Xt), expected)

    # The solver state (Adam's moments and step count) travelled too: one more epoch on a copy
    # is bit for bit the epoch on the original, and not what a fresh optimizer would take.
    unpickled = pickle.loads(pickle.dumps(est))
    fresh = pickle.loads(pickle.dumps(est))
    vars(fresh).pop("_optimizer", None)  # partial_fit starts a new one
    for model in (est, loaded, unpickled, fresh):
        model.partial_fit(X, y)
    for other in (loaded, unpickled):
        for a, b in zip(other.coefs_ + other.intercepts_, est.coefs_ + est.intercepts_):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(fresh.coefs_[0], est.coefs_[0])


def test_model_saved_from_a_gpu_loads_on_cpu(digits, monkeypatch):
    """The CPU-only half of the GPU path: the state is saved on the CPU, and a model whose
    device is missing on the loading machine falls back to the CPU with a warning."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    X, Xt, y, _ = digits
    clf = MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    expected = clf.predict_proba(Xt)
    clf.device_ = torch.device("cuda:0")  # as if fitted there
    payload = pickle.dumps(clf)
    with pytest.warns(UserWarning, match="not available here"):
        loaded = pickle.loads(payload)
    assert loaded.device_ == torch.device("cpu")
    np.testing.assert_array_equal(loaded.predict_proba(Xt), expected)


def test_device_errors(iris):
    X, y = iris
    with pytest.raises(ValueError, match="device"):
        MLPClassifier(device="tpu").fit(X, y)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            MLPClassifier(device="cuda").fit(X, y)
    assert MLPClassifier(device="cpu", max_iter=2).fit(X, y).device_ == torch.device("cpu")


def test_dropout_and_batch_norm_train_and_predict(digits):
    X, Xt, y, yt = digits
    clf = MLPClassifier(dropout=0.2, batch_norm=True, max_iter=30, random_state=0).fit(X, y)
    assert clf.score(Xt, yt) > 0.9
    assert len(clf.module_.norms) == 1
    # a last minibatch of one sample is fine with batch norm
    MLPClassifier(batch_norm=True, batch_size=len(X) - 1, max_iter=2).fit(X, y)


def test_verbose_prints_progress(iris, capsys):
    X, y = iris
    MLPClassifier(max_iter=2, verbose=True, early_stopping=True).fit(X, y)
    captured = capsys.readouterr()
    assert "Iteration 1, loss = " in captured.out and "Validation score" in captured.out
    if importlib.util.find_spec("tqdm") is not None:  # and a progress bar on stderr
        assert "MLPClassifier" in captured.err and "epoch" in captured.err


# --- faults ------------------------------------------------------------------------------------



def test_keyboard_interrupt_leaves_a_usable_model(digits, monkeypatch, raise_at_step):
    X, Xt, y, yt = digits
    clf = MLPClassifier(max_iter=50, random_state=0)
    raise_at_step(30, KeyboardInterrupt)
    with pytest.warns(UserWarning, match="interrupted"):
        clf.fit(X, y)
    assert np.isfinite(clf.predict_proba(Xt)).all()
    assert clf.score(Xt, yt) > 0.5


def test_divergence_raises_naming_the_learning_rate(digits):
    X, _, y, _ = digits
    with pytest.raises(ValueError, match="learning_rate_init=10000000000.0"):
        MLPRegressor(solver="sgd", learning_rate_init=1e10, max_iter=5).fit(X * 1e3, y * 1e3)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_bad_input_raises_clear_errors(iris, Est):
    X, y = iris
    y = y.astype(float) if Est is MLPRegressor else y
    est = Est(max_iter=2)
    with pytest.raises(NotFittedError):
        est.predict(X)
    for bad, match in [(np.nan, "NaN"), (np.inf, "infinity")]:
        Xb = X.copy()
        Xb[3, 1] = bad
        with pytest.raises(ValueError, match=match):
            est.fit(Xb, y)
    yb = y.astype(float).copy()
    yb[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(X, yb)
    with pytest.raises(ValueError, match="0 sample"):
        est.fit(np.empty((0, 4)), np.empty(0))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match="could not convert"):
        est.fit(np.array([["a", "b"], ["c", "d"]]), y[:2])
    est.fit(X, y)
    with pytest.raises(ValueError, match="4 features"):
        est.predict(X[:, :3])


@pytest.mark.parametrize("params, error, match", [
    (dict(max_iter=-1), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(hidden_layer_sizes=(10, 0)), ValueError, "hidden_layer_sizes"),
    (dict(hidden_layer_sizes="big"), TypeError, "hidden_layer_sizes"),
    (dict(solver="newton"), ValueError, "solver"),
    (dict(activation="gelu"), ValueError, "activation"),
    (dict(device="gpu"), ValueError, "device"),
    (dict(learning_rate_init=0), ValueError, "learning_rate_init"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(validation_fraction=1.0), ValueError, "validation_fraction"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(momentum=1.5), ValueError, "momentum"),
    (dict(shuffle="yes"), TypeError, "shuffle"),
    # a string option given as a number or None is refused, not read as a number
    (dict(solver=5), ValueError, "solver must be one of"),
    (dict(solver=None), ValueError, "solver must be one of"),
    (dict(activation=1), ValueError, "activation must be one of"),
    (dict(learning_rate=0.5), ValueError, "learning_rate must be one of"),
    (dict(n_iter_no_change=2.5), TypeError, "n_iter_no_change"),
    (dict(verbose=-1), ValueError, "verbose"),
    (dict(random_state=-1), ValueError, "random_state"),
    (dict(class_weight=np.array([1.0, 2.0, 3.0])), ValueError, "class_weight"),
    (dict(dropout=0.5, solver="lbfgs"), ValueError, "dropout=0.5 with solver='lbfgs'"),
    # infinity is no setting, as in scikit-learn's parameter checks
    (dict(alpha=np.inf), ValueError, r"alpha must be in the range \[0, inf\)"),
    (dict(tol=np.inf), ValueError, "tol"),
    (dict(learning_rate_init=np.inf), ValueError, "learning_rate_init must be in the range"),
    (dict(epsilon=np.inf), ValueError, "epsilon"),
    (dict(class_weight={0: np.nan}), ValueError, "class_weight's weights must be finite"),
    (dict(class_weight={0: -1.0}), ValueError, "class_weight's weights must be finite"),
    (dict(checkpoint_path="."), ValueError, "is a directory"),
    (dict(checkpoint_path=os.path.join("no", "such", "folder", "f.ckpt")), ValueError,
     "does not exist"),
])
def test_invalid_parameters(iris, params, error, match):
    X, y = iris
    with pytest.raises(error, match=match):
        MLPClassifier(**params).fit(X, y)


def test_parameter_errors_are_both_value_and_type_errors(iris):
    """As scikit-learn's InvalidParameterError: code catching either class catches them."""
    X, y = iris
    for params in (dict(max_iter=2.5), dict(max_iter=-1), dict(solver=5)):
        with pytest.raises(ValueError):
            MLPClassifier(**params).fit(X, y)
        with pytest.raises(TypeError):
            MLPClassifier(**params).fit(X, y)


def test_n_iter_no_change_may_be_infinite(iris):
    X, y = iris
    clf = MLPClassifier(n_iter_no_change=np.inf, max_iter=3).fit(X, y)
    assert clf.n_iter_ == 3


def test_regressor_accepts_a_bool_target(iris):
    X, y = iris
    ours = MLPRegressor(max_iter=3, random_state=0).fit(X, y == 1)
    ref = MLPRegressor(max_iter=3, random_state=0).fit(X, (y == 1).astype(float))
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_single_class_predicts_that_class(iris):
    X, _ = iris
    clf = MLPClassifier(max_iter=5).fit(X, np.full(len(X), "only"))
    assert (clf.predict(X) == "only").all()


def test_continuous_target_rejected_by_classifier(iris):
    X, _ = iris
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, np.linspace(0, 1, len(X)))


class _ThreadRecorder(MLPClassifier):
    """Records the torch thread count in force while it fits, and the process that fit it."""

    def _build_module(self, *args, **kwargs):  # inside fit, before training
        self.fit_threads_ = [torch.get_num_threads()]
        return super()._build_module(*args, **kwargs)

    def _fit(self, *args, **kwargs):
        super()._fit(*args, **kwargs)
        self.fit_threads_.append(torch.get_num_threads())
        self.fit_pid_ = os.getpid()
        return self


def test_parallel_grid_search_workers_use_cores_over_n_jobs_threads_each(iris):
    """GridSearchCV(n_jobs=2): each fit runs in a joblib worker process with cores // 2 torch
    threads (at least one), so that the workers do not oversubscribe the cores."""
    X, y = iris
    scoring = {"threads_at_start": lambda est, X, y: est.fit_threads_[0],
               "threads_at_end": lambda est, X, y: est.fit_threads_[-1],
               "pid": lambda est, X, y: est.fit_pid_}
    grid = GridSearchCV(_ThreadRecorder(hidden_layer_sizes=(4,), max_iter=2),
                        {"alpha": [1e-4, 1e-3]}, cv=2, n_jobs=2, scoring=scoring, refit=False,
                        error_score="raise").fit(X, y)
    results = {name: np.concatenate([grid.cv_results_[f"split{k}_test_{name}"] for k in (0, 1)])
               for name in scoring}
    assert os.getpid() not in results["pid"]  # every fit ran in a worker
    # joblib's count, unless the user chose one: it keeps OMP_NUM_THREADS where it is set.
    expected = int(os.environ.get("OMP_NUM_THREADS", max(1, joblib.cpu_count() // 2)))
    assert list(results["threads_at_start"]) == [expected] * 4
    assert list(results["threads_at_end"]) == [expected] * 4


def test_threadpool_limits_reaches_the_training_threads(digits):
    """threadpoolctl's limit (scikit-learn's way to bound threads) reaches torch's OpenMP pool:
    a fit inside it trains on that many threads, and gives the model a fit on them gives."""
    from threadpoolctl import threadpool_limits
    X, _, y, _ = digits
    X = X.astype(np.float32)
    before = torch.get_num_threads()
    with threadpool_limits(1):
        limited = _ThreadRecorder(hidden_layer_sizes=(64,), max_iter=3, random_state=0).fit(X, y)
    assert limited.fit_threads_ == [1, 1] and torch.get_num_threads() == before
    torch.set_num_threads(1)
    try:
        one = MLPClassifier(hidden_layer_sizes=(64,), max_iter=3, random_state=0).fit(X, y)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(limited.coefs_, one.coefs_):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("params", [dict(), dict(early_stopping=True, dropout=0.2)])
def test_checkpoint_resumes_a_crashed_fit_to_the_same_model(digits, tmp_path, monkeypatch, params, raise_at_step):
    X, _, y, _ = digits
    path = tmp_path / "fit.ckpt"
    kw = dict(max_iter=8, tol=0, random_state=0, checkpoint_path=str(path), **params)
    reference = MLPClassifier(**kw).fit(X, y)
    assert not path.exists()  # removed once the fit completed

    # in epoch 6 (7 batches an epoch)
    raise_at_step(5 * 7 + 3, RuntimeError("the machine went down"))
    with pytest.raises(RuntimeError, match="went down"):
        MLPClassifier(**kw).fit(X, y)
    assert path.exists()
    monkeypatch.undo()
    resumed = MLPClassifier(**kw).fit(X, y)
    assert resumed.n_iter_ == reference.n_iter_
    np.testing.assert_array_equal(resumed.loss_curve_, reference.loss_curve_)
    for a, b in zip(resumed.coefs_, reference.coefs_):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_of_another_fit_is_refused(digits, tmp_path, monkeypatch, raise_at_step):
    X, _, y, _ = digits
    path = tmp_path / "fit.ckpt"
    raise_at_step(10, KeyboardInterrupt)  # in the second epoch: the first is saved
    with pytest.warns(UserWarning, match="interrupted"):
        MLPClassifier(max_iter=3, checkpoint_path=str(path)).fit(X, y)
    assert path.exists()  # kept after Ctrl-C, to resume later
    monkeypatch.undo()
    with pytest.raises(ValueError, match="other parameters or data"):
        MLPClassifier(max_iter=3, checkpoint_path=str(path), alpha=0.5).fit(X, y)
    with pytest.raises(ValueError, match="other parameters or data"):
        MLPClassifier(max_iter=3, checkpoint_path=str(path)).fit(X[:500], y[:500])
    changed = X.copy()
    changed[-1] += 1  # one value of the last row
    with pytest.raises(ValueError, match="other parameters or data"):
        MLPClassifier(max_iter=3, checkpoint_path=str(path)).fit(changed, y)
    MLPClassifier(max_iter=3, checkpoint_path=str(path)).fit(X, y)  # resumes and completes
    assert not path.exists()


def test_checkpoint_of_another_device_kind_is_refused(digits):
    X, _, y, _ = digits
    clf = MLPClassifier(max_iter=1).fit(X, y)
    on_cpu = clf._fingerprint(X, y, None)
    clf.device_ = torch.device("cuda")
    assert clf._fingerprint(X, y, None) != on_cpu


def test_checkpoint_resumes_with_a_random_state_instance(digits, tmp_path, monkeypatch, raise_at_step):
    X, _, y, _ = digits
    path = tmp_path / "fit.ckpt"
    kw = dict(max_iter=3, tol=0, checkpoint_path=str(path))
    reference = MLPClassifier(random_state=np.random.RandomState(0), **kw).fit(X, y)
    raise_at_step(10, KeyboardInterrupt)
    with pytest.warns(UserWarning, match="interrupted"):
        MLPClassifier(random_state=np.random.RandomState(0), **kw).fit(X, y)
    monkeypatch.undo()
    resumed = MLPClassifier(random_state=np.random.RandomState(0), **kw).fit(X, y)
    np.testing.assert_array_equal(resumed.loss_curve_, reference.loss_curve_)


def test_checkpoint_refusal_explains_an_unseeded_early_stopping_split(digits, tmp_path,
                                                                       monkeypatch, raise_at_step):
    X, _, y, _ = digits
    path = tmp_path / "fit.ckpt"
    kw = dict(max_iter=3, early_stopping=True, checkpoint_path=str(path))
    raise_at_step(10, KeyboardInterrupt)
    with pytest.warns(UserWarning, match="interrupted"):
        MLPClassifier(**kw).fit(X, y)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="set random_state"):
        MLPClassifier(**kw).fit(X, y)


def test_a_file_that_is_no_checkpoint_is_refused_by_name(iris, tmp_path):
    X, y = iris
    path = tmp_path / "junk.ckpt"
    path.write_text("junk")
    with pytest.raises(ValueError, match="junk.ckpt.*not a checkpoint"):
        MLPClassifier(max_iter=2, checkpoint_path=path).fit(X, y)


def test_sparse_regression_targets_are_their_dense_targets():
    rng = np.random.RandomState(0)
    X = rng.randn(50, 3)
    for Y in (np.c_[X[:, 0], X[:, 1] > 0], X[:, :1]):
        def fit(y, **kw):
            return MLPRegressor(max_iter=3, random_state=0).fit(X, y, **kw).predict(X)

        with pytest.warns(Warning):  # the ConvergenceWarning of max_iter=3
            np.testing.assert_array_equal(fit(sp.csr_matrix(Y)), fit(Y))
            np.testing.assert_array_equal(
                fit(sp.csr_matrix(Y), X_val=X[:10], y_val=sp.csr_matrix(Y[:10])),
                fit(Y, X_val=X[:10], y_val=Y[:10]))
