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
