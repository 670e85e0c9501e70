"""PretrainedFeatureExtractor: ImageNet weights that work offline, inputs, errors, transfer."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("timm")
skimage_data = pytest.importorskip("skimage.data")

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sknn import PretrainedFeatureExtractor  # noqa: E402
from sknn.pretrained import _lite0_weights_path, _load_weights_file  # noqa: E402

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def extractor():
    return PretrainedFeatureExtractor(device="cpu").fit(np.zeros((2, 8, 8)))


@pytest.fixture(scope="module")
def photos():
    """scikit-image's bundled cat and coffee photos, cropped to one size: (2, 300, 400, 3)."""
    return np.stack([skimage_data.chelsea()[:300, :400], skimage_data.coffee()[:300, :400]])


def imagenet_top1(features):
    head = _load_weights_file(_lite0_weights_path())
    logits = features @ head["classifier.weight"].numpy().T + head["classifier.bias"].numpy()
    return logits.argmax(axis=1)


def test_default_weights_classify_bundled_photos(extractor, photos):
    features = extractor.transform(photos)
    assert features.shape == (2, 1280) and features.dtype == np.float32
    cat, coffee = imagenet_top1(features)
    assert cat in CAT_CLASSES and coffee == ESPRESSO


def test_layouts_and_dtypes_give_the_same_features(extractor, photos):
    ref = extractor.transform(photos)
    np.testing.assert_allclose(extractor.transform(photos.transpose(0, 3, 1, 2)), ref, atol=1e-5)
    as_float = (photos / 255.0).astype(np.float32)
    kept = as_float.copy()
    np.testing.assert_allclose(extractor.transform(as_float), ref, atol=1e-4)
    np.testing.assert_array_equal(as_float, kept)  # the input is left as it was
    rgba = np.concatenate([photos, np.full(photos.shape[:3] + (1,), 255, np.uint8)], axis=3)
    np.testing.assert_allclose(extractor.transform(rgba), ref, atol=1e-5)
    gray = photos.mean(axis=3).astype(np.uint8)
    gray_rgb = np.repeat(gray[..., None], 3, axis=3)
    np.testing.assert_allclose(extractor.transform(gray), extractor.transform(gray_rgb), atol=1e-5)
    flat = PretrainedFeatureExtractor(device="cpu", image_shape=(300, 400, 3)).fit(
        photos.reshape(2, -1))
    np.testing.assert_allclose(flat.transform(photos.reshape(2, -1)), ref, atol=1e-5)


def test_image_files_and_pil_images(extractor, photos, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    paths = []
    for i, name in enumerate(["cat.png", "coffee.png"]):
        paths.append(str(tmp_path / name))
        Image.fromarray(photos[i]).save(paths[-1])
    ref = extractor.transform(photos)
    np.testing.assert_allclose(extractor.transform(paths), ref, atol=1e-5)
    columns = [np.array(paths), np.array(paths, dtype=object)]
    try:
        import pandas as pd
        columns += [pd.Series(paths), pd.DataFrame({"path": paths})]
    except ImportError:
        pass
    for column in columns:
        np.testing.assert_allclose(extractor.transform(column), ref, atol=1e-5)
    pil = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    cat, coffee = imagenet_top1(extractor.transform(pil))  # full-size photos, two sizes
    assert cat in CAT_CLASSES and coffee == ESPRESSO
    with pytest.raises(ValueError, match="Cannot read image .*missing.png"):
        extractor.transform([str(tmp_path / "missing.png")])


def test_features_do_not_depend_on_the_batch(extractor, photos):
    batch = extractor.transform(photos)
    alone = np.vstack([extractor.transform(photos[i:i + 1]) for i in range(2)])
    np.testing.assert_array_equal(alone, batch)


def test_pooling_layer_and_input_size(photos):
    small = dict(device="cpu", input_size=64)
    assert PretrainedFeatureExtractor(pooling="max", **small).fit(photos).transform(
        photos).shape == (2, 1280)
    assert PretrainedFeatureExtractor(pooling=None, **small).fit(photos).transform(
        photos).shape == (2, 1280 * 2 * 2)
    early = PretrainedFeatureExtractor(layer=1, **small).fit(photos)
    assert early.transform(photos).shape == (2, 24)
    assert len(early.get_feature_names_out()) == 24
    with pytest.raises(ValueError, match="layer=9 is out of range"):
        PretrainedFeatureExtractor(layer=9, **small).fit(photos)


def test_transfer_beats_raw_pixels_on_lfw_subset():
    faces = skimage_data.lfw_subset()  # 100 faces then 100 non-faces, 25x25 gray in [0, 1]
    y = np.r_[np.ones(100), np.zeros(100)]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    raw = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                          faces.reshape(200, -1), y, cv=cv).mean()
    features = PretrainedFeatureExtractor(device="cpu").fit_transform(faces)
    transfer = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
                               features, y, cv=cv).mean()
    assert transfer > raw


def test_own_module_and_random_weights(photos):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU())
    own = PretrainedFeatureExtractor(model=module, device="cpu", input_size=32).fit(photos)
    assert own.transform(photos).shape == (2, 5)
    state = torch.get_rng_state()
    random = PretrainedFeatureExtractor(weights=None, device="cpu", input_size=32).fit(photos)
    assert torch.equal(state, torch.get_rng_state())
    assert random.transform(photos).shape == (2, 1280)


def test_set_output_pandas(photos):
    pd = pytest.importorskip("pandas")
    fe = PretrainedFeatureExtractor(device="cpu", input_size=64).set_output(transform="pandas")
    out = fe.fit_transform(photos)
    assert isinstance(out, pd.DataFrame) and out.shape == (2, 1280)
    assert list(out.columns[:2]) == ["pretrainedfeatureextractor0", "pretrainedfeatureextractor1"]


def test_pickle_round_trip(extractor, photos):
    restored = pickle.loads(pickle.dumps(extractor))
    np.testing.assert_array_equal(restored.transform(photos), extractor.transform(photos))


def test_bad_input_and_parameters(extractor, photos, tmp_path):
    nan = photos / 255.0
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        extractor.transform(nan)
    with pytest.raises(ValueError, match="2 channels"):
        extractor.transform(np.zeros((2, 16, 16, 2), np.uint8))
    with pytest.raises(ValueError, match="data_format"):  # 5 on the last axis: which is it?
        extractor.transform(np.zeros((2, 16, 16, 5), np.uint8))
    channels_last = PretrainedFeatureExtractor(data_format="channels_last", device="cpu")
    with pytest.raises(ValueError, match="5 channels"):
        channels_last.fit(photos).transform(np.zeros((2, 16, 16, 5), np.uint8))
    with pytest.raises(ValueError, match="Unknown model 'no_such_net'"):
        PretrainedFeatureExtractor(model="no_such_net").fit(photos)
    with pytest.raises(ValueError, match="pooling"):
        PretrainedFeatureExtractor(pooling="median").fit(photos)
    with pytest.raises(ValueError, match="no such file"):
        PretrainedFeatureExtractor(weights=str(tmp_path / "nothing.pth")).fit(photos)
    with pytest.warns(UserWarning, match="outside \\[0, 1\\]"):
        extractor.transform(photos.astype(np.float64))


def test_other_timm_model_without_offline_weights_explains_how_to_get_them(photos, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", os.devnull)  # an empty cache
    with pytest.raises(ValueError, match="No pretrained weights for 'resnet18' are available "
                                         "offline.*weights="):
        PretrainedFeatureExtractor(model="resnet18").fit(photos)


@pytest.fixture(scope="module")
def small():
    """Three random uint8 RGB images of 40x48, channels last."""
    return np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)


def own(**params):
    """An extractor with a small module of our own: fast, and no resizing by default."""
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.ReLU())
    return PretrainedFeatureExtractor(model=module, device="cpu", **params)


def test_views_with_negative_strides(small):
    fe = own().fit(small)
    for view in [small[:, :, ::-1], np.flip(small, 0), small.transpose(0, 3, 1, 2)[:, ::-1]]:
        np.testing.assert_array_equal(fe.transform(view), fe.transform(view.copy()))


def test_read_only_images_raise_no_torch_warning():
    # torch warns about a read-only array once per process: look in a fresh one.
    code = """if True:
        import warnings
        import numpy as np, torch
        from sknn import PretrainedFeatureExtractor
        images = np.zeros((2, 8, 8, 3), np.uint8)
        images.flags.writeable = False
        fe = PretrainedFeatureExtractor(model=torch.nn.Conv2d(3, 2, 1), device="cpu")
        warnings.simplefilter("error")
        fe.fit(images).transform(images)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_list_of_uint8_images_is_scaled_like_the_array(small):
    fe = own().fit(small)
    np.testing.assert_array_equal(fe.transform(list(small)), fe.transform(small))
    np.testing.assert_array_equal(fe.transform(tuple(small)), fe.transform(small))


@pytest.mark.parametrize("size", [0, (0, 32), (32,), (32, 32, 3), -3, 2.5, "32", True])
def test_bad_input_size(small, size):
    with pytest.raises((ValueError, TypeError), match="input_size"):
        own(input_size=size).fit(small)


def test_input_size(small):
    for size, shape in [(16, (16, 16)), (np.int64(16), (16, 16)), ((16, 24), (16, 24)),
                        ([16, 24], (16, 24))]:
        fe = own(input_size=size, pooling=None).fit(small)
        assert fe.config_["input_size"] == shape
        assert fe.transform(small).shape == (3, 2 * 16 * shape[1])


def test_feature_names_of_own_module_without_pooling(small):
    pd = pytest.importorskip("pandas")
    fe = own(pooling=None).fit(small)
    assert len(fe.get_feature_names_out()) == fe.transform(small).shape[1] == 2 * 40 * 48
    out = fe.set_output(transform="pandas").transform(small)
    assert isinstance(out, pd.DataFrame) and out.shape == (3, 2 * 40 * 48)


@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_images_of_different_sizes_need_input_size(small, batch_size):
    Image = pytest.importorskip("PIL.Image")
    X = [Image.fromarray(img) for img in [small[0], small[1, :30], small[2]]]
    for pooling in ["avg", None]:
        fe = own(batch_size=batch_size, pooling=pooling).fit(small)
        with pytest.raises(ValueError, match="different sizes.*input_size"):
            fe.transform(X)
        with pytest.raises(ValueError, match="different sizes.*input_size"):
            own(batch_size=batch_size, pooling=pooling).fit(X)
        resized = own(batch_size=batch_size, pooling=pooling, input_size=16).fit(X)
        assert resized.transform(X).shape == (3, 2 if pooling else 2 * 16 * 16)
    with pytest.raises(ValueError, match="list of arrays of different shapes"):
        fe.transform([small[0], small[1, :30]])


def test_refit_forgets_what_an_earlier_fit_saw(small):
    pd = pytest.importorskip("pandas")
    Image = pytest.importorskip("PIL.Image")
    fe = own().fit(pd.DataFrame(small[..., 0].reshape(3, -1)).add_prefix("px")).fit(small)
    assert not hasattr(fe, "feature_names_in_") and fe.n_features_in_ == 40 * 48 * 3
    fe.fit([Image.fromarray(img) for img in small])
    assert not hasattr(fe, "n_features_in_") and not hasattr(fe, "feature_names_in_")


def test_fit_leaves_own_module_as_it_was(small, tmp_path):
    fe = own()
    module = fe.model
    before = {k: v.clone() for k, v in module.state_dict().items()}
    fe.fit(small)
    assert fe.module_ is not module and module.training and not fe.module_.training
    assert module[0].weight.is_contiguous()  # not made channels-last
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.ReLU())
    torch.save(other.state_dict(), tmp_path / "other.pth")
    fe.set_params(weights=str(tmp_path / "other.pth")).fit(small)
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])
    assert torch.equal(fe.module_[0].weight, other[0].weight)


def test_float64_images_give_the_float32_images_features(small):
    """float64 images go to the model as float32 (what it takes; MPS has no float64)."""
    images = small / np.float32(255)
    fe = own(input_size=32).fit(images)
    np.testing.assert_array_equal(fe.transform(images.astype(np.float64)), fe.transform(images))


def test_pickle_keeps_a_cpu_module_parameter_as_it_is(small):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1))
    fe = PretrainedFeatureExtractor(model=module, device="cpu").fit(small)
    state = fe.__getstate__()
    assert state["model"] is module


def test_unpooled_features_need_images_of_the_fitted_size(small):
    fe = own(pooling=None).fit(small)
    assert fe.transform(small).shape[1] == len(fe.get_feature_names_out())
    with pytest.raises(ValueError, match="fitted on 40x48: with pooling=None"):
        fe.transform(small[:, :32, :32])
    assert own().fit(small).transform(small[:, :32, :32]).shape == (3, 2)  # pooled: any size


def test_weights_that_are_no_weights_file_say_so(small, tmp_path):
    (tmp_path / "image.png").write_bytes(b"\x89PNG not weights")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "linear.pth")
    for weights, match in ((tmp_path, "is a directory"), (tmp_path / "image.png", "not a weights"),
                           (tmp_path / "none.pth", "no such file"),
                           (tmp_path / "linear.pth", "do not fit the module")):
        with pytest.raises(ValueError, match=match):
            own(weights=str(weights)).fit(small)
    with pytest.raises(ValueError, match="is a directory"):
        PretrainedFeatureExtractor(weights=str(tmp_path)).fit(small)
