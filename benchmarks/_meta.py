"""What every benchmark's JSON records about where and with what it ran."""

import os
import platform
import time


def metadata():
    import numpy
    import sklearn
    import torch

    import sknn
    from sknn.nn import cpu_vendor, linear_route
    return {"machine": platform.platform(), "processor": platform.processor(),
            "cpu_vendor": cpu_vendor(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "linear_route": linear_route(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "versions": {"sknn": sknn.__version__, "torch": torch.__version__,
                         "scikit-learn": sklearn.__version__, "numpy": numpy.__version__}}


# Source of ``rss_mb(field)`` for the child processes that measure memory: the resident set
# ("VmRSS") or its peak ("VmHWM") of the calling process, in MiB, from /proc/self/status.
RSS_MB_SOURCE = r"""
def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
"""
