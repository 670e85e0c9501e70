"""ConvNetClassifier: image layouts, geometry, the classifier API, bad input."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sknn import ConvNetClassifier, _engine

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def quadrant_images(n, h, w, c, seed=0):
    """Noise images whose class (0-3) is the quadrant holding a bright square, (n, h, w, c)."""
    rng = np.random.RandomState(seed)
    X = rng.uniform(0, 0.3, size=(n, h, w, c)).astype(np.float32)
    y = rng.randint(0, 4, size=n)
    for i, q in enumerate(y):
        r, s = (q // 2) * (h // 2), (q % 2) * (w // 2)
        X[i, r:r + h // 2, s:s + w // 2] += 0.7
    return X, y


def small_net(**kw):
    params = dict(conv_layers=(8,), hidden_layer_sizes=(16,), max_iter=15, random_state=0,
                  device="cpu")
    params.update(kw)
    return ConvNetClassifier(**params)


@pytest.mark.parametrize("layout", ["NHW", "NHW1", "NHWC", "NCHW"])
def test_image_layouts_train_without_reshaping(layout):
    c = 3 if layout in ("NHWC", "NCHW") else 1
    size = 32 if c == 3 else 28
    X, y = quadrant_images(160, size, size, c)
    if layout == "NHW":
        X = X[..., 0]
    elif layout == "NCHW":
        X = X.transpose(0, 3, 1, 2)
    clf = small_net().fit(X[:120], y[:120])
    assert clf.image_shape_ == (c, size, size)
    assert clf.score(X[120:], y[120:]) > 0.9
    assert clf.predict_proba(X[120:]).shape == (40, 4)


def test_channels_first_and_last_give_the_same_model():
    X, y = quadrant_images(60, 12, 12, 3)
    last = small_net(max_iter=3).fit(X, y)
    first = small_net(max_iter=3, data_format="channels_first").fit(X.transpose(0, 3, 1, 2), y)
    np.testing.assert_allclose(last.predict_proba(X), first.predict_proba(X.transpose(0, 3, 1, 2)))


def test_flat_rows_square_strip_and_image_shape():
    X, y = quadrant_images(40, 8, 8, 1)
    flat = X.reshape(40, 64)
    assert small_net(max_iter=2).fit(flat, y).image_shape_ == (1, 8, 8)
    assert small_net(max_iter=2).fit(flat[:, :10], y).image_shape_ == (1, 1, 10)
    assert small_net(max_iter=2, image_shape=(4, 16)).fit(flat, y).image_shape_ == (1, 4, 16)
    rgb = np.repeat(X, 3, axis=3).reshape(40, -1)
    assert small_net(max_iter=2, image_shape=(8, 8, 3)).fit(rgb, y).image_shape_ == (3, 8, 8)
    with pytest.raises(ValueError, match="image_shape=\\(8, 9\\) holds 72 values"):
        small_net(image_shape=(8, 9)).fit(flat, y)
    for bad in (64, (-8, -8), (1, 1, 8, 8), (8.0, 8.0)):
        with pytest.raises(ValueError, match="image_shape must be"):
            small_net(image_shape=bad).fit(flat, y)


def test_uint8_images_are_scaled():
    """uint8 pixels are the float32 images ``pixels / 255``: the same input, so the same model
    and bit-identical probabilities."""
    X, y = quadrant_images(40, 8, 8, 1)
    as_uint8 = (X * 255).round().astype(np.uint8)
    scaled = as_uint8.astype(np.float32) / np.float32(255)
    a = small_net(max_iter=3).fit(as_uint8, y)
    b = small_net(max_iter=3).fit(scaled, y)
    assert a.module_.out.weight.dtype == b.module_.out.weight.dtype == torch.float32
    for (name, p), q in zip(a.module_.state_dict().items(), b.module_.state_dict().values()):
        assert torch.equal(p, q), name
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    np.testing.assert_array_equal(a.predict_proba(as_uint8), b.predict_proba(scaled))
    np.testing.assert_array_equal(a.predict_proba(as_uint8), a.predict_proba(scaled))


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 10), (1, 8, 8), (3, 224, 224), (1, 3, 200)])
def test_geometry_from_strips_to_224(shape):
    c, h, w = shape
    X = np.random.RandomState(0).rand(4, c, h, w).astype(np.float32)
    clf = ConvNetClassifier(max_iter=1, data_format="channels_first", device="cpu",
                            random_state=0).fit(X, [0, 1, 0, 1])
    assert clf.transform(X).shape == (4, 128)


def test_learns_digits():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split((X / 16).astype(np.float32), y, random_state=0)
    clf = ConvNetClassifier(max_iter=20, random_state=0, device="cpu").fit(Xtr, ytr)
    assert clf.score(Xte, yte) > 0.97
    assert clf.transform(Xte).shape == (len(Xte), 128)


def test_classifier_api():
    X, y = quadrant_images(120, 8, 8, 1)
    labels = np.array(["ne", "nw", "se", "sw"], dtype=object)[y]
    clf = small_net(early_stopping=True, class_weight="balanced").fit(X, labels)
    assert set(clf.predict(X)) <= set(labels)
    np.testing.assert_allclose(clf.predict_proba(X).sum(1), 1, rtol=1e-6)
    assert clf.validation_scores_ and clf.best_validation_score_ == max(clf.validation_scores_)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))

    inc = small_net()
    for _ in range(3):
        inc.partial_fit(X, y, classes=[0, 1, 2, 3], sample_weight=np.ones(len(y)))
    assert inc.t_ == 3 * len(X)
    warm = small_net(max_iter=2, warm_start=True).fit(X, y)
    warm.fit(X, y)
    assert len(warm.loss_curve_) == 4


def test_augmentation_and_dropout_use_only_the_estimators_generator():
    import torch
    X, y = quadrant_images(40, 8, 8, 1)
    state = torch.get_rng_state()
    a = small_net(max_iter=2, augment_shift=1, augment_flip=True, dropout=0.3).fit(X, y)
    b = small_net(max_iter=2, augment_shift=1, augment_flip=True, dropout=0.3).fit(X, y)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_bad_images_raise_clear_errors():
    X, y = quadrant_images(30, 8, 8, 3)
    clf = small_net(max_iter=1).fit(X, y)
    for c in (2, 5):
        bad = quadrant_images(5, 8, 8, c)[0] if c == 2 else np.zeros((5, 8, 8, 5), np.float32)
        with pytest.raises(ValueError, match="channel"):
            clf.predict(bad if c == 2 else bad.transpose(0, 3, 1, 2))
    with pytest.raises(ValueError, match="10x10 pixels, but ConvNetClassifier was fitted on 8x8"):
        clf.predict(quadrant_images(5, 10, 10, 3)[0])
    nan = X.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        small_net().fit(nan, y)
    with pytest.raises(ValueError, match="data_format"):
        small_net().fit(np.zeros((4, 3, 4, 3)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="conv_layers"):
        small_net(conv_layers=(8, 0)).fit(X, y)
    with pytest.raises(ValueError, match="pooling"):
        small_net(pooling="median").fit(X, y)
    for params in (dict(dropout=0.5), dict(augment_shift=1), dict(augment_flip=True)):
        with pytest.raises(ValueError, match="solver='lbfgs'"):
            small_net(solver="lbfgs", **params).fit(X, y)


def test_list_of_uint8_images_is_scaled_as_the_array_is():
    X, y = quadrant_images(30, 8, 8, 3)
    X8 = (X * 255).round().astype(np.uint8)
    clf = small_net(max_iter=2).fit(X8, y)
    np.testing.assert_array_equal(clf.predict_proba(list(X8)), clf.predict_proba(X8))
    again = small_net(max_iter=2).fit(list(X8), list(y))
    np.testing.assert_array_equal(again.predict_proba(X8), clf.predict_proba(X8))


# --- early stopping, checkpoints, inference chunks ----------------------------------------------


def _state(module):
    """A copy of a module's whole state: parameters and buffers (batch-norm statistics)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_early_stopping_restores_the_best_epoch_with_its_batch_norm_statistics(monkeypatch):
    X, y = quadrant_images(150, 8, 8, 1, seed=1)
    seen = []  # per validation: (score, the module's state, the hold-out)
    evaluate = _engine.Validation.evaluate

    def recording(self, module):
        seen.append((evaluate(self, module)[0], _state(module), self.X, self.y))
        return seen[-1][0], None

    monkeypatch.setattr(_engine.Validation, "evaluate", recording)
    clf = small_net(conv_layers=(4,), hidden_layer_sizes=(8,), early_stopping=True,
                    validation_fraction=0.2, n_iter_no_change=2, max_iter=40, batch_size=16,
                    learning_rate_init=0.003).fit(X, y)
    monkeypatch.undo()
    scores = [s for s, *_ in seen]
    assert scores == clf.validation_scores_
    assert clf.n_iter_ < clf.max_iter  # stopped early: the last epochs were not the best
    best = int(np.argmax(scores))  # the first best epoch: a tie does not replace it
    assert clf.best_validation_score_ == scores[best]
    assert 0 < best < len(scores) - 1  # neither the initial nor the last epoch's model
    best_state, last_state = seen[best][1], seen[-1][1]
    statistics = [k for k in best_state if "running" in k]
    assert len(statistics) == 4  # the convolution's and the dense layer's batch norms
    for k in statistics:  # they moved after the best epoch: restoring them is needed
        assert not torch.equal(best_state[k], last_state[k]), k
    _assert_same_state(_state(clf.module_), best_state)
    X_val, y_val = seen[0][2], seen[0][3]
    assert clf.score(X_val, y_val) == clf.best_validation_score_



@pytest.mark.parametrize("params", [
    dict(),
    dict(early_stopping=True, dropout=0.2, augment_shift=1, augment_flip=True),
])
def test_checkpoint_resumes_a_crashed_fit_to_the_same_model(tmp_path, monkeypatch, params, raise_at_step):
    X, y = quadrant_images(100, 8, 8, 1)
    path = tmp_path / "fit.ckpt"
    kw = dict(max_iter=5, tol=0, batch_size=32, checkpoint_path=str(path), **params)
    reference = small_net(**kw).fit(X, y)
    assert not path.exists()  # removed once the fit completed

    n_train = len(X) - (10 if params.get("early_stopping") else 0)
    batches = -(-n_train // 32)
    raise_at_step(3 * batches + 2, RuntimeError("the machine went down"))
    with pytest.raises(RuntimeError, match="went down"):  # in the 4th epoch
        small_net(**kw).fit(X, y)
    assert path.exists()
    monkeypatch.undo()
    resumed = small_net(**kw).fit(X, y)
    assert resumed.n_iter_ == reference.n_iter_ == 5
    np.testing.assert_array_equal(resumed.loss_curve_, reference.loss_curve_)
    assert resumed.validation_scores_ == reference.validation_scores_
    assert resumed.module_.blocks[1].running_mean.abs().sum() > 0  # batch norm ran
    _assert_same_state(_state(resumed.module_), _state(reference.module_))
    np.testing.assert_array_equal(resumed.predict_proba(X), reference.predict_proba(X))


def test_predictions_do_not_depend_on_the_batch_across_the_inference_chunks(monkeypatch):
    from sknn import _predict
    X, y = quadrant_images(4100, 8, 8, 1)
    clf = small_net(conv_layers=(4,), hidden_layer_sizes=(8,), max_iter=2).fit(X[:200], y[:200])
    chunks, image_tensor = [], _predict.image_tensor

    def recording(a, *args, **kwargs):
        chunks.append(len(a))
        return image_tensor(a, *args, **kwargs)

    monkeypatch.setattr(_predict, "image_tensor", recording)
    whole = clf.predict_proba(X)
    assert chunks == [1024] * 4 + [4]  # rows 4095 and 4096 are predicted in different blocks
    alone = np.vstack([clf.predict_proba(X[i:i + 1]) for i in range(4088, 4100)])
    np.testing.assert_array_equal(whole[4088:4100], alone)
    pieces = [(0, 1000), (1000, 4095), (4095, 4097), (4097, 4100)]
    np.testing.assert_array_equal(np.vstack([clf.predict_proba(X[a:b]) for a, b in pieces]),
                                  whole)
    features = clf.transform(X)
    np.testing.assert_array_equal(clf.transform(X[4090:4100]), features[4090:4100])


def test_pixels_given_otherwise_than_at_fit_are_warned_about():
    """uint8 pixels are scaled to [0, 1], other dtypes used as they are: the same pixels as
    int64 would reach the network 255 times as large."""
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (40, 8, 8)).astype(np.uint8)
    y = np.arange(40) % 2
    clf = ConvNetClassifier(conv_layers=(2,), hidden_layer_sizes=(4,), max_iter=1,
                            random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict(X)
        clf.predict(X / 255.0)  # the same pixels, scaled: as at fit
    with pytest.warns(UserWarning, match="pixels reach 255 .* fitted on reached 1"):
        clf.predict(X.astype(np.int64))
    standardised = (X - X.mean()) / X.std()  # no pixel scale: never warned about
    clf.fit(standardised, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict(standardised[:1] * 0.01)
