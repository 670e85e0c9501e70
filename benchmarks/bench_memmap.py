"""Training from a numpy memmap bigger than we want to load: 1,000,000 x 100 float32 (400 MB).

The data is written to a temporary memmap file chunk by chunk; a fresh process then fits
sknn's MLPClassifier on it (2 epochs, CPU) and reports its peak resident memory (VmHWM) next to
its memory right after the imports, and the data's size. The memmap is not copied: sknn's
tensors share its pages, and minibatches are gathered from it row by row.

    python benchmarks/bench_memmap.py [--rows 1000000] [--json PATH]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from _meta import RSS_MB_SOURCE, metadata

CHILD = RSS_MB_SOURCE + r"""
import sys, time, warnings
import numpy as np

import torch, sknn
torch.set_num_threads(2)
base = rss_mb("VmRSS")
path, rows = sys.argv[1], int(sys.argv[2])
X = np.memmap(path + ".X", dtype=np.float32, mode="r", shape=(rows, 100))
y = np.memmap(path + ".y", dtype=np.int64, mode="r", shape=(rows,))
tic = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    clf = sknn.MLPClassifier((64,), max_iter=2, random_state=0, device="cpu").fit(X, y)
seconds = time.perf_counter() - tic
acc = clf.score(X[:20000], y[:20000])
print(base, rss_mb("VmHWM"), seconds, acc)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rng = np.random.RandomState(0)
    w = rng.randn(100)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data")
        X = np.memmap(path + ".X", dtype=np.float32, mode="w+", shape=(args.rows, 100))
        y = np.memmap(path + ".y", dtype=np.int64, mode="w+", shape=(args.rows,))
        for start in range(0, args.rows, 100_000):
            chunk = rng.randn(min(100_000, args.rows - start), 100).astype(np.float32)
            X[start:start + len(chunk)] = chunk
            y[start:start + len(chunk)] = (chunk @ w > 0).astype(np.int64)
        X.flush()
        y.flush()
        del X, y
        out = subprocess.run([sys.executable, "-c", CHILD, path, str(args.rows)],
                             capture_output=True, text=True, check=True).stdout.split()
    base, peak, seconds, acc = (float(v) for v in out)
    data_mb = args.rows * 100 * 4 / 2**20
    print(f"data: {args.rows:,} x 100 float32 memmap = {data_mb:.0f} MB")
    print(f"process memory after imports: {base:.0f} MB; peak during fit: {peak:.0f} MB "
          f"(+{peak - base:.0f} MB, {(peak - base) / data_mb:.2f}x the data)")
    print(f"fit: 2 epochs in {seconds:.1f} s; training accuracy on 20,000 rows {acc:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "memmap", "rows": args.rows, "data_mb": data_mb, "rss_after_imports_mb": base,
                       "peak_rss_mb": peak, "fit_seconds": seconds, "accuracy": acc}, f, indent=2)


if __name__ == "__main__":
    main()
