"""The kernel choices sknn makes per machine, timed on this one: the rule's evidence.

sknn picks these by CPU, never by timings (``sknn.nn.linear_route``), or once for all
(the output layer's layout in ``MLP.backprop``, the feature extractor's channels-last memory).
This script times both alternatives of each: the first two on the MLP benchmark's layers
(bench_mlp.py: batch 200, 100 -> 256 -> 128 -> 10, float32), the last on EfficientNet-Lite0
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
from sknn.nn import SoftmaxCrossEntropy, linear_route
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


def output_layer(layout):
    """The output layer's forward, loss and gradients, in (outputs, samples) layout
    ('output-major', as MLP.backprop runs it) or (samples, outputs)."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(BATCH, UNITS[-1], generator=g).clamp_min_(0)
    W = torch.randn(UNITS[-1], N_OUT, generator=g) * 0.05
    b = torch.zeros(N_OUT)
    y = torch.nn.functional.one_hot(torch.randint(0, N_OUT, (BATCH,), generator=g), N_OUT).float()
    loss = SoftmaxCrossEntropy()
    yt = y.t().contiguous()

    def output_major():
        w_out = W.t().contiguous()
        _, delta = loss.value_and_delta(torch.addmm(b[:, None], w_out, h.t()), yt, None, dim=0)
        torch.mm(delta, h).t().contiguous()
        delta.sum(dim=1)
        torch.mm(delta.t(), w_out)

    def sample_major():
        _, delta = loss.value_and_delta(torch.addmm(b, h, W), y, None, dim=1)
        torch.mm(h.t(), delta)
        delta.sum(dim=0)
        torch.mm(delta, W.t())
    return output_major if layout == "output-major" else sample_major


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
        results["output_layer"] = time_us({k: output_layer(k) for k in
                                           ("output-major", "sample-major")}, args.repeats)
        layouts = extractor_layouts()
        if layouts is not None:  # a forward takes ~0.15 s: a few per block
            results["extractor_memory_format"] = time_us(layouts, 3 * 3, blocks=3, warmup=2)
    print(f"CPU: {meta['cpu_vendor']}, capability {meta['cpu_capability']}; sknn's rule here: "
          f"linear route {linear_route()!r}, output layer output-major")
    print("| choice | option | us per step |")
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
