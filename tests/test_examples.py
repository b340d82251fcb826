"""The Python example in docs/examples runs as a user would run it (a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_example_runs(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "docs" / "examples" / "quickstart.py"), str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BYOL " in r.stdout and "BYOL-TracIn" in r.stdout and "kNN AUC" in r.stdout
    assert "backbone resnet18 → features (4, 512)" in r.stdout
    assert (tmp_path / "tracin" / "results.json").is_file() and (tmp_path / "backbone.pt").is_file()
