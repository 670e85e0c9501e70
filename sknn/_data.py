"""Input checks and conversion: arrays, sparse matrices and DataFrames -> torch tensors."""

import copy
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


def _fits_on_device(nbytes, device, share=0.5):
    """Whether ``nbytes`` of training data may live on ``device``: on a GPU, at most ``share``
    of its free memory (the rest is for the model and its activations)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    # Memory torch holds in its cache but does not use is free to us too (the driver counts it
    # as taken): without it, repeated fits in one process would stream sooner and sooner.
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return nbytes <= share * free


# Above this many bytes of training data, each epoch's shuffle is gathered batch by batch
# instead of into one shuffled copy of the whole set.
GATHER_LIMIT = 256 * 2**20


class TrainingData:
    """The training set and its minibatches.

    Dense data lives on the device as one tensor, when it fits there (on a GPU: half its free
    memory); otherwise it stays on the host (a numpy memmap is not loaded, its pages are shared)
    and each minibatch is gathered there and copied over from pinned memory. Sparse X stays on
    the host in CSR form and is densified one minibatch at a time.

    ``rows`` (an index array, or None for all of X in order): the rows of X that are the training
    samples, in their order; ``Y`` and ``sample_weight`` then hold those samples only. Early
    stopping's training part is a view of X this way, not a copy of it: sample ``i`` is row
    ``rows[i]`` of X, and each minibatch is gathered from X itself.
    """

    def __init__(self, X, Y, sample_weight, device, dtype, stream=None, rows=None):
        self.n_samples = X.shape[0] if rows is None else len(rows)
        if Y.shape[0] != self.n_samples:
            raise ValueError(f"Y has {Y.shape[0]} rows for {self.n_samples} training samples")
        self.sparse = sp.issparse(X)
        self.device, self.dtype = device, dtype
        self._row_bytes = 0 if self.sparse else int(np.prod(X.shape[1:])) * (
            torch.finfo(dtype).bits // 8)
        if stream is None:
            # All of X goes where the data lives, rows or not.
            stream = not _fits_on_device(X.shape[0] * self._row_bytes + Y.nbytes, device)
        self.stream = stream or self.sparse
        home = torch.device("cpu") if self.stream else device
        self.X = sp.csr_matrix(X) if self.sparse else to_tensor(X, home, dtype)
        self.Y = to_tensor(Y, home, dtype if Y.dtype.kind == "f" else None)
        self.sample_weight = sample_weight
        self.W = None if sample_weight is None else to_tensor(sample_weight, home, dtype)
        # Rows of X, on the host (numpy: streamed batches, sparse data) and where X is.
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._rows = None if rows is None else torch.from_numpy(self.rows).to(home)
        self._kept = {}  # gathered batches' tensors, by what and how many rows (see _gather)

    def _x_rows(self, rows):
        """Rows of X for samples ``rows`` (a slice or an index tensor where X is)."""
        if self._rows is None:
            return rows
        return self._rows[rows]

    def permuted(self, idx):
        """The set in the order of ``idx`` (an index tensor on the device), gathered in one pass
        so that minibatches are slices of it, as a :class:`TrainingData`; None for streamed
        data, or where that second copy would take more than ``GATHER_LIMIT`` bytes."""
        if self.stream:
            return None
        nbytes = self.n_samples * self._row_bytes + sum(
            t.numel() * t.element_size() for t in (self.Y, self.W) if t is not None)
        if nbytes > GATHER_LIMIT:
            return None
        out = copy.copy(self)
        out.X = self.X.index_select(0, self._x_rows(idx))
        out.Y = self.Y.index_select(0, idx)
        out.W = None if self.W is None else self.W.index_select(0, idx)
        out.rows = out._rows = None  # the gathered copy holds the training samples only
        return out

    def _to_device(self, t):
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _gather(self, name, t, rows, reuse):
        """Rows ``rows`` (an index tensor) of ``t``: with ``reuse``, on the CPU, into the tensor
        kept for this many rows of it, which the next such call overwrites; else a new one."""
        if not reuse or self.device.type != "cpu":
            return t.index_select(0, rows)
        key = (name, len(rows))
        out = self._kept.get(key)
        if out is None:
            out = self._kept[key] = t.new_empty((len(rows),) + tuple(t.shape[1:]))
        return torch.index_select(t, 0, rows, out=out)

    def batch(self, rows, rows_np=None, reuse=False):
        """Minibatch of ``rows``: a slice, or an index tensor on the device and its numpy twin.
        With ``reuse``, a streamed batch gathered on the CPU is written into tensors kept for the
        next one (valid until then): the heap does not grow by a batch a step, as it can with new
        tensors, and a fit on a memmap holds what it uses."""
        if self.stream:
            if not isinstance(rows, slice):
                rows = torch.from_numpy(np.asarray(rows_np))
            if self.rows is None:
                x_rows = rows
            else:  # sample i is row self.rows[i] of X
                x_rows = torch.from_numpy(self.rows[rows if isinstance(rows, slice)
                                                    else rows.numpy()])
            if self.sparse:
                xb = sparse_rows(self.X, x_rows if isinstance(x_rows, slice) else x_rows.numpy(),
                                 self.device, self.dtype)
            else:
                xb = self._to_device(self.X[x_rows] if isinstance(x_rows, slice)
                                     else self._gather("X", self.X, x_rows, reuse))
            yb = self._to_device(self.Y[rows] if isinstance(rows, slice)
                                 else self._gather("Y", self.Y, rows, reuse))
            wb = None if self.W is None else self._to_device(
                self.W[rows] if isinstance(rows, slice) else self._gather("W", self.W, rows, reuse))
            return xb, yb, wb
        x_rows = self._x_rows(rows)
        xb = self.X[x_rows] if isinstance(x_rows, slice) else self.X.index_select(0, x_rows)
        if isinstance(rows, slice):
            return xb, self.Y[rows], None if self.W is None else self.W[rows]
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
        return self.batch(slice(None))


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


def to_images(X, image_shape=None, data_format="auto", convert=True):
    """An array of images in any accepted layout -> ``(n, channels, height, width)``.

    - ``(n, H, W)``: grayscale; ``(n, H, W, C)`` or ``(n, C, H, W)``: see :func:`channels_axis`;
    - ``(n, d)``: reshaped to ``image_shape`` — ``(H, W)``, or ``(H, W, C)`` / ``(C, H, W)`` read
      with ``data_format`` — or, when it is None, to a square grayscale image when d is a perfect
      square (64 -> 8x8) and to a 1 x d strip otherwise.

    uint8 values are scaled to [0, 1] in float32; float arrays keep their precision. With
    ``convert=False`` the result is a view of X in its own dtype (channels last stay a
    transposed view), for callers that convert each batch themselves.
    """
    n = X.shape[0]
    if X.ndim == 2:
        d = X.shape[1]
        if image_shape is None:
            side = int(np.sqrt(d))
            X = X.reshape(n, 1, side, side) if side * side == d else X.reshape(n, 1, 1, d)
        else:
            shape = tuple(image_shape) if isinstance(image_shape, (tuple, list)) else ()
            if len(shape) not in (2, 3) or not all(
                    isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0
                    for s in shape):
                raise ValueError("image_shape must be (height, width) or a 3-tuple with the "
                                 f"channels, of positive ints, got {image_shape!r}.")
            if np.prod(shape) != d:
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
    if not convert:
        return X
    if X.dtype == np.uint8:
        return np.ascontiguousarray(X, dtype=np.float32) / np.float32(255)
    return np.ascontiguousarray(X)
