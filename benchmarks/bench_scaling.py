"""Fit time and peak memory against n_samples (1k -> 1M), sknn vs scikit-learn's MLP, SVC and
LogisticRegression.

Data: make_classification(n_samples, n_features=20, n_informative=10, n_classes=2,
random_state=0) as float32. MLPs: hidden (64,), adam, batch 200, 5 epochs, tol=0. Each fit runs
in a fresh process that reports its peak resident memory (VmHWM) above its memory after the
imports, the float32 data included (the peak is restarted once the data is made, so that
generating it does not count). A model stops growing once its next fit would pass the time
cap, projected from how its time grew over the last step (SVC's grows about quadratically).
sknn's memory budget: peak <= 2x the data + model + 300 MB.

    python benchmarks/bench_scaling.py [--quick] [--cap 60] [--json PATH]
"""

import argparse
import json
import subprocess
import sys

from _meta import RSS_MB_SOURCE, metadata

CHILD = RSS_MB_SOURCE + r"""
import sys, time, warnings
import numpy as np

from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.svm import SVC
import torch, sknn
torch.set_num_threads(2)
name, n = sys.argv[1], int(sys.argv[2])
base = rss_mb("VmRSS")
X, y = make_classification(n_samples=n, n_features=20, n_informative=10, random_state=0)
X = X.astype(np.float32)
import gc; gc.collect()
with open("/proc/self/clear_refs", "w") as f:  # restart the peak from here: data in memory
    f.write("5")
mlp = dict(hidden_layer_sizes=(64,), batch_size=200, max_iter=5, tol=0, random_state=0)
model = {"sknn MLPClassifier": lambda: sknn.MLPClassifier(device="cpu", **mlp),
         "scikit-learn MLPClassifier": lambda: SkMLP(**mlp),
         "SVC (RBF)": lambda: SVC(),
         "LogisticRegression": lambda: LogisticRegression(max_iter=200)}[name]()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    tic = time.perf_counter()
    model.fit(X, y)
    seconds = time.perf_counter() - tic
print(seconds, rss_mb("VmHWM") - base, X.nbytes / 2**20, model.score(X[:10000], y[:10000]))
"""

MODELS = ["sknn MLPClassifier", "scikit-learn MLPClassifier", "LogisticRegression", "SVC (RBF)"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k rows only")
    parser.add_argument("--cap", type=float, default=60.0,
                        help="seconds: a model whose next fit is projected to take longer "
                             "stops growing")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    rows, capped, last = [], set(), {}
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(sizes) * len(MODELS), desc="scaling")
    except ImportError:
        bar = None
    for n in sizes:
        for name in MODELS:
            if name in capped:
                if bar is not None:
                    bar.update()
                continue
            out = subprocess.run([sys.executable, "-c", CHILD, name, str(n)], check=True,
                                 capture_output=True, text=True).stdout.split()
            seconds, peak, data_mb, acc = (float(v) for v in out)
            rows.append({"model": name, "n_samples": n, "fit_seconds": seconds,
                         "peak_mb_above_imports": peak, "data_mb": data_mb,
                         "accuracy": acc})
            # The next size is 10x: project its time with the growth of this step.
            growth = seconds / last[name] if last.get(name) else 10.0
            if seconds * max(growth, 1.0) > args.cap:
                capped.add(name)
            last[name] = seconds
            if bar is not None:
                bar.set_postfix_str(f"{name} {n:,}: {seconds:.1f} s")
                bar.update()
    if bar is not None:
        bar.close()

    print("\n| model | n_samples | fit (s) | peak memory above imports (MB) | data (MB) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['n_samples']:,} | {r['fit_seconds']:.2f} | "
              f"{r['peak_mb_above_imports']:.0f} | {r['data_mb']:.1f} |")
    budget = [r for r in rows if r["model"] == "sknn MLPClassifier"]
    ok = all(r["peak_mb_above_imports"] <= 2 * r["data_mb"] + 300 for r in budget)
    print(f"\nsknn within its memory budget (peak <= 2x data + model + 300 MB): {ok}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "scaling", "time_cap_seconds": args.cap, "results": rows,
                       "sknn_within_memory_budget": ok}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
