"""Pure torch pieces: hand-written backpropagation against autograd, losses, dropout."""

import pytest
import torch

from sknn._engine import objective_and_grads
from sknn.nn import (MLP, PoissonDeviance, SigmoidCrossEntropy, SoftmaxCrossEntropy, SquaredError,
                     batch_norm)


class _AutogradOnly(torch.nn.Module):
    """The same network, seen by the engine without its own backprop."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, x, generator=None, sample_weight=None):
        return self.mlp(x)


def _targets(loss, n, k, gen):
    if isinstance(loss, SoftmaxCrossEntropy):
        return torch.eye(k, dtype=torch.float64)[torch.randint(0, k, (n,), generator=gen)]
    if isinstance(loss, SigmoidCrossEntropy):
        return torch.randint(0, 2, (n, k), generator=gen).double()
    if isinstance(loss, PoissonDeviance):
        return 3 * torch.rand(n, k, generator=gen, dtype=torch.float64)
    return torch.randn(n, k, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
@pytest.mark.parametrize("loss", [SoftmaxCrossEntropy(), SigmoidCrossEntropy(), SquaredError(4),
                                  PoissonDeviance()])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("hidden", [(7, 6), ()])
def test_backprop_matches_autograd(activation, loss, weighted, hidden):
    gen = torch.Generator().manual_seed(0)
    mlp = MLP([5, *hidden, 4], activation, dtype=torch.float64)
    with torch.no_grad():
        for p in mlp.parameters():
            p.uniform_(-0.5, 0.5, generator=gen)
    x = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    y = _targets(loss, 20, 4, gen)
    w = torch.rand(20, generator=gen, dtype=torch.float64) if weighted else None
    params = list(mlp.parameters())
    assert mlp.supports_backprop
    value, grads = objective_and_grads(mlp, loss, x, y, w, 0.1, 0.3, params)
    ref_value, ref_grads = objective_and_grads(_AutogradOnly(mlp), loss, x, y, w, 0.1, 0.3, params)
    torch.testing.assert_close(value, ref_value)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("n_outputs", [1, 3, 40])
def test_backprop_matches_autograd_float32_fast_path(n_outputs):
    """float32 layers wide enough for the oneDNN kernels, and output layers narrow and wide."""
    gen = torch.Generator().manual_seed(0)
    mlp = MLP([50, 64, 48, n_outputs])
    with torch.no_grad():
        for p in mlp.parameters():
            p.uniform_(-0.2, 0.2, generator=gen)
    x = torch.randn(200, 50, generator=gen)
    loss = SoftmaxCrossEntropy() if n_outputs > 1 else SigmoidCrossEntropy()
    y = _targets(loss, 200, n_outputs, gen).float()
    params = list(mlp.parameters())
    value, grads = objective_and_grads(mlp, loss, x, y, None, 1 / 200, 1e-2, params)
    ref_value, ref_grads = objective_and_grads(_AutogradOnly(mlp), loss, x, y, None, 1 / 200,
                                               1e-2, params)
    torch.testing.assert_close(value, ref_value)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape and g.is_contiguous()
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_modules_do_not_touch_the_global_rng():
    state = torch.get_rng_state()
    mlp = MLP([3, 8, 2], dropout=0.5, batch_norm=True)
    assert not mlp.supports_backprop
    mlp.train()
    out = mlp(torch.ones(4, 3), generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 2)
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ValueError, match="Generator"):
        mlp(torch.ones(4, 3))


@pytest.mark.parametrize("shape", [(6, 4), (6, 4, 3, 5)])
def test_weighted_batch_norm_equals_repeating_samples(shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    w = torch.tensor([0, 1, 2, 3, 1, 2], dtype=torch.float64)
    bn_w = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(4).double()
    bn_r = (torch.nn.BatchNorm1d if len(shape) == 2 else torch.nn.BatchNorm2d)(4).double()
    weighted = batch_norm(x, bn_w, True, w)
    repeated = batch_norm(x.repeat_interleave(w.long(), dim=0), bn_r, True)
    torch.testing.assert_close(weighted.repeat_interleave(w.long(), dim=0), repeated)
    torch.testing.assert_close(bn_w.running_mean, bn_r.running_mean)
    torch.testing.assert_close(bn_w.running_var, bn_r.running_var)


def test_weighted_batch_norm_with_weights_summing_below_two():
    """Weights count as repetitions, and a batch that weighs less than two samples has no
    unbiased variance: its running variance is corrected as two samples' would be (x 2), not
    by total / (total - 1), which explodes as the total nears 1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    for total in (0.006, 1.0, 1.5):
        bn = torch.nn.BatchNorm1d(4, momentum=1.0).double()
        batch_norm(x, bn, True, torch.full((6,), total / 6, dtype=torch.float64))
        torch.testing.assert_close(bn.running_var, 2 * x.var(0, unbiased=False))


@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_adam_update_does_not_depend_on_the_gradients_memory_layout(decay):
    """torch.autograd.grad may return a gradient laid out unlike its parameter (a convolution
    fed channels-last images returns its weight gradient channels last): the update must be
    the same as with a gradient in the parameter's own layout."""
    from sknn._optim import Adam
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(8, 3, 3, 3, generator=g), torch.randn(8, generator=g)
    grads = [torch.randn(8, 3, 3, 3, generator=g), torch.randn(8, generator=g)]
    channels_last = grads[0].to(memory_format=torch.channels_last)
    assert channels_last.stride() != weight.stride()
    params_a, params_b = [weight.clone(), bias.clone()], [weight.clone(), bias.clone()]
    Adam(params_a).step(params_a, grads, decay)
    Adam(params_b).step(params_b, [channels_last, grads[1]], decay)
    for a, b in zip(params_a, params_b):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_linear_route_is_a_fixed_function_of_the_cpu():
    """oneDNN's linear only where it was measured faster (AMD with AVX-512: MKL keeps to AVX2
    there); the BLAS everywhere else."""
    from sknn.nn import linear_route
    assert linear_route("AVX512", "AuthenticAMD") == "onednn"
    assert linear_route("AVX2", "AuthenticAMD") == "blas"
    assert linear_route("AVX512", "GenuineIntel") == "blas"
    assert linear_route("AVX2", "GenuineIntel") == "blas"
    assert linear_route("DEFAULT", "") == "blas"
    assert linear_route() == linear_route()  # no timing, no state


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_backprop_into_a_workspace_is_bit_identical(activation):
    from sknn.nn import MLP, SoftmaxCrossEntropy, Workspace
    g = torch.Generator().manual_seed(0)
    module = MLP([6, 8, 5, 3], activation)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    workspace = Workspace()
    for rows in (7, 4, 7):  # two batch sizes, one met twice (its tensors reused)
        x = torch.randn(rows, 6, generator=g)
        y = torch.nn.functional.one_hot(torch.randint(0, 3, (rows,), generator=g), 3).float()
        w = torch.rand(rows, generator=g)
        plain = module.backprop(x, y, w, SoftmaxCrossEntropy(), 0.5, 0.01)
        into = module.backprop(x, y, w, SoftmaxCrossEntropy(), 0.5, 0.01, workspace)
        assert torch.equal(plain[0], into[0])
        for a, b in zip(plain[1], into[1]):
            assert torch.equal(a, b)
