"""ONNX export of sknn's estimators through skl2onnx (the ``onnx`` extra: ``pip install
"sknn[onnx]"``).

Importing this module registers skl2onnx converters for :class:`~sknn.MLPClassifier`,
:class:`~sknn.MLPRegressor`, :class:`~sknn.ConvNetClassifier` and
:class:`~sknn.PretrainedFeatureExtractor`; after that ``skl2onnx.to_onnx(model, X[:1])``
converts them and any Pipeline that holds them, and ONNX Runtime serves the result with no
Python. :func:`to_onnx` does both in one call.

- MLPs: for each layer ``X @ W + b`` (batch norm, an affine map at inference, folded into the
  layer before it; dropout is off), the activation, then the output activation, in the input's
  precision (float64 input: float64, the float32 weights of a float32 model widened).
- ConvNetClassifier and PretrainedFeatureExtractor: the network, with the input handling of
  ``predict_proba`` / ``transform`` (the image layout the estimator was given, uint8 scaling,
  the extractor's RGB conversion, antialiased resize and normalisation), exported by
  ``torch.onnx.export`` (which needs onnxscript; ONNX opset 18 or later, for the antialiased
  ``Resize``) and embedded in skl2onnx's graph. They compute in float32 (ONNX Runtime has no
  float64 convolution); the ConvNet's probabilities come back in the input's float dtype, the
  extractor's features in float32, as the estimators return them. The input's image shape is
  fixed by the example given to ``to_onnx``.
- Classifiers give a label and the probabilities as skl2onnx builds them for scikit-learn's
  MLPClassifier (options ``zipmap``, ``nocl``, ``output_class_labels``); multilabel ones an int64
  indicator matrix and a probability per label. Regressors give ``(n_samples, n_outputs)``
  predictions (``loss='poisson'``: ``exp`` of the network's output); the extractor its features.
"""

import copy
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

try:
    import skl2onnx
    from skl2onnx import update_registered_converter
    from skl2onnx.common._apply_operation import (apply_add, apply_cast, apply_identity,
                                                     apply_reshape)
    from skl2onnx.common.data_types import (FloatTensorType, Int64TensorType, StringTensorType,
                                            guess_proto_type)
    from skl2onnx.proto import onnx_proto
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("sknn.onnx needs skl2onnx, onnx and onnxruntime: pip install "
                      "'sknn[onnx]'.") from e

from ._data import to_images
from .convnet import ConvNetClassifier
from .mlp import MLPClassifier, MLPRegressor
from .pretrained import PretrainedFeatureExtractor

_ACTIVATIONS = {"identity": "Identity", "logistic": "Sigmoid", "tanh": "Tanh", "relu": "Relu",
                "softmax": "Softmax", "exp": "Exp"}


def dense_layers(est):
    """The fitted network's layers as float64 ``(W, b)`` pairs, batch norm folded in: at
    inference a batch-norm layer is the affine map ``(z - mean) / sqrt(var + eps) * gamma + beta``
    of the layer's output ``z = X @ W + b``."""
    module = est.module_
    weights = [w.detach().cpu().double().numpy() for w in module.weights]
    biases = [b.detach().cpu().double().numpy() for b in module.biases]
    for i, bn in enumerate(module.norms):
        mean = bn.running_mean.detach().cpu().double().numpy()
        scale = 1.0 / np.sqrt(bn.running_var.detach().cpu().double().numpy() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.detach().cpu().double().numpy()
        shift = 0.0 if bn.bias is None else bn.bias.detach().cpu().double().numpy()
        weights[i] = weights[i] * scale
        biases[i] = (biases[i] - mean) * scale + shift
    return weights, biases


def _is_multilabel(est):
    return est._label_binarizer.y_type_.startswith("multilabel")


def _classifier_shape_calculator(operator):
    """Outputs as skl2onnx types scikit-learn's classifiers': a label per row (int64, or string
    for string classes; with option ``nocl``, the class index) and a probability per class; for
    multilabel targets an int64 indicator matrix and a probability per label."""
    est = operator.raw_operator
    _check_fitted(est)
    n_rows = operator.inputs[0].get_first_dimension()
    nocl = operator.scope_inst.get_options(est, dict(nocl=False))["nocl"]
    if _is_multilabel(est):
        operator.outputs[0].set_type(Int64TensorType(shape=[n_rows, est.n_outputs_]))
    elif est.classes_.dtype.kind in "OUS" and not nocl:
        operator.outputs[0].set_type(StringTensorType(shape=[n_rows]))
    else:
        operator.outputs[0].set_type(Int64TensorType(shape=[n_rows]))
    operator.outputs[1].type.shape = [n_rows, est.n_outputs_ if _is_multilabel(est)
                                      else len(est.classes_)]


def _check_fitted(est):
    if "module_" not in est.__dict__:
        raise ValueError(f"This {type(est).__name__} is not fitted: fit it before converting it "
                         "to ONNX.")


def _classifier_converter(scope, operator, container):
    est = operator.raw_operator
    _check_fitted(est)
    _labels(scope, operator, container, est, _dense_graph(scope, operator, container, est))


def _regressor_shape_calculator(operator):
    est = operator.raw_operator
    input_type = operator.inputs[0].type.__class__
    n_rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = input_type([n_rows, est.n_outputs_])


def _regressor_converter(scope, operator, container):
    est = operator.raw_operator
    _check_fitted(est)
    apply_reshape(scope, _dense_graph(scope, operator, container, est),
                  operator.outputs[0].full_name, container, desired_shape=(-1, est.n_outputs_))


def _dense_graph(scope, operator, container, est):
    """The network's layers and output activation on the operator's input; returns the name of
    the output."""
    proto_dtype = guess_proto_type(operator.inputs[0].type)
    if proto_dtype != onnx_proto.TensorProto.DOUBLE:
        proto_dtype = onnx_proto.TensorProto.FLOAT
    x = scope.get_unique_variable_name("cast_input")
    apply_cast(scope, operator.inputs[0].full_name, x, container, to=proto_dtype)
    weights, biases = dense_layers(est)
    for i, (w, b) in enumerate(zip(weights, biases)):
        w_name = scope.get_unique_variable_name("coefficient")
        b_name = scope.get_unique_variable_name("intercepts")
        container.add_initializer(w_name, proto_dtype, w.shape, w.ravel())
        container.add_initializer(b_name, proto_dtype, [1, len(b)], b)
        product, z = (scope.get_unique_variable_name(n) for n in ("mul_result", "add_result"))
        container.add_node("MatMul", [x, w_name], product,
                           name=scope.get_unique_operator_name("MatMul"))
        apply_add(scope, [product, b_name], z, container, broadcast=1)
        name = est.activation if i < len(weights) - 1 else est.out_activation_
        x = scope.get_unique_variable_name("activations")
        container.add_node(_ACTIVATIONS[name], z, x,
                           name=scope.get_unique_operator_name(_ACTIVATIONS[name]))
    return x


# --- networks exported by torch ------------------------------------------------------------


class _RawImages(torch.nn.Module):
    """Base of the modules below: ``images(x)`` gathers the raw input's values (any layout the
    estimator accepts, one row per image) into ``(n, C, H, W)`` images, ``order`` being the flat
    positions ``to_images`` reads them from."""

    def __init__(self, order):
        super().__init__()
        self.register_buffer("order", torch.as_tensor(order.ravel(), dtype=torch.int64))
        self.shape = tuple(order.shape)

    def images(self, x):
        return x.reshape(x.shape[0], -1).index_select(1, self.order).reshape(-1, *self.shape)


class _ConvNetInference(_RawImages):
    """What ConvNetClassifier.predict_proba computes, as one torch module of the raw input (in
    the layout and dtype the estimator was given): the images, uint8 scaled to [0, 1], the
    network in inference mode, then the output activation. In float32 whatever the model's
    precision: ONNX Runtime has no float64 convolution."""

    def __init__(self, est, order):
        super().__init__(order)
        self.net = copy.deepcopy(est.module_).cpu().float().eval()
        self.link = est.out_activation_

    def forward(self, x):
        out_dtype = torch.float32 if x.dtype == torch.uint8 else x.dtype  # as predict_proba's
        x = self.images(x)
        x = x.to(torch.float32).div(255) if x.dtype == torch.uint8 else x.to(torch.float32)
        z = self.net(x)
        z = torch.softmax(z, dim=1) if self.link == "softmax" else torch.sigmoid(z)
        return z.to(out_dtype)


def _input_order(est, operator):
    """The flat positions, within one row of the operator's input, that the estimator's
    ``to_images`` reads its ``(C, H, W)`` image from."""
    shape = [d if isinstance(d, int) else -1 for d in operator.inputs[0].type.shape[1:]]
    if any(d <= 0 for d in shape):
        raise ValueError(f"{type(est).__name__}'s ONNX input needs a fixed image shape (give "
                         f"to_onnx an example of the images), got {operator.inputs[0].type.shape}.")
    index = np.arange(int(np.prod(shape))).reshape(1, *shape)
    return to_images(index, est.image_shape, est.data_format, convert=False)[0]


def _embed_torch(scope, operator, container, module):
    """Add ``module``'s graph, as torch.onnx.export writes it for inputs of the operator's type
    (any number of rows), to the container, reading the operator's input; returns its output's
    name."""
    import onnx
    from onnx import numpy_helper

    input_type = operator.inputs[0].type
    example = torch.zeros((2, *[int(d) for d in input_type.shape[1:]]),
                          dtype=_TORCH_DTYPES[guess_proto_type(input_type)])
    opset = container.target_opset
    if opset < 18:
        raise ValueError(f"sknn's networks need ONNX opset 18 or later, got target_opset={opset}.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset,
                                    dynamic_shapes=({0: torch.export.Dim("n")},), verbose=False)
    graph = program.model_proto.graph
    if program.model_proto.functions:
        raise NotImplementedError("torch.onnx.export wrote ONNX functions, which sknn cannot "
                                  "embed in skl2onnx's graph.")
    names = {graph.input[0].name: operator.inputs[0].full_name, "": ""}

    def rename(name):
        if name not in names:
            names[name] = scope.get_unique_variable_name("torch_" + name.replace(".", "_"))
        return names[name]

    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        container.add_initializer(rename(init.name), init.data_type, list(array.shape),
                                  array.ravel().tolist() if array.ndim == 0 else array.ravel())
    empty = None
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input)
        while inputs and not inputs[-1]:  # trailing optional inputs left out
            inputs.pop()
        if "" in inputs:  # skl2onnx's graph cannot hold unnamed inputs: an empty tensor there
            if node.op_type != "Resize":  # Resize's roi and scales, where sizes are given
                raise NotImplementedError(f"sknn cannot embed the {node.op_type} node that "
                                          "torch.onnx.export wrote with an optional input left "
                                          "out.")
            if empty is None:
                empty = scope.get_unique_variable_name("empty")
                container.add_initializer(empty, onnx_proto.TensorProto.FLOAT, [0], [])
                names[empty] = empty
            inputs = [i or empty for i in inputs]
        container.add_node(node.op_type, [rename(i) for i in inputs],
                           [rename(o) for o in node.output], op_domain=node.domain,
                           op_version=opset if node.domain in ("", "ai.onnx") else None,
                           name=scope.get_unique_operator_name(node.op_type), **attrs)
    return rename(graph.output[0].name)


def _labels(scope, operator, container, est, proba):
    """The classifier's outputs from the probabilities ``proba`` (one column for a binary
    target's positive class), as skl2onnx builds them for scikit-learn's MLPClassifier."""
    nocl = operator.scope_inst.get_options(est, dict(nocl=False))["nocl"]
    if _is_multilabel(est):
        apply_identity(scope, proba, operator.outputs[1].full_name, container)
        indicator = scope.get_unique_variable_name("indicator")
        container.add_node("Binarizer", proba, indicator, threshold=0.5, op_domain="ai.onnx.ml",
                           name=scope.get_unique_operator_name("Binarizer"))
        apply_cast(scope, indicator, operator.outputs[0].full_name, container,
                   to=onnx_proto.TensorProto.INT64)
        return
    probabilities = operator.outputs[1].full_name
    if est.n_outputs_ == 1:  # binary: [1 - p, p]
        one, negative = (scope.get_unique_variable_name(n) for n in ("one", "negative"))
        container.add_initializer(one, guess_proto_type(operator.outputs[1].type), [], [1.0])
        container.add_node("Sub", [one, proba], negative,
                           name=scope.get_unique_operator_name("Sub"))
        container.add_node("Concat", [negative, proba], probabilities, axis=1,
                           name=scope.get_unique_operator_name("Concat"))
    else:
        apply_identity(scope, proba, probabilities, container)
    index = scope.get_unique_variable_name("argmax")
    container.add_node("ArgMax", probabilities, index, axis=1, keepdims=0,
                       name=scope.get_unique_operator_name("ArgMax"))
    if nocl:
        apply_identity(scope, index, operator.outputs[0].full_name, container)
        return
    classes, picked = (scope.get_unique_variable_name(n) for n in ("classes", "picked"))
    if est.classes_.dtype.kind in "OUS":
        container.add_initializer(classes, onnx_proto.TensorProto.STRING,
                                  [len(est.classes_)],
                                  [str(c).encode("utf-8") for c in est.classes_])
    else:
        container.add_initializer(classes, onnx_proto.TensorProto.INT64, [len(est.classes_)],
                                  est.classes_.astype(np.int64))
    container.add_node("ArrayFeatureExtractor", [classes, index], picked, op_domain="ai.onnx.ml",
                       name=scope.get_unique_operator_name("ArrayFeatureExtractor"))
    apply_reshape(scope, picked, operator.outputs[0].full_name, container, desired_shape=(-1,))


def _convnet_converter(scope, operator, container):
    est = operator.raw_operator
    _check_fitted(est)
    order = _input_order(est, operator)
    est._check_image_shape(order.shape)
    proba = _embed_torch(scope, operator, container, _ConvNetInference(est, order))
    _labels(scope, operator, container, est, proba)


class _ExtractorInference(_RawImages):
    """What PretrainedFeatureExtractor.transform computes, as one torch module of the raw input
    (its layout and dtype): the images gathered as ``(n, C, H, W)``, made RGB, resized with
    antialiasing to the model's input size, normalised, the backbone, then the pooling."""

    def __init__(self, est, order):
        super().__init__(order)
        self.module_ = copy.deepcopy(est.module_).cpu().eval()  # what _forward_batch reads
        config = est.config_
        self.size = config["input_size"]
        self.resize = self.size is not None and tuple(self.size) != tuple(order.shape[1:])
        self.mode = "bicubic" if config["interpolation"] == "bicubic" else "bilinear"
        self.register_buffer("mean", torch.tensor(config["mean"] or (0.0,) * 3).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(config["std"] or (1.0,) * 3).view(1, 3, 1, 1))
        self.layer, self.pooling = est.layer, est.pooling

    def forward(self, x):
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
        x = self.images(x).to(torch.float32)
        x = x[:, :3] if x.shape[1] == 4 else x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if self.resize:
            x = torch.nn.functional.interpolate(x, size=self.size, mode=self.mode,
                                                antialias=True, align_corners=False)
        x = x * (scale / self.std) - self.mean / self.std
        return PretrainedFeatureExtractor._forward_batch(self, x).float()


def _extractor_shape_calculator(operator):
    est = operator.raw_operator
    check_is_fitted(est)
    n_rows = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = FloatTensorType([n_rows, est._n_features_out])


def _extractor_converter(scope, operator, container):
    est = operator.raw_operator
    order = est._check_channels(_input_order(est, operator)[None])[0]
    features = _embed_torch(scope, operator, container, _ExtractorInference(est, order))
    apply_identity(scope, features, operator.outputs[0].full_name, container)


_TORCH_DTYPES = {onnx_proto.TensorProto.FLOAT: torch.float32,
                 onnx_proto.TensorProto.DOUBLE: torch.float64,
                 onnx_proto.TensorProto.UINT8: torch.uint8}


update_registered_converter(
    MLPClassifier, "SknnMLPClassifier", _classifier_shape_calculator,
    _classifier_converter,
    options={"zipmap": [True, False, "columns"], "nocl": [True, False],
             "output_class_labels": [False, True]})
update_registered_converter(MLPRegressor, "SknnMLPRegressor", _regressor_shape_calculator,
                            _regressor_converter)
update_registered_converter(
    ConvNetClassifier, "SknnConvNetClassifier", _classifier_shape_calculator, _convnet_converter,
    options={"zipmap": [True, False, "columns"], "nocl": [True, False],
             "output_class_labels": [False, True]})
update_registered_converter(PretrainedFeatureExtractor, "SknnPretrainedFeatureExtractor",
                            _extractor_shape_calculator, _extractor_converter)


def to_onnx(model, X, **kwargs):
    """Convert ``model`` (an sknn estimator, or a Pipeline holding sknn estimators) to an ONNX
    model, its input typed after ``X`` (an array of one or more rows): the same as
    ``skl2onnx.to_onnx(model, X, **kwargs)`` once this module is imported.

    Returns
    -------
    onx : onnx.ModelProto
    """
    check_is_fitted(model)  # a clear error (NotFittedError, a ValueError) before skl2onnx's
    return skl2onnx.to_onnx(model, X, **kwargs)
