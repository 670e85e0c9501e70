"""The kernel choices sknn makes per machine, timed on this one: the rule's evidence.

sknn picks two things by CPU, never by timings (``sknn.nn.linear_route``, and the output
layer's layout in ``MLP.backprop``). This script times both alternatives of each on the MLP
benchmark's layers (bench_mlp.py: batch 200, 100 -> 256 -> 128 -> 10, float32), so that the
rule can be checked on any machine, and on the other CPU kind by emulation:

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


def time_us(fns, repeats, blocks=9):
    """Median time per call of each of ``fns``, in interleaved blocks."""
    per = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(50):
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
