"""tools/planted_bugs.py can still plant each of its bugs: the line it changes is in its file once,
and the tests it names exist (a refactor that moves a line would otherwise make the check vacuous)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ssl_bench_planted_bugs", REPO / "tools" / "planted_bugs.py")
planted_bugs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(planted_bugs)


@pytest.mark.parametrize("name", sorted(planted_bugs.BUGS))
def test_each_planted_bug_still_has_its_line_and_tests(name):
    path, original, planted, tests = planted_bugs.BUGS[name]
    assert (REPO / path).read_text().count(original) == 1, f"{name}: the line to change is not in {path} (once)"
    assert planted != original and tests and all((REPO / t).is_file() for t in tests)
