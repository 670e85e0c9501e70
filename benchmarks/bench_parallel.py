"""Grid search in parallel: GridSearchCV(n_jobs=2) vs n_jobs=1 over sknn's MLPClassifier.

Digits (standardized), 8 parameter combinations x 3 folds, interleaved rounds, medians; prints
each worker's torch thread count, so oversubscription (2 workers x 2 threads on 2 cores) shows.

Two pools: cold, a fresh Python process per search, as a user's script runs it (the n_jobs=2
search starts its workers, and each imports torch); and warm, searches in one process whose
worker pool has started already. The cold runs also time the bare start of two workers that
unpickle an MLPClassifier (so import torch and sknn): the floor of a cold n_jobs=2 search.

    python benchmarks/bench_parallel.py [--rounds 3] [--json PATH]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
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


def load():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


def _unpickled(estimator):
    return type(estimator).__name__


def cold_run(n_jobs):
    """In this fresh process: one search (n_jobs >= 1), or the start of two workers that
    unpickle an MLPClassifier (n_jobs=0). Prints the seconds as JSON."""
    X, y = load()
    if n_jobs == 0:
        tic = time.perf_counter()
        joblib.Parallel(n_jobs=2)(joblib.delayed(_unpickled)(MLPClassifier()) for _ in range(2))
        seconds, score = time.perf_counter() - tic, None
    else:
        seconds, score = search(X, y, n_jobs)
    print(json.dumps({"seconds": seconds, "score": score}))


def cold(n_jobs):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--cold-run", str(n_jobs)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


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
    parser.add_argument("--cold-run", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_run is not None:
        return cold_run(args.cold_run)
    X, y = load()
    threads = joblib.Parallel(n_jobs=2)(joblib.delayed(worker_threads)(i) for i in range(2))
    print(f"cores: {os.cpu_count()}, torch threads here: {torch.get_num_threads()}, "
          f"in n_jobs=2 workers: {threads}")
    search(X, y, 2)  # start the worker pool once, for the warm runs
    times = {"cold": {1: [], 2: []}, "warm": {1: [], 2: []}, "worker_start": []}
    for r in range(args.rounds):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        for n_jobs in order:
            times["cold"][n_jobs].append(cold(n_jobs))
        times["worker_start"].append(cold(0))
        for n_jobs in order:
            times["warm"][n_jobs].append(search(X, y, n_jobs)[0])
        print(f"round {r + 1}: cold n_jobs=1 {times['cold'][1][-1]:.2f} s, n_jobs=2 "
              f"{times['cold'][2][-1]:.2f} s, two workers' start {times['worker_start'][-1]:.2f}"
              f" s; warm n_jobs=1 {times['warm'][1][-1]:.2f} s, n_jobs=2 "
              f"{times['warm'][2][-1]:.2f} s", flush=True)
    ratios = {pool: statistics.median(b / a for a, b in zip(t[1], t[2]))
              for pool, t in times.items() if pool != "worker_start"}
    med = {pool: {n: statistics.median(v) for n, v in t.items()}
           for pool, t in times.items() if pool != "worker_start"}
    start = statistics.median(times["worker_start"])
    print(f"\nGridSearchCV over sknn's MLPClassifier, digits, 8 candidates x 3 folds, median of "
          f"{args.rounds} rounds")
    print("| pool | n_jobs=1 (s) | n_jobs=2 (s) | n_jobs=2 / n_jobs=1 |")
    print("|---|---:|---:|---:|")
    for pool in ("cold", "warm"):
        print(f"| {pool} | {med[pool][1]:.2f} | {med[pool][2]:.2f} | {ratios[pool]:.2f} |")
    print(f"\nStarting two workers that import torch and sknn: {start:.2f} s (median); the cold "
          f"n_jobs=2 search cannot take less than this plus half of n_jobs=1's time: "
          f"{(start + med['cold'][1] / 2) / med['cold'][1]:.2f}x.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "parallel_grid_search", "worker_threads": threads,
                       "seconds": times, "ratio": ratios, "median_seconds": med,
                       "worker_start_seconds": start}, f, indent=2)
    return ratios


if __name__ == "__main__":
    main()
