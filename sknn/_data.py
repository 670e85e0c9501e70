"""Input checks and conversion: arrays, sparse matrices and DataFrames -> torch tensors."""

import warnings

import numpy as np
import scipy.sparse as sp
import torch


def resolve_device(device):
    """``'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps'`` (or a ``torch.device``) -> ``torch.device``,
    with a clear error when that device is not there."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"device={device!r} is not a device: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available on this machine; "
                             "use device='cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={device!r} but MPS is not available on this machine")
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported: use 'auto', 'cpu', 'cuda', "
                         "'cuda:N' or 'mps'")
    return dev


def to_tensor(a, device, dtype=None):
    """numpy array -> tensor on ``device``, without a copy where torch allows one."""
    a = np.ascontiguousarray(a)
    with warnings.catch_warnings():
        # Read-only inputs (memmaps, joblib-shared arrays) are fine: we never write to them.
        warnings.filterwarnings("ignore", message=".*not writable.*", category=UserWarning)
        t = torch.from_numpy(a)
    return t.to(device=device, dtype=dtype)


def sparse_rows(X, rows, device, dtype):
    """Dense tensor of the given rows of a scipy sparse matrix."""
    return to_tensor(X[rows].toarray(), device, dtype)


class TrainingData:
    """In-memory training set: dense X as one tensor on the device (sparse X stays on the host,
    in CSR form, and is densified one minibatch at a time), targets and optional weights."""

    def __init__(self, X, Y, sample_weight, device, dtype):
        self.n_samples = X.shape[0]
        self.sparse = sp.issparse(X)
        self.device, self.dtype = device, dtype
        self.X = sp.csr_matrix(X) if self.sparse else to_tensor(X, device, dtype)
        self.Y = to_tensor(Y, device, dtype if Y.dtype.kind == "f" else None)
        self.sample_weight = sample_weight
        self.W = None if sample_weight is None else to_tensor(sample_weight, device, dtype)

    def batch(self, rows, rows_np=None):
        """Minibatch for ``rows`` (a slice, or an index tensor on the device with its numpy twin)."""
        if self.sparse:
            xb = sparse_rows(self.X, rows if rows_np is None else rows_np, self.device, self.dtype)
        else:
            xb = self.X[rows] if isinstance(rows, slice) else self.X.index_select(0, rows)
        if isinstance(rows, slice):
            wb = None if self.W is None else self.W[rows]
            return xb, self.Y[rows], wb
        wb = None if self.W is None else self.W.index_select(0, rows)
        return xb, self.Y.index_select(0, rows), wb

    def batch_weight_sums(self, order, starts, stops):
        """Per-batch sum of sample weights (the batch size when unweighted), as Python floats."""
        if self.sample_weight is None:
            return [float(b - a) for a, b in zip(starts, stops)]
        w = self.sample_weight if order is None else self.sample_weight[order]
        return np.add.reduceat(w, starts).tolist()

    def all(self):
        """The whole set as one batch (for full-batch solvers)."""
        xb = sparse_rows(self.X, slice(None), self.device, self.dtype) if self.sparse else self.X
        return xb, self.Y, self.W


# --- images ------------------------------------------------------------------------------------


def channels_axis(shape, data_format, what="X"):
    """Where the channels are in one image's 3-D ``shape``: 0 (channels first) or 2 (last).

    ``data_format='auto'``: channels last when the last axis has at most 4 entries and the first
    more than 4, channels first in the opposite case; otherwise the layout is ambiguous and
    ``data_format`` must be given."""
    if data_format == "channels_first":
        return 0
    if data_format == "channels_last":
        return 2
    first, last = shape[0], shape[2]
    if last <= 4 < first:
        return 2
    if first <= 4 < last:
        return 0
    raise ValueError(
        f"Cannot tell where the channels are in {what} with images of shape {tuple(shape)}: pass "
        "data_format='channels_last' (height, width, channels) or 'channels_first'.")


def to_images(X, image_shape=None, data_format="auto"):
    """An array of images in any accepted layout -> ``(n, channels, height, width)``.

    - ``(n, H, W)``: grayscale; ``(n, H, W, C)`` or ``(n, C, H, W)``: see :func:`channels_axis`;
    - ``(n, d)``: reshaped to ``image_shape`` — ``(H, W)``, or ``(H, W, C)`` / ``(C, H, W)`` read
      with ``data_format`` — or, when it is None, to a square grayscale image when d is a perfect
      square (64 -> 8x8) and to a 1 x d strip otherwise.

    uint8 values are scaled to [0, 1] in float32; float arrays keep their precision.
    """
    n = X.shape[0]
    if X.ndim == 2:
        d = X.shape[1]
        if image_shape is None:
            side = int(np.sqrt(d))
            X = X.reshape(n, 1, side, side) if side * side == d else X.reshape(n, 1, 1, d)
        else:
            shape = tuple(int(s) for s in image_shape)
            if len(shape) not in (2, 3) or np.prod(shape) != d:
                raise ValueError(f"image_shape={image_shape} holds {int(np.prod(shape))} values "
                                 f"per image, but X has {d} features.")
            X = X.reshape(n, *shape)
            if X.ndim == 3:
                X = X[:, None]
            else:
                X = X if channels_axis(shape, data_format, "image_shape") == 0 else X.transpose(0, 3, 1, 2)
    elif X.ndim == 3:
        X = X[:, None]
    elif X.ndim == 4:
        if channels_axis(X.shape[1:], data_format) == 2:
            X = X.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"Expected images as a 2-, 3- or 4-D array, got {X.ndim} dimensions.")
    if X.dtype == np.uint8:
        return np.ascontiguousarray(X, dtype=np.float32) / np.float32(255)
    return np.ascontiguousarray(X)
