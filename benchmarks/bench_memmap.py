"""Training from a numpy memmap bigger than we want to load: 1,000,000 x 100 float32 (381 MiB).

The data is written to a temporary memmap file chunk by chunk; then, for each of
``early_stopping=False`` and ``True``, a fresh process fits sknn's MLPClassifier on it (2 epochs,
CPU) while a thread samples its anonymous resident memory (``RssAnon``: the heap, not the
memmap's file-backed pages). It reports that memory's peak growth during the fit, the peak
resident memory (``VmHWM``, which counts the memmap's pages read too) next to the resident memory
right before the fit, and the data's size. The memmap is not copied: sknn's tensor shares its
pages, minibatches are gathered from it one by one, and early stopping's training rows are
gathered by index (only the 10% held out are copied).

Data at most ``sknn._data.GATHER_LIMIT`` (256 MiB) in size would be gathered into one shuffled
copy per epoch instead: so that the benchmark always measures the batch-by-batch path, the limit
is lowered to a quarter of the data's size for smaller data (``--quick``: 100,000 rows, 38 MiB)
unless ``--gather-limit-mb`` says otherwise.

    python benchmarks/bench_memmap.py [--quick] [--rows N] [--gather-limit-mb MB] [--json PATH]
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
from sknn import _data
torch.set_num_threads(2)
path, rows, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
early_stopping = sys.argv[4] == "1"
_data.GATHER_LIMIT = limit
X = np.memmap(path + ".X", dtype=np.float32, mode="r", shape=(rows, 100))
y = np.memmap(path + ".y", dtype=np.int64, mode="r", shape=(rows,))
base = rss_mb("VmRSS")
with AnonGrowth(0.005) as anon, warnings.catch_warnings():
    warnings.simplefilter("ignore")
    tic = time.perf_counter()
    clf = sknn.MLPClassifier((64,), max_iter=2, random_state=0, device="cpu",
                             early_stopping=early_stopping).fit(X, y)
    seconds = time.perf_counter() - tic
acc = clf.score(X[:20000], y[:20000])
print(base, rss_mb("VmHWM"), anon.mb, seconds, acc)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None,
                        help="rows of 100 float32 (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="100,000 rows (38 MiB)")
    parser.add_argument("--gather-limit-mb", type=float, default=None,
                        help="sknn._data.GATHER_LIMIT in MiB for the fits (default: sknn's, or a "
                             "quarter of the data where that is not below it)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    data_bytes = rows * 100 * 4
    data_mb = data_bytes / 2**20
    if args.gather_limit_mb is not None:
        limit = int(args.gather_limit_mb * 2**20)
    else:
        from sknn._data import GATHER_LIMIT
        limit = GATHER_LIMIT if data_bytes > GATHER_LIMIT else data_bytes // 4
    path_kind = "batch by batch" if data_bytes > limit else "one shuffled copy per epoch"
    print(f"data: {rows:,} x 100 float32 memmap = {data_mb:.0f} MiB; gather limit "
          f"{limit / 2**20:.0f} MiB: minibatches gathered {path_kind}")

    rng = np.random.RandomState(0)
    w = rng.randn(100)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data")
        X = np.memmap(path + ".X", dtype=np.float32, mode="w+", shape=(rows, 100))
        y = np.memmap(path + ".y", dtype=np.int64, mode="w+", shape=(rows,))
        for start in range(0, rows, 100_000):
            chunk = rng.randn(min(100_000, rows - start), 100).astype(np.float32)
            X[start:start + len(chunk)] = chunk
            y[start:start + len(chunk)] = (chunk @ w > 0).astype(np.int64)
        X.flush()
        y.flush()
        del X, y
        for early_stopping in (False, True):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, path, str(rows), str(limit),
                 str(int(early_stopping))], capture_output=True, text=True, check=True)
            base, peak, anon, seconds, acc = (float(v) for v in out.stdout.split())
            name = "early_stopping" if early_stopping else "plain"
            runs[name] = {"early_stopping": early_stopping, "rss_before_fit_mb": base,
                          "peak_rss_mb": peak, "anon_growth_mb": anon, "fit_seconds": seconds,
                          "accuracy": acc}
            print(f"early_stopping={early_stopping}: anonymous memory +{anon:.0f} MiB during fit "
                  f"({anon / data_mb:.2f}x the data); resident memory {base:.0f} MiB before fit, "
                  f"peak {peak:.0f} MiB (+{peak - base:.0f} MiB, memmap pages included); "
                  f"2 epochs in {seconds:.1f} s; training accuracy on 20,000 rows {acc:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "memmap", "rows": rows, "data_mb": data_mb,
                       "gather_limit_mb": limit / 2**20, "per_batch": data_bytes > limit,
                       "runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
