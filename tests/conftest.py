"""Data sets and fault injection shared by the test files."""

import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits, load_iris
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


@pytest.fixture(scope="module")
def digits():
    """Digits scaled to [0, 1], split (X_train, X_test, y_train, y_test)."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, random_state=0)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X), (y - y.mean()) / y.std()


@pytest.fixture
def raise_at_step(monkeypatch):
    """``raise_at_step(n, exc)``: make the ``n``-th Adam update raise ``exc`` (a crash, or Ctrl-C,
    in the middle of a fit); ``monkeypatch.undo()`` lifts it."""
    from sknn import _optim

    def arm(n, exc):
        step, calls = _optim.Adam.step, {"n": 0}

        def failing(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise exc
            return step(self, *args, **kwargs)

        monkeypatch.setattr(_optim.Adam, "step", failing)
    return arm


@pytest.fixture(scope="session")
def lazy_device():
    """A device other than the CPU, with no GPU: torch's lazy tensors (TorchScript backend).
    Initialised once per session: a second ``ts_backend.init()`` raises."""
    try:
        from torch._lazy import ts_backend
        ts_backend.init()
        probe = torch.ones(2, device="lazy")
        assert probe.device.type == "lazy" and torch.equal((probe * 2).cpu(), torch.full((2,), 2.0))
    except Exception as e:  # a torch build without it
        pytest.skip(f"torch's lazy device is not available: {e!r}")
    return torch.device("lazy")


def needs_sklearn(version, why):
    """Skip a test where the installed scikit-learn is older than ``version`` (pyproject allows
    older ones: sknn works there, the test compares with a newer scikit-learn's behaviour)."""
    import sklearn
    from sklearn.utils.fixes import parse_version
    return pytest.mark.skipif(parse_version(sklearn.__version__) < parse_version(version),
                              reason=f"needs scikit-learn >= {version}: {why}")
