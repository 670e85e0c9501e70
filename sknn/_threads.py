"""Thread counts: sknn runs on as many threads as threadpoolctl's limits allow.

scikit-learn's way to bound a library's threads is ``threadpoolctl.threadpool_limits``, which
sets the OpenMP pool's size (``omp_set_num_threads``) in the calling thread. Torch follows it,
except after an explicit ``torch.set_num_threads(n)``: a thread's first torch operation then
writes n back over the limit (torch 2.14; measured, and tested in tests/test_threads.py). So
every sknn entry point (fit, partial_fit, predict and the like, a fused search's stacks) reads
the limit first, before any torch operation, and runs on at most that many threads.

The count is never chosen from the machine's load or from timings: a model's last bits depend
on its thread count, and the same ``random_state`` must give the same model on one machine
under the same limits.
"""

import contextlib
import functools
import os

import torch

_UNSET = object()
_omp = _UNSET


def _openmp_library():
    """threadpoolctl's controller of the OpenMP library torch runs on (None if there is none)."""
    global _omp
    if _omp is _UNSET:
        from threadpoolctl import ThreadpoolController
        libs = ThreadpoolController().select(user_api="openmp").lib_controllers
        torch_dir = os.path.dirname(os.path.realpath(torch.__file__))
        ours = [lib for lib in libs if os.path.realpath(lib.filepath).startswith(torch_dir)]
        _omp = (ours or libs or [None])[0]
    return _omp


def limit():
    """The thread count threadpoolctl's limits (or OMP_NUM_THREADS) allow the calling thread,
    None where torch runs without OpenMP."""
    lib = _openmp_library()
    return None if lib is None else lib.get_num_threads()


@contextlib.contextmanager
def limited():
    """Run torch on at most ``limit()`` threads inside the block; as it was afterwards."""
    allowed = limit()  # first: torch's next operation may write its own count over it
    current = torch.get_num_threads()
    if allowed is None or allowed >= current:
        yield
        return
    torch.set_num_threads(allowed)
    try:
        yield
    finally:
        torch.set_num_threads(current)
        _openmp_library().set_num_threads(allowed)  # the limit, as threadpoolctl left it


def honours_limits(method):
    """Decorator: ``method`` runs under :func:`limited`."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with limited():
            return method(*args, **kwargs)
    return wrapper
