"""Grid search in parallel: GridSearchCV(n_jobs=2) vs n_jobs=1 over sknn's MLPClassifier.

Digits (standardized), 8 parameter combinations x 3 folds, interleaved rounds, medians; prints
each worker's torch thread count, so oversubscription (2 workers x 2 threads on 2 cores) shows.

    python benchmarks/bench_parallel.py [--rounds 3] [--json PATH]
"""

import argparse
import json
import os
import statistics
import time
import warnings

import joblib
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

from sknn import MLPClassifier
from _meta import metadata

GRID = {"hidden_layer_sizes": [(64,), (128,), (128, 64), (256,)],
        "learning_rate_init": [1e-3, 3e-3]}


def worker_threads(_):
    return torch.get_num_threads()


def search(X, y, n_jobs):
    grid = GridSearchCV(MLPClassifier(max_iter=60, random_state=0, device="cpu"), GRID, cv=3,
                        n_jobs=n_jobs)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    return time.perf_counter() - tic, grid.best_score_


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    threads = joblib.Parallel(n_jobs=2)(joblib.delayed(worker_threads)(i) for i in range(2))
    print(f"cores: {os.cpu_count()}, torch threads here: {torch.get_num_threads()}, "
          f"in n_jobs=2 workers: {threads}")
    search(X, y, 2)  # start the worker pool once
    times = {1: [], 2: []}
    for r in range(args.rounds):
        for n_jobs in (1, 2) if r % 2 == 0 else (2, 1):
            seconds, score = search(X, y, n_jobs)
            times[n_jobs].append(seconds)
            print(f"round {r + 1}: n_jobs={n_jobs} {seconds:.2f} s (best score {score:.4f})",
                  flush=True)
    ratio = statistics.median(b / a for a, b in zip(times[1], times[2]))
    print(f"\nn_jobs=2 takes {ratio:.2f}x the time of n_jobs=1 (median of {args.rounds} rounds; "
          f"medians {statistics.median(times[1]):.2f} s vs {statistics.median(times[2]):.2f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "parallel_grid_search", "worker_threads": threads, "seconds": times, "ratio": ratio}, f, indent=2)
    return ratio


if __name__ == "__main__":
    main()
