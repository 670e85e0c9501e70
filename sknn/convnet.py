"""ConvNetClassifier: a convolutional network for image arrays, as a scikit-learn classifier."""

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import ClassifierMixin
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_array, check_X_y, column_or_1d, validate_data

from . import callbacks
from ._base import (BaseNeuralNetwork, InvalidParameterError, NeuralNetClassifierMixin,
                    check_param, hidden_layers)
from ._data import to_images
from .nn import ConvNet, reset_parameters

_IMAGE_DTYPES = (np.float64, np.float32, np.uint8)
_UNIT = 1.01  # pixels up to this are in [0, 1]
_PIXEL_SAMPLE = 256  # images whose pixels predict compares with the fit's


class ConvNetClassifier(NeuralNetClassifierMixin, ClassifierMixin, BaseNeuralNetwork):
    """Convolutional network classifier for image arrays, trained by PyTorch on CPU or GPU.

    ``[conv -> batch norm -> activation -> max-pool] * len(conv_layers) -> dense layers``,
    trained by the same engine, solvers and stopping rules as :class:`sknn.MLPClassifier`.

    Images come as ``(n, H, W)`` (grayscale), ``(n, H, W, C)`` or ``(n, C, H, W)`` arrays, or as
    flat ``(n, d)`` rows (see ``image_shape``). uint8 pixels are scaled to [0, 1]. Training
    follows the input's precision: uint8 and float32 images train in float32 (fast), float64
    in float64; predictions are computed in the training precision, and an image's do not
    depend on the batch it comes in.

    Parameters
    ----------
    conv_layers : tuple of int, default=(32, 64)
        Output channels of each convolution block.
    kernel_size : int, default=3
        Side of the square convolution kernels ("same" padding: blocks keep the image size).
    pooling : {'max', 'avg'} or None, default='max'
        2x2 pooling after each block (halving each side, never below 1), or none. Feature grids
        larger than 7x7 are then average-pooled down to 7x7 before the dense layers.
    hidden_layer_sizes : tuple of int, default=(128,)
        Units of the fully connected layers between the convolutions and the output.
    activation : {'relu', 'tanh', 'logistic', 'identity'}, default='relu'
    dropout : float, default=0.0
        Dropout probability on the fully connected hidden units during training.
    batch_norm : bool, default=True
        Batch normalisation after each convolution and fully connected hidden layer.
    augment_shift : int, default=0
        Training-time augmentation: shift each image by a random whole number of pixels in
        [-augment_shift, augment_shift] along each axis (zeros fill in), drawn anew each epoch
        on the device; 0 is off. It helps on larger images; on 8x8 digits a one-pixel shift
        moves an eighth of the image and costs accuracy.
    augment_flip : bool, default=False
        Training-time augmentation: flip each image left-right with probability 1/2 (for
        photos; not for digits or text).
    image_shape : tuple or None, default=None
        Shape of one image for flat ``(n, d)`` input: ``(H, W)``, or ``(H, W, C)`` /
        ``(C, H, W)`` as told by ``data_format``. None: a perfect-square d is a square grayscale
        image (64 -> 8x8, 784 -> 28x28), any other d a 1 x d strip.
    data_format : {'auto', 'channels_last', 'channels_first'}, default='auto'
        Channel axis of 4-D input (and 3-tuple ``image_shape``). 'auto': channels last when the
        last axis has at most 4 entries and the first spatial one more than 4, channels first
        in the opposite case; anything else is ambiguous and raises an error asking for it.
    solver : {'adam', 'sgd', 'lbfgs'}, default='adam'
    alpha : float, default=0.001
        L2 penalty on the weights (convolution kernels and dense matrices).
    batch_size : int or 'auto', default='auto'
        Minibatch size; 'auto' is ``min(64, n_samples)``.
    learning_rate, learning_rate_init, power_t, momentum, nesterovs_momentum, beta_1, beta_2, \
epsilon, max_fun
        The solver's settings, as for :class:`sknn.MLPClassifier`.
    max_iter : int, default=100
        Maximum number of epochs.
    n_iter_no_change : int, default=20
        Epochs without an improvement of ``tol`` before stopping.
    shuffle, random_state, tol, verbose, warm_start, early_stopping, validation_fraction
        As for :class:`sknn.MLPClassifier`.
    class_weight : dict, 'balanced' or None, default=None
        Weights of the classes in the loss, multiplied with ``sample_weight``.
    device : str, default='auto'
        'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'.
    checkpoint_path : str or None, default=None
        Write the training state there after every epoch, to resume a crashed fit; the file
        is read as data, with ``torch.load(weights_only=True)`` (see
        :class:`sknn.MLPClassifier`).
    scoring, learning_rate_schedule
        What validation scores are and what early stopping watches; a learning-rate schedule:
        as for :class:`sknn.MLPClassifier`.

    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, \
validation_loss_curve_, learning_rate_curve_, t_, n_iter_, n_outputs_, out_activation_, \
n_features_in_, module_, device_
        As for :class:`sknn.MLPClassifier` (``n_features_in_`` counts values per image).
    image_shape_ : tuple of int
        ``(channels, height, width)`` of the images seen during fit.
    """

    _auto_batch_size = 64

    def __init__(self, conv_layers=(32, 64), kernel_size=3, pooling="max",
                 hidden_layer_sizes=(128,), activation="relu", *, dropout=0.0, batch_norm=True,
                 augment_shift=0, augment_flip=False, image_shape=None, data_format="auto",
                 solver="adam", alpha=0.001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=100, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=20, max_fun=15000,
                 class_weight=None, device="auto", checkpoint_path=None, scoring=None,
                 learning_rate_schedule=None):
        self.conv_layers = conv_layers
        self.kernel_size = kernel_size
        self.pooling = pooling
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.augment_shift = augment_shift
        self.augment_flip = augment_flip
        self.image_shape = image_shape
        self.data_format = data_format
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
        self.checkpoint_path = checkpoint_path
        self.scoring = scoring
        self.learning_rate_schedule = learning_rate_schedule

    def _check_params(self):
        super()._check_params()
        self._check_class_weight()
        layers = self.conv_layers
        if not isinstance(layers, (tuple, list)) or not all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c > 0
                for c in layers):
            raise InvalidParameterError(
                f"conv_layers must be a tuple of positive ints, got {layers!r}.")
        check_param(self, "kernel_size", kind="int", low=1)
        if self.pooling not in ("max", "avg", None):
            raise InvalidParameterError(
                f"pooling must be 'max', 'avg' or None, got {self.pooling!r}.")
        check_param(self, "augment_shift", kind="int", low=0)
        check_param(self, "augment_flip", kind="bool")
        if self.solver == "lbfgs" and (self.augment_shift or self.augment_flip):
            raise InvalidParameterError(
                "augment_shift / augment_flip with solver='lbfgs': L-BFGS needs a deterministic "
                "objective; use solver='adam' or 'sgd' with augmentation.")
        check_param(self, "data_format", options={"auto", "channels_last", "channels_first"})

    # --- images in -------------------------------------------------------------------------

    def _images(self, X, y=None, reset=False, convert=True):
        """Validate X (and y) and return X as ``(n, C, H, W)`` images (with ``convert=False``, a
        view of X in its own dtype: prediction converts it block by block)."""
        if not (sp.issparse(X) or hasattr(X, "dtype") or hasattr(X, "dtypes")):
            X = np.asarray(X)  # a list of images keeps its dtype (uint8 gets scaled to [0, 1])
        ndim = 2 if sp.issparse(X) else X.ndim
        if ndim <= 2:
            kw = dict(accept_sparse=["csr"], dtype=_IMAGE_DTYPES, reset=reset)
            if y is None:
                X = validate_data(self, X, **kw)
            else:
                X, y = validate_data(self, X, y, multi_output=True, **kw)
            X = X.toarray() if sp.issparse(X) else X
        else:
            if y is None:
                X = check_array(X, allow_nd=True, dtype=_IMAGE_DTYPES)
            else:
                X, y = check_X_y(X, y, allow_nd=True, multi_output=True, dtype=_IMAGE_DTYPES)
            if reset:
                self.n_features_in_ = int(np.prod(X.shape[1:]))
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
        images = to_images(X, self.image_shape, self.data_format, convert)
        # The pixels' range as the network sees them (uint8 scaled to [0, 1]): the fit's, and
        # at predict that of the first images (a pass over them all would read a memmap twice)
        scale = 255 if X.dtype == np.uint8 else 1
        seen = X if reset else X[:_PIXEL_SAMPLE]
        low, top = ((float(seen.min()) / scale, float(seen.max()) / scale) if seen.size
                    else (0.0, 0.0))
        if reset:
            self.image_shape_ = tuple(images.shape[1:])
            self._pixel_range = (low, top)
        else:
            self._check_image_shape(images.shape[1:])
            self._check_pixel_scale(low, top)
        if y is not None and y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return images, y

    def _check_pixel_scale(self, low, top):
        """Warn where X's pixels look scaled otherwise than the fit's: fitted on pixels in
        [0, 1] (uint8 images are scaled so) and given pixels up to 2 or more, or the other way
        round for pixels fitted up to 25 or more (0-255 values, 0-16 digits...)."""
        fitted_low, fitted_top = getattr(self, "_pixel_range", (None, None))
        if fitted_low is None or fitted_low < 0 or low < 0:
            return  # standardised or signed data: no pixel scale to compare
        if (fitted_top <= _UNIT and top >= 2) or (fitted_top >= 25 and top <= _UNIT):
            warnings.warn(
                f"X's pixels reach {top:g} as the network sees them (uint8 is scaled to [0, 1], "
                f"other dtypes are used as they are), but the images it was fitted on reached "
                f"{fitted_top:g}: give pixels as at fit (the same dtype, or divide by 255).")

    def _check_image_shape(self, shape):
        name = type(self).__name__
        (c, h, w), (fc, fh, fw) = shape, self.image_shape_
        if c != fc:
            raise ValueError(f"X has {c} channel(s), but {name} was fitted on images with "
                             f"{fc} channel(s).")
        if (h, w) != (fh, fw):
            raise ValueError(f"X has images of {h}x{w} pixels, but {name} was fitted on "
                             f"{fh}x{fw} images.")

    def _check_fit_input(self, X, y, reset):
        return self._images(X, y, reset=reset)

    def _check_predict_input(self, X):
        return self._images(X, convert=False)[0]

    # --- the network -----------------------------------------------------------------------

    def _build_module(self, X, n_outputs, dtype, device):
        module = ConvNet(
            X.shape[1:], tuple(self.conv_layers), self.kernel_size, self.pooling,
            hidden_layers(self), n_outputs, self.activation, self.dropout, self.batch_norm,
            self.augment_shift, self.augment_flip, dtype=dtype, device="cpu")
        generator = torch.Generator().manual_seed(
            int(self._random_state.randint(np.iinfo(np.int32).max)))
        with torch.no_grad():
            reset_parameters(module, generator)
        return module.to(device)

    def _training_noise(self):
        return bool(self.dropout or self.augment_shift or self.augment_flip)

    @property
    def _n_features_out(self):
        return self.module_.out.in_features

    @available_if(BaseNeuralNetwork._check_solver)
    @callbacks.managed
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with one epoch over the given images.

        Parameters
        ----------
        X : array of images (see the class docstring)
        y : array-like of shape (n_samples,)
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
        tags.input_tags.sparse = True
        return tags
