"""sknn: neural networks for scikit-learn users, trained with PyTorch on CPU or GPU."""

from ._io import load, save
from .convnet import ConvNetClassifier
from .mlp import MLPClassifier, MLPRegressor
from .pretrained import PretrainedFeatureExtractor

__version__ = "0.1.0"

__all__ = ["ConvNetClassifier", "MLPClassifier", "MLPRegressor", "PretrainedFeatureExtractor",
           "__version__", "load", "save"]
