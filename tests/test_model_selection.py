"""sknn.model_selection: fused searches give scikit-learn's search results, fit for fit."""

import threading
import warnings

import numpy as np
import pytest
from joblib import Parallel, delayed
from scipy.stats import loguniform
from sklearn import model_selection as skms
from sklearn.datasets import load_diabetes, load_digits, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning, FitFailedWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import make_scorer, recall_score
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor, _engine
from sknn.model_selection import GridSearchCV, RandomizedSearchCV
from conftest import needs_sklearn

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X[:300] / 16, y[:300]


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X)[:240], (y[:240] - y.mean()) / y.std()


@pytest.fixture
def stacks(monkeypatch):
    """The sizes of the stacks trained (an ordinary fit is not a stack)."""
    sizes, init = [], _engine.FusedStack.__init__

    def spy(self, members):
        sizes.append(len(members))
        init(self, members)

    monkeypatch.setattr(_engine.FusedStack, "__init__", spy)
    return sizes


def assert_same_search(ours, ref, atol=1e-9):
    """Every split's scores, the ranks and the best candidate as scikit-learn's search."""
    assert set(ours.cv_results_) == set(ref.cv_results_)
    for key, value in ref.cv_results_.items():
        if key.startswith(("split", "mean_test", "std_test", "mean_train", "rank")):
            np.testing.assert_allclose(ours.cv_results_[key], value, atol=atol, err_msg=key)
        elif key.startswith("param"):
            assert list(ours.cv_results_[key]) == list(value), key
    assert ours.best_index_ == ref.best_index_
    assert ours.best_params_ == ref.best_params_
    assert ours.best_score_ == pytest.approx(ref.best_score_, abs=atol)
    assert ours.n_splits_ == ref.n_splits_ and ours.multimetric_ == ref.multimetric_


def both(search, estimator, grid, X, y, **kw):
    fit_params = kw.pop("fit_params", {})
    ours = getattr(__import__("sknn.model_selection").model_selection, search)(
        estimator, grid, **kw).fit(X, y, **fit_params)
    ref = getattr(skms, search)(estimator, grid, **kw).fit(X, y, **fit_params)
    return ours, ref


def test_classifier_pipeline_grid_fuses_and_matches_sklearn(digits, stacks):
    X, y = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=8, random_state=0))
    grid = {"mlpclassifier__hidden_layer_sizes": [(16,), (24,)],
            "mlpclassifier__learning_rate_init": [1e-3, 1e-2]}
    ours, ref = both("GridSearchCV", pipe, grid, X, y, cv=3, return_train_score=True)
    assert_same_search(ours, ref)
    assert sorted(stacks) == [6, 6]  # one stack per layer size: 2 rates x 3 folds
    np.testing.assert_array_equal(ours.predict_proba(X), ref.predict_proba(X))
    assert ours.classes_.tolist() == ref.classes_.tolist() and ours.n_features_in_ == 64
    assert ours.refit_time_ > 0 and callable(ours.scorer_)
    # fit times of fused fits: each fit's share of its stack, plus its own steps
    assert (ours.cv_results_["mean_fit_time"] > 0).all()


def test_members_are_the_models_their_own_fits_give(digits):
    """Each member of a stack ends with its own fit's model: its weights, record and solver
    state (a partial_fit afterwards continues identically)."""
    from sknn import _fused
    X, y = digits
    grid = [dict(learning_rate_init=lr, alpha=a, random_state=rs, solver=solver)
            for lr in (1e-3, 3e-2) for a in (1e-4, 1.0) for rs in (0, np.random.RandomState(1))
            for solver in ("adam", "sgd")]
    w = np.random.RandomState(0).rand(len(y)) + 0.5
    from sklearn.base import clone
    base = MLPClassifier(hidden_layer_sizes=(12, 8), max_iter=12, batch_size=64)
    entries = [(i, clone(base).set_params(**clone(g, safe=False)), X, y, w)
               for i, g in enumerate(grid)]
    out = {}
    for solver in ("adam", "sgd"):
        mine = [e for e in entries if e[1].solver == solver]
        for key, fitted, error, _, _ in _fused._train_task(mine, fuse=True):
            assert error is None
            out[key] = fitted
    for i, g in enumerate(grid):
        ref = clone(base).set_params(**clone(g, safe=False)).fit(X, y, sample_weight=w)
        got = out[i]
        assert got.n_iter_ == ref.n_iter_ and got.t_ == ref.t_
        np.testing.assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=1e-12)
        for a, b in zip(got.coefs_ + got.intercepts_, ref.coefs_ + ref.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
        got.partial_fit(X, y)
        ref.partial_fit(X, y)
        np.testing.assert_allclose(got.coefs_[0], ref.coefs_[0], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["classifier", "multilabel", "regressor"])
def test_float32_members_are_their_own_fits_bit_for_bit(digits, kind):
    """In float32 too, each member of a stack ends with exactly its own fit's model: the same
    loss curve, validation scores, weights and solver state, bit for bit, with members of
    different sizes (last batches of other lengths) and sample weights in one stack. On one
    thread (two: see the next test). The last hidden layer's 9 units and the 10 classes take
    the batched products (dimensions of 9 or more), where MKL's AVX2 kernels give other bits to
    the output layer's gradient computed in the other orientation
    (sknn.nn._OUTPUT_GRAD_TRANSPOSED)."""
    from sklearn.base import clone
    from sknn import _fused
    X, y = digits
    X = X.astype(np.float32)
    if kind == "multilabel":
        y = np.stack([y % 2, y > 4, y == 3], axis=1).astype(int)
    est = (MLPRegressor if kind == "regressor" else MLPClassifier)(
        hidden_layer_sizes=(12, 9), max_iter=10, batch_size=64, n_iter_no_change=3)
    y = y / 9.0 if kind == "regressor" else y
    grid = [dict(learning_rate_init=lr, alpha=a, solver=solver, early_stopping=es,
                 random_state=0)
            for lr in (1e-3, 0.3) for a in (0.0, 1.0) for solver in ("adam", "sgd")
            for es in (False, True)]
    w = np.random.RandomState(0).rand(len(y)).astype(np.float32) + 0.5
    entries = [(i, n, clone(est).set_params(**g), X[:n], y[:n], sw)
               for i, (g, n, sw) in enumerate(
                   (g, n, sw) for g in grid for n in (300, 287) for sw in (None, w[:n]))]
    out, refs = {}, {}
    with threadpool_limits(1):
        for solver in ("adam", "sgd"):
            for weighted in (False, True):
                mine = [(i, e, Xn, yn, sw) for i, _, e, Xn, yn, sw in entries
                        if e.solver == solver and (sw is not None) == weighted]
                for key, fitted, error, _, _ in _fused._train_task(mine, fuse=True):
                    assert error is None
                    out[key] = fitted
        for i, n, e, Xn, yn, sw in entries:
            refs[i] = clone(e).fit(Xn, yn, sample_weight=sw)
    for i, n, e, Xn, yn, sw in entries:
        ref, got = refs[i], out[i]
        assert got.loss_curve_ == ref.loss_curve_, (i, e.get_params())
        assert got.validation_scores_ == ref.validation_scores_
        for a, b in zip(got.coefs_ + got.intercepts_, ref.coefs_ + ref.intercepts_):
            np.testing.assert_array_equal(a, b)
        if not e.early_stopping:  # the solver's state too: a partial_fit continues alike
            with threadpool_limits(1):
                got.partial_fit(Xn, yn)
                ref.partial_fit(Xn, yn)
            np.testing.assert_array_equal(got.coefs_[0], ref.coefs_[0])


def test_float32_members_are_their_own_fits_on_two_threads(digits):
    """On two threads too, each member ends with its own fit's model, bit for bit: with AVX2
    kernels, where MKL shares a single product's work between the threads otherwise than a
    batch's, the stack runs one product per member (sknn.nn.batched_is_exact); with AVX-512
    kernels, batched products give the same bits. Products of 200 rows x 64 features x 32
    units, which MKL's AVX2 kernels run otherwise batched on two threads."""
    from sklearn.base import clone
    from sknn import _fused
    X, y = digits
    X = (X[:600] / 16).astype(np.float32)
    est = MLPClassifier(hidden_layer_sizes=(32,), max_iter=3, random_state=0)
    entries = [(i, clone(est).set_params(learning_rate_init=lr), X[:n], y[:n], None)
               for i, (lr, n) in enumerate((lr, n) for lr in (1e-3, 0.1) for n in (600, 537))]
    with threadpool_limits(2):
        out = {key: fitted for key, fitted, *_ in _fused._train_task(entries, fuse=True)}
        refs = {i: clone(e).fit(Xn, yn) for i, e, Xn, yn, _ in entries}
    for i, ref in refs.items():
        assert out[i].loss_curve_ == ref.loss_curve_
        for a, b in zip(out[i].coefs_ + out[i].intercepts_, ref.coefs_ + ref.intercepts_):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_float32_search_scores_equal_sklearns_search_exactly(digits, threads):
    """A float32 search with unstable learning rates, where any rounding difference grows into
    another model: every split's score is scikit-learn's search's, exactly, on one thread and
    on two (where, with AVX2 kernels, the stacks run one product per member:
    sknn.nn.batched_is_exact)."""
    X, y = digits
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=12, random_state=0))
    grid = {"mlpclassifier__hidden_layer_sizes": [(32,)],
            "mlpclassifier__learning_rate_init": [1e-3, 0.1, 0.5]}
    with threadpool_limits(threads):
        ours, ref = both("GridSearchCV", pipe, grid, X.astype(np.float32), y, cv=5)
    assert_same_search(ours, ref, atol=0)


def test_regressor_with_early_stopping_and_sample_weight(diabetes, stacks):
    X, y = diabetes
    est = MLPRegressor(hidden_layer_sizes=(8,), max_iter=15, early_stopping=True,
                       n_iter_no_change=2, random_state=0)
    grid = {"learning_rate_init": [1e-3, 1e-2, 1e-1], "alpha": [1e-4, 1.0]}
    w = np.random.RandomState(1).rand(len(y)) + 0.2
    ours, ref = both("GridSearchCV", est, grid, X, y, cv=3, fit_params={"sample_weight": w})
    assert_same_search(ours, ref)
    assert stacks == [18]


def test_multilabel_and_mixed_solvers_and_unfusable_candidates(stacks):
    X, Y = make_multilabel_classification(n_samples=200, n_classes=3, random_state=0)
    X = X / X.max()
    grid = [{"solver": ["adam", "sgd"], "learning_rate_init": [1e-3, 1e-2]},
            {"solver": ["lbfgs"], "max_iter": [5]},
            {"dropout": [0.2], "max_iter": [3]}]
    est = MLPClassifier(hidden_layer_sizes=(10,), max_iter=6, random_state=0)
    ours, ref = both("GridSearchCV", est, grid, X, Y, cv=2)
    assert_same_search(ours, ref)
    assert sorted(stacks) == [4, 4]  # adam and sgd stacks; lbfgs and dropout fit alone


@pytest.mark.parametrize("params, fused", [
    (dict(class_weight="balanced"), True),
    (dict(warm_start=True), True),
    (dict(batch_norm=True), False),
    (dict(dropout=0.1), False),
    (dict(verbose=1), False),
])
def test_what_fuses_and_what_falls_back(digits, stacks, params, fused, capsys):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, **params)
    ours, ref = both("GridSearchCV", est, {"learning_rate_init": [1e-3, 1e-2]}, X, y, cv=2)
    assert_same_search(ours, ref)
    assert stacks == ([4] if fused else [])


def test_checkpoint_path_falls_back_and_each_fit_completes(digits, stacks, tmp_path):
    X, y = digits
    path = tmp_path / "fit.ckpt"
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0,
                        checkpoint_path=str(path))
    ours, ref = both("GridSearchCV", est, {"learning_rate_init": [1e-3, 1e-2]}, X, y, cv=2)
    assert_same_search(ours, ref)
    assert stacks == [] and not path.exists()


def test_randomized_search_with_unseeded_sampler_and_float32(digits, stacks):
    X, y = digits
    X = X.astype(np.float32)
    dist = {"learning_rate_init": loguniform(1e-4, 1e-1), "alpha": loguniform(1e-5, 1)}
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=6, random_state=0)
    ours, ref = both("RandomizedSearchCV", est, dist, X, y, n_iter=5, cv=2, random_state=0)
    assert_same_search(ours, ref, atol=0.01)
    assert stacks == [10]
    # Unseeded: the candidates are drawn once; the ones scored are the ones trained.
    unseeded = RandomizedSearchCV(est, dist, n_iter=4, cv=2).fit(X, y)
    assert len(unseeded.cv_results_["params"]) == 4 and stacks[-1] == 8


def test_multimetric_callable_refit_groups_and_error_score(digits, stacks):
    X, y = digits
    groups = np.arange(len(y)) % 4
    scoring = {"acc": "accuracy", "rec": make_scorer(recall_score, average="macro")}

    def refit(results):
        return int(np.nanargmax(results["mean_test_rec"]))

    grid = {"learning_rate_init": [1e-3, 1e-2], "hidden_layer_sizes": [(8,), (-1,)]}
    est = MLPClassifier(max_iter=4, random_state=0)
    kw = dict(cv=GroupKFold(n_splits=2), scoring=scoring, refit=refit, error_score=np.nan,
              fit_params={"groups": groups})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitFailedWarning)
        ours, ref = both("GridSearchCV", est, grid, X, y, **kw)
    assert np.isnan(ours.cv_results_["mean_test_acc"]).sum() == 2  # the invalid size
    ok = ~np.isnan(ref.cv_results_["mean_test_acc"])
    for key in ("mean_test_acc", "mean_test_rec", "rank_test_acc", "rank_test_rec"):
        np.testing.assert_allclose(ours.cv_results_[key][ok], ref.cv_results_[key][ok])
    assert ours.best_index_ == ref.best_index_ and ours.best_params_ == ref.best_params_
    assert stacks == [4]
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        GridSearchCV(est, grid, cv=2, error_score="raise").fit(X, y)


def test_a_member_that_diverges_gets_error_score_and_the_others_train_on(diabetes, stacks):
    X, y = diabetes
    est = MLPRegressor(solver="sgd", hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    grid = {"learning_rate_init": [1e-3, 1e3]}
    with pytest.warns(FitFailedWarning):
        ours, ref = both("GridSearchCV", est, grid, X * 100, y * 100, cv=2, error_score=-1.0,
                         refit=False)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"], atol=1e-9)
    assert ours.cv_results_["mean_test_score"][1] == -1.0
    assert stacks == [4]


def test_non_sknn_and_convnet_estimators_use_sklearns_search(digits, stacks):
    X, y = digits
    ours, ref = both("GridSearchCV", LogisticRegression(max_iter=200), {"C": [0.1, 1.0]}, X, y,
                     cv=2)
    assert_same_search(ours, ref)
    net = ConvNetClassifier(conv_layers=(4,), hidden_layer_sizes=(8,), max_iter=2,
                            random_state=0, device="cpu")
    ours, ref = both("GridSearchCV", net, {"learning_rate_init": [1e-3, 1e-2]}, X, y, cv=2)
    assert_same_search(ours, ref)
    assert stacks == []


def test_n_jobs_2_and_shuffled_splits_give_the_same_search(digits):
    X, y = digits
    est = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=4,
                                                        random_state=0))
    grid = {"mlpclassifier__learning_rate_init": [1e-3, 1e-2]}
    cv = KFold(3, shuffle=True, random_state=0)
    one = GridSearchCV(est, grid, cv=cv).fit(X, y)
    two = GridSearchCV(est, grid, cv=cv, n_jobs=2).fit(X, y)
    assert_same_search(two, one)


def test_verbose_and_callbacks_as_sklearns_search(digits, capsys):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0)
    GridSearchCV(est, {"alpha": [1e-4, 1e-2]}, cv=2, verbose=1).fit(X, y)
    assert "Fitting 2 folds for each of 2 candidates, totalling 4 fits" in capsys.readouterr().out
    callback = pytest.importorskip("sklearn.callback")
    seen = []

    class Count:
        def setup(self, estimator, context):
            pass

        def teardown(self, estimator, context):
            pass

        def on_fit_task_begin(self, estimator, context, **kwargs):
            seen.append(context.task_name)

        def on_fit_task_end(self, estimator, context, **kwargs):
            return False

    search = GridSearchCV(est, {"alpha": [1e-4, 1e-2]}, cv=2)
    callbacks = [Count()]
    try:
        callbacks.append(callback.ProgressBar())
    except ImportError:  # it needs rich
        pass
    search.set_callbacks(*callbacks).fit(X, y)
    assert seen.count("candidate-split-evaluation") == 4


def test_random_state_instances_are_copied_per_fit_as_clone_does(digits, stacks):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=4,
                        random_state=np.random.RandomState(3))
    state = est.random_state.get_state()[1].copy()
    ours, ref = both("GridSearchCV", est, {"learning_rate_init": [1e-3, 1e-2]}, X, y, cv=2)
    assert_same_search(ours, ref)
    assert stacks == [4]
    np.testing.assert_array_equal(est.random_state.get_state()[1], state)  # never consumed


def test_a_stack_over_the_memory_budget_is_split(digits, stacks, monkeypatch):
    from sknn import _fused
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=4, random_state=0)
    grid = {"learning_rate_init": [1e-3, 1e-2], "alpha": [1e-4, 1e-2]}
    whole = GridSearchCV(est, grid, cv=2).fit(X, y)
    one_fit = _fused.stack_nbytes([(None, est, X[:150], y[:150], None)])
    monkeypatch.setattr(_fused, "STACK_BUDGET", 3 * one_fit)
    split = GridSearchCV(est, grid, cv=2).fit(X, y)
    assert stacks == [8, 3, 3, 2]
    assert_same_search(split, whole, atol=1e-12)


def test_fits_too_large_to_gain_from_fusing_train_alone(digits, stacks, monkeypatch):
    from sknn import _fused
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0)
    grid = {"learning_rate_init": [1e-3, 1e-2]}
    monkeypatch.setattr(_fused, "FUSE_MAX_WORK", 150 * 64 - 1)  # batch 150 x 64 features
    ours, ref = both("GridSearchCV", est, grid, X, y, cv=2)
    assert_same_search(ours, ref)
    assert stacks == []
    monkeypatch.setattr(_fused, "FUSE_MAX_WORK", 150 * 64)
    GridSearchCV(est, grid, cv=2).fit(X, y)
    assert stacks == [4]


def test_members_of_other_sizes_leave_the_stack_in_any_order(digits):
    """Members with more or fewer rows (and batches) than others, stopping at other epochs:
    each ends as its own fit."""
    from sklearn.base import clone

    from sknn import _fused
    X, y = digits
    w = np.random.RandomState(0).rand(len(y)) + 0.5
    sizes_and_epochs = [(300, 2), (250, 5), (201, 4), (120, 3)]
    base = MLPClassifier(hidden_layer_sizes=(8,), batch_size=50, random_state=0)
    entries = [(i, clone(base).set_params(max_iter=e), X[:n], y[:n], w[:n])
               for i, (n, e) in enumerate(sizes_and_epochs)]
    out = {key: fitted for key, fitted, *_ in _fused._train_task(entries, fuse=True)}
    for i, (n, e) in enumerate(sizes_and_epochs):
        ref = clone(base).set_params(max_iter=e).fit(X[:n], y[:n], sample_weight=w[:n])
        assert out[i].n_iter_ == e
        np.testing.assert_allclose(out[i].loss_curve_, ref.loss_curve_, rtol=1e-12)
        np.testing.assert_allclose(out[i].coefs_[0], ref.coefs_[0], rtol=1e-10, atol=1e-13)


@needs_sklearn("1.8", "GridSearchCV routes sample_weight to Pipeline.score from 1.8")
def test_metadata_routing_of_sample_weight_through_a_pipeline(digits, stacks):
    import sklearn
    X, y = digits
    w = np.random.RandomState(2).rand(len(y)) + 0.5
    with sklearn.config_context(enable_metadata_routing=True):
        mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=4, random_state=0)
        pipe = make_pipeline(StandardScaler().set_fit_request(sample_weight=False),
                             mlp.set_fit_request(sample_weight=True)
                             .set_score_request(sample_weight=True))
        grid = {"mlpclassifier__learning_rate_init": [1e-3, 1e-2]}
        ours, ref = both("GridSearchCV", pipe, grid, X, y, cv=2,
                         fit_params={"sample_weight": w})
    assert_same_search(ours, ref)
    assert stacks == [4]


@pytest.mark.parametrize("target", ["poisson", "multi-output"])
def test_poisson_and_multi_output_regressors_fuse(diabetes, stacks, target):
    X, y = diabetes
    if target == "poisson":
        est, Y = MLPRegressor(loss="poisson", hidden_layer_sizes=(8,), max_iter=5,
                              random_state=0), y - y.min()
    else:
        est, Y = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0), np.c_[y, -y]
    ours, ref = both("GridSearchCV", est, {"learning_rate_init": [1e-3, 1e-2]}, X, Y, cv=2)
    assert_same_search(ours, ref)
    assert stacks == [4]


def test_a_member_whose_data_stays_on_the_host_trains_alone(digits, stacks, monkeypatch):
    from sknn import _data
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    grid = {"learning_rate_init": [1e-3, 1e-2]}
    monkeypatch.setattr(_data, "_fits_on_device", lambda *a, **k: False)
    ours, ref = both("GridSearchCV", est, grid, X, y, cv=2)
    assert_same_search(ours, ref)
    assert stacks == []


def test_a_lone_member_that_diverges_gets_its_error(diabetes):
    from sknn import _fused
    X, y = diabetes
    est = MLPRegressor(solver="sgd", hidden_layer_sizes=(8,), max_iter=5, learning_rate_init=1e3,
                       random_state=0)
    [(key, fitted, error, _, _)] = _fused._train_task([("k", est, X * 100, y * 100, None)], True)
    assert fitted is None and isinstance(error, ValueError) and "diverged" in str(error)


_FITTED_ELSEWHERE = []


def _fit_in_another_thread(Z):
    """A transformer's function (see below): fits an MLP in another thread, meanwhile."""
    job = threading.Thread(target=lambda: _FITTED_ELSEWHERE.append(
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(Z, Z[:, 0] > 0)))
    job.start()
    job.join()
    return Z


def test_fits_in_other_threads_train_and_searches_run_side_by_side(digits):
    """A search intercepts its own fits only: an MLP fitted in another thread while the search
    captures its fits trains, and two searches in two threads give the results each gives
    alone."""
    X, y = digits
    _FITTED_ELSEWHERE.clear()
    est = make_pipeline(FunctionTransformer(_fit_in_another_thread),
                        MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0))
    GridSearchCV(est, {"mlpclassifier__learning_rate_init": [1e-3, 1e-2]}, cv=2).fit(X, y)
    assert _FITTED_ELSEWHERE and all(hasattr(m, "coefs_") for m in _FITTED_ELSEWHERE)

    def search(seed):
        mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=seed)
        return GridSearchCV(mlp, {"alpha": [1e-4, 1e-1]}, cv=3).fit(X, y)

    together = Parallel(n_jobs=2, backend="threading")(delayed(search)(s) for s in (0, 1))
    for seed, ours in zip((0, 1), together):
        assert_same_search(ours, search(seed), atol=0)


def test_parameters_that_do_not_pickle_are_searched_as_sklearn_searches(digits):
    X, y = digits
    est = make_pipeline(FunctionTransformer(lambda Z: Z * 2),
                        MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0))
    ours, ref = both("GridSearchCV", est, {"mlpclassifier__alpha": [1e-4, 1e-1]}, X, y, cv=2)
    assert_same_search(ours, ref, atol=0)


def test_list_input_generator_cv_and_shared_random_state_as_sklearn(digits, stacks):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    grid = {"alpha": [1e-4, 1e-1]}
    ours, ref = both("GridSearchCV", est, grid, X.tolist(), list(y), cv=2)
    assert_same_search(ours, ref, atol=0)
    assert stacks  # the lists' fits were fused
    ours = GridSearchCV(est, grid, cv=KFold(3).split(X)).fit(X, y)  # a generator: used once
    assert_same_search(ours, skms.GridSearchCV(est, grid, cv=list(KFold(3).split(X))).fit(X, y))
    # One RandomState for the sampler and the splitter: drawn in scikit-learn's order
    runs = [search(est, {"alpha": loguniform(1e-5, 1e-1)}, n_iter=3, random_state=rs,
                   cv=KFold(3, shuffle=True, random_state=rs)).fit(X, y)
            for search, rs in ((RandomizedSearchCV, np.random.RandomState(0)),
                               (skms.RandomizedSearchCV, np.random.RandomState(0)))]
    assert_same_search(*runs, atol=0)


def test_search_parameters_are_checked_before_any_fit(digits, stacks):
    from sklearn.utils._param_validation import InvalidParameterError
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3)
    for bad in (dict(error_score="bogus"), dict(n_jobs="two"), dict(cv="bad"),
                dict(return_train_score="x")):
        with pytest.raises(InvalidParameterError):
            GridSearchCV(est, {"alpha": [1e-4, 1e-1]}, **bad).fit(X, y)
    assert stacks == []


def test_invalid_candidates_and_warnings_as_errors_get_error_score(digits, stacks):
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    for grid in ({"batch_size": [32, "bad", None]},
                 {"early_stopping": [True], "validation_fraction": [0.1, None]}):
        with pytest.warns(FitFailedWarning):
            ours, ref = both("GridSearchCV", est, grid, X, y, cv=2)
        assert_same_search(ours, ref, atol=0)
    # A fit whose ConvergenceWarning is an error fails, and only that fit: as in
    # scikit-learn's search, where each fit raises its own warning
    grid = {"alpha": [1e-4, 1e-2], "tol": [1e-9, 10.0]}  # stops in 3 epochs at tol=10
    est.set_params(max_iter=6, n_iter_no_change=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("ignore", FitFailedWarning)
        ours, ref = both("GridSearchCV", est, grid, X, y, cv=2, refit=False)
    assert_same_search(ours, ref, atol=0)
    assert np.isnan(ours.cv_results_["mean_test_score"]).sum() == 2
    assert stacks


def test_fits_given_validation_data_train_once(digits, monkeypatch):
    from sknn import _base
    X, y = digits
    calls, fit = [], _base.BaseNeuralNetwork._fit

    def counted(self, *args, **kwargs):
        calls.append(1)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(_base.BaseNeuralNetwork, "_fit", counted)
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    GridSearchCV(est, {"alpha": [1e-4, 1e-1]}, cv=2).fit(X, y, X_val=X[:50], y_val=y[:50])
    assert len(calls) == 2 * 2 + 1  # each (candidate, fold), then the refit


def test_callbacks_that_reach_the_fits_see_every_fit_and_epoch(digits, stacks):
    """A callback set on the search that propagates down to the MLP's fits sees each fit and
    each of its epochs, as in scikit-learn's search; one that stops above them lets the fits
    fuse."""
    callback = pytest.importorskip("sklearn.callback")
    from collections import Counter
    X, y = digits

    class Record:
        def __init__(self, depth):
            self.max_propagation_depth, self.log = depth, []

        def setup(self, estimator, context):
            pass

        def teardown(self, estimator, context):
            pass

        def on_fit_task_begin(self, estimator, context, **kwargs):
            self.log.append((type(estimator).__name__, context.task_name))

        def on_fit_task_end(self, estimator, context, **kwargs):
            return False

    assert isinstance(Record(None), callback.AutoPropagatedCallback)
    est = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=3,
                                                        random_state=0))
    grid = {"mlpclassifier__alpha": [1e-4, 1e-2]}
    for depth, fused in ((None, False), (2, False), (1, True)):
        stacks.clear()
        logs = [search(est, grid, cv=2).set_callbacks(Record(depth)).fit(X, y)._skl_callbacks[0].log
                for search in (GridSearchCV, skms.GridSearchCV)]
        assert Counter(logs[0]) == Counter(logs[1])
        assert bool(stacks) == fused


def test_a_search_where_no_candidate_can_fuse_is_sklearns_untouched(digits, stacks):
    """No capture pass: a Pipeline's other steps are fitted as often as in scikit-learn's
    search, and a RandomState's draws are scikit-learn's."""
    X, y = digits
    fits = []

    class Counted(StandardScaler):
        def fit(self, X, y=None, sample_weight=None):
            fits.append(1)
            return super().fit(X, y, sample_weight)

    est = make_pipeline(Counted(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=3,
                                                 solver="lbfgs", random_state=0))
    grid = {"mlpclassifier__alpha": loguniform(1e-5, 1e-1)}
    runs = []
    for search in (RandomizedSearchCV, skms.RandomizedSearchCV):
        fits.clear()
        runs.append(search(est, grid, n_iter=2, cv=2,
                           random_state=np.random.RandomState(0)).fit(X, y))
        runs.append(len(fits))
    assert runs[1] == runs[3] == 2 * 2 + 1
    assert_same_search(runs[0], runs[2], atol=0)
    assert stacks == []


def test_lone_fits_in_workers_give_their_warnings_and_no_split_is_kept(digits):
    """Fits trained alone in worker processes (sparse X) warn under the caller's filters, as
    in scikit-learn's search; the fitted search keeps its cv, not the splits' indices."""
    import pickle
    import scipy.sparse as sp
    X, y = digits
    est = MLPClassifier(hidden_layer_sizes=(8,), tol=1.0, random_state=0)
    grid = {"max_iter": [2, 300]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        warnings.simplefilter("ignore", FitFailedWarning)
        ours, ref = both("GridSearchCV", est, grid, sp.csr_matrix(X), y, cv=3, n_jobs=2,
                         refit=False)
    assert_same_search(ours, ref, atol=0)
    assert np.isnan(ours.cv_results_["mean_test_score"][0])
    assert type(ours._checked_cv_orig).__name__ != "_FixedSplits"
    assert len(pickle.dumps(ours)) < 2 * len(pickle.dumps(ref))
