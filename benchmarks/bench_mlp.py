"""MLP training speed: sknn vs scikit-learn's MLPClassifier vs skorch (when installed).

Workload: make_classification(n_samples=30000, n_features=100, n_informative=60, n_classes=10,
random_state=0) as float32, first 24,000 rows to train, the rest to test; hidden (256, 128), relu,
adam, learning rate 1e-3, batch 200, 10 epochs, tol=0, 2 CPU threads. The libraries run
interleaved, round after round, so that machine noise hits them alike; we report medians.

    python benchmarks/bench_mlp.py [--rounds 7] [--device cpu|cuda] [--json PATH]
"""

import argparse
import json
import statistics
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(THREADS)
    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y, Xt, yt = make_data()
    runners = {"sknn": fit_sknn(args.device), "scikit-learn": fit_sklearn}
    skorch = skorch_runner(args.device)
    if skorch is not None:
        runners["skorch"] = skorch
    results = {name: {"ms_per_epoch": [], "accuracy": []} for name in runners}
    with threadpool_limits(THREADS):
        for run in runners.values():  # warm-up, for every library alike: first-call costs
            run(X[:2000], y[:2000], Xt, yt, 0)
        for r in range(args.rounds):
            for name, run in runners.items():
                # Let the last library's worker threads go idle first: OpenBLAS's and OpenMP's
                # spin for a while after their last call, and took the cores from the next
                # library's fit (sknn right after a scikit-learn fit: 84 ms per epoch, 66 after
                # a 1 s pause, on a 2-core Intel Xeon).
                time.sleep(SETTLE_SECONDS)
                sec, acc = run(X, y, Xt, yt, r)
                results[name]["ms_per_epoch"].append(1000 * sec)
                results[name]["accuracy"].append(acc)
                print(f"round {r + 1}/{args.rounds} {name:13s} {1000 * sec:7.1f} ms/epoch  "
                      f"accuracy {acc:.4f}", file=sys.stderr)

    med = {n: statistics.median(r["ms_per_epoch"]) for n, r in results.items()}
    acc = {n: statistics.median(r["accuracy"]) for n, r in results.items()}
    # Ratios are taken within each round (side by side, same machine state), then the median.
    ratios = {n: statistics.median(a / b for a, b in zip(results["sknn"]["ms_per_epoch"],
                                                         results[n]["ms_per_epoch"]))
              for n in results}
    print(f"\nMLP training, 24,000 x 100 float32, hidden (256, 128), adam, batch 200, "
          f"{EPOCHS} epochs, {THREADS} threads, device={args.device}, median of {args.rounds} "
          "interleaved rounds")
    print("| library | ms/epoch | sknn's time / this one's | test accuracy |")
    print("|---|---:|---:|---:|")
    for name in results:
        print(f"| {name} | {med[name]:.1f} | {ratios[name]:.2f} | {acc[name]:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            meta = metadata()
            meta["versions"]["skorch"] = _skorch_version()
            json.dump({**meta, "benchmark": "mlp_speed", "device": args.device,
                       "rounds": args.rounds,
                       "blas": [{k: d.get(k) for k in ("internal_api", "version",
                                                       "architecture", "num_threads")}
                                for d in threadpool_info()],
                       "results": results,
                       "median_ms_per_epoch": med, "median_accuracy": acc,
                       "median_sknn_time_ratio": ratios}, f, indent=2)
    return med, acc


if __name__ == "__main__":
    main()
