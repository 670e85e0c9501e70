"""Inference speed: sknn vs scikit-learn's MLPClassifier, sknn's ConvNet and pretrained extractor
vs a bare torch forward, and the memory of a 1,000,000-row prediction from a memmap.

1. MLP: make_classification(n_samples=30000, n_features=100, n_informative=60, n_classes=10,
   random_state=0) as float32, the first 24,000 rows; MLPClassifier((256, 128)) of each library
   fitted on them (10 epochs; float32). Timed: ``predict_proba`` of one row (a different row per
   call; median and 99th percentile over the calls) and of all 24,000 rows at once (time per
   row; each round the median of consecutive calls), for float32 input and for float64 input (sknn computes in the model's float32 and
   returns float64; scikit-learn computes in float64). The libraries alternate, round after
   round, with a pause of ``SETTLE_SECONDS`` before each (BLAS and OpenMP worker threads spin for
   a while after their last call and take the cores from the next library otherwise); both run
   under ``threadpool_limits(2)`` and ``torch.set_num_threads(2)``. ONNX Runtime (with the
   ``onnx`` extra): sknn's model exported by ``sknn.onnx``, on 2 intra-op threads that do not
   spin between calls.
2. ConvNetClassifier (defaults; 2 epochs on scikit-learn's digits, 1797 images 8x8, float32)
   and PretrainedFeatureExtractor (EfficientNet-Lite0, 224x224 uint8 images) against their own
   module called under ``torch.inference_mode`` on a tensor already prepared (normalised, the
   model's layout): one image at a time (the wrapper's fixed overhead in us; it computes a lone
   image beside a zero image, as batch invariance asks, so that includes a second image's
   forward) and in bulk (the ratio of times).
3. Memory: ``predict_proba`` of an MLPClassifier((256, 128)) on a 1,000,000 x 100 float32
   memmap (100,000 rows with ``--quick``), in a fresh process: the peak resident memory
   (VmHWM, restarted just before the call) above the resident memory before it, less the input's
   pages (read through the memmap) and the output; and the peak growth of anonymous memory
   (sampled) less the output. Both are compared with the activations of one block of rows.

    python benchmarks/bench_predict.py [--quick] [--rows N] [--json PATH]
"""

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits, make_classification
from sklearn.neural_network import MLPClassifier as SkMLP
from threadpoolctl import threadpool_limits

import sknn
from _meta import RSS_MB_SOURCE, metadata

HIDDEN, THREADS = (256, 128), 2
SETTLE_SECONDS = 1.0


def make_data():
    X, y = make_classification(n_samples=30000, n_features=100, n_informative=60,
                               n_classes=10, random_state=0)
    return X[:24000].astype(np.float32), y[:24000]


def settle():
    time.sleep(SETTLE_SECONDS)


def latencies(fn, X, calls, offset=0):
    """Seconds of ``fn(X[i:i+1])`` for ``calls`` consecutive rows."""
    out = []
    n = len(X)
    for k in range(calls):
        i = (offset + k) % n
        x = X[i:i + 1]
        tic = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - tic)
    return out


def bulk_seconds(fn, X, reps):
    """The median seconds of ``reps`` consecutive calls ``fn(X)``."""
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        fn(X)
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def summary(seconds):
    us = 1e6 * np.asarray(seconds)
    return {"median_us": float(np.median(us)), "p99_us": float(np.percentile(us, 99)),
            "calls": len(us)}


def onnx_runner(est, X):
    """``predict_proba`` of ``est`` exported to ONNX (sknn.onnx) and run by ONNX Runtime on
    THREADS threads, for inputs of X's dtype; None without the ``onnx`` extra."""
    try:
        import onnxruntime as rt

        import sknn.onnx
    except ImportError:
        return None
    onx = sknn.onnx.to_onnx(est, X[:1], options={"zipmap": False})
    opts = rt.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    # ONNX Runtime's pool spins between calls by default, and its spinning threads took the
    # cores from the other libraries' calls (sknn's one-row latency: 99th percentile 38 ms).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = rt.InferenceSession(onx.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda Z: sess.run(["probabilities"], {name: Z})[0]


def bench_mlp(X, y, rounds, calls, epochs, reps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {
            "sknn": sknn.MLPClassifier(HIDDEN, max_iter=epochs, random_state=0,
                                       device="cpu").fit(X, y),
            "scikit-learn": SkMLP(HIDDEN, max_iter=epochs, random_state=0).fit(X, y),
        }
    ours = models["sknn"]
    # The claim behind the design: a row's probabilities alone are those it gets in the batch.
    whole = ours.predict_proba(X)
    invariant = all(np.array_equal(ours.predict_proba(X[i:i + 1]), whole[i:i + 1])
                    for i in range(0, len(X), max(1, len(X) // 50)))
    results = {}
    for dtype in (np.float32, np.float64):
        Xd = X.astype(dtype)
        runners = {name: est.predict_proba for name, est in models.items()}
        onnx = onnx_runner(ours, Xd)
        if onnx is not None:
            runners["ONNX Runtime"] = onnx
        single = {n: [] for n in runners}
        bulk = {n: [] for n in runners}
        for name, fn in runners.items():  # warm-up, alike for all
            latencies(fn, Xd, 20)
            fn(Xd[:2000])
        for r in range(rounds):
            for name, fn in runners.items():
                settle()
                single[name] += latencies(fn, Xd, calls, offset=r * calls)
                settle()
                bulk[name].append(bulk_seconds(fn, Xd, reps) / len(Xd))
        key = np.dtype(dtype).name
        results[key] = {}
        if onnx is not None:
            results[key]["onnx_max_abs_diff"] = float(np.abs(onnx(Xd) - ours.predict_proba(Xd)).max())
        for name in runners:
            results[key][name] = {"single_row": summary(single[name]),
                                  "bulk_us_per_row": 1e6 * statistics.median(bulk[name]),
                                  "bulk_rounds_us_per_row": [1e6 * b for b in bulk[name]]}
        s, k = results[key]["sknn"], results[key]["scikit-learn"]
        results[key]["ratios"] = {
            "single_row_median": s["single_row"]["median_us"] / k["single_row"]["median_us"],
            "bulk": statistics.median(a / b for a, b in zip(bulk["sknn"], bulk["scikit-learn"])),
        }
        print(f"{key} input: single row {s['single_row']['median_us']:.1f} vs "
              f"{k['single_row']['median_us']:.1f} us; bulk {s['bulk_us_per_row']:.3f} vs "
              f"{k['bulk_us_per_row']:.3f} us/row", file=sys.stderr, flush=True)
    return results, invariant


def bench_torch_wrapper(name, wrapped, bare, images, ready, single_calls, rounds, reps):
    """The wrapper ``wrapped(images[i:i+1])`` vs ``bare(ready[i:i+1])`` one image at a time, and
    both on all the images."""
    n = len(images)
    single = {"sknn": [], "bare torch": []}
    bulk = {"sknn": [], "bare torch": []}
    wrapped(images[:2])
    bare(ready[:2])
    for r in range(rounds):
        settle()
        single["sknn"] += latencies(wrapped, images, single_calls, offset=r * single_calls)
        settle()
        single["bare torch"] += latencies(bare, ready, single_calls, offset=r * single_calls)
        settle()
        bulk["sknn"].append(bulk_seconds(wrapped, images, reps) / n)
        settle()
        bulk["bare torch"].append(bulk_seconds(bare, ready, reps) / n)
    s = {k: summary(v) for k, v in single.items()}
    ratio = statistics.median(a / b for a, b in zip(bulk["sknn"], bulk["bare torch"]))
    out = {"images": n, "single_image": s,
           "single_image_overhead_us": s["sknn"]["median_us"] - s["bare torch"]["median_us"],
           "bulk_us_per_image": {k: 1e6 * statistics.median(v) for k, v in bulk.items()},
           "bulk_time_ratio": ratio}
    print(f"{name}: single image {s['sknn']['median_us']:.0f} vs "
          f"{s['bare torch']['median_us']:.0f} us; bulk ratio {ratio:.3f}", file=sys.stderr,
          flush=True)
    return out


def bench_convnet(quick, rounds, reps):
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = sknn.ConvNetClassifier(max_iter=1 if quick else 2, random_state=0,
                                     device="cpu").fit(X, digits.target)
    ready = torch.from_numpy(X[:, None].copy())
    module = clf.module_

    def bare(x):
        with torch.inference_mode():
            return module(x)

    return bench_torch_wrapper("ConvNetClassifier", clf.predict_proba, bare, X, ready,
                               50 if quick else 100, rounds, reps)


def bench_pretrained(quick, rounds, reps):
    try:
        ext = sknn.PretrainedFeatureExtractor(device="cpu").fit(np.zeros((2, 8, 8)))
    except (ImportError, ValueError) as e:  # timm or the weights package missing
        print(f"PretrainedFeatureExtractor skipped: {e}", file=sys.stderr)
        return None
    n = 8 if quick else 64
    images = np.random.RandomState(0).randint(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
    ready = ((torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
             ).contiguous(memory_format=torch.channels_last)
    module, bs = ext.module_, ext.batch_size

    def bare(x):
        with torch.inference_mode():
            return [module.forward_features(x[k:k + bs]).mean((2, 3))
                    for k in range(0, len(x), bs)]

    return bench_torch_wrapper("PretrainedFeatureExtractor", ext.transform, bare, images, ready,
                               3 if quick else 10, rounds, reps)


CHILD = RSS_MB_SOURCE + r"""
import pickle, sys, time
import numpy as np
import torch
torch.set_num_threads(2)
path, rows, cols, model_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
with open(model_path, "rb") as f:
    clf = pickle.load(f)
X = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, cols))
clf.predict_proba(X[:5000])  # first-call costs (allocator, kernels)
import gc; gc.collect()
with open("/proc/self/clear_refs", "w") as f:  # restart the peak (VmHWM) from here
    f.write("5")
base = rss_mb("VmRSS")
with AnonGrowth(0.002) as anon:
    tic = time.perf_counter()
    proba = clf.predict_proba(X)
    seconds = time.perf_counter() - tic
print(base, rss_mb("VmHWM"), anon.mb, seconds, proba.nbytes / 2**20)
"""


def bench_memmap(rows, X, y):
    from sknn import _predict
    cols = X.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = sknn.MLPClassifier(HIDDEN, max_iter=1, random_state=0, device="cpu").fit(X, y)
    widths = [cols, *HIDDEN, clf.n_outputs_]
    block_mb = _predict.BLOCK_ROWS * sum(widths) * 4 / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        path, model_path = os.path.join(tmp, "X.dat"), os.path.join(tmp, "model.pkl")
        with open(model_path, "wb") as f:
            pickle.dump(clf, f)
        mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(rows, cols))
        for start in range(0, rows, len(X)):
            mm[start:start + len(X)] = X[:rows - start]
        mm.flush()
        del mm
        out = subprocess.run([sys.executable, "-c", CHILD, path, str(rows), str(cols),
                              model_path], capture_output=True, text=True, check=True)
    base, peak, anon, seconds, out_mb = (float(v) for v in out.stdout.split())
    data_mb = rows * cols * 4 / 2**20
    working = peak - base - data_mb - out_mb
    result = {"rows": rows, "data_mb": data_mb, "output_mb": out_mb,
              "rss_before_mb": base, "peak_rss_mb": peak,
              "peak_above_input_and_output_mb": working,
              "anon_growth_mb": anon, "anon_above_output_mb": anon - out_mb,
              "block_rows": _predict.BLOCK_ROWS, "block_activations_mb": block_mb,
              "seconds": seconds, "us_per_row": 1e6 * seconds / rows}
    print(f"memmap {rows:,} rows: peak +{peak - base:.0f} MiB (input {data_mb:.0f}, output "
          f"{out_mb:.0f}, working {working:.0f}); anonymous +{anon:.0f} MiB; block "
          f"{block_mb:.1f} MiB; {seconds:.2f} s", file=sys.stderr, flush=True)
    return result


def table(meta, mlp, invariant, convnet, pretrained, memory, rounds, calls, reps, n):
    lines = [f"Inference on {meta['cpu_name']} ({meta['cpus']} CPUs, torch kernels "
             f"{meta['cpu_capability']}), {THREADS} threads; MLPClassifier{HIDDEN} fitted on "
             f"{n:,} x 100 float32, 10 classes; single row: median (99th percentile) of "
             f"{rounds * calls} calls; bulk: predict_proba of the {n:,} rows, median of "
             f"{rounds} rounds (each the median of {reps} consecutive calls).", "",
             "| input | library | one row, us | bulk, us/row | sknn / scikit-learn |",
             "|---|---|---:|---:|---|"]
    for key, res in mlp.items():
        r = res["ratios"]
        for name in ("sknn", "scikit-learn", "ONNX Runtime"):
            if name not in res:
                lines.append(f"| {key} | {name} | - | - | not measured: needs sknn[onnx] |")
                continue
            s = res[name]
            note = (f"one row {r['single_row_median']:.2f}x, bulk {r['bulk']:.2f}x"
                    if name == "sknn" else "")
            lines.append(f"| {key} | {name} | {s['single_row']['median_us']:.0f} "
                         f"({s['single_row']['p99_us']:.0f}) | {s['bulk_us_per_row']:.3f} | "
                         f"{note} |")
        if "onnx_max_abs_diff" in res:
            lines[-1] = lines[-1][:-2] + (f"sknn's model exported by sknn.onnx; probabilities "
                                          f"within {res['onnx_max_abs_diff']:.1e} of sknn's |")
    lines += ["", f"A row's probabilities alone equal those it gets in the batch of {n:,}, bit "
              f"for bit: {'yes' if invariant else 'NO'}. float64 input: sknn computes in the "
              "model's float32 (returns float64), scikit-learn in float64.", "",
              "| model | one image: sknn, us | bare torch, us | fixed overhead, us | "
              "bulk: sknn / bare torch |", "|---|---:|---:|---:|---:|"]
    for name, res in (("ConvNetClassifier, digits 8x8", convnet),
                      ("PretrainedFeatureExtractor, 224x224", pretrained)):
        if res is None:
            lines.append(f"| {name} | skipped | | | |")
            continue
        s = res["single_image"]
        lines.append(f"| {name} ({res['images']} images) | {s['sknn']['median_us']:.0f} | "
                     f"{s['bare torch']['median_us']:.0f} | "
                     f"{res['single_image_overhead_us']:.0f} | {res['bulk_time_ratio']:.2f} |")
    lines += ["", "One image: sknn computes a lone image beside a zero image (an image's output "
              "is then the one it gets in any batch), so its overhead includes a second image's "
              "forward."]
    m = memory
    lines += ["", f"predict_proba of {m['rows']:,} x 100 float32 rows from a memmap: "
              f"{m['us_per_row']:.2f} us/row; peak resident memory "
              f"+{m['peak_rss_mb'] - m['rss_before_mb']:.0f} MiB = input {m['data_mb']:.0f} + "
              f"output {m['output_mb']:.0f} + {m['peak_above_input_and_output_mb']:.0f} MiB "
              f"({m['peak_above_input_and_output_mb'] / m['block_activations_mb']:.1f}x one "
              f"block's activations, {m['block_activations_mb']:.1f} MiB for "
              f"{m['block_rows']} rows); anonymous memory +{m['anon_growth_mb']:.0f} MiB "
              f"(output + {m['anon_above_output_mb']:.0f})."]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few calls and rows: a smoke test")
    parser.add_argument("--rows", type=int, default=None,
                        help="rows of the memmap (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    global SETTLE_SECONDS
    if args.quick:
        SETTLE_SECONDS = 0.05
    rounds, calls, epochs, reps = (1, 30, 1, 1) if args.quick else (3, 100, 10, 5)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    torch.set_num_threads(THREADS)
    X, y = make_data()
    if args.quick:
        X, y = X[:4000], y[:4000]
    with threadpool_limits(THREADS):
        mlp, invariant = bench_mlp(X, y, rounds, calls, epochs, reps)
        convnet = bench_convnet(args.quick, rounds, reps)
        pretrained = bench_pretrained(args.quick, rounds, 1)
    memory = bench_memmap(rows, X, y)
    meta = metadata()
    print(table(meta, mlp, invariant, convnet, pretrained, memory, rounds, calls, reps, len(X)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**meta, "benchmark": "predict", "quick": args.quick, "threads": THREADS,
                       "mlp": mlp, "batch_invariant": invariant, "convnet": convnet,
                       "pretrained": pretrained, "memmap": memory}, f, indent=2)
    return mlp


if __name__ == "__main__":
    main()
