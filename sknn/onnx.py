"""ONNX export of sknn's MLPs through skl2onnx (the ``onnx`` extra: ``pip install
"sknn[onnx]"``).

Importing this module registers skl2onnx converters for :class:`~sknn.MLPClassifier` and
:class:`~sknn.MLPRegressor`; after that ``skl2onnx.to_onnx(model, X[:1])`` converts them and any
Pipeline that holds them, and ONNX Runtime serves the result with no Python. :func:`to_onnx`
does both in one call.

The graph is the network's inference: for each layer ``X @ W + b`` (batch norm, an affine map at
inference, folded into the layer before it; dropout is off), the activation, then the output
activation. Classifiers follow skl2onnx's conventions for scikit-learn's MLPClassifier, whose
converter builds their outputs: a label and the probabilities (options ``zipmap``, ``nocl``,
``output_class_labels``); multilabel classifiers give an indicator matrix. Regressors give
their predictions, ``(n_samples, n_outputs)`` (``loss='poisson'``: ``exp`` of the network's
output). The graph computes in the input's precision: float32 input in float32, float64 input in
float64, the float32 weights of a float32 model widened.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

try:
    import skl2onnx
    from skl2onnx import update_registered_converter
    from skl2onnx.common._apply_operation import (apply_add, apply_cast, apply_identity,
                                                     apply_reshape)
    from skl2onnx.common._registration import get_converter
    from skl2onnx.common.data_types import Int64TensorType, StringTensorType, guess_proto_type
    from skl2onnx.proto import onnx_proto
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("sknn.onnx needs skl2onnx, onnx and onnxruntime: pip install "
                      "'sknn[onnx]'.") from e

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


class _SklearnMLPView:
    """What skl2onnx's shape calculator and converter of scikit-learn's MLPClassifier read from
    its model."""

    def __init__(self, est):
        self.coefs_, self.intercepts_ = dense_layers(est)
        self.n_layers_ = len(self.coefs_) + 1
        self.activation, self.out_activation_ = est.activation, est.out_activation_
        self.classes_, self._label_binarizer = est.classes_, est._label_binarizer
        self.multilabel_ = _is_multilabel(est)


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
    if est.module_.weights[0].device.type == "meta":  # pragma: no cover - defensive
        raise ValueError("The network's weights are not on a real device.")


def _classifier_converter(scope, operator, container):
    est = operator.raw_operator
    _check_fitted(est)
    if _is_multilabel(est):
        proba = _dense_graph(scope, operator, container, est)
        apply_identity(scope, proba, operator.outputs[1].full_name, container)
        indicator = scope.get_unique_variable_name("indicator")
        container.add_node("Binarizer", proba, indicator, threshold=0.5, op_domain="ai.onnx.ml",
                           name=scope.get_unique_operator_name("Binarizer"))
        apply_cast(scope, indicator, operator.outputs[0].full_name, container,
                   to=onnx_proto.TensorProto.INT64)
        return
    convert = get_converter("SklearnMLPClassifier")
    operator.raw_operator = _SklearnMLPView(est)
    try:
        convert(scope, operator, container)
    finally:
        operator.raw_operator = est


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


def _not_convertible(name, why):
    def shape_calculator(operator):
        raise NotImplementedError(f"{name} cannot be converted to ONNX yet: {why}")

    def converter(scope, operator, container):
        shape_calculator(operator)
    return shape_calculator, converter


_NOT_YET = "only MLPClassifier and MLPRegressor have an ONNX converter in this version of sknn."

update_registered_converter(
    MLPClassifier, "SknnMLPClassifier", _classifier_shape_calculator,
    _classifier_converter,
    options={"zipmap": [True, False, "columns"], "nocl": [True, False],
             "output_class_labels": [False, True]})
update_registered_converter(MLPRegressor, "SknnMLPRegressor", _regressor_shape_calculator,
                            _regressor_converter)
for _cls in (ConvNetClassifier, PretrainedFeatureExtractor):
    update_registered_converter(_cls, f"Sknn{_cls.__name__}",
                                *_not_convertible(_cls.__name__, _NOT_YET))


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
