"""Run every benchmark: ``python -m benchmarks [--quick] [--only mlp convnet ...] [--out DIR]``.

Each benchmark prints its table and writes its results (JSON, with machine, versions and date)
to ``DIR/bench_<name>.json`` (default: benchmarks/results); the last one draws the PNG plots
from them. ``--quick`` runs each with small settings (one round, one fold, fewer rows) to check
that everything runs.
"""

import argparse
import importlib
import os
import sys
import time

# name -> (module, full-run arguments, quick-run arguments)
BENCHMARKS = {
    "mlp": ("bench_mlp", ["--rounds", "7"], ["--rounds", "1"]),
    "convnet": ("bench_convnet", ["--seeds", "5"], ["--folds", "1"]),
    "transfer": ("bench_transfer", ["--rounds", "15"], ["--rounds", "1", "--skip-accuracy"]),
    "parallel": ("bench_parallel", ["--rounds", "5"], ["--rounds", "1"]),
    "search": ("bench_search", ["--rounds", "3"], ["--quick"]),
    "memmap": ("bench_memmap", [], ["--rows", "100000"]),
    "distributed": ("bench_distributed", [], []),
    "baselines": ("bench_baselines", [], ["--quick"]),
    "scaling": ("bench_scaling", [], ["--quick"]),
    "predict": ("bench_predict", [], ["--quick"]),
    "routes": ("bench_routes", [], ["--repeats", "200"]),
    "plots": ("bench_plots", ["--results", "{out}"], ["--results", "{out}"]),  # keep it last
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    sys.path.insert(0, os.path.dirname(__file__))
    if args.quick:
        import _meta
        _meta.SPEED_REPEATS = 90
    failed = []
    for name in args.only or BENCHMARKS:
        module, full, quick = BENCHMARKS[name]
        print(f"\n=== {name} ({module}) ===", flush=True)
        tic = time.perf_counter()
        try:
            settings = [a.format(out=args.out) for a in (quick if args.quick else full)]
            importlib.import_module(module).main(
                settings + ["--json", os.path.join(args.out, f"{module}.json")])
        except ImportError as e:  # an optional dependency (skorch, dask, timm) is missing
            print(f"skipped: {e}")
        except Exception as e:  # keep going: report every failure at the end
            failed.append(name)
            print(f"FAILED: {type(e).__name__}: {e}")
        print(f"=== {name}: {time.perf_counter() - tic:.0f} s ===", flush=True)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
