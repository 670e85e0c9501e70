"""Scale: data that stays on the host, numpy memmaps, distributed grid searches."""

import os
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV

from sknn import ConvNetClassifier, MLPClassifier, _base, _data
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


@pytest.fixture
def built_data(monkeypatch):
    """The TrainingData objects that fit builds, in a list."""
    built = []

    class Recorded(TrainingData):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(_base, "TrainingData", Recorded)
    return built


@pytest.mark.parametrize("early_stopping", [False, True])
def test_fit_trains_on_the_memmaps_own_pages(digits, tmp_path, built_data, early_stopping):
    """The tensor that fit trains on is the memmap's pages, with early stopping too (its
    training rows are gathered from X by index, not copied out of it)."""
    X, y = digits
    mm = np.memmap(tmp_path / "X.dat", dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.memmap(tmp_path / "X.dat", dtype=np.float32, mode="r", shape=X.shape)
    kw = dict(max_iter=2, random_state=0, device="cpu", early_stopping=early_stopping)
    from_memmap = MLPClassifier(**kw).fit(ro, y)
    (data,) = built_data
    assert data.X.shape == ro.shape
    assert np.shares_memory(data.X.numpy(), ro)
    assert data.n_samples == (len(y) - int(np.ceil(0.1 * len(y))) if early_stopping else len(y))
    from_array = MLPClassifier(**kw).fit(X, y)
    for a, b in zip(from_memmap.coefs_, from_array.coefs_):
        np.testing.assert_array_equal(a, b)


class _CopiedRows(TrainingData):
    """Early stopping's training rows copied out of X, as fit did before it gathered them by
    index: the reference that the row view must match to the last bit."""

    def __init__(self, X, Y, sample_weight, device, dtype, stream=None, rows=None):
        super().__init__(X if rows is None else X[rows], Y, sample_weight, device, dtype, stream)


@pytest.mark.parametrize("path", ["gathered", "per batch", "streamed", "sparse", "unshuffled"])
def test_early_stopping_rows_gathered_by_index_train_as_their_copy(digits, monkeypatch, path):
    X, y = digits
    w = np.random.RandomState(0).rand(len(y))
    kw = dict(hidden_layer_sizes=(16,), max_iter=3, random_state=0, device="cpu",
              early_stopping=True, shuffle=path != "unshuffled")
    if path == "per batch":
        monkeypatch.setattr(_data, "GATHER_LIMIT", 0)
    elif path == "streamed":
        monkeypatch.setattr(_data, "_fits_on_device", lambda *a, **k: False)
    elif path == "sparse":
        X = sp.csr_matrix(X)
    by_index = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    monkeypatch.setattr(_base, "TrainingData", _CopiedRows)
    copied = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    assert by_index.validation_scores_ == copied.validation_scores_
    assert by_index.loss_curve_ == copied.loss_curve_
    for a, b in zip(by_index.coefs_ + by_index.intercepts_, copied.coefs_ + copied.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_streamed_batches_reuse_their_tensors_and_hold_their_rows(digits):
    """Streamed minibatches gathered with ``reuse`` are written into the tensors kept for their
    row count (the heap does not grow by a batch a step) and hold exactly the rows asked for."""
    X, y = digits
    w = np.random.RandomState(0).rand(len(y))
    rows = np.arange(0, len(y), 2)  # the samples are every other row of X
    data = TrainingData(X, np.eye(10)[y][rows], w[rows], torch.device("cpu"), torch.float32,
                        stream=True, rows=rows)
    order = np.random.RandomState(1).permutation(data.n_samples)
    seen = []
    for a in (0, 50, 100):
        idx = order[a:a + 50]
        xb, yb, wb = data.batch(torch.from_numpy(idx), idx, reuse=True)
        np.testing.assert_array_equal(xb.numpy(), X[rows[idx]])
        np.testing.assert_array_equal(yb.numpy(), np.eye(10, dtype=np.float32)[y][rows[idx]])
        np.testing.assert_array_equal(wb.numpy(), w[rows[idx]].astype(np.float32))
        seen.append(tuple(t.data_ptr() for t in (xb, yb, wb)))
    assert seen[0] == seen[1] == seen[2]
    fresh = data.batch(torch.from_numpy(order[:50]), order[:50])[0]
    assert fresh.data_ptr() != seen[0][0]


# Child process for the memory test: fits on a memmap above the gather limit while a thread
# samples the process's anonymous resident memory (RssAnon: heap, not the memmap's file-backed
# pages, which ru_maxrss/VmHWM would count), and prints the fit's peak growth and the data's size.
_FIT_MEMMAP_CHILD = r"""
import sys, threading, time, warnings
import numpy as np, torch
import sknn
from sknn import _data

def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024

path, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
early_stopping = sys.argv[4] == "1"
torch.set_num_threads(1)
warnings.simplefilter("ignore")
X = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, cols))
y = (np.arange(rows) % 2).astype(np.int64)  # 0.8 MB: y is not what is measured
_data.GATHER_LIMIT = X.nbytes // 8  # well below the data: batches are gathered one by one
kw = dict(hidden_layer_sizes=(4,), max_iter=1, random_state=0, device="cpu",
          early_stopping=early_stopping)
# Warm up on a little in-memory data: lazy imports and torch's first allocations are paid here.
sknn.MLPClassifier(**kw).fit(np.asarray(X[:1000]), y[:1000])
base = peak = rss_anon()
done = False

def sample():
    global peak
    while not done:
        peak = max(peak, rss_anon())
        time.sleep(0.002)

thread = threading.Thread(target=sample, daemon=True)
thread.start()
sknn.MLPClassifier(**kw).fit(X, y)
done = True
thread.join()
peak = max(peak, rss_anon())
print(peak - base, X.nbytes)
"""


@pytest.fixture(scope="module")
def memmap_file(tmp_path_factory):
    """A 100,000 x 100 float32 memmap file (38 MiB): its path and shape."""
    rows, cols = 100_000, 100
    path = tmp_path_factory.mktemp("memmap") / "X.dat"
    X = np.memmap(path, dtype=np.float32, mode="w+", shape=(rows, cols))
    for a in range(0, rows, 10_000):
        X[a:a + 10_000] = np.random.default_rng(a).random((10_000, cols), dtype=np.float32)
    X.flush()
    del X
    return path, rows, cols


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc/self/status")
@pytest.mark.parametrize("early_stopping", [False, True])
def test_fit_on_a_memmap_above_the_gather_limit_does_not_copy_it(memmap_file, early_stopping):
    """fit on a 38 MiB memmap, batches gathered one by one: the process's anonymous memory (the
    memmap's own pages do not count) grows by less than half the data, so X is never copied
    whole, with early stopping's hold-out (10% of the rows, copied) too."""
    path, rows, cols = memmap_file
    # Batches are gathered into kept tensors (TrainingData.batch with reuse). When each was a
    # new tensor, glibc's moving mmap threshold sometimes left freed batches in its heap as the
    # next ones were allocated beside them: 20-37 MiB of growth in 5 runs of 38 with early
    # stopping, against 10 MiB; with kept tensors, 70 runs in 70 grew by 8.1-10.6 MiB.
    out = subprocess.run([sys.executable, "-c", _FIT_MEMMAP_CHILD, str(path), str(rows),
                          str(cols), str(int(early_stopping))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    growth, nbytes = (int(v) for v in out.stdout.split())
    assert growth < nbytes / 2, (f"anonymous memory grew by {growth / 2**20:.1f} MiB during fit "
                                 f"on a {nbytes / 2**20:.1f} MiB memmap")


def test_grid_search_on_a_dask_cluster_matches_one_process(digits):
    distributed = pytest.importorskip("distributed")
    import joblib
    X, y = digits
    grid = {"hidden_layer_sizes": [(16,), (32,)], "learning_rate_init": [1e-3, 1e-2]}

    def search(search_class=GridSearchCV, **kw):
        est = MLPClassifier(max_iter=15, random_state=0, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return search_class(est, grid, cv=2, **kw).fit(X, y)

    from sknn.model_selection import GridSearchCV as FusedGridSearchCV
    local = search(n_jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster), joblib.parallel_backend("dask"):
            remote = search(n_jobs=-1)
            fused = search(FusedGridSearchCV, n_jobs=-1)  # its stacks are dask tasks
    assert remote.best_params_ == local.best_params_ == fused.best_params_
    assert remote.best_score_ == local.best_score_
    assert fused.best_score_ == pytest.approx(local.best_score_, abs=0.01)  # float32
