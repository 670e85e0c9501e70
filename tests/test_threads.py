"""Thread counts follow threadpoolctl's limits on every sknn path, even after an explicit
``torch.set_num_threads`` (which makes torch itself ignore them)."""

import json
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from sknn import _threads

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Runs in a fresh process: torch.set_num_threads changes the whole process for good.
SCRIPT = textwrap.dedent("""
    import json
    import numpy as np, torch
    from threadpoolctl import threadpool_limits
    from sklearn.datasets import load_digits
    import sknn._engine, sknn._fused
    from sknn import MLPClassifier
    from sknn.model_selection import GridSearchCV

    seen = {"fit": [], "stack": []}
    train = sknn._engine.train
    def recording_train(members, *args, **kwargs):
        seen["stack" if len(members) > 1 else "fit"].append(torch.get_num_threads())
        return train(members, *args, **kwargs)
    sknn._engine.train = recording_train

    X, y = load_digits(return_X_y=True)
    X, y = X[:300].astype(np.float32) / 16, y[:300]
    kw = dict(hidden_layer_sizes=(32,), max_iter=3, random_state=0)
    torch.set_num_threads(2)
    with threadpool_limits(1):
        limited = MLPClassifier(**kw).fit(X, y)
        MLPClassifier(**kw).partial_fit(X, y, classes=np.unique(y))
        GridSearchCV(MLPClassifier(**kw), {"learning_rate_init": [1e-3, 2e-3]}, cv=2).fit(X, y)
    after = torch.get_num_threads()
    torch.set_num_threads(1)
    one = MLPClassifier(**kw).fit(X, y)
    print(json.dumps({"seen": seen, "after": after,
                      "same_model": all(np.array_equal(a, b)
                                        for a, b in zip(limited.coefs_, one.coefs_))}))
""")


def test_limits_hold_after_an_explicit_torch_set_num_threads():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # an ordinary fit, partial_fit, the search's refit (then the reference fit); the stack
    assert result["seen"]["fit"] == [1, 1, 1, 1]
    assert result["seen"]["stack"] == [1]
    assert result["after"] == 2  # torch's own setting is back once the block ends
    assert result["same_model"]


# A fitted model, loaded in a fresh process whose first torch operation runs in the block.
PREDICT_SCRIPT = textwrap.dedent("""
    import json, pickle, sys
    import torch
    from threadpoolctl import threadpool_limits
    import sknn._predict

    seen = []
    predict = sknn._predict.predict
    def recording_predict(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return predict(*args, **kwargs)
    sknn._predict.predict = recording_predict

    with open(sys.argv[1], "rb") as f:
        clf, X, y = pickle.load(f)
    torch.set_num_threads(2)
    with threadpool_limits(1):
        clf.predict_proba(X), clf.transform(X), clf.score(X, y), clf.predict(X)
    print(json.dumps({"seen": seen, "after": torch.get_num_threads()}))
""")


def test_predictions_honour_the_limits_too(tmp_path):
    from sklearn.datasets import load_digits
    from sknn import MLPClassifier
    X, y = load_digits(return_X_y=True)
    X, y = X[:200].astype(np.float32) / 16, y[:200]
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=2, random_state=0).fit(X, y)
    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump((clf, X, y), f)
    out = subprocess.run([sys.executable, "-c", PREDICT_SCRIPT, str(path)], capture_output=True,
                         text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"seen": [1, 1, 1, 1], "after": 2}


def test_limited_restores_the_limit_for_the_next_call():
    before = torch.get_num_threads()
    with threadpool_limits(1):
        with _threads.limited():
            inside = torch.get_num_threads()
            torch.ones(4).sum()
        assert _threads.limit() == 1
    assert inside == 1
    assert torch.get_num_threads() == before


def test_limit_reads_openmp():
    with threadpool_limits(1):
        assert _threads.limit() == 1
    assert _threads.limit() == torch.get_num_threads() or _threads.limit() is None
    assert np.isscalar(_threads.limit())
