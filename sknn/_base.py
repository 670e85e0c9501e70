"""BaseNeuralNetwork: the parameters every estimator shares, fit / partial_fit orchestration,
device choice, seeding, inference and pickling. Subclasses say what to train."""

import copy
import numbers
import os
import warnings

import joblib
import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin, is_classifier
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets, type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from . import _engine, _fused, _predict, _threads, callbacks, schedules
from ._data import TrainingData, resolve_device
from .nn import SigmoidCrossEntropy, SoftmaxCrossEntropy, set_activation

_PLAIN_ARRAYS = (np.ndarray, np.memmap)
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# --- parameter validation -------------------------------------------------------------------


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type or out of its range. Both a ValueError and a TypeError, as
    scikit-learn's own, so that code catching either catches it."""


def check_param(est, name, *, options=(), kind=None, low=None, high=None, low_open=False,
                high_open=False):
    """Validate ``est.<name>``: one of the strings in ``options``, or a number of ``kind``
    ('int', 'real') within the bounds, or a bool when ``kind='bool'``. With ``options`` and no
    ``kind``, only the strings are valid."""
    value = getattr(est, name)
    where = f"{type(est).__name__}: {name}"
    if options and (isinstance(value, str) or kind is None):
        if value not in options or not isinstance(value, str):
            raise InvalidParameterError(
                f"{where} must be one of {sorted(options)}, got {value!r}.")
        return
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidParameterError(f"{where} must be a bool, got {value!r}.")
        return
    if not (_is_int(value) if kind == "int" else _is_real(value)):
        expected = "an int" if kind == "int" else "a number"
        if options:
            expected += f" or one of {sorted(options)}"
        raise InvalidParameterError(f"{where} must be {expected}, got {value!r}.")
    # An open bound at infinity, as scikit-learn's Interval: inf is never a valid setting
    too_low = value == -np.inf if low is None else (value < low or (low_open and value == low))
    too_high = value == np.inf if high is None else (value > high or (high_open and value == high))
    if too_low or too_high or value != value:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + str(low)
        hi = "inf)" if high is None else str(high) + (")" if high_open else "]")
        raise InvalidParameterError(f"{where} must be in the range {lo}, {hi}, got {value!r}.")


def hidden_layers(est):
    sizes = est.hidden_layer_sizes
    if _is_int(sizes):
        sizes = [sizes]
    try:
        sizes = list(sizes)
    except TypeError:
        raise InvalidParameterError(f"hidden_layer_sizes must be an int or a sequence of ints, "
                                    f"got {est.hidden_layer_sizes!r}.") from None
    if not all(_is_int(h) for h in sizes):
        raise InvalidParameterError(
            f"hidden_layer_sizes must contain ints, got {est.hidden_layer_sizes!r}.")
    if any(h <= 0 for h in sizes):
        raise InvalidParameterError(f"hidden_layer_sizes must be > 0, got {sizes}.")
    return [int(h) for h in sizes]


class TorchStateMixin:
    """Pickling for estimators that hold a fitted torch module in ``module_`` on ``device_``:
    the state is saved on the CPU (so is a module given as the ``model`` parameter), so a model
    fitted on a GPU loads on a machine without one, and goes back to its device where that
    device exists."""

    def _move_to(self, device):
        self.module_.to(device)
        if hasattr(self, "_optimizer"):
            self._optimizer.to(device)
        self.device_ = device

    def __getstate__(self):
        # A copy: on Python >= 3.11, object.__getstate__ returns the instance's own __dict__,
        # and the moves below must not swap the live estimator's module for a CPU copy.
        state = dict(super().__getstate__())
        model = state.get("model")  # a module of the user's, given as a parameter
        if isinstance(model, torch.nn.Module) and any(
                t.device.type != "cpu" for t in (*model.parameters(), *model.buffers())):
            state["model"] = copy.deepcopy(model).cpu()
        if "module_" in state and self.device_.type != "cpu":
            state["module_"] = copy.deepcopy(self.module_).cpu()
            if "_optimizer" in state:
                state["_optimizer"] = copy.deepcopy(self._optimizer).to("cpu")
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "module_" in state and self.device_.type != "cpu":
            try:
                device = resolve_device(str(self.device_))
            except ValueError:
                warnings.warn(f"This model was fitted on {self.device_}, which is not available "
                              "here: it is loaded on the CPU.")
                device = torch.device("cpu")
            self._move_to(device)


class BaseNeuralNetwork(callbacks.CallbackSupport, TorchStateMixin, TransformerMixin, BaseEstimator):
    """Shared machinery. A subclass provides:

    - ``_build_module(X, n_outputs, dtype, device)`` -> an initialised ``nn.Module``;
    - ``_encode_targets(y, first_pass, incremental)`` -> (training targets as an array, loss,
      number of network outputs);
    - ``_score(X, y, sample_weight)`` used for early stopping;
    - ``_check_params()`` extended for its own parameters, ``_n_features_out`` for ``transform``;
    - optionally ``_check_fit_input`` / ``_check_predict_input`` for other input layouts.
    """

    _stochastic_solvers = ("sgd", "adam")

    def _check_params(self):
        """Validate the parameters every estimator shares (subclasses extend it)."""
        check_param(self, "solver", options={"lbfgs", "sgd", "adam"})
        check_param(self, "alpha", kind="real", low=0)
        check_param(self, "batch_size", kind="int", low=1, options={"auto"})
        check_param(self, "learning_rate_init", kind="real", low=0, low_open=True)
        check_param(self, "max_iter", kind="int", low=1)
        check_param(self, "shuffle", kind="bool")
        check_param(self, "tol", kind="real", low=0)
        check_param(self, "warm_start", kind="bool")
        check_param(self, "early_stopping", kind="bool")
        check_param(self, "validation_fraction", kind="real", low=0, high=1, high_open=True)
        if self.n_iter_no_change != np.inf:
            check_param(self, "n_iter_no_change", kind="int", low=1)
        check_param(self, "dropout", kind="real", low=0, high=1, high_open=True)
        check_param(self, "batch_norm", kind="bool")
        check_param(self, "activation", options={"identity", "logistic", "tanh", "relu"})
        check_param(self, "learning_rate", options={"constant", "invscaling", "adaptive"})
        check_param(self, "power_t", kind="real", low=0)
        check_param(self, "momentum", kind="real", low=0, high=1)
        check_param(self, "nesterovs_momentum", kind="bool")
        check_param(self, "beta_1", kind="real", low=0, high=1, high_open=True)
        check_param(self, "beta_2", kind="real", low=0, high=1, high_open=True)
        check_param(self, "epsilon", kind="real", low=0, low_open=True)
        check_param(self, "max_fun", kind="int", low=1)
        hidden_layers(self)
        self._check_training_controls()
        if self.checkpoint_path is not None and not isinstance(self.checkpoint_path,
                                                               (str, os.PathLike)):
            raise InvalidParameterError(f"checkpoint_path must be None or a file path, got "
                                        f"{self.checkpoint_path!r}.")
        if not isinstance(self.verbose, (bool, np.bool_)):
            check_param(self, "verbose", kind="int", low=0)
        if not (self.random_state is None or isinstance(self.random_state, np.random.RandomState)):
            check_param(self, "random_state", kind="int", low=0, high=2**32 - 1)
        if self.solver == "lbfgs" and self.dropout:
            raise InvalidParameterError(
                f"dropout={self.dropout} with solver='lbfgs': L-BFGS needs a deterministic "
                "objective; use solver='adam' or 'sgd' with dropout.")
        resolve_device(self.device)

    def _check_training_controls(self):
        """``scoring`` and ``learning_rate_schedule``."""
        scoring = self.scoring
        if not (scoring is None or isinstance(scoring, str) or callable(scoring)):
            raise InvalidParameterError(
                f"{type(self).__name__}: scoring must be None, 'loss', the name of a "
                f"scikit-learn scorer or a callable scorer(estimator, X, y), got {scoring!r}.")
        if isinstance(scoring, str) and scoring != "loss":
            from sklearn.metrics import get_scorer_names
            if scoring not in get_scorer_names():
                raise InvalidParameterError(
                    f"{type(self).__name__}: scoring={scoring!r} is neither 'loss' nor a "
                    "scikit-learn scorer name (see sklearn.metrics.get_scorer_names()).")
        schedule = self.learning_rate_schedule
        if schedule is not None:
            schedules.start(schedule, int(self.max_iter))  # raises if invalid
            if self.learning_rate != "constant":
                raise InvalidParameterError(
                    f"learning_rate_schedule={schedule!r} with learning_rate="
                    f"{self.learning_rate!r}: both would set solver='sgd''s learning rate "
                    "each epoch. Use learning_rate='constant' with a schedule (for the effect "
                    "of 'adaptive', use learning_rate_schedule='plateau').")

    def _scorer(self):
        """What validation scores are: None (accuracy or R²), 'loss', or a scorer."""
        if self.scoring is None or self.scoring == "loss" or callable(self.scoring):
            return self.scoring
        from sklearn.metrics import get_scorer
        return get_scorer(self.scoring)

    # --- fitting ----------------------------------------------------------------------------

    @_threads.honours_limits
    def _fit(self, X, y, sample_weight=None, incremental=False, validation_data=None):
        with callbacks.fit_task(self) as task:
            member = self._prepare_fit(X, y, sample_weight, incremental, validation_data, task)
            if member is not None:  # stochastic solvers (L-BFGS has fitted already)
                _engine.train([member], incremental=incremental)
                self._finish_fit(member)
        return self

    def _check_validation_data(self, X_val, y_val, sample_weight_val):
        """(X_val, y_val, sample_weight_val) validated against the fitted input and targets,
        and the targets encoded as the network trains on them."""
        if X_val is None:
            if y_val is not None or sample_weight_val is not None:
                raise ValueError("y_val and sample_weight_val need X_val: pass the validation "
                                 "data as X_val=..., y_val=....")
            return None
        if y_val is None:
            raise ValueError("X_val needs its targets: pass y_val too.")
        try:
            X_val, y_val = self._check_fit_input(X_val, y_val, reset=False)
        except ValueError as err:
            raise ValueError(f"Invalid validation data (X_val, y_val): {err}") from err
        if sample_weight_val is not None:
            sample_weight_val = _check_sample_weight(sample_weight_val, X_val, dtype=np.float64,
                                                     ensure_non_negative=True)
            if sample_weight_val.sum() <= 0:
                raise ValueError("sample_weight_val must have a positive sum.")
        return X_val, y_val, sample_weight_val, self._encode_validation_targets(y_val)

    def _prepare_fit(self, X, y, sample_weight=None, incremental=False, validation_data=None,
                     task=None):
        """Everything a fit does before its epochs: validation, targets, the network and its
        initial weights (drawn from ``random_state``), the early-stopping split or the given
        validation data. Returns the :class:`~sknn._engine.Member` to train, or None for
        L-BFGS, which it has run."""
        self._check_params()
        first_pass = not hasattr(self, "module_") or (not self.warm_start and not incremental)
        if incremental and self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, y = self._check_fit_input(X, y, reset=first_pass)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                                 ensure_non_negative=True)
            if sample_weight.sum() <= 0:
                raise ValueError("sample_weight must have a positive sum.")
        Y, loss, n_outputs = self._encode_targets(y, first_pass, incremental)
        if first_pass:
            self.n_outputs_ = n_outputs
        elif n_outputs != self.n_outputs_:
            raise ValueError(f"y has {n_outputs} output(s), but the network was fitted with "
                             f"{self.n_outputs_}: fit it anew (warm_start=False) to change them.")
        self._loss = loss  # its link turns the network's output into predictions
        given = self._check_validation_data(*(validation_data or (None, None, None)))
        if task is not None:
            task.begin(X, y, sample_weight, 1 if incremental else (
                max(int(self.max_iter), 1) + 1 if self.solver == "lbfgs" else int(self.max_iter)))
        weight = self._training_weights(y, sample_weight, incremental)

        device = resolve_device(self.device)
        dtype = torch.float64 if self.solver == "lbfgs" or X.dtype == np.float64 else torch.float32
        if device.type == "mps":  # MPS has no float64
            dtype = torch.float32
        self._random_state = check_random_state(self.random_state)
        validating = self.early_stopping or given is not None
        if first_pass:
            self.module_ = self._build_module(X, self.n_outputs_, dtype, device)
            self.n_iter_ = 0
            self.t_ = 0
            if self.solver in self._stochastic_solvers:
                self.loss_curve_ = []
                self.learning_rate_curve_ = []
                self._no_improvement_count = 0
                self.validation_scores_ = self.best_validation_score_ = None
                self.validation_loss_curve_ = None
                self.best_loss_ = None if self.early_stopping else np.inf
        if self.solver in self._stochastic_solvers:
            if validating and getattr(self, "validation_scores_", None) is None:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
                self.validation_loss_curve_ = []
            if getattr(self, "learning_rate_curve_", None) is None:  # fitted by sknn < 0.2
                self.learning_rate_curve_ = []
        if next(self.module_.parameters()).device != device:  # a continued fit, elsewhere
            self._move_to(device)
        self.device_ = device
        dtype = next(self.module_.parameters()).dtype

        generator = None
        if self._training_noise():
            generator = torch.Generator(device=device)
            generator.manual_seed(int(self._random_state.randint(np.iinfo(np.int32).max)))

        if self.solver == "lbfgs":
            self._continue_with_settings(first_pass)
            _engine.fit_lbfgs(self, self.module_, loss, TrainingData(X, Y, weight, device, dtype),
                              task)
            return None

        validation = None
        split = self.early_stopping and given is None
        if given is not None:  # the user's validation data (replaces the held-out fraction)
            X_val, y_val, sample_weight_val, Y_val = given
            validation = _engine.Validation(self, X_val, y_val, sample_weight_val, Y_val,
                                            self._scorer())
        elif split:
            train, val = train_test_split(np.arange(X.shape[0]), random_state=self._random_state,
                                          test_size=self.validation_fraction,
                                          stratify=self._stratify(y))
            if val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            validation = _engine.Validation(self, X[val], y[val],
                                            None if sample_weight is None else sample_weight[val],
                                            Y[val], self._scorer())
            # X's training rows are not copied (X may be a memmap): the data gathers them by
            # index. Y and the weights are the training rows' own.
            Y = Y[train]
            weight = None if weight is None else weight[train]
        data = TrainingData(X, Y, weight, device, dtype, rows=train if split else None)
        checkpoint = None
        if self.checkpoint_path is not None:
            hint = ("with early_stopping=True and random_state=None, each fit draws another "
                    "validation split: set random_state to resume" if split
                    and self.random_state is None else "")
            fingerprint = self._fingerprint(X, Y, weight, data.rows, given)
            checkpoint = _engine.Checkpoint(self.checkpoint_path, fingerprint, hint)
        history = _engine.History.from_estimator(self)
        history.n_iter_ = 0
        optimizer = getattr(self, "_optimizer", None) if incremental else None
        schedule = schedules.start(self.learning_rate_schedule, int(self.max_iter))
        if schedule is not None and incremental and getattr(self, "_lr_schedule_state", None):
            schedule.load_state_dict(self._lr_schedule_state)  # partial_fit: continue it
        self._continue_with_settings(first_pass)
        return _engine.Member(self.module_, loss, data,
                              _engine.TrainSettings.from_estimator(self, data.n_samples), history,
                              self._random_state, generator=generator, validation=validation,
                              optimizer=optimizer, checkpoint=checkpoint, schedule=schedule,
                              hooks=task)

    def _continue_with_settings(self, first_pass):
        """A continued fit (warm_start, partial_fit) keeps its weights, but trains with the
        settings that shape no weight as they are set now (scikit-learn's MLP reads its
        activation anew). Called once every check of the fit has passed."""
        if first_pass:
            return
        set_activation(self.module_, self.activation)
        self.module_.dropout = float(self.dropout)
        for name in ("augment_shift", "augment_flip"):
            if hasattr(self.module_, name):
                setattr(self.module_, name, type(getattr(self.module_, name))(
                    getattr(self, name)))

    def _finish_fit(self, member):
        """Copy a trained member's record and solver state onto the fitted attributes."""
        member.history.apply(self)
        self._optimizer = member.optimizer
        self._lr_schedule_state = (None if member.schedule is None
                                   else member.schedule.state_dict())

    def _fingerprint(self, X, Y, weight, rows=None, validation=None):
        """What a checkpoint must match to be resumed: estimator, parameters and data (all of
        it, hashed). A RandomState given as random_state counts by its state, not its identity;
        the device by its kind (a GPU's random-number state does not resume on the CPU).

        Parameters are hashed by their content (joblib.hash: a function by its module and
        name, an object by its pickled state), never by ``repr``, which holds memory
        addresses: a fit finds its own checkpoint from another process. A value that cannot be
        identified so (a lambda, a local function) is refused."""
        params = {k: v for k, v in self.get_params().items()
                  if k not in ("checkpoint_path", "verbose", "device")}
        if isinstance(params["random_state"], np.random.RandomState):
            params["random_state"] = params["random_state"].get_state()
        keys = {}
        for name, value in sorted(params.items()):
            try:
                keys[name] = joblib.hash(value)
            except Exception as err:  # pickling refused: lambdas, local functions...
                raise ValueError(
                    f"checkpoint_path needs parameters that can be identified in another "
                    f"process; {name}={value!r} cannot ({type(err).__name__}: {err}). Define "
                    "it at module level (a function or a picklable object), or set "
                    "checkpoint_path=None.") from err
        return (type(self).__name__, repr(sorted(keys.items())), self.device_.type,
                joblib.hash((X, Y, weight, rows, validation)))

    def _check_fit_input(self, X, y, reset):
        """Validated (X, y) for fit: X a 2-D float array or sparse matrix."""
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), y_numeric=not self._is_clf(),
                             reset=reset)
        if sp.issparse(y) and not self._is_clf():  # regression targets: their dense values
            y = y.toarray()
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _check_predict_input(self, X):
        """X validated for prediction, as ``validate_data(reset=False)`` does it. The common case,
        a float ndarray (or memmap) of the fitted width, finite, where neither it nor the fit had
        feature names, is recognised in a few microseconds (validate_data takes about 60)."""
        if (type(X) in _PLAIN_ARRAYS and X.ndim == 2 and X.dtype in _FLOAT_DTYPES
                and X.shape[0] > 0 and X.shape[1] == self.__dict__.get("n_features_in_")
                and "feature_names_in_" not in self.__dict__ and np.isfinite(X.sum())):
            return X
        return validate_data(self, X, accept_sparse=["csr", "csc"],
                             dtype=(np.float64, np.float32), reset=False)

    def _training_noise(self):
        """Whether training draws random numbers besides the shuffles (dropout...)."""
        return bool(self.dropout)

    def _training_weights(self, y, sample_weight, incremental):
        return sample_weight

    def _stratify(self, y):
        return None

    @callbacks.managed
    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None, sample_weight_val=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels in classification, real numbers in regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights, weighted as in scikit-learn >= 1.7.
        X_val : {array-like, sparse matrix} of shape (n_val, n_features), default=None
            Validation data (stochastic solvers), scored after every epoch: the scores go to
            ``validation_scores_`` (see ``scoring``) and the losses to
            ``validation_loss_curve_``. With ``early_stopping=True`` it replaces the held-out
            ``validation_fraction``. Inside a Pipeline, route it with
            ``Pipeline(..., transform_input=["X_val"])`` and
            ``set_fit_request(X_val=True, y_val=True)``.
        y_val : array-like of shape (n_val,) or (n_val, n_outputs), default=None
            Targets of ``X_val``: the classes (or outputs) of ``y``.
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation samples.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        if _fused.active():  # inside a fused search
            fitted = _fused.intercept(self, X, y, sample_weight, capturable=X_val is None)
            if fitted is not None:
                return fitted
        return self._fit(X, y, sample_weight=sample_weight, incremental=False,
                         validation_data=(X_val, y_val, sample_weight_val))

    def _check_solver(self):
        if self.solver not in self._stochastic_solvers:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    # --- inference --------------------------------------------------------------------------

    def _check_fitted(self):
        if "module_" not in self.__dict__:
            check_is_fitted(self, "module_")

    @_threads.honours_limits
    def _forward(self, X, features=False, loss=None, check_input=True):
        """The network's outputs for X through ``loss``'s output activation, or with
        ``features`` the activations of its last hidden layer, as an array of X's float dtype.

        Computed by :func:`sknn._predict.predict` with the fitted module itself, in its training
        precision (a float32 model computes in float32 for float64 X too, returned as float64),
        in fixed-size chunks of rows, so that a row's output is the same, bit for bit, in any
        batch; nothing is copied or converted per call, and nothing is stored on the estimator
        (concurrent calls from several threads are safe)."""
        self._check_fitted()
        if check_input:
            X = self._check_predict_input(X)
        n_out = self._n_features_out if features else self.n_outputs_
        return _predict.predict(self.module_, X, n_out, features=features, loss=loss)

    def _output(self, X, check_input=True):
        """Network outputs after the output activation (probabilities, predictions)."""
        self._check_fitted()  # before reading _loss: a dict look-up
        return self._forward(X, loss=self._loss, check_input=check_input)

    def transform(self, X):
        """Activations of the last hidden layer: the features the network has learned.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_units_of_the_last_hidden_layer)
        """
        return self._forward(X, features=True)

    def get_feature_names_out(self, input_features=None):
        """Names of the ``transform`` outputs: ``<classname>0``, ``<classname>1``, ..."""
        check_is_fitted(self)
        prefix = type(self).__name__.lower()
        return np.asarray([f"{prefix}{i}" for i in range(self._n_features_out)], dtype=object)

    # --- helpers ----------------------------------------------------------------------------

    def _is_clf(self):
        return is_classifier(self)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class NeuralNetClassifierMixin:
    """Classification targets (labels, binary, multilabel), class weights and probabilities."""

    def _encode_targets(self, y, first_pass, incremental):
        check_classification_targets(y)
        if first_pass and not incremental:
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        Y = self._label_binarizer.transform(y).astype(np.float64)
        if self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_, loss = "softmax", SoftmaxCrossEntropy()
        else:
            self.out_activation_, loss = "logistic", SigmoidCrossEntropy()
        return Y, loss, Y.shape[1]

    def _encode_validation_targets(self, y):
        """Validation labels, checked against ``classes_``, as the network trains on them."""
        check_classification_targets(y)
        multilabel = self._label_binarizer.y_type_.startswith("multilabel")
        if multilabel != (y.ndim == 2):
            raise ValueError(f"y_val is {type_of_target(y)} but y was "
                             f"{self._label_binarizer.y_type_}: they must be of the same kind.")
        if multilabel:
            if y.shape[1] != len(self.classes_):
                raise ValueError(f"y_val has {y.shape[1]} labels per sample; y has "
                                 f"{len(self.classes_)}.")
        else:
            unseen = np.setdiff1d(unique_labels(y), self.classes_)
            if len(unseen):
                raise ValueError(f"y_val has classes that are not in y: {list(unseen)}; the "
                                 f"classes of y are {list(self.classes_)}.")
        return self._label_binarizer.transform(y).astype(np.float64)

    def _stratify(self, y):
        """What the early-stopping split is stratified by. Binary targets: the binarised labels,
        as scikit-learn does, with its errors where a class is too small to stratify ("The least
        populated classes in y have only 1 member... ['True']"). Multiclass targets, which
        scikit-learn does not stratify: the labels, where every class has a member on both
        sides of the split, else no stratification (where scikit-learn does not raise, neither
        does sknn). Multilabel targets: none, as in scikit-learn."""
        if y.ndim != 1:
            return None
        if self._label_binarizer.y_type_ == "binary":
            return self._label_binarizer.transform(y).astype(bool)
        counts = np.unique(y, return_counts=True)[1]
        n_val = int(np.ceil(self.validation_fraction * y.shape[0]))
        fits = counts.min() >= 2 and min(n_val, y.shape[0] - n_val) >= len(counts)
        return y if fits else None

    def _training_weights(self, y, sample_weight, incremental):
        if self.class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight is not supported for multilabel targets.")
        if incremental and self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' is not supported by partial_fit: the "
                             "classes' frequencies are unknown; pass a dict computed with "
                             "sklearn.utils.class_weight.compute_class_weight.")
        per_class = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
        w = per_class[np.searchsorted(self.classes_, y)]
        return w if sample_weight is None else w * sample_weight

    def _check_class_weight(self):
        cw = self.class_weight
        if not (cw is None or isinstance(cw, dict) or (isinstance(cw, str) and cw == "balanced")):
            raise InvalidParameterError(
                f"class_weight must be None, 'balanced' or a dict, got {cw!r}.")
        if isinstance(cw, dict):
            bad = {k: v for k, v in cw.items()
                   if not (isinstance(v, numbers.Real) and 0 <= v < np.inf)}
            if bad:
                raise InvalidParameterError(
                    f"class_weight's weights must be finite numbers >= 0 (as sample weights); "
                    f"got {bad!r}.")

    def _predict(self, X, check_input=True):
        return self._labels(self._output(X, check_input=check_input))

    def _labels(self, proba):
        """The labels of the predictions ``proba`` (the network's output through its link), as
        ``LabelBinarizer.inverse_transform`` gives them; for single-output targets of two classes
        or more, without its checks (70 us of a one-row predict)."""
        kind = self._label_binarizer.y_type_
        if kind in ("binary", "multiclass") and len(self.classes_) >= 2:
            index = (proba.ravel() > 0.5).astype(int) if kind == "binary" else proba.argmax(1)
            return self.classes_.take(index)
        if self.n_outputs_ == 1:
            proba = proba.ravel()
        return self._label_binarizer.inverse_transform(proba)

    def predict(self, X):
        """Predict class labels (an indicator matrix for multilabel targets).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        return self._predict(X)

    def predict_proba(self, X):
        """Probability estimates, columns ordered as ``classes_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y_prob : ndarray of shape (n_samples, n_classes)
        """
        proba = self._output(X)
        if self.n_outputs_ == 1 and not self._label_binarizer.y_type_.startswith("multilabel"):
            proba = proba.ravel()
            return np.vstack([1 - proba, proba]).T
        return proba

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def _score(self, X, y, sample_weight=None):
        return self._score_output(self._output(X, check_input=False), y, sample_weight)

    def _score_output(self, proba, y, sample_weight=None):
        """Accuracy of the predictions ``proba`` (the network's output through its link)."""
        kind = self._label_binarizer.y_type_
        pred = self._labels(proba)
        if (sample_weight is None and y.ndim == 1 and kind in ("binary", "multiclass")
                and len(self.classes_) >= 2):
            # What accuracy_score computes, without its checks: this runs after every epoch of
            # early stopping.
            return float(np.mean(pred == y))
        from sklearn.metrics import accuracy_score
        return accuracy_score(y, pred, sample_weight=sample_weight)

    def partial_fit_classifier(self, X, y, sample_weight=None, classes=None):
        first = not hasattr(self, "classes_")
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if first or (classes is not None and not hasattr(self, "_label_binarizer")):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={classes}` is not the same as on the first call to "
                             f"partial_fit, which was {self.classes_}.")
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)


def regression_score(est, X, y, sample_weight=None):
    return regression_score_output(est, est._output(X, check_input=False), y, sample_weight)


def regression_score_output(est, pred, y, sample_weight=None):
    """R² of the predictions ``pred`` (the network's output through its link); NaN where a
    prediction is not finite."""
    if pred.shape[1] == 1:
        pred = pred.ravel()
    if not np.isfinite(pred).all():
        return np.nan
    from sklearn.metrics import r2_score
    return r2_score(y, pred, sample_weight=sample_weight)
