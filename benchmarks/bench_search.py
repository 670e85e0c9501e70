"""Hyper-parameter search: sknn's fused GridSearchCV / RandomizedSearchCV against scikit-learn's.

Main grid (the issue's): digits as float32, ``Pipeline(StandardScaler(), MLPClassifier(max_iter=100,
random_state=0))``, ``hidden_layer_sizes`` [(64,), (128,), (256,)] x ``learning_rate_init``
[1e-3, 3e-3, 1e-2, 3e-2], cv=5 (60 fits). Three contenders, in interleaved rounds:

- ``fused``: ``sknn.model_selection.GridSearchCV`` over sknn's MLPClassifier;
- ``sklearn+sknn``: scikit-learn's GridSearchCV over sknn's MLPClassifier (one fit at a time);
- ``sklearn``: scikit-learn's GridSearchCV over scikit-learn's MLPClassifier.

Also: the same grid at n_jobs=2, and a RandomizedSearchCV (20 candidates, log-uniform learning
rates and alphas, one architecture). Ratios are taken within each round, then the median.
After the main grid's rounds, one more fused search runs under torch's profiler, and its refit
alone: the time of its products and of the refit, set beside the other searches' (a floor on
the fused search's time, see ``floor``). Every JSON records the machine's speed at the time
(``_meta.machine_speed``).

    python benchmarks/bench_search.py [--rounds 3] [--quick] [--json PATH]
"""

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from scipy.stats import loguniform
from sklearn import model_selection as skms
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sknn import MLPClassifier
from sknn import model_selection as fused
from _meta import metadata

GRID = {"mlpclassifier__hidden_layer_sizes": [(64,), (128,), (256,)],
        "mlpclassifier__learning_rate_init": [1e-3, 3e-3, 1e-2, 3e-2]}
DISTRIBUTIONS = {"mlpclassifier__learning_rate_init": loguniform(1e-4, 1e-1),
                 "mlpclassifier__alpha": loguniform(1e-6, 1e-1)}


def pipeline(mlp_class, max_iter):
    return make_pipeline(StandardScaler(), mlp_class(max_iter=max_iter, random_state=0))


def run(kind, X, y, *, search, max_iter, cv, n_jobs, n_iter, refit=True):
    module = fused if kind == "fused" else skms
    est = pipeline(SkMLPClassifier if kind == "sklearn" else MLPClassifier, max_iter)
    if search == "grid":
        s = module.GridSearchCV(est, GRID, cv=cv, n_jobs=n_jobs, refit=refit)
    else:
        grid = dict(DISTRIBUTIONS, mlpclassifier__hidden_layer_sizes=[(128,)])
        s = module.RandomizedSearchCV(est, grid, n_iter=n_iter, cv=cv, n_jobs=n_jobs,
                                      random_state=0, refit=refit)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        s.fit(X, y)
    return time.perf_counter() - tic, s


def scenario(name, X, y, kinds, rounds, **kw):
    print(f"\n-- {name}: {kw}", flush=True)
    times = {k: [] for k in kinds}
    searches = {}
    for r in range(rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for kind in order:
            time.sleep(1.0)  # the last search's worker threads go idle (see bench_mlp.py)
            seconds, s = run(kind, X, y, **kw)
            times[kind].append(seconds)
            searches[kind] = s
            print(f"round {r + 1}: {kind:13s} {seconds:7.2f} s  best {s.best_params_}  "
                  f"score {s.best_score_:.4f}", flush=True)
    out = {"settings": kw, "seconds": times,
           "median_seconds": {k: statistics.median(v) for k, v in times.items()},
           "best_params": {k: {p: repr(v) for p, v in s.best_params_.items()}
                           for k, s in searches.items()},
           "best_score": {k: s.best_score_ for k, s in searches.items()}}
    ref = searches.get("sklearn+sknn")
    for other in kinds:
        if other == "fused":
            continue
        ratios = [a / b for a, b in zip(times["fused"], times[other])]
        out[f"fused/{other}"] = statistics.median(ratios)
        out[f"same_best_params_as_{other}"] = searches["fused"].best_params_ == \
            searches[other].best_params_
        print(f"fused takes {out[f'fused/{other}']:.3f}x the time of {other} (median of "
              f"{rounds}; rounds {', '.join(f'{x:.3f}' for x in ratios)}); same best_params_: "
              f"{out[f'same_best_params_as_{other}']}")
    if ref is not None:
        keys = [k for k in ref.cv_results_ if k.startswith("split") and "test" in k]
        diff = max(float(np.max(np.abs(searches["fused"].cv_results_[k] - ref.cv_results_[k])))
                   for k in keys)
        out["max_split_score_difference_vs_sklearn+sknn"] = diff
        print(f"largest per-split test-score difference, fused vs sklearn+sknn: {diff:.2g}")
    return out


PRODUCTS = ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm")


def floor(X, y, out, **kw):
    """Where the fused main grid's time goes: one more fused search, without its refit, under
    torch's profiler (which slows it: its total is not a timing), with the self time of its
    products, the arithmetic every fit needs, and of its Adam updates; and the refit, timed
    alone and unprofiled (one ordinary fit of the best candidate on all the data, which every
    search makes). Set beside the scikit-learn searches' median times, products plus refit give
    a floor on the fused search's time that no cut in overhead can pass."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        seconds, s = run("fused", X, y, refit=False, **kw)
    self_s = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    products = sum(self_s.get(k, 0.0) for k in PRODUCTS)
    best = pipeline(MLPClassifier, kw["max_iter"]).set_params(**s.best_params_)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        best.fit(X, y)  # as the search's refit fits it
    refit = time.perf_counter() - tic
    result = {"profiled_seconds": seconds, "products_seconds": products,
              "adam_seconds": self_s.get("aten::_fused_adam_", 0.0), "refit_seconds": refit}
    for other in ("sklearn+sknn", "sklearn"):
        ref = out["median_seconds"][other]
        result[f"(products+refit)/{other}"] = (products + refit) / ref
        result[f"0.2x_{other}_seconds"] = 0.2 * ref
    print(f"floor: products {products:.2f} s, Adam {result['adam_seconds']:.2f} s (profiled "
          f"search without refit, {seconds:.2f} s in all), refit {refit:.2f} s; products + refit = "
          f"{result['(products+refit)/sklearn+sknn']:.3f}x sklearn+sknn's median time, "
          f"{result['(products+refit)/sklearn']:.3f}x sklearn's")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small settings: a smoke test")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float32)
    max_iter, cv, n_iter = (100, 5, 20) if not args.quick else (5, 2, 4)
    rounds = args.rounds if not args.quick else 1
    print(f"torch {torch.__version__}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    with warnings.catch_warnings():  # warm-up: imports, first kernels, the worker pool
        warnings.simplefilter("ignore", ConvergenceWarning)
        for kind in ("fused", "sklearn+sknn", "sklearn"):
            run(kind, X[:200], y[:200], search="grid", max_iter=2, cv=2, n_jobs=1, n_iter=2)
        run("fused", X[:200], y[:200], search="grid", max_iter=2, cv=2, n_jobs=2, n_iter=2)
    common = dict(max_iter=max_iter, cv=cv, n_iter=n_iter)
    meta = metadata()
    print(f"machine speed just now (see _meta.machine_speed): {meta['machine_speed']}")
    main_grid = scenario("main grid, n_jobs=1", X, y, ["fused", "sklearn+sknn", "sklearn"],
                         rounds, search="grid", n_jobs=1, **common)
    main_grid["floor"] = floor(X, y, main_grid, search="grid", n_jobs=1, **common)
    results = {**meta, "benchmark": "search",
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "main_grid": main_grid,
               "main_grid_n_jobs_2": scenario("main grid, n_jobs=2", X, y,
                                              ["fused", "sklearn+sknn", "sklearn"], rounds,
                                              search="grid", n_jobs=2, **common),
               "randomized": scenario("RandomizedSearchCV, n_iter=20, hidden (128,)", X, y,
                                      ["fused", "sklearn+sknn", "sklearn"], rounds,
                                      search="random", n_jobs=1, **common)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
