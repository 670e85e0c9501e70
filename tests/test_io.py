"""sknn.save / sknn.load: an estimator as JSON and safetensors, loaded without running code from
the file, coming back exactly as pickling would bring it back."""

import json
import math
import pathlib
import pickle
import warnings
import zipfile

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import sknn
from sknn import ConvNetClassifier, MLPClassifier, MLPRegressor, PretrainedFeatureExtractor
from sknn._io import read_safetensors, write_safetensors

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def data():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


def _round_trip(est, tmp_path, **kw):
    path = tmp_path / "model.sknn"
    sknn.save(est, path)
    return sknn.load(path, **kw)


def _same(a, b, where="value"):
    """Equal, of the same type, all the way down (NaN equals NaN; arrays by dtype and content)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu()), where
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, np.random.RandomState):
        _same(a.get_state(), b.get_state(), where)
    elif isinstance(a, (float, np.floating)) and math.isnan(a):
        assert math.isnan(b), where
    elif hasattr(a, "__dict__") and not isinstance(a, (torch.nn.Module, torch.device)):
        _same(vars(a), vars(b), where)
    elif not isinstance(a, torch.nn.Module):
        assert a == b, f"{where}: {a!r} != {b!r}"


def _assert_like_pickle(est, loaded):
    """The loaded estimator holds what a pickle round trip holds, value for value."""
    unpickled = pickle.loads(pickle.dumps(est))
    assert list(loaded.__dict__) == list(unpickled.__dict__)
    for k, v in unpickled.__dict__.items():
        _same(v, loaded.__dict__[k], k)
    if "module_" in unpickled.__dict__:
        _same(dict(unpickled.module_.state_dict()), dict(loaded.module_.state_dict()), "module_")
        assert [m.training for m in loaded.module_.modules()] == [
            m.training for m in unpickled.module_.modules()]


CASES = {
    "clf-binary": (lambda: MLPClassifier((16,), max_iter=3, random_state=0), lambda y: y % 2),
    "clf-multiclass-bn": (lambda: MLPClassifier((16, 8), batch_norm=True, max_iter=3,
                                                random_state=0), lambda y: y),
    "clf-multilabel": (lambda: MLPClassifier((16,), max_iter=3, random_state=0),
                       lambda y: np.stack([y % 2, y > 4, y % 3 == 0], axis=1).astype(int)),
    "clf-strings-sgd-es": (lambda: MLPClassifier((16,), solver="sgd", early_stopping=True,
                                                 max_iter=3, random_state=0),
                           lambda y: np.array(["zero", "one", "two"])[y % 3]),
    "clf-lbfgs": (lambda: MLPClassifier((8,), solver="lbfgs", max_iter=5, random_state=0),
                  lambda y: y % 3),
    "reg": (lambda: MLPRegressor(hidden_layer_sizes=(16,), max_iter=3, random_state=0),
            lambda y: y.astype(float)),
    "reg-multi-output-f64": (lambda: MLPRegressor(hidden_layer_sizes=(16,), max_iter=3,
                                                  random_state=0),
                             lambda y: np.stack([y, y ** 2], axis=1).astype(float)),
    "reg-poisson-sgd": (lambda: MLPRegressor("poisson", hidden_layer_sizes=(8,), solver="sgd",
                                             learning_rate_init=1e-3, max_iter=3, random_state=0),
                        lambda y: y.astype(float)),
    "convnet": (lambda: ConvNetClassifier(conv_layers=(4,), hidden_layer_sizes=(8,), max_iter=2,
                                          dropout=0.2, augment_flip=True, random_state=0),
                lambda y: y),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_loaded_model_predicts_bit_for_bit_and_holds_what_a_pickle_holds(data, tmp_path, case):
    make, target = CASES[case]
    X, y = data
    X = X.astype(np.float64) if "f64" in case else X
    est = make().fit(X, target(y))
    loaded = _round_trip(est, tmp_path)
    assert type(loaded) is type(est)
    _assert_like_pickle(est, loaded)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    np.testing.assert_array_equal(loaded.transform(X), est.transform(X))
    if hasattr(est, "predict_proba"):
        np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


CONTINUED = {
    "mlp": lambda solver: MLPClassifier((16,), solver=solver, learning_rate="invscaling",
                                        batch_norm=True, dropout=0.1, max_iter=2,
                                        random_state=np.random.RandomState(0)),
    "regressor": lambda solver: MLPRegressor(hidden_layer_sizes=(16,), solver=solver,
                                             max_iter=2, random_state=0),
    "convnet": lambda solver: ConvNetClassifier(conv_layers=(4,), hidden_layer_sizes=(8,),
                                                solver=solver, dropout=0.2, augment_shift=1,
                                                max_iter=2, random_state=0),
}


@pytest.mark.parametrize("kind", list(CONTINUED))
@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("how", ["partial_fit", "warm_start"])
def test_training_continues_as_after_unpickling(data, tmp_path, kind, solver, how):
    X, y = data
    y = y.astype(float) if kind == "regressor" else y
    est = CONTINUED[kind](solver)
    if how == "partial_fit":
        est.partial_fit(X, y, **({} if kind == "regressor" else {"classes": np.unique(y)}))
    else:
        est.fit(X, y)
    unpickled, loaded = pickle.loads(pickle.dumps(est)), _round_trip(est, tmp_path)
    for e in (unpickled, loaded):
        if how == "partial_fit":
            e.partial_fit(X, y)
            e.partial_fit(X, y)
        else:
            e.set_params(warm_start=True).fit(X, y)
    assert loaded.t_ == unpickled.t_ and loaded.loss_curve_ == unpickled.loss_curve_
    _same(dict(unpickled.module_.state_dict()), dict(loaded.module_.state_dict()), "module_")
    _same(unpickled._optimizer, loaded._optimizer, "_optimizer")


def test_values_json_cannot_carry_come_back_with_their_types(tmp_path):
    rs = np.random.RandomState(7)
    rs.normal(size=3)  # a state mid-stream, with a cached Gaussian
    est = MLPClassifier(hidden_layer_sizes=(64, 32), class_weight={0: 1.0, 1: 3.0},
                        random_state=rs, n_iter_no_change=np.inf,
                        checkpoint_path=pathlib.Path("ckpt.pt"))
    odd = {
        "best_loss_": np.inf, "worst_": -np.inf, "validation_scores_": [np.nan, 0.5, -0.0],
        "loss_": np.float64(0.1), "f32_": np.float32(1 / 3), "n_": np.int64(2**40),
        "flag_": np.bool_(True), "none_": None, "bools_": [True, False],
        "nested_": {"a": (1, [2.5, None]), 3: "int key", (1, 2): "tuple key",
                    "__type__": "a key like a tag"},
        "classes_str_": np.array(["cat", "dog"]), "classes_int_": np.array([3, 1, 2]),
        "classes_bool_": np.array([False, True]), "classes_float_": np.array([0.5, np.nan]),
        "classes_obj_": np.array(["a", "bb"], dtype=object),
        "matrix_": np.arange(6, dtype=np.uint16).reshape(2, 3),
        "empty_": np.zeros((0, 3), dtype=np.float32), "scalar_array_": np.array(4.0),
        "tensor_": torch.arange(4, dtype=torch.bfloat16), "device_like_": torch.device("cpu"),
    }
    est.__dict__.update(odd)
    loaded = _round_trip(est, tmp_path)
    _same(est.get_params(deep=False), loaded.get_params(deep=False), "params")
    assert loaded.hidden_layer_sizes == (64, 32)
    assert list(loaded.class_weight) == [0, 1]
    for k, v in odd.items():
        _same(v, loaded.__dict__[k], k)
    assert loaded.random_state.normal() == rs.normal()


def test_an_unfitted_estimator_saves_its_parameters(tmp_path):
    est = ConvNetClassifier(conv_layers=(8, 16), image_shape=(8, 8, 1), random_state=3)
    loaded = _round_trip(est, tmp_path)
    assert list(loaded.__dict__) == list(est.__dict__)
    _same(est.get_params(deep=False), loaded.get_params(deep=False))
    assert not hasattr(loaded, "module_")


# --- nothing in the file runs ----------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``path``: the proof that a pickle in the file ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rewrite(src, dst, *, json_edit=None, members=None):
    """A copy of the archive ``src`` with its JSON edited and members replaced or added."""
    with zipfile.ZipFile(src) as z:
        contents = {n: z.read(n) for n in z.namelist()}
    if json_edit is not None:
        doc = json.loads(contents["sknn.json"])
        json_edit(doc)
        contents["sknn.json"] = json.dumps(doc).encode()
    contents.update(members or {})
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in contents.items():
            z.writestr(n, b)
    return dst


@pytest.fixture
def saved(data, tmp_path):
    X, y = data
    path = tmp_path / "good.sknn"
    sknn.save(MLPClassifier((8,), max_iter=2, random_state=0).fit(X, y), path)
    return path


def _set(path, value):
    def edit(doc):
        node = doc
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("attack, match", [
    (lambda p: dict(members={"payload.pkl": p}), "holds exactly"),
    (lambda p: dict(members={"tensors.safetensors": p}), "not a valid safetensors"),
    (lambda p: dict(members={"sknn.json": p}), "not valid JSON"),
    (lambda p: dict(json_edit=_set(["class"], "os.system")), "not one of sknn's estimators"),
    (lambda p: dict(json_edit=_set(["class"], "sklearn.svm.SVC")), "not one of sknn's"),
    (lambda p: dict(json_edit=_set(["attributes", "_loss", "class"], "builtins.open")),
     "not one of the classes a file may hold"),
    (lambda p: dict(json_edit=_set(["attributes", "x_"], {"__type__": "pickle",
                                                          "data": p.hex()})), "unknown type tag"),
], ids=["extra-member", "tensors-member", "json-member", "class-os.system", "class-dotted",
        "object-class", "pickle-tag"])
def test_a_file_carrying_code_is_refused_and_its_payload_never_runs(saved, tmp_path, attack,
                                                                   match, monkeypatch):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Payload(marker))
    bad = _rewrite(saved, tmp_path / "bad.sknn", **attack(payload))
    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, lambda *a, **k: pytest.fail("pickle was used"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was used"))
    with pytest.raises(ValueError, match=match):
        sknn.load(bad)
    assert not marker.exists()
    assert sknn.load(saved).n_iter_ == 2  # the untouched file loads, with the same guards


def test_a_torch_save_file_is_refused_unread(tmp_path):
    marker = tmp_path / "PWNED"
    torch.save({"model": _Payload(marker)}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match="is not an sknn file"):
        sknn.load(tmp_path / "model.pt")
    assert not marker.exists()


# --- errors ------------------------------------------------------------------------------------


def test_saving_what_is_not_an_sknn_estimator_is_a_type_error(tmp_path):
    from sklearn.linear_model import LogisticRegression

    class Mine(MLPClassifier):
        pass

    for obj in (LogisticRegression(), Mine(), {"a": 1}):
        with pytest.raises(TypeError, match="saves sknn's estimators"):
            sknn.save(obj, tmp_path / "x.sknn")
    est = MLPClassifier()
    est.callback_ = print
    with pytest.raises(TypeError, match="callback_: cannot save a value of type"):
        sknn.save(est, tmp_path / "x.sknn")
    assert not (tmp_path / "x.sknn").exists()


@pytest.mark.parametrize("edit, match", [
    (_set(["format_version"], 99), "format version 99.*upgrade sknn"),
    (_set(["format"], "other"), "is not an sknn file"),
    (_set(["params", "hidden_layer_sizes"], 9), "do not fit|does not fit"),
    (_set(["params", "no_such_param"], 1), "not parameters of MLPClassifier"),
    (_set(["attributes", "loss_"], {"__type__": "float", "value": "1e999"}), "bad 'float'"),
    (_set(["module", "tensors"], []), "missing|does not use"),
], ids=["newer-version", "not-sknn", "shape-mismatch", "unknown-param", "bad-float",
        "tensors-missing"])
def test_a_file_that_does_not_fit_is_a_value_error_saying_why(saved, tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        sknn.load(_rewrite(saved, tmp_path / "bad.sknn", json_edit=edit))


def test_a_file_that_is_not_an_archive_is_a_value_error(tmp_path):
    path = tmp_path / "junk.sknn"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="not an sknn file"):
        sknn.load(path)


# --- devices -----------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_model_saved_on_a_missing_gpu_loads_on_the_cpu_with_a_warning(saved, tmp_path, data):
    path = _rewrite(saved, tmp_path / "gpu.sknn",
                    json_edit=_set(["attributes", "device_"],
                                   {"__type__": "torch.device", "value": "cuda:0"}))
    with pytest.warns(UserWarning, match="fitted on cuda:0, which is not available here"):
        loaded = sknn.load(path)
    assert loaded.device_ == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        forced = sknn.load(path, device="cpu")  # asked for the CPU: no warning
    assert forced.device_ == torch.device("cpu")
    X = data[0]
    np.testing.assert_array_equal(loaded.predict_proba(X), sknn.load(saved).predict_proba(X))


# --- the tensors file is standard safetensors -----------------------------------------------------


def test_the_safetensors_package_reads_our_tensors_identically(saved):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    with zipfile.ZipFile(saved) as z:
        blob = z.read("tensors.safetensors")
    theirs = safetensors_torch.load(blob)
    ours = read_safetensors(blob)
    assert theirs.keys() == ours.keys() and any(k.startswith("module_.") for k in ours)
    model = sknn.load(saved).module_.state_dict()
    for k, v in model.items():
        assert torch.equal(theirs["module_." + k], v), k
    # and we read theirs
    tensors = {"a": torch.randn(3, 2, dtype=torch.float64), "b": torch.arange(5),
               "c": torch.ones(2, dtype=torch.bfloat16), "d": torch.zeros(0, 4)}
    for k, (code, shape, raw) in read_safetensors(safetensors_torch.save(tensors)).items():
        assert shape == tuple(tensors[k].shape)
        assert raw == write_safetensors({k: tensors[k]})[-len(raw):] if raw else True


# --- the pretrained feature extractor -----------------------------------------------------------


def test_a_pretrained_extractor_round_trips_and_a_module_of_the_users_is_refused(tmp_path):
    pytest.importorskip("timm")
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(3, 40, 48, 3)).astype(np.uint8)
    fe = PretrainedFeatureExtractor(device="cpu", input_size=64).fit(images[:1])
    loaded = _round_trip(fe, tmp_path)
    np.testing.assert_array_equal(loaded.transform(images), fe.transform(images))
    _assert_like_pickle(fe, loaded)
    own = PretrainedFeatureExtractor(model=torch.nn.Conv2d(3, 2, 1), device="cpu")
    with pytest.raises(TypeError, match="architecture is Python code"):
        sknn.save(own, tmp_path / "own.sknn")


def test_a_model_saved_off_the_cpu_is_saved_from_there_and_loads_on_the_cpu(data, tmp_path,
                                                                             lazy_device):
    """Saved from torch's lazy device (no GPU needed): the tensors really move to the CPU to be
    written; lazy is no device sknn knows, so loading takes the path of a GPU model on a machine
    without that GPU."""
    X, y = data
    est = MLPClassifier((8,), max_iter=2, random_state=0).fit(X, y)
    expected = est.predict_proba(X)
    est._move_to(lazy_device)
    sknn.save(est, tmp_path / "lazy.sknn")
    with pytest.warns(UserWarning, match="fitted on lazy, which is not available here"):
        loaded = sknn.load(tmp_path / "lazy.sknn")
    assert loaded.device_ == torch.device("cpu") and loaded._optimizer.ms[0].device.type == "cpu"
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
