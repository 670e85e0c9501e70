"""Pure torch building blocks and losses: no scikit-learn in here.

Parameters are created empty (``torch.empty``): nothing here draws from torch's global random
number generator. The estimators initialise weights from their own ``random_state``.
"""

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "identity": lambda x: x,
    "logistic": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


def dropout(x, p, generator):
    """Inverted dropout drawing its mask from ``generator`` (never from the global RNG)."""
    if generator is None:
        raise ValueError("dropout in training mode needs a torch.Generator")
    keep = torch.empty_like(x).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


class MLP(nn.Module):
    """Fully connected network: ``(linear -> [batch norm] -> activation -> [dropout]) * k -> linear``.

    ``weights[i]`` has shape ``(fan_in, fan_out)``, the layout of scikit-learn's ``coefs_``.
    ``forward`` returns the raw output of the last layer (logits / linear predictor); the output
    activation belongs to the loss.
    """

    def __init__(self, layer_units, activation="relu", dropout=0.0, batch_norm=False,
                 dtype=torch.float32, device="cpu"):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        pairs = list(zip(layer_units[:-1], layer_units[1:]))
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(i, o, **kw)) for i, o in pairs])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(o, **kw)) for _, o in pairs])
        self.norms = nn.ModuleList(
            [nn.BatchNorm1d(o, **kw) for o in layer_units[1:-1]] if batch_norm else []
        )
        self.activation = activation
        self.dropout = float(dropout)

    def features(self, x, generator=None):
        """Activations of the last hidden layer (``x`` itself when there is none)."""
        act = ACTIVATIONS[self.activation]
        for i in range(len(self.weights) - 1):
            x = torch.addmm(self.biases[i], x, self.weights[i])
            if self.norms:
                # A batch of one has no batch statistics: use the running ones for it.
                bn = self.norms[i]
                x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                 self.training and x.shape[0] > 1, bn.momentum, bn.eps)
            x = act(x)
            if self.dropout and self.training:
                x = dropout(x, self.dropout, generator)
        return x

    def forward(self, x, generator=None):
        return torch.addmm(self.biases[-1], self.features(x, generator), self.weights[-1])


# Losses: each returns the *sum over samples* of the per-sample loss, weighted by ``w`` when given.
# ``report_scale`` converts that objective into the value scikit-learn reports as ``loss_``.


def _weighted_sum(per_sample, w):
    return per_sample.sum() if w is None else torch.dot(per_sample, w)


class SoftmaxCrossEntropy:
    """Multiclass log-loss on logits; ``y`` holds class indices."""

    report_scale = 1.0

    def __call__(self, z, y, w=None):
        if w is None:
            return F.cross_entropy(z, y, reduction="sum")
        return torch.dot(F.cross_entropy(z, y, reduction="none"), w)

    @staticmethod
    def link(z):
        return torch.softmax(z, dim=1)


class SigmoidCrossEntropy:
    """Binary / multilabel log-loss on logits, summed over outputs; ``y`` is a 0/1 matrix."""

    report_scale = 1.0

    def __call__(self, z, y, w=None):
        per = F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(dim=1)
        return _weighted_sum(per, w)

    @staticmethod
    def link(z):
        return torch.sigmoid(z)


class SquaredError:
    """Half squared error summed over outputs (the gradient scikit-learn's MLP follows);
    reported, as scikit-learn does, as a mean over outputs."""

    def __init__(self, n_outputs):
        self.report_scale = 1.0 / n_outputs

    def __call__(self, z, y, w=None):
        per = 0.5 * (z - y).square().sum(dim=1)
        return _weighted_sum(per, w)

    @staticmethod
    def link(z):
        return z


class PoissonDeviance:
    """Half Poisson deviance with a log link, summed over outputs."""

    report_scale = 1.0

    def __call__(self, z, y, w=None):
        per = (torch.xlogy(y, y) - y * z - y + torch.exp(z)).sum(dim=1)
        return _weighted_sum(per, w)

    @staticmethod
    def link(z):
        return torch.exp(z)
