"""MLPClassifier and MLPRegressor: scikit-learn's multi-layer perceptrons, trained by PyTorch."""

import numpy as np
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils._available_if import available_if

from . import callbacks
from ._base import (BaseNeuralNetwork, NeuralNetClassifierMixin, check_param, hidden_layers,
                    regression_score, regression_score_output)
from .nn import MLP, PoissonDeviance, SquaredError

_PARAMETERS = """
    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        The ith element is the number of neurons in the ith hidden layer.

    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation function of the hidden layers.

    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
        'adam' and 'sgd' train on minibatches; 'lbfgs' (scipy's L-BFGS-B, gradients by torch
        autograd, in float64) on the whole data set at once, and is often better on small data.

    alpha : float, default=0.0001
        Strength of the L2 penalty on the weights (not the biases), divided by the sample
        weight of each batch as in scikit-learn.

    batch_size : int or 'auto', default='auto'
        Minibatch size for the stochastic solvers; 'auto' is ``min(200, n_samples)``.

    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning rate schedule of solver='sgd'.

    learning_rate_init : float, default=0.001
        The initial learning rate (solvers 'sgd' and 'adam').

    power_t : float, default=0.5
        Exponent of the 'invscaling' learning rate.

    max_iter : int, default=200
        Maximum number of epochs (stochastic solvers) or iterations ('lbfgs').

    shuffle : bool, default=True
        Whether to shuffle the samples in each epoch.

    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, the shuffles, the early-stopping split and dropout. An int
        or a RandomState is the only source: the global generators are left alone. None, as in
        scikit-learn, draws from numpy's global generator (``np.random.seed`` makes the fit
        reproducible). A fit never draws from torch's global generator.

    tol : float, default=1e-4
        Tolerance of the optimisation: training stops when the loss (or validation score) has
        not improved by at least ``tol`` for ``n_iter_no_change`` consecutive epochs.

    verbose : bool, default=False
        Print progress (loss, time, validation score) each epoch.

    warm_start : bool, default=False
        Reuse the solution of the previous call to fit as initialisation.

    momentum : float, default=0.9
        Momentum of solver='sgd', in [0, 1].

    nesterovs_momentum : bool, default=True
        Whether solver='sgd' uses Nesterov's momentum.

    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified by class for
        single-output classification), stop when its score stops improving, and restore the
        weights of the best epoch. Stochastic solvers only.

    validation_fraction : float, default=0.1
        Proportion of the training data held out for early stopping.

    beta_1, beta_2 : float, default=0.9, 0.999
        Exponential decay rates of Adam's moment estimates, in [0, 1).

    epsilon : float, default=1e-8
        Numerical stability term of Adam.

    n_iter_no_change : int, default=10
        Number of epochs without an improvement of ``tol`` before stopping.

    max_fun : int, default=15000
        Maximum number of loss evaluations of solver='lbfgs'.
{extra}
    device : str, default='auto'
        Where to train and predict: 'cpu', 'cuda', 'cuda:N', 'mps', or 'auto' (CUDA, then MPS,
        then the CPU). A model saved from a GPU loads on a machine without one.

    dropout : float, default=0.0
        Probability of zeroing each hidden unit during training (inverted dropout), in [0, 1).

    batch_norm : bool, default=False
        Batch normalisation after each hidden linear layer; its batch statistics are weighted
        by ``sample_weight``.

    scoring : None, 'loss', str or callable, default=None
        What validation scores are (validation data: ``X_val`` given to ``fit``, or the
        held-out fraction of ``early_stopping``), and so what early stopping watches: None,
        scikit-learn's (accuracy, or R² for regression); ``'loss'``, minus the validation loss;
        a scorer name (``'balanced_accuracy'``, ``'neg_log_loss'``, ...) or a callable
        ``scorer(estimator, X, y)``, as in HistGradientBoosting. Unused without validation data.

    learning_rate_schedule : None, 'cosine', 'plateau', schedule or callable, default=None
        A learning-rate schedule for solver='adam' or 'sgd' (see :mod:`sknn.schedules`):
        'cosine' (:class:`~sknn.schedules.CosineAnnealing`, with its ``warmup``),
        'plateau' (:class:`~sknn.schedules.ReduceOnPlateau`), or a callable
        ``f(epoch) -> factor`` of ``learning_rate_init``. The rate is set at the start of each
        epoch and recorded in ``learning_rate_curve_``. Needs ``learning_rate='constant'``
        (scikit-learn's ``learning_rate`` keeps its meaning for solver='sgd').

    checkpoint_path : str or None, default=None
        Stochastic solvers: write the whole training state to this file after every epoch, so
        that a fit that crashed resumes from it when fit again with the same parameters and
        data, and ends with the same model as an uninterrupted fit. The file is removed when
        the fit completes (and kept when it is interrupted with Ctrl-C). It holds data only
        (tensors and plain values) and is read with ``torch.load(weights_only=True)``, which
        runs no code from it; a file it refuses (an older sknn's checkpoint, or no checkpoint)
        raises ``ValueError``: delete it to start the fit afresh.
"""

_ATTRIBUTES = """
    Attributes
    ----------
    loss_ : float
        The loss at the end of training (data term plus L2 penalty).
    best_loss_ : float or None
        Minimum training loss (None with early stopping; stochastic solvers only).
    loss_curve_ : list of float
        Loss at the end of each epoch (stochastic solvers only).
    validation_scores_ : list of float or None
        Validation score per epoch (see ``scoring``) whenever there is validation data
        (``X_val``, or ``early_stopping=True``), else None.
    best_validation_score_ : float or None
        Best validation score, whenever there is validation data, else None. With early
        stopping, the weights restored are those of this epoch, and they score exactly this.
    validation_loss_curve_ : list of float or None
        Loss on the validation data per epoch (its data term: the L2 penalty left out),
        whenever there is validation data, else None.
    learning_rate_curve_ : list of float
        The learning rate of each epoch (stochastic solvers; for adam, before its bias
        corrections).
    t_ : int
        Number of training samples seen by the solver.
    coefs_ : list of ndarray
        Weight matrices; ``coefs_[i]`` has shape ``(units in layer i, units in layer i + 1)``.
        They are the network's, as scikit-learn's arrays are its model: on the CPU each array
        shares the memory of its layer's weights, so that changing it in place changes the
        network (on a GPU they are read-only copies). Assigning an array to ``coefs_[i]``, or
        a list of arrays of these shapes to ``coefs_``, loads them into the network.
    intercepts_ : list of ndarray
        Bias vectors; ``intercepts_[i]`` has ``units in layer i + 1`` entries. As ``coefs_``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names seen during fit, when X has string column names.
    n_iter_ : int
        Number of epochs (iterations for 'lbfgs') run by the last call to fit.
    n_layers_ : int
        Number of layers, input and output included.
    n_outputs_ : int
        Number of outputs.
    out_activation_ : str
        Output activation: 'softmax', 'logistic', 'identity' or 'exp'.
    module_ : torch.nn.Module
        The trained network.
    device_ : torch.device
        The device it lives on.
"""


class _MLPMixin:
    """What the two MLPs share: their network, its initialisation, its parameters as arrays."""

    def _build_module(self, X, n_outputs, dtype, device):
        units = [X.shape[1], *hidden_layers(self), n_outputs]
        module = MLP(units, self.activation, self.dropout, self.batch_norm, dtype=dtype,
                     device=device)
        # Glorot-uniform initialisation drawn exactly as scikit-learn draws it, so the same
        # random_state starts both libraries from the same weights.
        factor = 2.0 if self.activation == "logistic" else 6.0
        with torch.no_grad():
            for w, b, (fan_in, fan_out) in zip(module.weights, module.biases,
                                               zip(units[:-1], units[1:])):
                bound = np.sqrt(factor / (fan_in + fan_out))
                w.copy_(torch.from_numpy(self._random_state.uniform(-bound, bound, (fan_in, fan_out))))
                b.copy_(torch.from_numpy(self._random_state.uniform(-bound, bound, fan_out)))
        return module

    @property
    def coefs_(self):
        return _LayerArrays(self, "coefs_", self.module_.weights)

    @coefs_.setter
    def coefs_(self, values):
        self._load_parameters("coefs_", "weights", values)

    @property
    def intercepts_(self):
        return _LayerArrays(self, "intercepts_", self.module_.biases)

    @intercepts_.setter
    def intercepts_(self, values):
        self._load_parameters("intercepts_", "biases", values)

    def _load_parameters(self, name, kind, values):
        """Copy ``values`` (one array per layer) into the fitted network's ``kind`` parameters,
        in place, keeping their dtype and device; all are checked before any is written."""
        if "module_" not in self.__dict__:
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: fit it "
                                 f"before assigning {name}, which sets the fitted network's "
                                 f"{kind}.")
        params = list(getattr(self.module_, kind))
        shapes = [tuple(p.shape) for p in params]
        if not isinstance(values, (list, tuple)):
            raise TypeError(f"{name} must be a list of {len(params)} arrays, one per layer, of "
                            f"shapes {shapes}; got a {type(values).__name__}.")
        if len(values) != len(params):
            raise ValueError(f"{name} must have {len(params)} arrays, one per layer, of shapes "
                             f"{shapes}; got {len(values)}.")
        arrays = []
        for i, (value, shape) in enumerate(zip(values, shapes)):
            try:
                array = np.array(value, dtype=np.float64)  # a copy: value may be a layer's
            except (TypeError, ValueError) as err:
                raise TypeError(f"{name}[{i}] (layer {i} to {i + 1}) must be an array of "
                                f"numbers of shape {shape}; got {type(value).__name__}.") from err
            if array.shape != shape:
                raise ValueError(f"{name}[{i}] (layer {i} to {i + 1}) must have shape {shape}; "
                                 f"got {array.shape}.")
            arrays.append(array)
        with torch.no_grad():
            for p, array in zip(params, arrays):
                p.copy_(torch.from_numpy(array).to(p.dtype))

    @property
    def _n_features_out(self):
        return self.module_.weights[-1].shape[0]

    @property
    def n_layers_(self):
        return len(self.module_.weights) + 1


class _LayerArrays(list):
    """A fitted MLP's ``coefs_`` or ``intercepts_``: one array per layer, each sharing the memory
    of its parameter where that lives on the CPU (read-only copies elsewhere). Setting an item
    loads an array into that layer, as assigning the whole list does."""

    def __init__(self, owner, name, params):
        super().__init__(_layer_array(p) for p in params)
        self._owner, self._name = owner, name

    def __setitem__(self, index, value):
        values = list(self)
        values[index] = value
        setattr(self._owner, self._name, values)  # checked, then copied into the network
        super().__setitem__(slice(None), getattr(self._owner, self._name))

    def __reduce__(self):  # pickled as the plain list of arrays it is
        return list, (list(self),)


def _layer_array(param):
    if param.device.type == "cpu":
        return param.detach().numpy()
    array = param.detach().cpu().numpy()
    array.flags.writeable = False
    return array


class MLPClassifier(NeuralNetClassifierMixin, ClassifierMixin, _MLPMixin, BaseNeuralNetwork):
    __doc__ = """Multi-layer perceptron classifier, trained by PyTorch on CPU or GPU.

    A drop-in replacement for :class:`sklearn.neural_network.MLPClassifier`: same parameters,
    defaults, fitted attributes and behaviours, plus ``device``, ``dropout``, ``batch_norm``,
    ``class_weight`` and :meth:`transform` (the activations of the last hidden layer).

    Training follows the input's precision, as scikit-learn does: float32 X trains in float32
    (the fast path), anything else in float64. Predictions are computed in the training
    precision (float64 X to a float32 model: in float32, returned as float64), and a row's
    prediction is the same, bit for bit, whatever the batch it comes in.
""" + _PARAMETERS.replace("{extra}", """
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss, multiplied with ``sample_weight``; 'balanced' uses
        ``n_samples / (n_classes * np.bincount(y))``. Single-output targets only.
""") + _ATTRIBUTES + """    classes_ : ndarray or list of ndarray
        Class labels.
"""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, device="auto", dropout=0.0, batch_norm=False,
                 checkpoint_path=None, scoring=None, learning_rate_schedule=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.class_weight = class_weight
        self.device = device
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.checkpoint_path = checkpoint_path
        self.scoring = scoring
        self.learning_rate_schedule = learning_rate_schedule

    def _check_params(self):
        super()._check_params()
        self._check_class_weight()

    @available_if(BaseNeuralNetwork._check_solver)
    @callbacks.managed
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array of shape (n_classes,), default=None
            All the classes across calls; required on the first call.

        Returns
        -------
        self : object
        """
        return self.partial_fit_classifier(X, y, sample_weight=sample_weight, classes=classes)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _MLPMixin, BaseNeuralNetwork):
    __doc__ = """Multi-layer perceptron regressor, trained by PyTorch on CPU or GPU.

    A drop-in replacement for :class:`sklearn.neural_network.MLPRegressor`: same parameters,
    defaults, fitted attributes and behaviours, plus ``device``, ``dropout``, ``batch_norm`` and
    :meth:`transform` (the activations of the last hidden layer).
""" + _PARAMETERS.replace("{extra}", """
    loss : {'squared_error', 'poisson'}, default='squared_error'
        Half squared error, or half Poisson deviance with a log link (requires ``y >= 0``).
""") + _ATTRIBUTES

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 device="auto", dropout=0.0, batch_norm=False, checkpoint_path=None,
                 scoring=None, learning_rate_schedule=None):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.device = device
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.checkpoint_path = checkpoint_path
        self.scoring = scoring
        self.learning_rate_schedule = learning_rate_schedule

    def _check_params(self):
        super()._check_params()
        check_param(self, "loss", options={"squared_error", "poisson"})

    def _outputs(self, y, name="y"):
        """Targets as a 2-D float array, checked for the loss."""
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if Y.dtype.kind != "f":  # bool or int targets: regression runs on floats
            Y = Y.astype(np.float64)
        if self.loss == "poisson" and (Y < 0).any():
            raise ValueError(f"loss='poisson' requires {name} >= 0.")
        return Y

    def _encode_targets(self, y, first_pass, incremental):
        Y = self._outputs(y)
        if self.loss == "poisson":
            self.out_activation_ = "exp"
            return Y, PoissonDeviance(), Y.shape[1]
        self.out_activation_ = "identity"
        return Y, SquaredError(Y.shape[1]), Y.shape[1]

    def _encode_validation_targets(self, y):
        """Targets of the validation data, as the network trains on them."""
        Y = self._outputs(y, "y_val")
        if Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y_val has {Y.shape[1]} output(s); y has {self.n_outputs_}.")
        return Y

    def predict(self, X):
        """Predict using the trained network.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        pred = self._output(X)
        return pred.ravel() if pred.shape[1] == 1 else pred

    _score = regression_score
    _score_output = regression_score_output

    @available_if(BaseNeuralNetwork._check_solver)
    @callbacks.managed
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
