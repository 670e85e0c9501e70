"""MLP training speed: sknn vs scikit-learn's MLPClassifier vs skorch (when installed).

Workload: make_classification(n_samples=30000, n_features=100, n_informative=60, n_classes=10,
random_state=0) as float32, first 24,000 rows to train, the rest to test; hidden (256, 128), relu,
adam, learning rate 1e-3, batch 200, 10 epochs, tol=0, 2 CPU threads. The libraries run
interleaved, round after round, so that machine noise hits them alike; we report medians.

    python benchmarks/bench_mlp.py [--rounds 7] [--device cpu|cuda] [--json PATH]
    python benchmarks/bench_mlp.py --contended [--wait-policy passive]   # a core taken

--contended runs the comparison beside a process that keeps one core busy, twice: on 2
threads, and with every library under threadpool_limits(1) (the way to bound threads on a
shared machine).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLP
from threadpoolctl import threadpool_info, threadpool_limits

import sknn
from _meta import metadata

HIDDEN, EPOCHS, BATCH, LR, THREADS = (256, 128), 10, 200, 1e-3, 2
SETTLE_SECONDS = 1.0


def make_data():
    X, y = make_classification(n_samples=30000, n_features=100, n_informative=60,
                               n_classes=10, random_state=0)
    X = X.astype(np.float32)
    return X[:24000], y[:24000], X[24000:], y[24000:]


def fit_sknn(device):
    def run(X, y, Xt, yt, seed):
        clf = sknn.MLPClassifier(HIDDEN, learning_rate_init=LR, batch_size=BATCH,
                                 max_iter=EPOCHS, tol=0, random_state=seed, device=device)
        t = time.perf_counter()
        clf.fit(X, y)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
        assert clf.n_iter_ == EPOCHS
        return elapsed / EPOCHS, clf.score(Xt, yt)
    return run


def fit_sklearn(X, y, Xt, yt, seed):
    clf = SkMLP(HIDDEN, learning_rate_init=LR, batch_size=BATCH, max_iter=EPOCHS, tol=0,
                random_state=seed)
    t = time.perf_counter()
    clf.fit(X, y)
    elapsed = time.perf_counter() - t
    assert clf.n_iter_ == EPOCHS
    return elapsed / EPOCHS, clf.score(Xt, yt)


def _skorch_version():
    try:
        import skorch
    except ImportError:
        return None
    return skorch.__version__


def skorch_runner(device):
    try:
        from skorch import NeuralNetClassifier
    except ImportError:
        return None

    def run(X, y, Xt, yt, seed):
        torch.manual_seed(seed)  # skorch draws from the global generator
        module = torch.nn.Sequential(
            torch.nn.Linear(X.shape[1], HIDDEN[0]), torch.nn.ReLU(),
            torch.nn.Linear(HIDDEN[0], HIDDEN[1]), torch.nn.ReLU(),
            torch.nn.Linear(HIDDEN[1], 10))
        net = NeuralNetClassifier(
            module, criterion=torch.nn.CrossEntropyLoss, optimizer=torch.optim.Adam, lr=LR,
            batch_size=BATCH, max_epochs=EPOCHS, train_split=None,
            iterator_train__shuffle=True, verbose=0, device=device)
        y64 = y.astype(np.int64)
        t = time.perf_counter()
        net.fit(X, y64)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
        return elapsed / EPOCHS, float((net.predict(Xt) == yt).mean())
    return run


# The busy neighbour of --contended: spins on one core until its deadline (a bound, should
# this script die before it stops the process by its pid).
BUSY = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def busy_process(seconds):
    """Start a process that keeps one core busy for at most ``seconds``; returns it."""
    return subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)])


def compare(runners, data, rounds, threads):
    """Interleaved rounds of every runner under ``threadpool_limits(threads)``."""
    X, y, Xt, yt = data
    results = {name: {"ms_per_epoch": [], "accuracy": []} for name in runners}
    with threadpool_limits(threads):
        for run in runners.values():  # warm-up, for every library alike: first-call costs
            run(X[:2000], y[:2000], Xt, yt, 0)
        for r in range(rounds):
            for name, run in runners.items():
                # Let the last library's worker threads go idle first: OpenBLAS's and OpenMP's
                # spin for a while after their last call, and took the cores from the next
                # library's fit (sknn right after a scikit-learn fit: 84 ms per epoch, 66 after
                # a 1 s pause, on a 2-core Intel Xeon).
                time.sleep(SETTLE_SECONDS)
                sec, acc = run(X, y, Xt, yt, r)
                results[name]["ms_per_epoch"].append(1000 * sec)
                results[name]["accuracy"].append(acc)
                print(f"round {r + 1}/{rounds} threads={threads} {name:13s} {1000 * sec:7.1f} "
                      f"ms/epoch  accuracy {acc:.4f}", file=sys.stderr)
    return results


def summarize(results):
    med = {n: statistics.median(r["ms_per_epoch"]) for n, r in results.items()}
    acc = {n: statistics.median(r["accuracy"]) for n, r in results.items()}
    # Ratios are taken within each round (side by side, same machine state), then the median.
    ratios = {n: statistics.median(a / b for a, b in zip(results["sknn"]["ms_per_epoch"],
                                                         results[n]["ms_per_epoch"]))
              for n in results}
    return med, acc, ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--contended", action="store_true",
                        help="run beside a process that keeps one core busy, with 2 threads and "
                             "under threadpool_limits(1)")
    parser.add_argument("--wait-policy", choices=["active", "passive"], default=None,
                        help="OpenMP's OMP_WAIT_POLICY for this run (the script restarts itself "
                             "with it set: OpenMP reads it once, at start)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.wait_policy and os.environ.get("OMP_WAIT_POLICY", "").lower() != args.wait_policy:
        env = dict(os.environ, OMP_WAIT_POLICY=args.wait_policy)
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env)

    warnings.simplefilter("ignore", ConvergenceWarning)
    data = make_data()
    runners = {"sknn": fit_sknn(args.device), "scikit-learn": fit_sklearn}
    skorch = skorch_runner(args.device)
    if skorch is not None:
        runners["skorch"] = skorch
    # Threads are set by threadpoolctl only (never torch.set_num_threads, which would make
    # torch, hence skorch, ignore the limit): every library gets the same count.
    configs = [THREADS, 1] if args.contended else [THREADS]
    neighbour = busy_process(60 * (args.rounds + 2) * len(configs)) if args.contended else None
    try:
        runs = {threads: compare(runners, data, args.rounds, threads) for threads in configs}
    finally:
        if neighbour is not None:
            os.kill(neighbour.pid, signal.SIGTERM)
            neighbour.wait()

    wait = os.environ.get("OMP_WAIT_POLICY", "(default)")
    meta = metadata()
    print(f"machine speed just now (see _meta.machine_speed): {meta['machine_speed']}")
    out = {}
    for threads, results in runs.items():
        med, acc, ratios = summarize(results)
        out[threads] = dict(results=results, median_ms_per_epoch=med, median_accuracy=acc,
                            median_sknn_time_ratio=ratios)
        print(f"\nMLP training, 24,000 x 100 float32, hidden (256, 128), adam, batch 200, "
              f"{EPOCHS} epochs, threadpool_limits({threads}), device={args.device}, "
              f"{'beside a busy process, ' if args.contended else ''}OMP_WAIT_POLICY={wait}, "
              f"median of {args.rounds} interleaved rounds")
        print("| library | ms/epoch | sknn's time / this one's | test accuracy |")
        print("|---|---:|---:|---:|")
        for name in results:
            print(f"| {name} | {med[name]:.1f} | {ratios[name]:.2f} | {acc[name]:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            meta["versions"]["skorch"] = _skorch_version()
            first = out[THREADS]
            json.dump({**meta, "benchmark": "mlp_speed", "device": args.device,
                       "rounds": args.rounds, "contended": args.contended,
                       "omp_wait_policy": wait,
                       "blas": [{k: d.get(k) for k in ("internal_api", "version",
                                                       "architecture", "num_threads")}
                                for d in threadpool_info()],
                       **first, "by_threads": out}, f, indent=2)
    first = out[THREADS]
    return first["median_ms_per_epoch"], first["median_accuracy"]


if __name__ == "__main__":
    main()
