"""Smoke test: the benchmark entry point runs every benchmark in quick mode."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_entry_point_quick(tmp_path):
    from benchmarks.__main__ import BENCHMARKS
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert written == sorted(f"{module}.json" for module, _, _ in BENCHMARKS.values())
    for name in written:
        meta = json.loads((tmp_path / name).read_text())
        assert meta["date"]
        speed = meta["machine_speed"]  # how fast the machine ran: results compare at like speed
        assert speed["threads_1_us"] > 0 and speed["threads_2_us"] > 0


def test_openml_loader_explains_a_missing_data_set(monkeypatch, tmp_path):
    from urllib.error import URLError

    import sklearn.datasets

    from benchmarks.datasets import DatasetUnavailable, load_openml_images

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(DatasetUnavailable, match="mnist_784.*fetch_openml"):
        load_openml_images("mnist", data_home=str(tmp_path))
