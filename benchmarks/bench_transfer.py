"""Transfer learning: pretrained EfficientNet-Lite0 features vs raw pixels, and extraction speed.

1. On real images that ship offline, scikit-image's lfw_subset (100 faces, 100 non-faces,
   25x25 gray) and scikit-learn's digits (8x8): 5-fold stratified CV (shuffle, random_state=0)
   of LogisticRegression and SVC (RBF) on standardized pretrained features vs on standardized
   raw pixels. Features are extracted once per data set (the extractor learns nothing from
   labels, so this equals fitting it inside each fold).
2. Extraction throughput at 224x224 on the CPU, and its ratio to a bare forward pass of the same
   timm model on ready tensors (the wrapper's overhead), interleaved rounds, medians.

    python benchmarks/bench_transfer.py [--rounds 5] [--json PATH]
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
from skimage import data as skdata
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sknn import PretrainedFeatureExtractor
from _meta import metadata

CLASSIFIERS = {
    "LogisticRegression": lambda: make_pipeline(StandardScaler(),
                                                LogisticRegression(max_iter=5000)),
    "SVC (RBF)": lambda: make_pipeline(StandardScaler(), SVC()),
}


def datasets():
    faces = skdata.lfw_subset()
    digits = load_digits()
    return {
        "lfw_subset (200 images, 25x25)": (faces, np.r_[np.ones(100), np.zeros(100)]),
        "digits (1797 images, 8x8)": ((digits.images / 16.0).astype(np.float32), digits.target),
    }


def accuracy_table(extractor):
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    rows = []
    for name, (images, y) in datasets().items():
        tic = time.perf_counter()
        features = extractor.fit_transform(images)
        seconds = time.perf_counter() - tic
        print(f"{name}: features {features.shape} in {seconds:.1f} s", flush=True)
        for clf_name, make in CLASSIFIERS.items():
            raw = cross_val_score(make(), images.reshape(len(images), -1), y, cv=cv)
            pre = cross_val_score(make(), features, y, cv=cv)
            rows.append({"data": name, "classifier": clf_name,
                         "raw_pixels": float(raw.mean()), "pretrained": float(pre.mean())})
            print(f"  {clf_name:20s} raw pixels {raw.mean():.4f}  pretrained {pre.mean():.4f}",
                  flush=True)
    return rows


def throughput(extractor, rounds, n=64):
    """images/s of extractor.transform and of the bare model, side by side."""
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(n, 224, 224, 3), dtype=np.uint8)
    model, bs = extractor.module_, extractor.batch_size
    # The bare model gets ready tensors: normalized, channels-last (its fastest layout).
    ready = [((torch.from_numpy(images[k:k + bs]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
              ).contiguous(memory_format=torch.channels_last) for k in range(0, n, bs)]

    def bare():
        with torch.inference_mode():
            return [model.forward_features(x).mean((2, 3)) for x in ready]

    extractor.transform(images[:bs])
    bare()
    timings = {"sknn transform": [], "bare timm forward": []}
    runs = {"sknn transform": lambda: extractor.transform(images), "bare timm forward": bare}
    for r in range(rounds):
        for name in sorted(runs, reverse=r % 2 == 1):  # alternate who goes first
            tic = time.perf_counter()
            runs[name]()
            timings[name].append(n / (time.perf_counter() - tic))
    ratios = [b / a for a, b in zip(timings["sknn transform"], timings["bare timm forward"])]
    return {k: statistics.median(v) for k, v in timings.items()}, statistics.median(ratios)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    extractor = PretrainedFeatureExtractor(device="cpu")
    rows = [] if args.skip_accuracy else accuracy_table(extractor)
    speed, overhead = throughput(extractor.fit(np.zeros((2, 8, 8))), args.rounds)

    if rows:
        print("\n| data | classifier | raw pixels | pretrained features |")
        print("|---|---|---:|---:|")
        for r in rows:
            print(f"| {r['data']} | {r['classifier']} | {r['raw_pixels']:.4f} | "
                  f"{r['pretrained']:.4f} |")
    print(f"\nExtraction at 224x224, CPU, 2 threads, batch {extractor.batch_size}, "
          f"median of {args.rounds}:")
    print("| | images/s |\n|---|---:|")
    for k, v in speed.items():
        print(f"| {k} | {v:.1f} |")
    print(f"wrapper overhead: transform takes {overhead:.3f}x the bare forward's time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**metadata(), "benchmark": "transfer", "accuracy": rows,
                       "images_per_second": speed, "time_ratio_vs_bare": overhead}, f, indent=2)


if __name__ == "__main__":
    main()
