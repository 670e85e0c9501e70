"""Optional larger image sets (MNIST, Fashion-MNIST, CIFAR-10) through scikit-learn's
fetch_openml: read from its local cache, or downloaded where the network allows. Nothing in the
test suite needs them; a benchmark that asks for one gets a clear message when it is not there.
"""

from urllib.error import URLError

import numpy as np

OPENML = {"mnist": ("mnist_784", (28, 28)), "fashion-mnist": ("Fashion-MNIST", (28, 28)),
          "cifar-10": ("CIFAR_10", (3, 32, 32))}


class DatasetUnavailable(RuntimeError):
    pass


def load_openml_images(name, data_home=None):
    """``(images uint8 (n, H, W) or (n, H, W, 3), labels)`` of an OpenML image set."""
    from sklearn.datasets import fetch_openml, get_data_home
    if name not in OPENML:
        raise ValueError(f"Unknown data set {name!r}: one of {sorted(OPENML)}.")
    openml_name, shape = OPENML[name]
    try:
        X, y = fetch_openml(openml_name, data_home=data_home, as_frame=False, return_X_y=True)
    except (URLError, OSError, ValueError) as e:
        raise DatasetUnavailable(
            f"{name} ({openml_name}) is not in scikit-learn's data cache "
            f"({get_data_home(data_home)}) and could not be downloaded: {e}. On a machine with "
            f"network access run: python -c \"from sklearn.datasets import fetch_openml; "
            f"fetch_openml('{openml_name}')\", then copy that cache folder here.") from None
    images = np.asarray(X, dtype=np.uint8).reshape((-1, *shape))
    if len(shape) == 3:  # CIFAR-10 rows are channels first: make them (n, 32, 32, 3)
        images = images.transpose(0, 2, 3, 1)
    return images, np.asarray(y)
