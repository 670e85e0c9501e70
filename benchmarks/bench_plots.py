"""Plots from the benchmarks' results (PNG, matplotlib), next to the JSON they come from.

- baselines.png: score vs fit time per data set (bench_baselines.json);
- convnet_digits.png: accuracy vs fit time on digits (bench_convnet.json);
- mlp_speed.png: ms per epoch of sknn, scikit-learn and skorch (bench_mlp.json);
- scaling.png: fit time and peak memory against n_samples (bench_scaling.json);
- search.png: time of the fused search and scikit-learn's searches (bench_search.json);
- mlp_loss_curves.png: sknn's and scikit-learn's loss curves on digits from the same
  random_state (computed here: they lie on top of each other).

    python benchmarks/bench_plots.py [--results DIR]
"""

import argparse
import json
import os
import warnings

import numpy as np
from _meta import metadata


def _load(results, name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        print(f"no {name}: its plot is skipped")
        return None
    with open(path) as f:
        return json.load(f)


def plot_baselines(plt, data, out):
    rows = data["results"]
    names = list(dict.fromkeys(r["data"] for r in rows))
    cols = min(3, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        mine = [r for r in rows if r["data"] == name]
        for r in mine:
            ax.errorbar(r["fit_seconds"], r["score"], yerr=r["score_std"], fmt="o",
                        label=r["model"])
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("fit time per GridSearchCV (s)")
        ax.set_ylabel("accuracy" if mine[0]["task"] == "classification" else "R²")
        ax.legend(fontsize=7)
    fig.suptitle("sknn vs baselines: same folds, same 4-candidate GridSearchCV budget")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def plot_convnet(plt, data, out):
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in data["results"].items():
        ax.errorbar(np.median(r["fit_seconds"]), np.mean(r["accuracy"]),
                    yerr=np.std(r["accuracy"]), fmt="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("fit time per fold (s)")
    ax.set_ylabel("accuracy (5-fold CV)")
    ax.set_title("digits 8x8")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def plot_mlp_speed(plt, data, out):
    med, ratio = data["median_ms_per_epoch"], data["median_sknn_time_ratio"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = list(med)
    bars = ax.bar(names, [med[n] for n in names], color=["C0", "C1", "C2"][:len(names)])
    for bar, n in zip(bars, names):
        label = f"{med[n]:.0f} ms" + ("" if n == "sknn" else f"\nsknn/this {ratio[n]:.2f}")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("ms per epoch (median)")
    ax.set_title(f"MLP training, 24,000 x 100, {data['device']}, {data['rounds']} rounds")
    ax.set_ylim(0, max(med.values()) * 1.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def plot_scaling(plt, data, out):
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
    for model in dict.fromkeys(r["model"] for r in data["results"]):
        rows = [r for r in data["results"] if r["model"] == model]
        n = [r["n_samples"] for r in rows]
        ax_t.plot(n, [r["fit_seconds"] for r in rows], "o-", label=model)
        ax_m.plot(n, [r["peak_mb_above_imports"] for r in rows], "o-", label=model)
    rows = [r for r in data["results"] if r["model"] == "sknn MLPClassifier"]
    ax_m.plot([r["n_samples"] for r in rows], [2 * r["data_mb"] + 300 for r in rows], "k:",
              label="sknn's budget: 2x data + 300 MB")
    for ax, label in ((ax_t, "fit time (s)"), (ax_m, "peak memory above imports (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n_samples (20 features, float32)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"scaling (SVC stops once a fit passes {data['time_cap_seconds']:.0f} s)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def plot_search(plt, data, out):
    scenarios = [k for k in ("main_grid", "main_grid_n_jobs_2", "randomized") if k in data]
    fig, ax = plt.subplots(figsize=(7, 4))
    kinds = ["fused", "sklearn+sknn", "sklearn"]
    width = 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        ax.bar([j + i * width for j in range(len(scenarios))],
               [data[s]["median_seconds"].get(kind, 0) for s in scenarios], width, label=kind)
    ax.set_xticks([j + width for j in range(len(scenarios))])
    ax.set_xticklabels([s.replace("_", " ") for s in scenarios])
    ax.set_ylabel("search time (s, median)")
    ax.set_title("GridSearchCV / RandomizedSearchCV on digits (60 and 100 fits)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def plot_loss_curves(plt, out):
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLP

    from sknn import MLPClassifier
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    fig, ax = plt.subplots(figsize=(6, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for solver, style in (("adam", "-"), ("sgd", "--")):
            ours = MLPClassifier(solver=solver, max_iter=60, random_state=0, device="cpu").fit(X, y)
            theirs = SkMLP(solver=solver, max_iter=60, random_state=0).fit(X, y)
            ax.plot(theirs.loss_curve_, style, color="C1", lw=4, alpha=0.5,
                    label=f"scikit-learn, {solver}")
            ax.plot(ours.loss_curve_, style, color="C0", lw=1.5, label=f"sknn, {solver}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss_")
    ax.set_title("digits, random_state=0: the same training, step for step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--json", default=None, help="also list the plots written in this file")
    args = parser.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, source, draw in (
            ("baselines.png", "bench_baselines.json", plot_baselines),
            ("convnet_digits.png", "bench_convnet.json", plot_convnet),
            ("mlp_speed.png", "bench_mlp.json", plot_mlp_speed),
            ("scaling.png", "bench_scaling.json", plot_scaling),
            ("search.png", "bench_search.json", plot_search)):
        data = _load(args.results, source)
        if data is not None:
            draw(plt, data, os.path.join(args.results, name))
            written.append(name)
    plot_loss_curves(plt, os.path.join(args.results, "mlp_loss_curves.png"))
    written.append("mlp_loss_curves.png")
    plt.close("all")
    print("plots:", ", ".join(os.path.join(args.results, w) for w in written))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "plots", "plots": written}, f, indent=2)


if __name__ == "__main__":
    main()
