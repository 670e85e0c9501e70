"""Scale: data that stays on the host, numpy memmaps, distributed grid searches."""

import warnings
import weakref

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from sknn import ConvNetClassifier, MLPClassifier, _data
from sknn._data import TrainingData

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32), y


@pytest.mark.parametrize("Est", [MLPClassifier, ConvNetClassifier])
def test_data_too_big_for_the_device_streams_from_the_host(digits, monkeypatch, Est):
    """When the data does not fit on the device it stays on the host and minibatches are copied
    over one by one: the model is the same as with the data on the device."""
    X, y = digits
    kw = dict(max_iter=3, random_state=0, device="cpu")
    if Est is ConvNetClassifier:
        kw.update(conv_layers=(4,), hidden_layer_sizes=(8,))
    w = np.random.RandomState(0).rand(len(y))
    on_device = Est(**kw).fit(X, y, sample_weight=w)
    monkeypatch.setattr(_data, "_fits_on_device", lambda *a, **k: False)
    streamed = Est(**kw).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(streamed.predict_proba(X), on_device.predict_proba(X), rtol=1e-5,
                               atol=1e-7)


def test_large_data_gathers_each_batch_alone_with_the_same_result(digits, monkeypatch):
    """Small data is gathered in shuffled order once per epoch, larger data batch by batch
    (no second copy of it): the same minibatches, so the same model to the last bit."""
    X, y = digits
    w = np.random.RandomState(0).rand(len(y))
    kw = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, device="cpu")
    gathered = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    monkeypatch.setattr(_data, "GATHER_LIMIT", 0)
    data = TrainingData(X, np.eye(10)[y], w, torch.device("cpu"), torch.float32)
    assert data.permuted(torch.arange(len(y))) is None
    per_batch = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    for a, b in zip(gathered.coefs_ + gathered.intercepts_,
                    per_batch.coefs_ + per_batch.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_one_shuffled_copy_of_the_data_at_a_time(digits, monkeypatch):
    """Each epoch's shuffled copy is freed before the next one is gathered."""
    X, y = digits
    made, gather = [], TrainingData.permuted

    def permuted(self, idx):
        assert all(ref() is None for ref in made), "last epoch's copy still alive"
        out = gather(self, idx)
        made.append(weakref.ref(out.X))
        return out

    monkeypatch.setattr(TrainingData, "permuted", permuted)
    MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, device="cpu").fit(X, y)
    assert len(made) == 3


def test_memmap_is_not_copied(digits, tmp_path):
    X, y = digits
    mm = np.memmap(tmp_path / "X.dat", dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.memmap(tmp_path / "X.dat", dtype=np.float32, mode="r", shape=X.shape)
    Y = np.eye(10)[y]
    data = TrainingData(ro, Y, None, torch.device("cpu"), torch.float32)
    assert np.shares_memory(data.X.numpy(), ro)  # the tensor is the memmap's pages
    from_memmap = MLPClassifier(max_iter=5, random_state=0, device="cpu").fit(ro, y)
    from_array = MLPClassifier(max_iter=5, random_state=0, device="cpu").fit(X, y)
    np.testing.assert_array_equal(from_memmap.predict_proba(X), from_array.predict_proba(X))


def test_grid_search_on_a_dask_cluster_matches_one_process(digits):
    distributed = pytest.importorskip("distributed")
    import joblib
    X, y = digits
    grid = {"hidden_layer_sizes": [(16,), (32,)], "learning_rate_init": [1e-3, 1e-2]}

    def search(**kw):
        est = MLPClassifier(max_iter=15, random_state=0, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return GridSearchCV(est, grid, cv=2, **kw).fit(X, y)

    local = search(n_jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster), joblib.parallel_backend("dask"):
            remote = search(n_jobs=-1)
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ == local.best_score_
