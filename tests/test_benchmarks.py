"""Smoke test: the benchmark entry point runs every benchmark in quick mode."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_entry_point_quick(tmp_path):
    from benchmarks.__main__ import BENCHMARKS
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    assert written == sorted(f"{module}.json" for module, _, _ in BENCHMARKS.values())
    for name in written:
        assert json.loads((tmp_path / name).read_text())["date"]
