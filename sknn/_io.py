"""``save`` and ``load``: an estimator as data (JSON and safetensors in a zip archive), which
loading reads without running any code from the file.

The archive (``zipfile``, stored, not compressed) holds exactly two members:

- ``sknn.json``: the format name and version, the sknn version, the estimator's class name, its
  parameters (``get_params(deep=False)``) and every other attribute it holds (what pickling keeps),
  the torch module's constructor settings, and references to the tensors;
- ``tensors.safetensors``: the module's ``state_dict`` and every other numeric array or tensor
  (the solver's moments, ``classes_``...), in the safetensors format (written and read here: no
  dependency).

Values JSON cannot carry faithfully are tagged with their type, ``{"__type__": "tuple", ...}``;
loading accepts only the tags it knows, and objects only of a fixed list of sknn's and
scikit-learn's own classes, rebuilt from their attributes: no pickle, no import by name, no eval.
"""

import json
import math
import os
import pathlib
import struct
import warnings
import zipfile

import numpy as np
import torch
from sklearn.preprocessing import LabelBinarizer

from . import _optim, nn as _nn, schedules
from ._data import resolve_device
from .convnet import ConvNetClassifier
from .mlp import MLPClassifier, MLPRegressor
from .pretrained import PretrainedFeatureExtractor

FORMAT = "sknn"
FORMAT_VERSION = 1
_JSON_MEMBER = "sknn.json"
_TENSORS_MEMBER = "tensors.safetensors"

#: The estimators ``load`` rebuilds, by class name: the only classes a file can name.
ESTIMATORS = {cls.__name__: cls for cls in (
    MLPClassifier, MLPRegressor, ConvNetClassifier, PretrainedFeatureExtractor)}

#: Plain objects an estimator holds (solver state, loss, label encoding), rebuilt from their
#: attributes with ``cls.__new__`` (their ``__init__`` does not run), as unpickling does.
_OBJECTS = {cls.__name__: cls for cls in (
    _optim.Adam, _optim.SGD, _nn.SoftmaxCrossEntropy, _nn.SigmoidCrossEntropy,
    _nn.SquaredError, _nn.PoissonDeviance, LabelBinarizer, schedules.CosineAnnealing,
    schedules.ReduceOnPlateau)}

# The module's plain attributes that steer its forward pass (the tensors are in its state_dict).
_MODULE_ATTRS = ("activation", "dropout", "augment_shift", "augment_flip", "name")


class _ModuleSlot:
    """Where ``module_`` stands among the attributes (its content is saved on its own)."""


_MODULE = _ModuleSlot()

# --- safetensors ----------------------------------------------------------------------------

_NP_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": np.uint16,
              "I16": np.int16, "U32": np.uint32, "I32": np.int32, "U64": np.uint64,
              "I64": np.int64, "F16": np.float16, "F32": np.float32, "F64": np.float64}
_NP_CODES = {np.dtype(v): k for k, v in _NP_DTYPES.items()}
_TORCH_DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
                 "I32": torch.int32, "I64": torch.int64, "F16": torch.float16,
                 "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_TORCH_CODES = {v: k for k, v in _TORCH_DTYPES.items()}
_ALL_CODES = set(_TORCH_DTYPES) | set(_NP_DTYPES)
_MAX_HEADER = 100_000_000


def _tensor_bytes(value):
    """(dtype code, shape, little-endian bytes) of a torch tensor or a numeric numpy array."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        code = _TORCH_CODES.get(t.dtype)
        if code is None:
            raise TypeError(f"Cannot save a tensor of dtype {t.dtype}.")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return code, list(t.shape), raw
    a = np.array(value, order="C", copy=not value.flags.c_contiguous)  # keeps 0-d arrays 0-d
    code = _NP_CODES.get(a.dtype.newbyteorder("=")) if a.dtype.byteorder != "|" else (
        _NP_CODES.get(a.dtype))
    if code is None:
        raise TypeError(f"Cannot save a numpy array of dtype {a.dtype}.")
    return code, list(a.shape), a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def write_safetensors(tensors):
    """The safetensors encoding of ``tensors`` (name -> torch tensor or numeric numpy array):
    an 8-byte little-endian header length, the JSON header ``{name: {dtype, shape,
    data_offsets}}`` (padded with spaces to a multiple of 8 bytes), then the data."""
    header, chunks, offset = {}, [], 0
    for name, value in tensors.items():
        code, shape, raw = _tensor_bytes(value)
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def read_safetensors(data):
    """Parse safetensors bytes: ``{name: (dtype code, shape, bytes)}``. A ValueError where the
    bytes are not a well-formed safetensors file."""
    def bad(why):
        return ValueError(f"{_TENSORS_MEMBER} is not a valid safetensors file: {why}.")
    if len(data) < 8:
        raise bad("too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(_MAX_HEADER, len(data) - 8):
        raise bad("its header length is out of range")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    body, entries = data[8 + n:], []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not (isinstance(info, dict) and info.get("dtype") in _ALL_CODES
                and isinstance(info.get("shape"), list)
                and all(type(s) is int and s >= 0 for s in info["shape"])
                and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
                and all(type(o) is int for o in info["data_offsets"])):
            raise bad(f"the entry of tensor {name!r} is malformed")
        entries.append((tuple(info["data_offsets"]), name, info))
    out, end = {}, 0
    for (start, stop), name, info in sorted(entries, key=lambda e: e[0]):
        itemsize = 2 if info["dtype"] == "BF16" else (
            np.dtype(_NP_DTYPES[info["dtype"]]).itemsize)
        if start != end or stop < start or stop > len(body) or (
                stop - start != itemsize * math.prod(info["shape"])):
            raise bad(f"the data offsets of tensor {name!r} are inconsistent")
        end = stop
        out[name] = (info["dtype"], tuple(info["shape"]), bytes(body[start:stop]))
    if end != len(body):
        raise bad("it has bytes that belong to no tensor")
    return out


def _to_torch(code, shape, raw):
    if code not in _TORCH_DTYPES:
        raise ValueError(f"dtype {code} is not a torch dtype")
    dtype = _TORCH_DTYPES[code]
    if not raw:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)


def _to_numpy(code, shape, raw):
    if code not in _NP_DTYPES:
        raise ValueError(f"dtype {code} is not a numpy dtype")
    dtype = np.dtype(_NP_DTYPES[code]).newbyteorder("<")
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")

# --- values as JSON -------------------------------------------------------------------------


class _Encoder:
    """Turns Python values into JSON-ready values, tensors and numeric arrays into references
    to entries of the safetensors member (named by where they are found)."""

    def __init__(self):
        self.tensors = {}

    def _store(self, path, value):
        name = path
        while name in self.tensors:
            name += "'"
        self.tensors[name] = value
        return name

    def encode(self, value, path):
        t = type(value)
        if value is None or t in (bool, str):
            return value
        if value is _MODULE and path == "attributes.module_":
            return {"__type__": "module"}
        if t is int:
            return value
        if t is float:
            if math.isfinite(value):
                return value
            return {"__type__": "float", "value": repr(value)}  # 'inf', '-inf', 'nan'
        if t is list:
            return [self.encode(v, f"{path}.{i}") for i, v in enumerate(value)]
        if t is tuple:
            return {"__type__": "tuple",
                    "items": [self.encode(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if t is dict:
            if all(type(k) is str for k in value) and "__type__" not in value:
                return {k: self.encode(v, f"{path}.{k}") for k, v in value.items()}
            return {"__type__": "dict", "items": [
                [self.encode(k, f"{path}.key{i}"), self.encode(v, f"{path}.{i}")]
                for i, (k, v) in enumerate(value.items())]}
        if isinstance(value, np.generic) and not isinstance(value, np.ndarray):
            if value.dtype.kind not in "biuf" or value.dtype not in _NP_CODES:
                raise TypeError(f"{path}: cannot save a numpy scalar of dtype {value.dtype}.")
            return {"__type__": "numpy.scalar", "dtype": value.dtype.name,
                    "value": self.encode(value.item(), path)}
        if t is np.ndarray:
            if value.dtype.kind in "biuf":
                return {"__type__": "numpy.ndarray", "tensor": self._store(path, value)}
            if value.dtype.kind == "U" or (value.dtype.kind == "O" and all(
                    type(v) in (str, int, bool, float) or v is None for v in value.flat)):
                return {"__type__": "numpy.ndarray", "dtype": value.dtype.str,
                        "shape": list(value.shape),
                        "items": [self.encode(v, path) for v in value.ravel().tolist()]}
            raise TypeError(f"{path}: cannot save a numpy array of dtype {value.dtype}.")
        if isinstance(value, torch.nn.Parameter):
            raise TypeError(f"{path}: cannot save a loose torch Parameter.")
        if t is torch.Tensor:
            return {"__type__": "torch.tensor", "tensor": self._store(path, value)}
        if t is torch.device:
            return {"__type__": "torch.device", "value": str(value)}
        if t is np.random.RandomState:
            name, keys, pos, has_gauss, cached = value.get_state()
            return {"__type__": "numpy.RandomState", "state": [
                name, self.encode(keys, f"{path}.keys"), int(pos), int(has_gauss),
                self.encode(float(cached), path)]}
        if isinstance(value, pathlib.PurePath):
            return {"__type__": "path", "value": str(value)}
        if t.__name__ in _OBJECTS and _OBJECTS[t.__name__] is t:
            return {"__type__": "object", "class": t.__name__,
                    "state": self.encode(dict(vars(value)), path)}
        if isinstance(value, torch.nn.Module):
            raise TypeError(
                f"{path} is a torch module ({t.__name__}): its architecture is Python code, which "
                "cannot be stored as data. Save a PretrainedFeatureExtractor with a timm model "
                "name as `model`, or pickle this estimator (with the risks of pickle).")
        raise TypeError(f"{path}: cannot save a value of type {t.__module__}.{t.__qualname__} as "
                        "data.")


class _Decoder:
    def __init__(self, tensors):
        self.tensors = tensors
        self.used = set()

    def _tensor(self, name, to):
        if not isinstance(name, str) or name not in self.tensors:
            raise ValueError(f"the file refers to tensor {name!r}, which is not in "
                             f"{_TENSORS_MEMBER}")
        self.used.add(name)
        try:
            return to(*self.tensors[name])
        except ValueError as e:
            raise ValueError(f"tensor {name!r}: {e}") from None

    def decode(self, value):
        if value is None or type(value) in (bool, str, int, float):
            return value
        if type(value) is list:
            return [self.decode(v) for v in value]
        if type(value) is not dict:
            raise ValueError(f"unexpected JSON value {value!r}")
        if "__type__" not in value:
            return {k: self.decode(v) for k, v in value.items()}
        tag = value["__type__"]
        try:
            if tag == "module":
                return _MODULE
            if tag == "float":
                if value["value"] not in ("inf", "-inf", "nan"):
                    raise ValueError(value["value"])
                return float(value["value"])
            if tag == "tuple":
                return tuple(self.decode(v) for v in value["items"])
            if tag == "dict":
                return {self._key(self.decode(k)): self.decode(v) for k, v in value["items"]}
            if tag == "numpy.scalar":
                dtype = np.dtype(value["dtype"])
                if dtype not in _NP_CODES:
                    raise ValueError(value["dtype"])
                return dtype.type(self.decode(value["value"]))
            if tag == "numpy.ndarray":
                if "tensor" in value:
                    return self._tensor(value["tensor"], _to_numpy)
                dtype = np.dtype(value["dtype"])
                if dtype.kind not in "UO":
                    raise ValueError(value["dtype"])
                items = [self.decode(v) for v in value["items"]]
                if not all(type(v) in (str, int, bool, float) or v is None for v in items):
                    raise ValueError("items")
                out = np.empty(len(items), dtype=dtype)
                out[:] = items
                return out.reshape([int(s) for s in value["shape"]])
            if tag == "torch.tensor":
                return self._tensor(value["tensor"], _to_torch)
            if tag == "torch.device":
                return torch.device(str(value["value"]))
            if tag == "numpy.RandomState":
                name, keys, pos, has_gauss, cached = value["state"]
                rs = np.random.RandomState()
                rs.set_state((str(name), np.asarray(self.decode(keys), dtype=np.uint32),
                              int(pos), int(has_gauss), float(self.decode(cached))))
                return rs
            if tag == "path":
                return pathlib.Path(str(value["value"]))
            if tag == "object":
                cls = _OBJECTS.get(value["class"]) if isinstance(value["class"], str) else None
                if cls is None:
                    raise ValueError(f"{value['class']!r} is not one of the classes a file may "
                                     f"hold ({', '.join(sorted(_OBJECTS))})")
                state = self.decode(value["state"])
                if type(state) is not dict or not all(type(k) is str for k in state):
                    raise ValueError("state")
                obj = cls.__new__(cls)
                obj.__dict__.update(state)
                return obj
        except ValueError as e:
            raise ValueError(f"bad {tag!r} value in {_JSON_MEMBER}: {e}") from None
        except (KeyError, TypeError, AttributeError, RuntimeError, IndexError) as e:
            raise ValueError(f"malformed {tag!r} value in {_JSON_MEMBER}: {e!r}") from None
        raise ValueError(f"unknown type tag {tag!r} in {_JSON_MEMBER}: this file was not written "
                         "by sknn.save, or by a newer version")

    @staticmethod
    def _key(k):
        try:
            hash(k)
        except TypeError:
            raise ValueError(f"unhashable dict key {k!r}") from None
        return k


# --- the module -----------------------------------------------------------------------------


def _module_settings(est):
    """What rebuilding ``est.module_`` takes besides its tensors: its dtype, each submodule's
    training flag and forward-pass attributes."""
    module = est.module_
    dtypes = {p.dtype for p in module.parameters() if p.is_floating_point()}
    return {
        "class": type(module).__name__,
        "dtype": str(next(iter(dtypes))).removeprefix("torch.") if len(dtypes) == 1 else None,
        "training": {name: m.training for name, m in module.named_modules()},
        "attrs": {name: {a: getattr(m, a) for a in _MODULE_ATTRS
                         if type(getattr(m, a, None)) in (str, int, float, bool)}
                  for name, m in module.named_modules()},
    }


def _build_module(est, settings):
    """An empty module of ``est``'s architecture, on the CPU (no random initialisation)."""
    dtype = getattr(torch, settings["dtype"]) if settings.get("dtype") else torch.float32
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown module dtype {settings['dtype']!r}")
    from ._base import hidden_layers
    if isinstance(est, (MLPClassifier, MLPRegressor)):
        units = [est.n_features_in_, *hidden_layers(est), est.n_outputs_]
        return _nn.MLP(units, est.activation, est.dropout, est.batch_norm, dtype=dtype)
    if isinstance(est, ConvNetClassifier):
        return _nn.ConvNet(
            est.image_shape_, tuple(est.conv_layers), est.kernel_size, est.pooling,
            hidden_layers(est), est.n_outputs_, est.activation, est.dropout, est.batch_norm,
            est.augment_shift, est.augment_flip, dtype=dtype, device="cpu")
    from .pretrained import load_backbone
    module, _ = load_backbone(est.model, None)
    return module.to(memory_format=torch.channels_last)


def _restore_module(est, settings, state):
    try:
        module = _build_module(est, settings)
    except Exception as e:
        raise ValueError(f"cannot rebuild the {type(est).__name__}'s network from the saved "
                         f"parameters: {e}") from None
    if settings.get("class") != type(module).__name__:
        raise ValueError(f"the file holds a {settings.get('class')!r} network, but the saved "
                         f"parameters build a {type(module).__name__!r}")
    expected = module.state_dict()
    missing, extra = expected.keys() - state.keys(), state.keys() - expected.keys()
    if missing or extra:
        raise ValueError(f"the saved tensors do not match the {type(est).__name__}'s network: "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
    for k, t in expected.items():
        if tuple(t.shape) != tuple(state[k].shape) or t.dtype != state[k].dtype:
            raise ValueError(f"the saved tensor {k!r} ({tuple(state[k].shape)}, "
                             f"{state[k].dtype}) does not fit the network, which expects "
                             f"{tuple(t.shape)}, {t.dtype}")
    module.load_state_dict(state)
    named = dict(module.named_modules())
    for name, training in settings.get("training", {}).items():
        if name in named:
            named[name].training = bool(training)
    for name, attrs in settings.get("attrs", {}).items():
        for a, v in attrs.items():
            if name in named and a in _MODULE_ATTRS and type(v) in (str, int, float, bool):
                setattr(named[name], a, v)
    return module


# --- save and load --------------------------------------------------------------------------


def save(estimator, path):
    """Save an sknn estimator to a file that :func:`load` reads without running code from it.

    The file is a zip archive of ``sknn.json`` (parameters, fitted attributes, format version) and
    ``tensors.safetensors`` (the network's weights and buffers, the solver's state and the other
    numeric arrays). It holds everything pickling keeps, so that a loaded model predicts, and
    continues training with ``partial_fit`` or ``warm_start``, exactly as the saved one would.
    Callbacks (``set_callbacks``) are not saved: they are code. A ``learning_rate_schedule`` or
    ``scoring`` that is a callable cannot be saved as data either (a ``TypeError`` says so):
    use the named ones. Tensors are saved from any device; the file does not depend on where the model was fitted.

    Parameters
    ----------
    estimator : MLPClassifier, MLPRegressor, ConvNetClassifier or PretrainedFeatureExtractor
        Fitted or not.
    path : str or os.PathLike
        The file to write (conventionally ending in ``.sknn``); replaced if it exists.

    Raises
    ------
    TypeError
        Where ``estimator`` is not one of sknn's estimators, or holds a value that cannot be
        stored as data (such as a torch module given as the ``model`` parameter).
    """
    cls = type(estimator)
    if ESTIMATORS.get(cls.__name__) is not cls:
        raise TypeError(f"sknn.save saves sknn's estimators ({', '.join(ESTIMATORS)}), not "
                        f"{cls.__module__}.{cls.__qualname__}.")
    params = estimator.get_params(deep=False)
    state = dict(vars(estimator))
    # Callbacks (set_callbacks) are code, not data, and belong to a session: set them again
    # after loading.
    state.pop("_skl_callbacks", None)
    enc = _Encoder()
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "sknn_version": _version(),
           "class": cls.__name__,
           "params": enc.encode({k: state.pop(k) if k in state else v
                                 for k, v in params.items()}, "params"),
           "module": None}
    module = state.get("module_")
    if module is not None:
        state["module_"] = _MODULE
        doc["module"] = _module_settings(estimator)
        for k, t in module.state_dict().items():
            enc.tensors["module_." + k] = t
    doc["attributes"] = enc.encode(state, "attributes")
    if doc["module"] is not None:
        doc["module"]["tensors"] = [k for k in enc.tensors if k.startswith("module_.")]
    text = json.dumps(doc, allow_nan=False, indent=1)
    blob = write_safetensors(enc.tensors)
    tmp = os.fspath(path) + ".tmp"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(_JSON_MEMBER, text)
            z.writestr(_TENSORS_MEMBER, blob)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path, device=None):
    """Load an estimator saved by :func:`save`. Nothing in the file is executed: the class comes
    from sknn's own estimators by name, values are JSON and tensors safetensors.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.
    device : str or None, default=None
        Where to put a fitted model: None, the device it was on when saved where this machine
        has it, else the CPU (with a warning), as unpickling does; or a device such as 'cpu'
        or 'cuda'. The ``device`` parameter is left as saved.

    Returns
    -------
    estimator : MLPClassifier, MLPRegressor, ConvNetClassifier or PretrainedFeatureExtractor

    Raises
    ------
    ValueError
        Where the file is not an sknn archive, was written by a newer format version, names a
        class that is not one of sknn's estimators, or holds values or tensors that do not fit.
    """
    where = os.fspath(path)
    try:
        with zipfile.ZipFile(where) as z:
            names = sorted(z.namelist())
            if names != sorted([_JSON_MEMBER, _TENSORS_MEMBER]):
                raise ValueError(f"{where!r} is not an sknn file: an sknn archive holds exactly "
                                 f"{_JSON_MEMBER!r} and {_TENSORS_MEMBER!r}, this one {names}.")
            text, blob = z.read(_JSON_MEMBER), z.read(_TENSORS_MEMBER)
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as e:
        raise ValueError(f"{where!r} is not an sknn file (not a zip archive: {e}).") from None
    try:
        doc = json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{where!r}: {_JSON_MEMBER} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{where!r} is not an sknn file: {_JSON_MEMBER} has no "
                         f"'format': {FORMAT!r}.")
    version = doc.get("format_version")
    if type(version) is not int:
        raise ValueError(f"{where!r}: the format version {version!r} is not an int.")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where!r} was written in format version {version} (by sknn "
                         f"{doc.get('sknn_version')}); this sknn ({_version()}) reads versions "
                         f"up to {FORMAT_VERSION}: upgrade sknn.")
    name = doc.get("class")
    cls = ESTIMATORS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{where!r}: class {name!r} is not one of sknn's estimators "
                         f"({', '.join(ESTIMATORS)}); no other class is ever loaded.")
    try:
        dec = _Decoder(read_safetensors(blob))
        params = dec.decode(doc.get("params", {}))
        attributes = dec.decode(doc.get("attributes", {}))
        if type(params) is not dict or type(attributes) is not dict:
            raise ValueError("params and attributes must be JSON objects")
        est = cls()  # sknn's own __init__: it only sets the parameters' defaults
        unknown = params.keys() - set(cls._get_param_names())
        if unknown:
            raise ValueError(f"{sorted(unknown)} are not parameters of {name}")
        est.__dict__.update(params)
        est.__dict__.update(attributes)
        module_doc = doc.get("module")
        if [k for k, v in attributes.items() if v is _MODULE] != (
                [] if module_doc is None else ["module_"]):
            raise ValueError("the network's place among the attributes is wrong")
        if module_doc is not None:
            if not isinstance(module_doc, dict) or not isinstance(module_doc.get("tensors"), list):
                raise ValueError("malformed 'module' entry")
            state = {k[len("module_."):]: dec._tensor(k, _to_torch)
                     for k in module_doc["tensors"] if isinstance(k, str)
                     and k.startswith("module_.")}
            est.module_ = _restore_module(est, module_doc, state)
        unused = dec.tensors.keys() - dec.used
        if unused:
            raise ValueError(f"{_TENSORS_MEMBER} holds tensors the estimator does not use: "
                             f"{sorted(unused)[:5]}")
    except ValueError as e:
        raise ValueError(f"{where!r}: cannot load the {name}: {e}") from None
    if "module_" in est.__dict__:
        est._move_to(_target_device(est.device_, device))
    return est


def _target_device(saved, device):
    if device is not None:
        return resolve_device(device)
    if saved.type == "cpu":
        return saved
    try:
        return resolve_device(str(saved))
    except ValueError:
        warnings.warn(f"This model was fitted on {saved}, which is not available here: it is "
                      "loaded on the CPU.")
        return torch.device("cpu")


def _version():
    from . import __version__
    return __version__
