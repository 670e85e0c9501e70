"""The same grid search on a dask.distributed cluster (joblib's dask backend) as with n_jobs=1.

A LocalCluster with 2 worker processes of 1 thread each stands in for a cluster of machines;
the search must find the same best parameters and score as the single-process run. Where Ray
is installed, the search also runs on Ray's joblib backend (a local Ray with 2 CPUs).

    python benchmarks/bench_distributed.py [--json PATH]
"""

import argparse
import json
import time
import warnings

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

from sknn import MLPClassifier
from _meta import metadata

GRID = {"hidden_layer_sizes": [(32,), (64,)], "learning_rate_init": [1e-3, 1e-2]}


def grid_search(X, y, **kw):
    search = GridSearchCV(MLPClassifier(max_iter=40, random_state=0, device="cpu"), GRID, cv=3,
                          **kw)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    return search, time.perf_counter() - tic


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    local, local_s = grid_search(X, y, n_jobs=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster):
        with joblib.parallel_backend("dask"):
            dask, dask_s = grid_search(X, y, n_jobs=-1)
    same = bool(dask.best_params_ == local.best_params_ and dask.best_score_ == local.best_score_)
    print(f"n_jobs=1:           best {local.best_params_} score {local.best_score_:.4f} "
          f"in {local_s:.1f} s")
    print(f"dask, 2 processes:  best {dask.best_params_} score {dask.best_score_:.4f} "
          f"in {dask_s:.1f} s")
    print("same best parameters and score:", same)
    ray_result = None
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError:
        print("Ray is not installed: its backend was not run")
    else:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        register_ray()
        with joblib.parallel_backend("ray"):
            on_ray, ray_s = grid_search(X, y, n_jobs=-1)
        ray.shutdown()
        ray_result = {"best_params": str(on_ray.best_params_),
                      "best_score": float(on_ray.best_score_), "seconds": ray_s,
                      "same": bool(on_ray.best_params_ == local.best_params_
                                   and on_ray.best_score_ == local.best_score_)}
        print(f"ray, 2 CPUs:        best {on_ray.best_params_} score {on_ray.best_score_:.4f} "
              f"in {ray_s:.1f} s; same as n_jobs=1: {ray_result['same']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "distributed_grid_search", "local": {"best_params": str(local.best_params_),
                                 "best_score": float(local.best_score_), "seconds": local_s},
                       "dask": {"best_params": str(dask.best_params_),
                                "best_score": float(dask.best_score_), "seconds": dask_s},
                       "same": same, "ray": ray_result}, f, indent=2)
    return same


if __name__ == "__main__":
    main()
