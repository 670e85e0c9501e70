"""Training controls: validation data (``X_val``), the validation loss and ``scoring``,
learning-rate schedules, and per-epoch callbacks through scikit-learn's ``sklearn.callback``."""

import json
import math
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, log_loss, make_scorer,
                             r2_score)
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor, callbacks
from sknn.schedules import CosineAnnealing, ReduceOnPlateau

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

needs_callbacks = pytest.mark.skipif(not callbacks.AVAILABLE,
                                     reason="scikit-learn < 1.9 has no sklearn.callback")


@pytest.fixture(scope="module")
def split(digits):
    """Digits: 400 training rows, 200 validation rows, 200 test rows."""
    X, Xt, y, yt = digits
    return X[:400], y[:400], X[400:600], y[400:600], Xt[:200], yt[:200]


def _clf(**params):
    return MLPClassifier((32,), **{"max_iter": 8, "random_state": 0, **params})


# --- validation data ------------------------------------------------------------------------


def test_defaults_record_as_scikit_learn(split):
    X, y, *_ = split
    clf = _clf().fit(X, y)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.validation_loss_curve_ is None
    assert clf.learning_rate_curve_ == [0.001] * clf.n_iter_


def test_x_val_is_scored_for_the_record_without_early_stopping(split):
    X, y, Xv, yv, *_ = split
    clf = _clf().fit(X, y, X_val=Xv, y_val=yv)
    plain = _clf().fit(X, y)
    # Scoring the validation data changes nothing of the training.
    np.testing.assert_array_equal(clf.coefs_[0], plain.coefs_[0])
    assert clf.loss_curve_ == plain.loss_curve_ and clf.best_loss_ == plain.best_loss_
    assert len(clf.validation_scores_) == len(clf.validation_loss_curve_) == clf.n_iter_
    # The last epoch's score and loss are those of the final model's predictions.
    assert clf.validation_scores_[-1] == accuracy_score(yv, clf.predict(Xv))
    assert clf.validation_loss_curve_[-1] == pytest.approx(
        log_loss(yv, clf.predict_proba(Xv), labels=clf.classes_), rel=1e-5)
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_x_val_replaces_the_held_out_fraction(split):
    X, y, Xv, yv, *_ = split
    clf = _clf(early_stopping=True, max_iter=40, n_iter_no_change=3,
               learning_rate_init=0.01).fit(X, y, X_val=Xv, y_val=yv)
    assert clf.t_ == clf.n_iter_ * len(X)  # trained on every row of X
    assert clf.n_iter_ < 40  # stopped early
    # The weights restored are the best epoch's, and score exactly what was recorded.
    assert accuracy_score(yv, clf.predict(Xv)) == clf.best_validation_score_
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_regressor_restores_the_best_r2(diabetes):
    X, y = diabetes
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=60, random_state=0, early_stopping=True,
                       learning_rate_init=0.05, n_iter_no_change=3).fit(
        X[:300], y[:300], X_val=X[300:], y_val=y[300:])
    assert r2_score(y[300:], reg.predict(X[300:])) == reg.best_validation_score_
    # Its validation loss is the training loss's data term: half the mean squared error.
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X[:300], y[:300], X_val=X[300:],
                                                             y_val=y[300:])
    half_mse = 0.5 * np.mean((y[300:] - reg.predict(X[300:])) ** 2)
    assert reg.validation_loss_curve_[-1] == pytest.approx(half_mse, rel=1e-9)


def test_scoring_loss_watches_the_validation_loss(split):
    X, y, Xv, yv, *_ = split
    clf = _clf(early_stopping=True, scoring="loss", max_iter=30).fit(X, y, X_val=Xv, y_val=yv)
    assert clf.validation_scores_ == [-v for v in clf.validation_loss_curve_]
    assert -log_loss(yv, clf.predict_proba(Xv), labels=clf.classes_) == pytest.approx(
        clf.best_validation_score_, rel=1e-5)


@pytest.mark.parametrize("scoring", ["balanced_accuracy",
                                     make_scorer(balanced_accuracy_score)])
def test_scoring_by_name_or_scorer(split, scoring):
    X, y, Xv, yv, *_ = split
    clf = _clf(early_stopping=True, scoring=scoring, max_iter=30,
               n_iter_no_change=3).fit(X, y, X_val=Xv, y_val=yv)
    assert balanced_accuracy_score(yv, clf.predict(Xv)) == clf.best_validation_score_


def test_sample_weight_val_weighs_the_validation_loss(split):
    X, y, Xv, yv, *_ = split
    w = np.where(yv == 3, 5.0, 1.0)
    clf = _clf().fit(X, y, X_val=Xv, y_val=yv, sample_weight_val=w)
    proba = clf.predict_proba(Xv)
    assert clf.validation_loss_curve_[-1] == pytest.approx(
        log_loss(yv, proba, sample_weight=w, labels=clf.classes_), rel=1e-5)
    assert clf.validation_scores_[-1] == accuracy_score(yv, clf.predict(Xv), sample_weight=w)


@pytest.mark.parametrize("kwargs, match", [
    (dict(y_val=[0, 1]), "need X_val"),
    (dict(sample_weight_val=[1.0]), "need X_val"),
    (dict(X_val=np.zeros((3, 64))), "pass y_val"),
    (dict(X_val=np.zeros((3, 5)), y_val=[0, 1, 2]), "X_val, y_val.*5 features"),
    (dict(X_val=np.zeros((3, 64)), y_val=[0, 1, 42]), r"classes that are not in y: \[.*42"),
    (dict(X_val=np.zeros((3, 64)), y_val=[0, 1]), "X_val, y_val.*inconsistent"),
    (dict(X_val=np.zeros((3, 64)), y_val=[0, 1, 2], sample_weight_val=[1.0]), "sample_weight"),
])
def test_bad_validation_data_says_what_is_wrong(split, kwargs, match):
    X, y, *_ = split
    with pytest.raises(ValueError, match=match):
        _clf(max_iter=1).fit(X, y, **kwargs)


def test_regressor_validation_targets_are_checked(diabetes):
    X, y = diabetes
    with pytest.raises(ValueError, match="y_val has 2 output"):
        MLPRegressor(max_iter=1).fit(X, y, X_val=X[:5], y_val=np.zeros((5, 2)))


@pytest.mark.parametrize("scoring", [3, "no_such_scorer"])
def test_bad_scoring_is_refused(split, scoring):
    X, y, *_ = split
    with pytest.raises(ValueError, match="scoring"):
        _clf(scoring=scoring).fit(X, y)


def test_pipeline_routes_and_transforms_x_val(split):
    import sklearn
    X, y, Xv, yv, *_ = split
    with sklearn.config_context(enable_metadata_routing=True):
        mlp = _clf(early_stopping=True, max_iter=30).set_fit_request(X_val=True, y_val=True)
        pipe = Pipeline([("scale", StandardScaler()), ("mlp", mlp)],
                        transform_input=["X_val"]).fit(X, y, X_val=Xv, y_val=yv)
    # The network saw X_val scaled by the pipeline's scaler: its best score is the
    # pipeline's own accuracy on X_val.
    assert accuracy_score(yv, pipe.predict(Xv)) == pipe[-1].best_validation_score_


# --- learning-rate schedules ----------------------------------------------------------------


def test_cosine_with_warm_up(split):
    X, y, *_ = split
    clf = _clf(max_iter=10, learning_rate_schedule=CosineAnnealing(warmup=2)).fit(X, y)
    expected = [0.001 * (e + 1) / 3 for e in range(2)] + [
        0.001 * (1 + math.cos(math.pi * (e - 2) / 8)) / 2 for e in range(2, 10)]
    np.testing.assert_allclose(clf.learning_rate_curve_, expected, rtol=1e-12)


def test_a_callable_factor_is_exactly_a_scaled_rate(split):
    X, y, *_ = split
    half = _clf(learning_rate_schedule=lambda epoch: 0.5).fit(X, y)
    plain = _clf(learning_rate_init=0.0005).fit(X, y)
    np.testing.assert_array_equal(half.coefs_[0], plain.coefs_[0])
    assert half.loss_curve_ == plain.loss_curve_
    for solver in ("adam", "sgd"):  # and it is applied, epoch by epoch, for both solvers
        decay = _clf(solver=solver, learning_rate_schedule=lambda e: 0.5 ** e).fit(X, y)
        assert decay.learning_rate_curve_ == [decay.learning_rate_init * 0.5 ** e
                                              for e in range(decay.n_iter_)]


def test_plateau_cuts_the_rate_when_the_loss_stalls(split):
    X, y, *_ = split
    clf = _clf(max_iter=40, n_iter_no_change=40, learning_rate_schedule=ReduceOnPlateau(
        factor=0.5, patience=2, threshold=0.3)).fit(X, y)
    rates = np.array(clf.learning_rate_curve_)
    assert rates[0] == 0.001 and rates.min() < 0.001  # cut at least once
    allowed = [0.5 ** k for k in range(20)] + [1e-4]  # halvings, down to min_factor
    assert all(np.isclose(r / 0.001, allowed, rtol=1e-9).any() for r in rates)
    assert np.all(np.diff(rates) <= 0)


def test_sgd_learning_rate_keeps_its_meaning(split):
    X, y, *_ = split
    inv = _clf(solver="sgd", learning_rate="invscaling", learning_rate_init=0.1).fit(X, y)
    # scikit-learn's invscaling: lr_init / (t + 1) ** power_t, updated after each epoch.
    expected = [0.1] + [0.1 / (k * len(X) + 1) ** 0.5 for k in range(1, inv.n_iter_)]
    np.testing.assert_allclose(inv.learning_rate_curve_, expected, rtol=1e-12)
    for rule in ("invscaling", "adaptive"):
        with pytest.raises(ValueError, match="learning_rate='constant'"):
            _clf(solver="sgd", learning_rate=rule, learning_rate_schedule="cosine").fit(X, y)


@pytest.mark.parametrize("schedule, match", [
    ("linear", "learning_rate_schedule must be"), (3, "learning_rate_schedule must be"),
    (CosineAnnealing(warmup=-1), "warmup"), (ReduceOnPlateau(factor=1.5), "factor"),
])
def test_bad_schedules_are_refused(split, schedule, match):
    X, y, *_ = split
    with pytest.raises((ValueError, TypeError), match=match):
        _clf(learning_rate_schedule=schedule).fit(X, y)
    with pytest.raises(ValueError, match="positive, finite factor"):
        _clf(learning_rate_schedule=lambda e: -1.0).fit(X, y)


def test_schedule_parameter_is_not_changed_and_clones(split):
    X, y, *_ = split
    plateau = ReduceOnPlateau(patience=1)
    clf = _clf(learning_rate_schedule=plateau).fit(X, y)
    assert vars(plateau) == vars(ReduceOnPlateau(patience=1))
    assert repr(clone(clf).learning_rate_schedule) == repr(plateau)


def test_checkpoint_resumes_the_schedule_exactly(split, tmp_path, raise_at_step, monkeypatch):
    X, y, *_ = split
    params = dict(max_iter=12, n_iter_no_change=50, learning_rate_schedule=ReduceOnPlateau(
        factor=0.5, patience=1, threshold=0.3))
    whole = _clf(**params).fit(X, y)
    assert len(set(whole.learning_rate_curve_[:6])) > 1  # cut before the interruption
    assert len(set(whole.learning_rate_curve_[6:])) > 1  # and after it
    path = tmp_path / "fit.ckpt"
    raise_at_step(2 * 6 + 1, KeyboardInterrupt)  # in the 7th epoch (2 batches each)
    with pytest.warns(UserWarning, match="interrupted"):
        _clf(checkpoint_path=str(path), **params).fit(X, y)
    monkeypatch.undo()
    assert path.exists()
    resumed = _clf(checkpoint_path=str(path), **params).fit(X, y)
    assert resumed.learning_rate_curve_ == whole.learning_rate_curve_
    assert resumed.loss_curve_ == whole.loss_curve_
    np.testing.assert_array_equal(resumed.coefs_[0], whole.coefs_[0])


def test_checkpoint_keys_callables_by_content(split, tmp_path):
    X, y, *_ = split
    with pytest.raises(ValueError, match="learning_rate_schedule=.*lambda.*module level"):
        _clf(learning_rate_schedule=lambda e: 1.0, checkpoint_path=str(tmp_path / "c")).fit(X, y)
    # A module-level function and a scorer: the same fingerprint in another process.
    code = ("import numpy as np, sknn; from sklearn.metrics import make_scorer, "
            "balanced_accuracy_score as b; from sknn.schedules import CosineAnnealing;"
            "est = sknn.MLPClassifier(scoring=make_scorer(b), learning_rate_schedule="
            "CosineAnnealing(warmup=2)); import torch; est.device_ = torch.device('cpu');"
            "print(est._fingerprint(np.ones((2, 2)), np.ones(2), None)[1])")
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout for _ in range(2)]
    assert out[0] == out[1] and "0x" not in out[0]


# --- callbacks -----------------------------------------------------------------------------


class Recorder:
    """Records every hook call; asks to stop at epoch ``stop_at``."""

    def __init__(self, stop_at=None):
        self.stop_at, self.calls = stop_at, []

    def setup(self, estimator, context):
        self.calls.append(("setup", None))

    def teardown(self, estimator, context):
        self.calls.append(("teardown", None))

    def on_fit_task_begin(self, estimator, context, *, X=None, y=None, metadata=None):
        self.calls.append(("begin", context.max_subtasks))

    def on_fit_task_end(self, estimator, context, *, X=None, y=None, metadata=None,
                        fitted_estimator=None):
        self.calls.append(("end", context.max_subtasks, metadata, fitted_estimator))
        return (self.stop_at is not None and context.max_subtasks == 0
                and fitted_estimator.n_iter_ >= self.stop_at)

    def epochs(self):
        return [c for c in self.calls if c[0] == "end" and c[1] == 0]


@needs_callbacks
def test_a_fit_is_a_task_and_each_epoch_a_leaf(split):
    X, y, *_ = split
    rec = Recorder()
    w = np.ones(len(X))
    clf = _clf().set_callbacks(rec).fit(X, y, sample_weight=w)
    assert rec.calls[0] == ("setup", None) and rec.calls[-1] == ("teardown", None)
    assert rec.calls[1] == ("begin", clf.max_iter)  # the fit, with its epochs as subtasks
    epochs = rec.epochs()
    assert len(epochs) == clf.n_iter_
    assert epochs[0][2]["sample_weight"] is w
    # fitted_estimator: the model as it was at the end of each epoch, with its record so far.
    for k, (*_, metadata, fitted) in enumerate(epochs, start=1):
        assert fitted.n_iter_ == k and fitted.loss_curve_ == clf.loss_curve_[:k]
    np.testing.assert_array_equal(epochs[-1][3].predict_proba(X), clf.predict_proba(X))
    assert not np.array_equal(epochs[0][3].predict_proba(X), clf.predict_proba(X))


@needs_callbacks
def test_a_callback_stops_training_as_early_stopping_does(split):
    X, y, Xv, yv, *_ = split
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a requested stop: no warning
        clf = _clf(max_iter=50).set_callbacks(Recorder(stop_at=3)).fit(X, y)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == len(clf.learning_rate_curve_) == 3
    es = _clf(max_iter=50, early_stopping=True, learning_rate_init=0.05).set_callbacks(
        Recorder(stop_at=6)).fit(X, y, X_val=Xv, y_val=yv)
    assert es.n_iter_ == 6 and len(es.validation_scores_) == 6
    assert accuracy_score(yv, es.predict(Xv)) == es.best_validation_score_  # best restored


@needs_callbacks
def test_lbfgs_iterations_are_subtasks(split):
    X, y, *_ = split
    rec = Recorder(stop_at=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = _clf(solver="lbfgs", max_iter=30).set_callbacks(rec).fit(X, y)
    assert clf.n_iter_ == 2
    assert len([c for c in rec.calls if c[0] == "begin"]) == len(
        [c for c in rec.calls if c[0] == "end"])


@needs_callbacks
def test_callbacks_survive_clone_pickle_partial_fit_and_search(split):
    X, y, *_ = split
    rec = Recorder()
    clf = _clf().set_callbacks(rec)
    assert clone(clf)._skl_callbacks == [rec]
    again = pickle.loads(pickle.dumps(clf))
    assert len(again._skl_callbacks) == 1
    clf.partial_fit(X, y, classes=np.arange(10))
    clf.partial_fit(X, y)
    assert len(rec.epochs()) == 2  # one epoch each
    rec.calls.clear()
    GridSearchCV(clf, {"learning_rate_init": [1e-3, 1e-2]}, cv=2).fit(X, y)
    assert len([c for c in rec.calls if c[0] == "setup"]) == 5  # 4 fits and the refit


@needs_callbacks
def test_scikit_learn_progress_bar_and_scoring_monitor(split):
    pytest.importorskip("rich")  # scikit-learn's ProgressBar draws with rich (the test extra)
    from sklearn.callback import ProgressBar, ScoringMonitor
    X, y, *_ = split
    monitor = ScoringMonitor(scoring="accuracy")
    clf = _clf().set_callbacks(monitor, ProgressBar()).fit(X, y)
    scores = [row["accuracy"] for row in monitor.get_logs().data if row["task_name"] == "epoch"]
    assert len(scores) == clf.n_iter_ and scores[-1] == clf.score(X, y)
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", _clf())])
    search = GridSearchCV(pipe, {"mlp__alpha": [1e-4, 1e-2]}, cv=2)
    search.set_callbacks(ProgressBar()).fit(X, y)
    assert search.best_estimator_[-1].n_iter_ == 8
    # A monitor set on the pipeline's network scores its epochs inside the pipeline (on the
    # scaled rows it trains on) and inside the search.
    monitor = ScoringMonitor(scoring="accuracy")
    pipe = Pipeline([("scale", StandardScaler()), ("mlp", _clf().set_callbacks(monitor))])
    GridSearchCV(pipe, {"mlp__alpha": [1e-4, 1e-2]}, cv=2).fit(X, y)
    epochs = [row for log in monitor.get_logs(select="all") for row in log.data
              if row["task_name"] == "epoch"]
    assert len(epochs) == 5 * 8  # 4 fits and the refit, 8 epochs each


@needs_callbacks
def test_history_logger_and_time_budget(split, tmp_path):
    X, y, Xv, yv, *_ = split
    path = tmp_path / "history.csv"
    clf = _clf().set_callbacks(callbacks.HistoryLogger(path)).fit(X, y, X_val=Xv, y_val=yv)
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == ["estimator", "epoch", "seconds", "loss", "learning_rate",
                                   "validation_score", "validation_loss"]
    assert len(lines) == clf.n_iter_ + 1
    assert float(lines[-1].split(",")[3]) == clf.loss_curve_[-1]
    jpath = tmp_path / "history.jsonl"
    _clf().set_callbacks(callbacks.HistoryLogger(jpath)).fit(X, y)
    rows = [json.loads(line) for line in jpath.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    budget = callbacks.TimeBudget(seconds=1e-9)
    clf = _clf(max_iter=50).set_callbacks(budget).fit(X, y)
    assert clf.n_iter_ == 1 and budget.stopped_
    with pytest.raises(ValueError, match="positive"):
        callbacks.TimeBudget(seconds=0)


@needs_callbacks
def test_training_controls_fall_back_from_the_fused_search(split):
    from sknn.model_selection import GridSearchCV as FusedGridSearchCV
    X, y, *_ = split
    grid = {"learning_rate_init": [1e-3, 1e-2]}
    for est in (_clf(learning_rate_schedule="cosine"), _clf(scoring="loss"),
                _clf().set_callbacks(Recorder())):
        ours = FusedGridSearchCV(est, grid, cv=2).fit(X, y)
        ref = GridSearchCV(est, grid, cv=2).fit(X, y)
        np.testing.assert_array_equal(ours.cv_results_["mean_test_score"],
                                      ref.cv_results_["mean_test_score"])


def test_convnet_takes_every_control(split, tmp_path):
    X, y, Xv, yv, *_ = split
    net = ConvNetClassifier(conv_layers=(4,), hidden_layer_sizes=(16,), max_iter=3,
                            random_state=0, early_stopping=True, scoring="loss",
                            learning_rate_schedule=CosineAnnealing(warmup=1))
    if callbacks.AVAILABLE:
        net.set_callbacks(callbacks.HistoryLogger(tmp_path / "h.csv"))
    net.fit(X, y, X_val=Xv, y_val=yv)
    assert len(net.validation_loss_curve_) == len(net.learning_rate_curve_) == net.n_iter_
    assert net.learning_rate_curve_[0] == pytest.approx(0.0005)
    assert -log_loss(yv, net.predict_proba(Xv), labels=net.classes_) == pytest.approx(
        net.best_validation_score_, rel=1e-5)


def test_save_and_load_keep_schedules_and_records(split, tmp_path):
    from sknn import load, save
    X, y, Xv, yv, *_ = split
    clf = _clf(learning_rate_schedule=ReduceOnPlateau(patience=1, threshold=0.3),
               scoring="loss").fit(X, y, X_val=Xv, y_val=yv)
    if callbacks.AVAILABLE:
        clf.set_callbacks(callbacks.TimeBudget(60))  # code, not data: left out of the file
    save(clf, tmp_path / "m.sknn")
    loaded = load(tmp_path / "m.sknn")
    assert repr(loaded.learning_rate_schedule) == repr(clf.learning_rate_schedule)
    assert loaded.validation_loss_curve_ == clf.validation_loss_curve_
    assert "_skl_callbacks" not in vars(loaded)
    # partial_fit continues the schedule of the saved fit, as the original does.
    clf.partial_fit(X, y)
    loaded.partial_fit(X, y)
    assert loaded.learning_rate_curve_ == clf.learning_rate_curve_
    np.testing.assert_array_equal(loaded.coefs_[0], clf.coefs_[0])


def test_callbacks_cost_nothing_when_unset(split, monkeypatch):
    X, y, *_ = split

    def refuse(*args, **kwargs):
        raise AssertionError("a callback task was made for a fit without callbacks")

    monkeypatch.setattr(callbacks, "_FitTask", refuse)
    _clf().fit(X, y)
    _clf(solver="lbfgs", max_iter=3).fit(X, y)
