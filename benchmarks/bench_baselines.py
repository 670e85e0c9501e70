"""sknn's MLPs against linear and SVM baselines on scikit-learn's bundled data sets.

Every model sits in ``Pipeline(StandardScaler, model)``, gets the same hyper-parameter budget
(GridSearchCV over 4 candidates, inner 3-fold CV; sknn's rows use ``sknn.model_selection``'s,
which trains the MLP fits of one shape as one stacked network) and the same outer folds (5-fold, shuffled,
random_state=0; stratified for classification). Reports the outer-CV score (accuracy, or R² for
regression) and the median time to fit one GridSearchCV.

    python benchmarks/bench_baselines.py [--quick] [--json PATH]
"""

import argparse
import json
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits, load_iris,
                              load_wine, make_regression)
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR

import sknn
import sknn.model_selection
from _meta import metadata

C_GRID = {"model__C": [0.01, 0.1, 1.0, 10.0]}
CLASSIFIERS = {
    "LogisticRegression": (lambda: LogisticRegression(max_iter=5000), C_GRID),
    "LinearSVC": (lambda: LinearSVC(max_iter=20000), C_GRID),
    "SVC (RBF)": (lambda: SVC(), {"model__C": [1.0, 10.0], "model__gamma": ["scale", 0.01]}),
    "sknn MLPClassifier": (lambda: sknn.MLPClassifier(random_state=0, device="cpu"),
                           {"model__hidden_layer_sizes": [(32,), (128,)],
                            "model__alpha": [1e-3, 1.0]}),
}
REGRESSORS = {
    "Ridge": (lambda: Ridge(), {"model__alpha": [0.1, 1.0, 10.0, 100.0]}),
    "LinearSVR": (lambda: LinearSVR(max_iter=20000), C_GRID),
    "SVR (RBF)": (lambda: SVR(), {"model__C": [1.0, 10.0], "model__gamma": ["scale", 0.01]}),
    "sknn MLPRegressor": (lambda: sknn.MLPRegressor(random_state=0, device="cpu", max_iter=500),
                          {"model__hidden_layer_sizes": [(32,), (128,)],
                           "model__alpha": [1e-3, 1.0]}),
}


def datasets(quick):
    regression = make_regression(n_samples=2000, n_features=20, n_informative=10, noise=10.0,
                                 random_state=0)
    diabetes = load_diabetes(return_X_y=True)
    data = {
        "iris": (*load_iris(return_X_y=True), "classification"),
        "wine": (*load_wine(return_X_y=True), "classification"),
        "breast_cancer": (*load_breast_cancer(return_X_y=True), "classification"),
        "digits": (*load_digits(return_X_y=True), "classification"),
        "diabetes": (diabetes[0], (diabetes[1] - diabetes[1].mean()) / diabetes[1].std(),
                     "regression"),
        "make_regression": (regression[0], regression[1] / regression[1].std(), "regression"),
    }
    return {k: data[k] for k in ("iris", "diabetes")} if quick else data


def run(quick=False, progress=True):
    results = []
    plan = []
    for name, (X, y, task) in datasets(quick).items():
        models = CLASSIFIERS if task == "classification" else REGRESSORS
        splitter = (StratifiedKFold if task == "classification" else KFold)(
            3 if quick else 5, shuffle=True, random_state=0)
        folds = list(splitter.split(X, y))
        plan += [(name, X, y, task, model, folds) for model in models]
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(plan), disable=not progress, desc="baselines")
    except ImportError:
        bar = None
    for name, X, y, task, model, folds in plan:
        make, grid = (CLASSIFIERS if task == "classification" else REGRESSORS)[model]
        scores, seconds = [], []
        for train, test in folds:
            # sknn's rows use its fused search, which trains their fits as stacked networks
            search_class = (sknn.model_selection.GridSearchCV if model.startswith("sknn")
                            else GridSearchCV)
            search = search_class(Pipeline([("scale", StandardScaler()), ("model", make())]),
                                  grid, cv=3)
            tic = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                search.fit(X[train], y[train])
            seconds.append(time.perf_counter() - tic)
            scores.append(float(search.score(X[test], y[test])))
        results.append({"data": name, "task": task, "model": model,
                        "score": float(np.mean(scores)), "score_std": float(np.std(scores)),
                        "fit_seconds": statistics.median(seconds), "folds": len(folds)})
        if bar is not None:
            bar.set_postfix_str(f"{name} / {model}: {np.mean(scores):.3f}")
            bar.update()
    if bar is not None:
        bar.close()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="iris and diabetes, 3 folds")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    results = run(args.quick)
    print("\n| data | model | score (mean ± std) | fit time (s, median per GridSearchCV) |")
    print("|---|---|---:|---:|")
    for r in results:
        metric = "accuracy" if r["task"] == "classification" else "R²"
        print(f"| {r['data']} | {r['model']} | {metric} {r['score']:.4f} ± {r['score_std']:.4f} "
              f"| {r['fit_seconds']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "baselines", "quick": args.quick,
                       "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
