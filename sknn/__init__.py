"""sknn: neural networks for scikit-learn users, trained with PyTorch on CPU or GPU."""

from .convnet import ConvNetClassifier
from .mlp import MLPClassifier, MLPRegressor

__version__ = "0.1.0"

__all__ = ["ConvNetClassifier", "MLPClassifier", "MLPRegressor", "__version__"]
