"""What every benchmark's JSON records about where and with what it ran."""

import os
import platform
import time


def metadata():
    import numpy
    import sklearn
    import torch

    import sknn
    return {"machine": platform.platform(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "versions": {"sknn": sknn.__version__, "torch": torch.__version__,
                         "scikit-learn": sklearn.__version__, "numpy": numpy.__version__}}
