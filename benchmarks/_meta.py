"""What every benchmark's JSON records about where and with what it ran."""

import os
import platform
import time


_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OPENBLAS_CORETYPE",
        "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# Products timed per thread count by machine_speed (``python -m benchmarks --quick`` sets fewer).
SPEED_REPEATS = 900


def machine_speed(repeats=None):
    """How fast this machine ran just now: microseconds per step of bench_routes.py's BLAS
    products (bench_mlp.py's layers, forward and backward, float32) on 1 and on 2 threads. The
    machines here are shared and run in phases: in a slow one, the second thread gains little
    (on the 2-core AVX-512 Xeon, the two-thread step took 434 us in a quiet phase; 526-645 in a
    slow one, where one thread took 680-790), and small parallel work slows most. A result is
    best compared with another measured at a like speed."""
    from threadpoolctl import threadpool_limits

    from bench_routes import blas_linear, hidden_products, time_us
    out = {}
    for threads in (1, 2):
        with threadpool_limits(threads):
            step = hidden_products(blas_linear)
            out[f"threads_{threads}_us"] = round(
                time_us({"step": step}, repeats or SPEED_REPEATS)["step"], 1)
    out["two_thread_speedup"] = round(out["threads_1_us"] / out["threads_2_us"], 2)
    return out


def metadata():
    import numpy
    import sklearn
    import torch

    import sknn
    from sknn.nn import cpu_info, cpu_vendor, linear_route
    return {"machine": platform.platform(), "processor": platform.processor(),
            "cpu_name": cpu_info("model name") or platform.processor() or platform.machine(),
            "cpu_vendor": cpu_vendor(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "linear_route": linear_route(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            # what forces other kernels (an emulated CPU kind) or other threading
            "env": {k: os.environ[k] for k in _ENV if k in os.environ},
            "versions": {"sknn": sknn.__version__, "torch": torch.__version__,
                         "scikit-learn": sklearn.__version__, "numpy": numpy.__version__},
            "machine_speed": machine_speed()}


# Source of ``rss_mb(field)`` for the child processes that measure memory: the resident set
# ("VmRSS") or its peak ("VmHWM") of the calling process, in MiB, from /proc/self/status; and
# ``AnonGrowth``, the peak growth of its anonymous memory over a block.
RSS_MB_SOURCE = r"""
import time


def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024


class AnonGrowth:
    # with AnonGrowth(seconds) as g: ... -- g.mb is the peak growth of RssAnon (anonymous
    # memory, which has no peak counter: sampled every `seconds`) over the block.

    def __init__(self, seconds):
        self.seconds, self.mb = seconds, 0.0

    def _sample(self):
        while not self._done:
            self.mb = max(self.mb, rss_mb("RssAnon") - self._base)
            time.sleep(self.seconds)

    def __enter__(self):
        import threading
        self._base, self._done = rss_mb("RssAnon"), False
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done = True
        self._thread.join()
        self.mb = max(self.mb, rss_mb("RssAnon") - self._base)
"""
