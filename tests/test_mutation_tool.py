"""tools/mutation.py: the mutants it plants, the statement a line belongs to, and that a mutant's
verdict comes from the mutant's own code (not from bytecode cached for another mutant)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("ssl_bench_mutation_tool", REPO / "tools" / "mutation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SOURCE = '''"""Docstring: not mutated."""


def f(x, items):
    """Not mutated either."""
    if x < 3 and not items:
        raise ValueError("not mutated: error message")
    return max(x + 1, 0)
'''


def test_mutants_of_a_small_function(mutation):
    found = {(line, desc) for line, desc, _ in mutation.mutants(SOURCE)}
    assert found == {
        (6, "Lt → LtE"), (6, "3 → 4"), (6, "And → Or"), (6, "drop Not"),
        (8, "Add → Sub"), (8, "1 → 2"), (8, "0 → 1"), (8, "max → min"), (8, "return None"),
    }
    mutated = {desc: src for _, desc, src in mutation.mutants(SOURCE)}
    ns: dict = {}
    exec(mutated["max → min"], ns)
    assert ns["f"](5, [1]) == 0  # min(6, 0)
    exec(mutated["Lt → LtE"], ns)
    with pytest.raises(ValueError):
        ns["f"](3, [])


LAYOUT = '''def g(a, b):  # λ: a comment with a non-ASCII letter before the mutated columns
    total = (a +  # a comment inside the expression
             b)
    total += a  # kept
    return (total
            * 2).amax(0)  # the last line
'''


def test_a_mutant_changes_only_its_node_and_keeps_comments_and_line_numbers(mutation):
    """Only the mutated node's text changes: comments (from which `ssl-bench list` takes an
    option's help) and line numbers stay (an unparsed module had lost them)."""
    import ast

    src_lines = LAYOUT.splitlines()
    found = mutation.mutants(LAYOUT)
    assert {d for _, d, _ in found} >= {"Add → Sub", "Add= → Sub=", "Mult → Div", "2 → 3", "0 → 1", ".amax → .amin",
                                        "return None"}
    for line, desc, text in found:
        lines = text.splitlines()
        assert len(lines) == len(src_lines), desc
        assert ast.dump(ast.parse(text)) != ast.dump(ast.parse(LAYOUT)), desc
        changed = [i + 1 for i, (a, b) in enumerate(zip(src_lines, lines)) if a != b]
        assert changed and min(changed) >= line, (desc, changed)
        kept = [c for c in ("# λ: a comment", "# kept", "# the last line") if c in LAYOUT]
        assert all(c in text for c in kept), desc
    mutated = {d: t for _, d, t in found}
    assert mutated["Add= → Sub="].splitlines()[3] == "    total -= a  # kept"
    assert mutated[".amax → .amin"].splitlines()[5] == "            * 2).amin(0)  # the last line"
    ns: dict = {}
    exec(mutated["Mult → Div"], ns)
    import torch

    assert ns["g"](torch.tensor([1.0]), torch.tensor([3.0])).item() == 2.5  # (1 + 3 + 1) / 2, not · 2


def test_statement_lines_map_a_continuation_to_its_first_line(mutation):
    src = "x = (1 +\n     2)\nif x:\n    y = 3\n"
    assert mutation.statement_lines(src) == {1: 1, 2: 1, 3: 3, 4: 4}


@pytest.mark.slow
def test_same_size_mutants_in_the_same_second_get_their_own_verdicts(mutation, tmp_path, monkeypatch):
    """Two mutants of one file with the same size, written within a second: with bytecode caching on,
    Python would run the first one's .pyc for the second (its mtime and size match)."""
    pkg = tmp_path / "mutproj"
    pkg.mkdir()
    target = pkg / "mutation_target_mod.py"
    original = "def f():\n    return 1 < 2\n"
    target.write_text(original)
    (pkg / "test_target.py").write_text("from mutation_target_mod import f\n\ndef test_f():\n    assert f() is True\n")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as for a user without PYTHONDONTWRITEBYTECODE
    real_write = Path.write_text

    def write_in_the_same_second(self, text, *a, **k):  # forks inherit this: every write gets one mtime
        n = real_write(self, text, *a, **k)
        if self == target:
            os.utime(self, (1_700_000_000, 1_700_000_000))
        return n

    monkeypatch.setattr(Path, "write_text", write_in_the_same_second)
    monkeypatch.syspath_prepend(str(pkg))
    tests = [str(pkg / "test_target.py")]
    killed = mutation.run_mutant(target, "def f():\n    return 1 > 2\n", tests, timeout=120)
    survived = mutation.run_mutant(target, "def f():\n    return 2 > 1\n", tests, timeout=120)
    assert (killed, survived) == ("killed", "survived")
    assert target.read_text() == original  # the original file is put back after each mutant


DEFS = '''import functools

LIMIT = 3


@functools.lru_cache(maxsize=LIMIT)
def f(x,
      y=2):
    return x + y


class A:
    z = 1

    def g(self, a=1):
        return a + self.z
'''


def test_import_time_lines_get_the_tests_that_use_their_definition(mutation):
    scopes = mutation.definition_scopes(DEFS)
    assert {line: scopes.get(line) for line in (3, 6, 7, 8, 9, 12, 13, 15, 16)} == {
        3: None,  # a module-level constant: any test may use it
        6: (9, 9), 7: (9, 9), 8: (9, 9),  # f's decorator and defaults act when f runs
        9: None,
        12: None, 13: None,  # a class attribute: a test may read it without running a method
        15: (16, 16), 16: None,
    }
    cmap = {"lines": {"m.py": {"3": [], "6": [], "7": [], "9": ["t::uses_f"], "13": [], "15": [], "16": ["t::uses_g"]}},
            "durations": {"t::uses_f": 1.0, "t::uses_g": 2.0, "t::cli": 9.0}, "spawns": ["t::cli"]}
    select = lambda line: mutation.selected_tests(cmap, "m.py", line, ["tests/all"], scopes)  # noqa: E731
    assert select(7) == ["t::uses_f", "t::cli"]
    assert select(13) == ["tests/all"]
    assert select(15) == ["t::uses_g", "t::cli"]
    assert select(3) == ["tests/all"]
    assert select(9) == ["t::uses_f", "t::cli"]
    assert select(10) == ["t::cli"]  # never run in-process: only a subprocess test can notice
    # a default is also read without running the body: by the recipe reference (documented defaults)
    ref = "tests/test_reference.py::test_recipe_reference_is_not_stale"
    cmap["all"], cmap["durations"][ref] = ["t::uses_f", "t::uses_g", "t::cli", ref], 0.5
    assert select(7) == [ref, "t::uses_f", "t::cli"]
    assert select(9) == ["t::uses_f", "t::cli"]  # a body line: only the tests that run it


def test_only_python_subprocesses_make_a_subprocess_test(mutation):
    assert mutation._runs_python([sys.executable, "-m", "ssl_bench"])
    assert mutation._runs_python("ssl-bench run recipe.yaml")
    assert mutation._runs_python(["/usr/bin/torchrun", "--nproc-per-node", "2", "x.py"])
    assert not mutation._runs_python(["git", "rev-parse", "HEAD"])  # every run records its commit


def test_report_counts_only_results_of_the_code_as_it_is(mutation, tmp_path):
    module = "ssl_bench/step.py"  # a small module: listing its mutants takes a second
    line, desc, _ = mutation.mutants((REPO / module).read_text())[0]
    recs = [
        {"module": module, "line": line, "mutation": desc, "index": 0, "result": "killed", "code": "x"},
        # older code
        {"module": module, "line": line, "mutation": desc, "index": 10_000, "result": "survived", "code": "y"},
    ]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = mutation.report([f])
    total = len(mutation.mutants((REPO / module).read_text()))
    assert f"| `{module}` | 1 of {total} | 1 | 0 | 0 | 100.0% |" in out
    assert "Left out: 1 results of code that has changed since they were run." in out


def test_retry_survivors_skips_a_survivor_already_run_against_the_same_code_and_tests(mutation, tmp_path):
    module = "ssl_bench/step.py"
    fp = mutation._fingerprint([module], mutation.test_files(module))
    recs = [
        {"module": module, "line": 1, "mutation": "a", "index": 0, "result": "survived", "fingerprint": fp},
        {"module": module, "line": 2, "mutation": "b", "index": 1, "result": "survived", "fingerprint": "older tests"},
        {"module": module, "line": 3, "mutation": "c", "index": 2, "result": "survived"},  # run before fingerprints
        {"module": module, "line": 4, "mutation": "d", "index": 3, "result": "killed", "fingerprint": "older tests"},
        # a module gone since
        {"module": "ssl_bench/removed.py", "line": 1, "mutation": "e", "index": 0, "result": "survived"},
    ]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert len(mutation.load_done(f)) == 5
    # the first stays done (same module and tests), the killed one too; the others run again
    assert mutation.load_done(f, retry_survivors=True) == {(module, 1, "a", 0): "survived",
                                                           (module, 4, "d", 3): "killed"}


MULTILINE = '''def h(row):
    if (
        row > 1
        and row < 5
    ):
        return 1
    return 0
'''


def test_a_statement_over_several_lines_gets_the_tests_that_run_any_of_its_lines(mutation, tmp_path, monkeypatch):
    import coverage

    (tmp_path / "mlmod.py").write_text(MULTILINE)
    monkeypatch.syspath_prepend(str(tmp_path))
    cov = coverage.Coverage(data_file=None, include=[str(tmp_path / "mlmod.py")])
    cov.start()
    import mlmod

    mlmod.h(3)
    cov.stop()
    ran = set(cov.get_data().lines(str(tmp_path / "mlmod.py")))
    assert 2 not in ran and 3 in ran  # the `if (` line itself runs nothing: coverage records the condition's lines
    stmts = mutation.statement_lines(MULTILINE)
    assert {stmts[n] for n in (2, 3, 4, 5)} == {2}  # the mutants of line 3 and 4 belong to the `if` at 2
    cmap = {"lines": {"m.py": {str(n): ["t::runs_h"] for n in sorted(ran)}}, "durations": {"t::runs_h": 1.0},
            "spawns": []}
    header = [n for n, first in stmts.items() if first == 2]
    assert mutation.selected_tests(cmap, "m.py", 2, ["tests/all"], None, header) == ["t::runs_h"]
    assert mutation.selected_tests(cmap, "m.py", 2, ["tests/all"]) == []  # the first line alone: no test found
