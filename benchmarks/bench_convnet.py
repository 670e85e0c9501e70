"""ConvNetClassifier on scikit-learn's digits (8x8), against SVC, LogisticRegression and sknn's MLP.

5-fold stratified CV (shuffle, random_state=0), the same folds for every model; accuracy and fit
time per fold, on the CPU. Every model uses its defaults except where noted below; the images go
in as float32 in [0, 1] (sknn's fast path; scikit-learn's models get the same values).

    python benchmarks/bench_convnet.py [--seeds 5] [--json PATH]

--seeds k also fits the ConvNet with random_state 1 .. k-1 on the same folds and reports the
spread of its mean accuracy over seeds (the headline row is random_state=0).
"""

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import sknn
from _meta import metadata

MODELS = {
    "ConvNetClassifier (defaults)": lambda: sknn.ConvNetClassifier(random_state=0, device="cpu"),
    "SVC (RBF, gamma=0.001, raw pixels)": lambda: SVC(gamma=0.001),
    "LogisticRegression (standardized)": lambda: make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000)),
    "sknn MLPClassifier (standardized)": lambda: make_pipeline(
        StandardScaler(), sknn.MLPClassifier(random_state=0, device="cpu")),
}


def openml_run(name):
    from datasets import DatasetUnavailable, load_openml_images
    try:
        images, labels = load_openml_images(name)
    except DatasetUnavailable as e:
        print(f"\n{e}")
        return {"data": name, "available": False}
    rng = np.random.RandomState(0)
    pick = rng.choice(len(images), size=min(10_000, len(images)), replace=False)
    images, labels = images[pick], labels[pick]
    accs = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(images, labels):
        clf = sknn.ConvNetClassifier(random_state=0, max_iter=20).fit(images[train], labels[train])
        accs.append(float(clf.score(images[test], labels[test])))
    print(f"\n{name}: ConvNetClassifier(max_iter=20) 3-fold accuracy {np.mean(accs):.4f}")
    return {"data": name, "available": True, "accuracy": accs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--folds", type=int, default=5, help="run only the first k folds")
    parser.add_argument("--openml", choices=["mnist", "fashion-mnist", "cifar-10"],
                        help="also run the ConvNet on this OpenML image set (a 10,000-image "
                             "sample, 3-fold CV) when it is cached or downloadable")
    parser.add_argument("--seeds", type=int, default=1,
                        help="also fit the ConvNet with random_state 1 .. seeds-1")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    torch.set_num_threads(2)

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_svc = X * 16.0  # SVC's gamma=0.001 is tuned for the raw 0-16 pixel values
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))[:args.folds]
    results = {name: {"accuracy": [], "fit_seconds": []} for name in MODELS}
    for k, (train, test) in enumerate(folds):
        for name, make in MODELS.items():
            data = X_svc if name.startswith("SVC") else X
            model = make()
            tic = time.perf_counter()
            model.fit(data[train], y[train])
            results[name]["fit_seconds"].append(time.perf_counter() - tic)
            results[name]["accuracy"].append(float(model.score(data[test], y[test])))
            print(f"fold {k + 1}: {name:36s} accuracy {results[name]['accuracy'][-1]:.4f} "
                  f"fit {results[name]['fit_seconds'][-1]:6.2f} s", flush=True)

    seed_means = [float(np.mean(results["ConvNetClassifier (defaults)"]["accuracy"]))]
    for seed in range(1, args.seeds):
        accs = []
        for train, test in folds:
            clf = sknn.ConvNetClassifier(random_state=seed, device="cpu").fit(X[train], y[train])
            accs.append(clf.score(X[test], y[test]))
        seed_means.append(float(np.mean(accs)))
        print(f"ConvNetClassifier random_state={seed}: mean accuracy {seed_means[-1]:.4f}",
              flush=True)

    print(f"\nDigits (8x8), {len(folds)}-fold stratified CV, 2 CPU threads")
    print("| model | accuracy (mean ± std) | fit time per fold (s, median) |")
    print("|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {np.mean(r['accuracy']):.4f} ± {np.std(r['accuracy']):.4f} | "
              f"{statistics.median(r['fit_seconds']):.2f} |")
    if args.openml:
        results["openml"] = openml_run(args.openml)
    if args.seeds > 1:
        print(f"\nConvNetClassifier mean CV accuracy over random_state 0..{args.seeds - 1}: "
              f"{np.mean(seed_means):.4f} (min {min(seed_means):.4f}, max {max(seed_means):.4f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "convnet_digits", "convnet_accuracy_by_seed": seed_means, "folds": len(folds),
                       "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
