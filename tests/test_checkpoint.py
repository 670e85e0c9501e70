"""Checkpoint files (``checkpoint_path``) are data: tensors and plain values, read with
``torch.load(weights_only=True)``. A file in the older pickled format, one that carries a pickle
payload, or one of an unknown format version is refused with a ValueError, and no code from it
runs; a fit resumed from a checkpoint still ends bit-identical to an uninterrupted one."""

import os
import pathlib
import warnings

import numpy as np
import pytest
import torch

from sknn import MLPClassifier, MLPRegressor, _optim

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _touch(path):
    """The payload of :class:`Evil`: it leaves a marker file when it runs."""
    pathlib.Path(path).write_text("the payload ran")
    return "pwned"


class Evil:
    """Unpickling it calls :func:`_touch` (what a malicious checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


@pytest.fixture
def crash_at_step(monkeypatch):
    """``crash_at_step(n, exc)``: the ``n``-th update of either solver (Adam or SGD) raises."""
    def arm(n, exc):
        calls = {"n": 0}
        for cls in (_optim.Adam, _optim.SGD):
            step = cls.step

            def failing(self, *args, _step=step, **kwargs):
                calls["n"] += 1
                if calls["n"] == n:
                    raise exc
                return _step(self, *args, **kwargs)

            monkeypatch.setattr(cls, "step", failing)
    return arm


def _interrupted_checkpoint(digits, path, crash_at_step, monkeypatch, **params):
    """A checkpoint left by a fit stopped by Ctrl-C in its second epoch."""
    X, _, y, _ = digits
    crash_at_step(10, KeyboardInterrupt)
    with pytest.warns(UserWarning, match="interrupted"):
        MLPClassifier(max_iter=3, random_state=0, checkpoint_path=str(path), **params).fit(X, y)
    monkeypatch.undo()
    assert path.exists()


def _assert_data_only(value):
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, (str, int)), k
            _assert_data_only(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _assert_data_only(v)
    else:
        assert value is None or type(value) in (bool, int, float, str, torch.Tensor), type(value)


def test_a_checkpoint_is_data_and_loads_with_weights_only(digits, tmp_path, crash_at_step,
                                                          monkeypatch):
    path = tmp_path / "fit.ckpt"
    _interrupted_checkpoint(digits, path, crash_at_step, monkeypatch, early_stopping=True,
                            dropout=0.2)
    state = torch.load(path, map_location="cpu", weights_only=True)
    _assert_data_only(state)
    assert state["version"] == 2
    assert state["optimizer"]["solver"] == "adam" and state["optimizer"]["t"] == 7
    assert state["rng"]["keys"].shape == (624,)
    assert state["generator"].dtype == torch.uint8  # dropout's generator
    assert state["best_state"] is not None  # early stopping's best weights


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_solver_state_dict_round_trips_exactly(solver):
    torch.manual_seed(0)
    params = [torch.randn(5, 3), torch.randn(3)]
    make = ((lambda p: _optim.Adam(p, 0.01, 0.8, 0.99, 1e-7)) if solver == "adam" else
            (lambda p: _optim.SGD(p, 0.05, "adaptive", 0.7, False, 0.3)))
    opt = make(params)
    for _ in range(3):
        opt.step(params, [torch.randn_like(p) for p in params], decay=0.1)
    if solver == "sgd":
        opt.trigger_stopping("", False)  # adaptive: the learning rate is now divided by 5
    state = opt.state_dict()
    _assert_data_only(state)
    fresh = make([torch.zeros_like(p) for p in params])
    if solver == "adam":
        fresh.beta_1 = fresh.t = 0  # differs until loaded
    else:
        fresh.learning_rate, fresh.nesterov = 1.0, True
    assert vars(fresh).keys() == vars(opt).keys()
    fresh.load_state_dict(state)
    for name, value in vars(opt).items():
        got = getattr(fresh, name)
        if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            assert all(torch.equal(a, b) for a, b in zip(got, value)), name
        else:
            assert got == value and type(got) is type(value), name
    with pytest.raises(ValueError, match="solver"):
        fresh.load_state_dict({**state, "solver": "other"})


def test_an_old_format_checkpoint_is_refused(digits, tmp_path):
    """A checkpoint of the older format (a pickled solver object, numpy arrays) cannot be read as
    data: a ValueError says so and how to start afresh."""
    X, _, y, _ = digits
    path = tmp_path / "old.ckpt"
    params = [torch.zeros(64, 10), torch.zeros(10)]
    torch.save({"fingerprint": ("MLPClassifier",), "module": {}, "optimizer": _optim.Adam(params),
                "history": {}, "rng": np.random.RandomState(0).get_state(),
                "sample_idx": np.arange(len(X)), "generator": None, "best_state": None}, path)
    with pytest.raises(ValueError, match="older format") as info:
        MLPClassifier(max_iter=2, checkpoint_path=str(path)).fit(X, y)
    assert str(path) in str(info.value) and "delete it" in str(info.value)
    assert path.exists()  # left for the user to delete
    for junk in (b"", b"not a checkpoint"):  # no torch.save archive at all
        path.write_bytes(junk)
        with pytest.raises(ValueError, match="not a checkpoint sknn can read safely"):
            MLPClassifier(max_iter=2, checkpoint_path=str(path)).fit(X, y)


def test_a_checkpoint_with_a_pickle_payload_is_refused_and_its_payload_never_runs(digits,
                                                                                  tmp_path):
    X, _, y, _ = digits
    # The payload is live: loading such a file as a pickle runs it.
    control_marker, control = tmp_path / "control-ran", tmp_path / "control.ckpt"
    torch.save({"x": Evil(control_marker)}, control)
    assert torch.load(control, weights_only=False)["x"] == "pwned" and control_marker.exists()

    marker, path = tmp_path / "payload-ran", tmp_path / "evil.ckpt"
    torch.save({"version": 2, "x": Evil(marker)}, path)
    with pytest.raises(ValueError, match="older format") as info:
        MLPClassifier(max_iter=2, checkpoint_path=str(path)).fit(X, y)
    assert str(path) in str(info.value)
    assert not marker.exists()
    with pytest.raises(ValueError, match="not a checkpoint sknn can read safely"):
        MLPRegressor(max_iter=2, checkpoint_path=str(path)).fit(X, X[:, 0])
    assert not marker.exists()


def test_a_checkpoint_of_an_unknown_version_is_refused(digits, tmp_path, crash_at_step,
                                                       monkeypatch):
    X, _, y, _ = digits
    path = tmp_path / "fit.ckpt"
    _interrupted_checkpoint(digits, path, crash_at_step, monkeypatch)
    state = torch.load(path, weights_only=True)
    torch.save({**state, "version": 3}, path)
    with pytest.raises(ValueError, match="format version 3") as info:
        MLPClassifier(max_iter=3, random_state=0, checkpoint_path=str(path)).fit(X, y)
    assert str(path) in str(info.value)
    del state["version"]  # a dict of data but no version: not one sknn wrote
    torch.save(state, path)
    with pytest.raises(ValueError, match="older format"):
        MLPClassifier(max_iter=3, random_state=0, checkpoint_path=str(path)).fit(X, y)
    os.remove(path)  # deleted: the fit starts afresh
    MLPClassifier(max_iter=3, random_state=0, checkpoint_path=str(path)).fit(X, y)


@pytest.mark.parametrize("params", [
    dict(solver="adam"),
    dict(solver="adam", early_stopping=True, dropout=0.2),
    dict(solver="sgd", learning_rate="adaptive", early_stopping=True, n_iter_no_change=1,
         tol=0.02, dropout=0.2),
    dict(solver="sgd", learning_rate="invscaling", nesterovs_momentum=False, momentum=0.5,
         learning_rate_init=0.3),
])
def test_a_resumed_fit_ends_bit_identical(digits, tmp_path, crash_at_step, monkeypatch, params):
    X, _, y, _ = digits
    path = tmp_path / "fit.ckpt"
    kw = {"max_iter": 8, "tol": 0, "random_state": 0, "checkpoint_path": str(path), **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = MLPClassifier(**kw).fit(X, y)
    assert not path.exists()
    crash_at_step(4 * 7 + 3, RuntimeError("the machine went down"))  # in the 5th epoch
    with pytest.raises(RuntimeError, match="went down"):
        MLPClassifier(**kw).fit(X, y)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["history"]["n_iter_"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = MLPClassifier(**kw).fit(X, y)
    assert resumed.n_iter_ == reference.n_iter_ and resumed.t_ == reference.t_
    assert resumed.loss_curve_ == reference.loss_curve_
    assert resumed.validation_scores_ == reference.validation_scores_
    for a, b in zip(resumed.coefs_ + resumed.intercepts_, reference.coefs_ + reference.intercepts_):
        np.testing.assert_array_equal(a, b)
    got, want = resumed._optimizer.state_dict(), reference._optimizer.state_dict()
    for name, value in want.items():
        if isinstance(value, list):
            assert all(torch.equal(a, b) for a, b in zip(got[name], value)), name
        else:
            assert got[name] == value, name
    if params.get("learning_rate") == "adaptive":  # the schedule changed the rate on the way
        assert reference._optimizer.learning_rate < params.get("learning_rate_init", 0.001)


def test_numpy_scalars_are_stored_as_python_numbers_and_other_objects_refused():
    """What goes into a checkpoint is made plain (a numpy scalar in the record, e.g. a score,
    would make the file unreadable with weights_only=True), or refused when it is written."""
    from sknn._engine import _plain
    state = _plain({"loss_curve_": [np.float64(0.5), 0.25], "n": np.int64(3),
                    "ok": (np.bool_(True), None, "s", torch.ones(2))})
    _assert_data_only(state)
    assert state["loss_curve_"] == [0.5, 0.25] and state["n"] == 3 and state["ok"][0] is True
    with pytest.raises(TypeError, match="ndarray"):
        _plain({"sample_idx": np.arange(3)})
