"""Pickling a model whose tensors are not on the CPU: "a model pickled on a GPU loads on a machine
without one".

No GPU is needed: the fitted module (and the solver state) is moved to torch's ``lazy`` device,
a device of the CPU build whose tensors are not CPU tensors and cannot be pickled as they are.
So the save-side move to the CPU really runs, and must: without it the pickle fails. The lazy
device is not one sknn knows, so loading takes the path of a GPU model on a machine without that
GPU: a warning, and the model on the CPU.
"""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CPU = torch.device("cpu")
LOADED_ON_CPU = "fitted on lazy, which is not available here: it is loaded on the CPU"


@pytest.fixture(scope="module")
def elsewhere(lazy_device):
    """A device other than the CPU, with no GPU: torch's lazy tensors (see conftest.py)."""
    return lazy_device


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


def _module_tensors(module):
    """Parameters and buffers (batch-norm statistics), by name."""
    return dict(module.state_dict(keep_vars=True))


def _optimizer_tensors(optimizer):
    names = [n for n in ("ms", "vs", "_steps", "velocities") if hasattr(optimizer, n)]
    return {f"{n}.{i}": t for n in names for i, t in enumerate(getattr(optimizer, n))}


def _assert_on(tensors, device):
    assert tensors
    for name, t in tensors.items():
        assert t.device.type == device.type, name


def _assert_equal(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name].cpu(), b[name].cpu()), name


def _load_with_warning(payload):
    with pytest.warns(UserWarning, match=LOADED_ON_CPU):
        loaded = pickle.loads(payload)
    assert loaded.device_ == CPU
    return loaded


@pytest.mark.parametrize("make", [
    lambda: MLPClassifier(hidden_layer_sizes=(16,), batch_norm=True, max_iter=3),
    lambda: MLPRegressor(hidden_layer_sizes=(16,), solver="sgd", max_iter=3),
    lambda: ConvNetClassifier(conv_layers=(4,), hidden_layer_sizes=(8,), max_iter=2),
], ids=["MLPClassifier", "MLPRegressor-sgd", "ConvNetClassifier"])
def test_a_model_pickled_off_the_cpu_is_saved_on_the_cpu_and_loads_there(elsewhere, digits, make):
    X, y = digits
    est = make().set_params(random_state=0, device="cpu").fit(X, y)
    method = "predict_proba" if hasattr(est, "predict_proba") else "predict"
    expected = getattr(est, method)(X)
    assert est.__getstate__()["module_"] is est.module_  # on the CPU: saved as it is
    twin = pickle.loads(pickle.dumps(est))  # the same model, kept on the CPU

    est._move_to(elsewhere)  # as if fitted there
    module, optimizer = est.module_, est._optimizer
    _assert_on(_module_tensors(module), elsewhere)
    _assert_on(_optimizer_tensors(optimizer), elsewhere)

    state = est.__getstate__()
    saved_module, saved_optimizer = state["module_"], state["_optimizer"]
    _assert_on(_module_tensors(saved_module), CPU)
    _assert_on(_optimizer_tensors(saved_optimizer), CPU)
    _assert_equal(_module_tensors(saved_module), _module_tensors(twin.module_))
    _assert_equal(_optimizer_tensors(saved_optimizer), _optimizer_tensors(twin._optimizer))
    # Saving copies: the estimator itself stays where it is.
    assert est.module_ is module and est._optimizer is optimizer and est.device_ == elsewhere
    _assert_on(_module_tensors(est.module_), elsewhere)
    _assert_on(_optimizer_tensors(est._optimizer), elsewhere)

    loaded = _load_with_warning(pickle.dumps(est))
    assert est.module_ is module and est.device_ == elsewhere  # pickling left it as it was
    _assert_on(_module_tensors(loaded.module_), CPU)
    _assert_on(_optimizer_tensors(loaded._optimizer), CPU)
    np.testing.assert_array_equal(getattr(loaded, method)(X), expected)
    # The solver state travelled: one more epoch takes the CPU twin's step exactly.
    loaded.partial_fit(X, y)
    twin.partial_fit(X, y)
    _assert_equal(_module_tensors(loaded.module_), _module_tensors(twin.module_))
    _assert_equal(_optimizer_tensors(loaded._optimizer), _optimizer_tensors(twin._optimizer))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)


def _same_features(loaded, images, expected):
    # The lazy device keeps no memory format; a GPU keeps the channels-last layout the
    # extractor runs in, which the CPU kernels round differently from the contiguous one.
    loaded.module_.to(memory_format=torch.channels_last)
    np.testing.assert_array_equal(loaded.transform(images), expected)


def test_a_feature_extractor_pickled_off_the_cpu_loads_on_the_cpu(elsewhere, images):
    pytest.importorskip("timm")
    from sknn import PretrainedFeatureExtractor
    fe = PretrainedFeatureExtractor(weights=None, input_size=32, device="cpu").fit(images)
    expected = fe.transform(images)
    twin = pickle.loads(pickle.dumps(fe))

    fe._move_to(elsewhere)
    module = fe.module_
    _assert_on(_module_tensors(module), elsewhere)
    state = fe.__getstate__()
    _assert_on(_module_tensors(state["module_"]), CPU)
    _assert_equal(_module_tensors(state["module_"]), _module_tensors(twin.module_))
    assert fe.module_ is module and fe.device_ == elsewhere
    _assert_on(_module_tensors(fe.module_), elsewhere)

    loaded = _load_with_warning(pickle.dumps(fe))
    _assert_on(_module_tensors(loaded.module_), CPU)
    _same_features(loaded, images, expected)


def test_an_own_module_given_off_the_cpu_is_saved_on_the_cpu_too(elsewhere, images):
    from sknn import PretrainedFeatureExtractor
    with torch.random.fork_rng(devices=[]):  # leave the global generator as it was
        own = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.BatchNorm2d(2),
                                  torch.nn.ReLU())
    fe = PretrainedFeatureExtractor(model=own, device="cpu").fit(images)
    expected = fe.transform(images)
    weights = {k: v.detach().clone() for k, v in own.state_dict().items()}

    own.to(elsewhere)  # the user's module, on their GPU
    fe._move_to(elsewhere)
    state = fe.__getstate__()
    assert state["model"] is not own
    _assert_on(_module_tensors(state["model"]), CPU)
    _assert_on(_module_tensors(state["module_"]), CPU)
    _assert_equal(_module_tensors(state["model"]), weights)
    assert fe.model is own  # the parameter is left as given
    _assert_on(_module_tensors(own), elsewhere)

    loaded = _load_with_warning(pickle.dumps(fe))
    _assert_on(_module_tensors(loaded.model), CPU)
    _assert_equal(_module_tensors(loaded.model), weights)
    _same_features(loaded, images, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CPU model loads without a word
        pickle.loads(pickle.dumps(loaded))
