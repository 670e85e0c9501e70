"""The kernel choices sknn makes per machine, timed on this one: the rule's evidence.

sknn picks these by CPU, never by timings (``sknn.nn.linear_route``), or once for all
(the output layer's layout in ``MLP.backprop``, the feature extractor's channels-last memory).
This script times both alternatives of each: the first two on the MLP benchmark's layers
(bench_mlp.py: batch 200, 100 -> 256 -> 128 -> 10, float32; the output layer over whole fits),
the last on EfficientNet-Lite0
(8 images of 224 x 224; needs the ``pretrained`` extra), so that the rules can be checked on any
machine, and on the other CPU kind by emulation:

    python benchmarks/bench_routes.py [--repeats 2000] [--json PATH]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/bench_routes.py           # AVX2 kernels on an AVX-512 machine

Times are medians of interleaved blocks, in microseconds, on threadpool_limits(2).
"""

import argparse
import json
import statistics
import time

import torch
from threadpoolctl import threadpool_limits

from sknn import nn as sknn_nn
from sknn.nn import linear_route
from _meta import metadata

BATCH, UNITS = 200, (100, 256, 128)
N_OUT = 10


def hidden_products(linear):
    """Forward and backward products of the two hidden layers through ``linear(a, b, bias,
    relu)`` = relu?(a @ b.T + bias)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, UNITS[0], generator=g)
    Ws = [torch.randn(o, i, generator=g) * 0.05 for i, o in zip(UNITS[:-1], UNITS[1:])]
    bs = [torch.zeros(o) for o in UNITS[1:]]
    delta = torch.randn(BATCH, UNITS[-1], generator=g)

    def step():
        h = x
        outs = [x]
        for W, b in zip(Ws, bs):
            h = linear(h, W, b, True)
            outs.append(h)
        d = delta
        for i in range(len(Ws) - 1, -1, -1):
            linear(outs[i].t().contiguous(), d.t().contiguous(), None, False)  # weight gradient
            if i:
                d = linear(d, Ws[i].t().contiguous(), None, False)
    return step


def onednn_linear(op):
    return lambda a, b, bias, relu: op(a, b, bias, "relu" if relu else "none", [], "")


def blas_linear(a, b, bias, relu):
    out = a @ b.t() if bias is None else torch.addmm(bias, a, b.t())
    return out.clamp_min_(0) if relu else out


@torch.no_grad()
def _output_major_backprop(module, x, y, w, loss, scale):
    """``MLP.backprop`` with its output layer run output-major, z.T = W.T @ h.T (the layout
    sknn's single fits and stacks used before): the alternative to time."""
    weights, biases = list(module.weights), list(module.biases)
    outputs = [x]
    for W, b in zip(weights[:-1], biases[:-1]):
        outputs.append(torch.addmm(b, outputs[-1], W).clamp_min_(0))
    h, w_out = outputs[-1], weights[-1].t().contiguous()
    z_t = torch.addmm(biases[-1][:, None], w_out, h.t())
    value, delta = loss.value_and_delta(z_t.t(), y, w)  # the losses take (samples, outputs)
    delta = delta.t()
    delta.mul_(scale)
    n = len(weights)
    grad_w, grad_b = [None] * n, [None] * n
    grad_w[-1] = torch.mm(delta, h).t().contiguous()
    grad_b[-1] = delta.sum(dim=1)
    delta = torch.mm(delta.t(), w_out)
    for i in range(n - 2, -1, -1):
        delta = torch.ops.aten.threshold_backward(delta, outputs[i + 1], 0)
        grad_w[i] = outputs[i].t() @ delta
        grad_b[i] = delta.sum(dim=0)
        if i:
            delta = delta @ weights[i].t()
    return value * scale, grad_w + grad_b


def output_layer(layout):
    """A fit of the MLP benchmark (bench_mlp.py's data and network, 3 epochs, alpha=0) with
    the output layer in (samples, outputs) layout ('sample-major', as MLP.backprop runs it)
    or output-major (:func:`_output_major_backprop`). Timed over whole fits: alone, with its
    operands in the cache, the output-major layer is the faster one, not inside a fit."""
    import warnings

    from bench_mlp import make_data

    from sknn import MLPClassifier
    X, y = make_data()[:2]
    own = sknn_nn.MLP.backprop

    def output_major(module, x, y, w, loss, scale, decay, workspace=None):
        return _output_major_backprop(module, x, y, w, loss, scale)

    def fit():
        sknn_nn.MLP.backprop = own if layout == "sample-major" else output_major
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                MLPClassifier(UNITS[1:], batch_size=BATCH, max_iter=3, tol=0, alpha=0.0,
                              random_state=0).fit(X, y)
        finally:
            sknn_nn.MLP.backprop = own
    return fit


def extractor_layouts():
    """The feature extractor's backbone (EfficientNet-Lite0, a batch of 8 at 224 x 224) in
    channels-last memory (sknn's choice) and in the contiguous layout; None without timm."""
    try:
        import numpy as np

        from sknn import PretrainedFeatureExtractor
        fe = PretrainedFeatureExtractor(device="cpu").fit(np.zeros((2, 8, 8, 3), np.uint8))
    except ImportError:
        return None
    module, x = fe.module_, torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def run(fmt):
        def step():
            with torch.inference_mode():
                module.to(memory_format=fmt)
                module.forward_features(x.contiguous(memory_format=fmt))
        return step
    return {"channels-last": run(torch.channels_last),
            "contiguous": run(torch.contiguous_format)}


def time_us(fns, repeats, blocks=9, warmup=50):
    """Median time per call of each of ``fns``, in interleaved blocks."""
    per = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(blocks):
        for name, fn in fns.items():
            tic = time.perf_counter()
            for _ in range(repeats // blocks):
                fn()
            per[name].append(1e6 * (time.perf_counter() - tic) / (repeats // blocks))
    return {name: statistics.median(v) for name, v in per.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    meta = metadata()
    results = {}
    with threadpool_limits(2):
        products = {"blas": hidden_products(blas_linear)}
        op = sknn_nn._find_onednn_linear()
        if op is not None:
            products["onednn"] = hidden_products(onednn_linear(op))
        results["linear_route"] = time_us(products, args.repeats)
        fits = time_us({k: output_layer(k) for k in ("sample-major", "output-major")}, 7,
                       blocks=7, warmup=1)
        results["output_layer_fit"] = {k: us / 3 for k, us in fits.items()}  # per epoch
        layouts = extractor_layouts()
        if layouts is not None:  # a forward takes ~0.15 s: a few per block
            results["extractor_memory_format"] = time_us(layouts, 3 * 3, blocks=3, warmup=2)
    print(f"CPU: {meta['cpu_vendor']}, capability {meta['cpu_capability']}; sknn's rule here: "
          f"linear route {linear_route()!r}, output layer sample-major")
    print("| choice | option | us per step (output layer: per epoch of a fit) |")
    print("|---|---|---:|")
    for choice, times in results.items():
        for option, us in times.items():
            print(f"| {choice} | {option} | {us:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**meta, "benchmark": "kernel_routes", "us_per_step": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
