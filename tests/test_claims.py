"""Tests behind the README's claims: float64 trajectories to scikit-learn's precision, Ctrl-C under
early stopping and under L-BFGS, the L-BFGS divergence error, early stopping's hold-out
(R² and best-weights restore for the regressor, stratification for classifiers) and
predictions over several inference chunks."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor

from sknn import MLPClassifier, MLPRegressor, _base, _engine

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")





def _capture_split(monkeypatch):
    """Record the early-stopping split: each call's (train, validation) sample indices and its
    ``stratify`` argument."""
    calls, split = [], _base.train_test_split

    def recording(*args, **kwargs):
        out = split(*args, **kwargs)
        # The estimator splits sample indices: the outputs are indices of the fit's rows.
        assert np.array_equal(args[0], np.arange(len(args[0])))
        calls.append(dict(train=out[0], val=out[1], stratify=kwargs.get("stratify")))
        return out

    monkeypatch.setattr(_base, "train_test_split", recording)
    return calls



def _assert_same_weights(a, b):
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(u, v)


# --- 1. float64: scikit-learn's trajectory, to rounding -----------------------------------------

# Measured (10 epochs, 10 minibatches of which the last is partial, weighted samples, alpha > 0):
# loss_curve_ within 4.4e-16 (relative) of scikit-learn's, coefs_ / intercepts_ within 2e-15 of
# each layer's largest entry. Asserted with a margin of about 1000 for other BLAS builds.
TRAJECTORIES = [
    dict(solver="adam"),
    dict(solver="adam", activation="tanh"),
    dict(solver="sgd", learning_rate_init=0.05),  # Nesterov momentum, constant rate
    dict(solver="sgd", learning_rate="invscaling", nesterovs_momentum=False,
         learning_rate_init=0.1),
    dict(solver="sgd", activation="logistic", momentum=0.5, learning_rate_init=0.1),
]


@pytest.mark.parametrize("task", ["classifier", "regressor"])
@pytest.mark.parametrize("params", TRAJECTORIES)
def test_float64_trajectory_matches_sklearn_to_rounding(digits, diabetes, task, params):
    """Same random_state and float64 data: the same initial weights, minibatches and updates as
    scikit-learn, so the same loss curve and weights up to rounding. Weighted samples over
    several minibatches: the L2 term of each update is divided by its batch's total weight."""
    if task == "classifier":
        X, _, y, _ = digits
        X, y = X[:600], y[:600]
        Ours, Theirs, hidden = MLPClassifier, SkMLPClassifier, (32,)
    else:
        (X, y), Ours, Theirs, hidden = diabetes, MLPRegressor, SkMLPRegressor, (20, 10)
    w = np.random.RandomState(1).rand(len(y)) + 0.5
    kw = dict(hidden_layer_sizes=hidden, batch_size=64, alpha=0.01, max_iter=10, tol=0,
              random_state=0, **params)
    ours = Ours(**kw).fit(X, y, sample_weight=w)
    theirs = Theirs(**kw).fit(X, y, sample_weight=w)
    assert ours.n_iter_ == theirs.n_iter_ == 10 and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-12, atol=0)
    assert ours.loss_ == ours.loss_curve_[-1]
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())


# --- 2. Ctrl-C under early stopping: the best weights so far ------------------------------------


@pytest.mark.parametrize("task", ["classifier", "regressor"])
def test_ctrl_c_under_early_stopping_restores_the_best_weights(digits, diabetes, task,
                                                              monkeypatch, raise_at_step):
    """Ctrl-C in the middle of an epoch: the model is the best epoch's, exactly as an
    uninterrupted fit of the epochs completed leaves it, and it scores the best validation
    score on the real hold-out."""
    if task == "classifier":
        X, _, y, _ = digits
        Est, kw, per_epoch = MLPClassifier, dict(learning_rate_init=0.05), 7  # 1212 / 200
        score = accuracy_score
    else:
        (X, y), Est, per_epoch, score = diabetes, MLPRegressor, 4, r2_score  # 397 / 128
        kw = dict(learning_rate_init=0.02, batch_size=128, hidden_layer_sizes=(50,))
    kw.update(early_stopping=True, n_iter_no_change=100, max_iter=50, random_state=0)
    epochs = 8
    split = _capture_split(monkeypatch)
    raise_at_step(epochs * per_epoch + 2, KeyboardInterrupt)  # in epoch 9
    with pytest.warns(UserWarning, match="interrupted"):
        est = Est(**kw).fit(X, y)
    monkeypatch.undo()
    assert est.n_iter_ == epochs and len(est.validation_scores_) == epochs
    best = est.best_validation_score_
    assert best == max(est.validation_scores_)
    assert np.argmax(est.validation_scores_) < epochs - 1  # so the restore has work to do
    val = split[0]["val"]
    pred = est.predict(X[val])
    assert score(y[val], pred) == best
    reference = Est(**{**kw, "max_iter": epochs}).fit(X, y)
    assert reference.validation_scores_ == est.validation_scores_
    _assert_same_weights(est, reference)


# --- 3. Ctrl-C under L-BFGS ---------------------------------------------------------------------


def _interrupt_objective(monkeypatch, n):
    """Ctrl-C during the ``n``-th evaluation of the L-BFGS objective."""
    evaluate, calls = _engine.objective_and_grads, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(_engine, "objective_and_grads", failing)


@pytest.mark.parametrize("batch_norm, at", [
    (False, 20),  # during the first trial of a line search
    (False, 35),  # in a long line search: the last point evaluated was rejected
    (True, 25),   # after a rejected trial too
])
def test_ctrl_c_under_lbfgs_keeps_the_last_accepted_point(iris, monkeypatch, batch_norm, at):
    """Ctrl-C during L-BFGS stops with a warning and the last point it accepted (neither the
    point being evaluated nor the last one evaluated): the model of an uninterrupted fit of as
    many iterations, bit for bit, with loss_ and n_iter_."""
    X, y = iris
    kw = dict(solver="lbfgs", hidden_layer_sizes=(10,), max_iter=200, random_state=0,
              batch_norm=batch_norm)
    _interrupt_objective(monkeypatch, at)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = MLPClassifier(**kw).fit(X, y)
    monkeypatch.undo()
    assert [str(w.message) for w in caught] == ["Training interrupted by user."]
    assert 5 < clf.n_iter_ < at
    assert np.isfinite(clf.loss_)
    reference = MLPClassifier(**{**kw, "max_iter": clf.n_iter_}).fit(X, y)
    assert clf.n_iter_ == reference.n_iter_ and clf.loss_ == reference.loss_
    _assert_same_weights(clf, reference)
    np.testing.assert_array_equal(clf.predict_proba(X), reference.predict_proba(X))


def test_ctrl_c_before_the_first_lbfgs_iteration_keeps_the_initial_weights(iris, monkeypatch):
    X, y = iris
    kw = dict(solver="lbfgs", hidden_layer_sizes=(10,), random_state=0)
    _interrupt_objective(monkeypatch, 1)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        clf = MLPClassifier(**kw).fit(X, y)
    monkeypatch.undo()
    assert clf.n_iter_ == 0 and np.isfinite(clf.loss_)
    initial = MLPClassifier(**kw)  # the initial weights, as the estimator draws them
    initial._random_state = np.random.RandomState(0)
    module = initial._build_module(X, 3, clf.module_.weights[0].dtype, "cpu")
    for a, b in zip(clf.coefs_ + clf.intercepts_, [*module.weights, *module.biases]):
        np.testing.assert_array_equal(a, b.detach().numpy())
    assert clf.predict(X).shape == y.shape


# --- 4. the L-BFGS divergence error -------------------------------------------------------------


def test_lbfgs_divergence_raises_naming_the_input_scale():
    """Inputs of 1e100 overflow the objective along L-BFGS's first line search (its weights stay
    finite: the message does not claim otherwise, nor names a learning rate L-BFGS has not)."""
    X = np.random.RandomState(0).randn(50, 3)
    y = X @ [1.0, 2.0, 3.0]
    reg = MLPRegressor(solver="lbfgs", hidden_layer_sizes=(5,), max_iter=5, random_state=0)
    with pytest.raises(ValueError, match=r"^Training diverged: the loss became NaN or infinite "
                                         r"during L-BFGS\. The input data may contain large "
                                         r"values: scale it, e\.g\. with StandardScaler\.$"):
        reg.fit(X * 1e100, y)


# --- 5. MLPRegressor early stopping: R² on the hold-out, best weights restored ------------------


@pytest.mark.parametrize("weighted", [False, True])
def test_regressor_early_stopping_scores_r2_and_restores_the_best(diabetes, monkeypatch,
                                                                  weighted):
    X, y = diabetes
    w = np.random.RandomState(1).rand(len(y)) + 0.5 if weighted else None
    kw = dict(early_stopping=True, n_iter_no_change=3, learning_rate_init=0.02, max_iter=100,
              hidden_layer_sizes=(50,), random_state=0)
    split = _capture_split(monkeypatch)
    reg = MLPRegressor(**kw).fit(X, y, sample_weight=w)
    assert len(split) == 1 and split[0]["stratify"] is None
    val = split[0]["val"]
    assert reg.n_iter_ < kw["max_iter"]  # it stopped early: the last epochs were not the best
    best = reg.best_validation_score_
    assert best == max(reg.validation_scores_) > max(reg.validation_scores_[-3:])
    sw_val = None if w is None else w[val]
    assert r2_score(y[val], reg.predict(X[val]), sample_weight=sw_val) == best
    assert reg.score(X[val], y[val], sample_weight=sw_val) == best
    # scikit-learn draws the same hold-out (the regressor's is not stratified) and scores R².
    theirs = SkMLPRegressor(**kw).fit(X, y, sample_weight=w)
    assert reg.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(reg.validation_scores_, theirs.validation_scores_, rtol=1e-12)
    for a, b in zip(reg.coefs_ + reg.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())


# --- 6. the stratified hold-out of classifiers --------------------------------------------------


def _imbalanced(counts, seed=0):
    rng = np.random.RandomState(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(y)
    return rng.randn(len(y), 4) + y[:, None] * 0.5, y


@pytest.mark.parametrize("data, fraction", [
    ("multiclass", 0.2),   # three classes of 301, 97 and 42 samples
    ("digits", 0.1),       # ten classes
    ("binary", 0.15),      # 250 and 40 samples
])
def test_early_stopping_holds_out_a_stratified_split(digits, monkeypatch, data, fraction):
    """Every single-output classifier, multiclass included: each class's hold-out count is its
    share of the hold-out, within 1 (an unstratified split misses it by several)."""
    if data == "digits":
        X, _, y, _ = digits
    else:
        X, y = _imbalanced((301, 97, 42) if data == "multiclass" else (250, 40))
    split = _capture_split(monkeypatch)
    MLPClassifier(early_stopping=True, validation_fraction=fraction, max_iter=1,
                  hidden_layer_sizes=(5,), random_state=3).fit(X, y)
    assert len(split) == 1 and split[0]["stratify"] is not None
    val = split[0]["val"]
    assert len(val) == int(np.ceil(fraction * len(y)))
    counts = np.bincount(y)
    share = len(val) * counts / len(y)  # fraction * count, up to the rounding of len(val)
    assert np.abs(np.bincount(y[val], minlength=len(counts)) - share).max() < 1


@pytest.mark.parametrize("counts, fraction", [
    ((60, 40, 1), 0.1),    # a class of one member cannot be on both sides
    ((3,) * 20, 0.1),      # a hold-out of 6 samples for 20 classes
])
def test_early_stopping_falls_back_to_an_unstratified_split(monkeypatch, counts, fraction):
    """README: stratified "where each class has enough members to stratify"; otherwise the split
    is unstratified and the fit goes on."""
    X, y = _imbalanced(counts)
    split = _capture_split(monkeypatch)
    clf = MLPClassifier(early_stopping=True, validation_fraction=fraction, max_iter=2,
                        hidden_layer_sizes=(5,), random_state=0).fit(X, y)
    assert len(split) == 1 and split[0]["stratify"] is None
    assert len(clf.classes_) == len(counts) and len(clf.validation_scores_) == 2
    assert np.isfinite(clf.predict_proba(X)).all()


# --- 7. predictions over several inference chunks -----------------------------------------------

CHUNK = 4096  # rows per block of sknn._predict (BLOCK_ROWS)


@pytest.mark.parametrize("Est, dtype", [(MLPClassifier, np.float32), (MLPClassifier, np.float64),
                                        (MLPRegressor, np.float64)])
def test_predictions_over_several_inference_chunks(Est, dtype):
    """8197 rows: three blocks (4096, 4096, 5). The result is the blocks' predictions in order,
    bit for bit; predicted in other batches (alone, or blocks shifted by 3 rows) a row gets the
    same prediction bit for bit, float32 or float64 (sknn._predict multiplies fixed chunks of
    rows, so that the BLAS runs the same kernels for every row; before it, float64 predictions
    differed in their last bits, as the BLAS took other paths for small batches)."""
    rng = np.random.RandomState(0)
    X = rng.randn(2 * CHUNK + 5, 20).astype(dtype)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    est = Est(hidden_layer_sizes=(32, 16), max_iter=3, random_state=0).fit(X[:300], y[:300])
    predict = est.predict_proba if Est is MLPClassifier else est.predict
    full = predict(X)
    assert full.dtype == dtype and full.shape[0] == len(X)
    chunks = [predict(X[a:a + CHUNK]) for a in range(0, len(X), CHUNK)]
    np.testing.assert_array_equal(full, np.concatenate(chunks))
    rows = np.r_[0:2, CHUNK - 2:CHUNK + 2, 2 * CHUNK - 2:len(X)]
    alone = np.concatenate([predict(X[i:i + 1]) for i in rows])
    shifted = predict(X[3:])
    np.testing.assert_array_equal(alone, full[rows])
    np.testing.assert_array_equal(shifted, full[3:])
    if Est is MLPClassifier:
        np.testing.assert_array_equal(est.predict(X), est.classes_[np.argmax(full, axis=1)])


@pytest.mark.parametrize("labels", [[0, 1, 2], [3, 7], ["only"]])
def test_validation_score_is_sklearns_accuracy(digits, labels):
    """The early-stopping score (computed without scikit-learn's checks, after every epoch) is
    accuracy_score of the predictions, for multiclass, binary and single-class targets."""
    X, _, y, _ = digits
    y = np.asarray(labels)[y % len(labels)]
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X, y)
    proba = clf._output(X, check_input=False)
    assert clf._score_output(proba, y) == accuracy_score(y, clf.predict(X))
    w = np.linspace(0.5, 2, len(y))
    assert clf._score_output(proba, y, w) == accuracy_score(y, clf.predict(X), sample_weight=w)
