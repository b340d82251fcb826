"""Mutation testing of ssl-bench's core: plant small bugs one at a time and see whether the fast
tests notice.

    python tools/mutation.py [--module ssl_bench/selectors/tracin.py ...] [--out mutation.jsonl] [--limit N]
    python tools/mutation.py --retry-survivors [--module ...] --out mutation.jsonl   # after adding tests
    python tools/mutation.py --report mutation.jsonl         # per-module kill rates and survivors (Markdown)

For each mutant — one operator or constant changed in one place (``a + b`` → ``a - b``, ``<`` → ``<=``,
``and`` → ``or``, ``not x`` → ``x``, ``-x`` → ``x``, ``n`` → ``n + 1``, ``True`` → ``False``,
``max`` ↔ ``min``, ``argmax`` ↔ ``argmin``, ``amax`` ↔ ``amin``, ``largest=True`` → ``False``, a
``return x`` → ``return None``), the module's mapped tests run (``pytest -x -m "not e2e and not soak"``:
all but the CLI's end-to-end runs); a
mutant is *killed* when a test fails (or it times out), and *survives* otherwise.  Survivors are
printed with their line; those that cannot change behaviour (equivalent mutants) are judged by hand
and listed in the README's testing section.

Speed on 2 cores: a forking server imports torch, scikit-learn, lightly and pytest once; each
mutant runs in a fork that re-imports only ``ssl_bench`` (with the mutated file) and the tests.
Results are appended to ``--out`` as JSON lines and mutants already in it are skipped, so a long run
can be stopped and resumed.  Not part of CI (hours); part of the release checklist.

Test selection (``--select coverage``, the default): the module's mapped tests run once under
coverage.py with one context per test (``<out>.coverage.json``, rebuilt when a mutated module or a
test file changes), and each mutant runs only the tests that execute its statement, fastest first,
plus every mapped test that starts a Python subprocess (coverage does not follow those).  A
statement run at import time only: a function's decorators and defaults act when the function
runs, so they get the tests that run a line of its body; a constant, class attribute or dataclass
field gets all mapped tests.  A statement that no test runs gets only the subprocess tests (none:
it survives, marked ``"covered": false``).  A test that does not execute a statement cannot notice
a change to it, so this skips only work whose outcome is known; it makes most survivors cost
seconds instead of minutes (under coverage on one core the selector tests take 2.5 minutes).
``--select files`` runs all mapped test files for every mutant.

Every test runs with ``--threads`` torch threads (default 1), whatever its recipe asks, so that a
run takes one core; a test that fails without any mutant stops the run.

Mutated: ``ssl_bench/selectors/``, ``ssl_bench/objectives/``, ``ssl_bench/evaluate/``,
``ssl_bench/compare.py`` and the training step ``ssl_bench/step.py``.  Not mutated: docstrings,
strings, annotations, error messages (arguments of ``raise``), logging and warnings.
"""

from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    "ssl_bench/selectors": ["tests/test_reference.py", "tests/selectors", "tests/test_training_path.py",
                            "tests/test_distributed.py", "tests/test_paper_fidelity.py"],
    "ssl_bench/objectives": ["tests/test_reference.py", "tests/objectives", "tests/test_training_path.py",
                             "tests/selectors/test_tracin.py",
                             "tests/test_distributed.py", "tests/test_paper_fidelity.py"],
    "ssl_bench/evaluate": ["tests/test_reference.py", "tests/evaluate", "tests/test_plugin_examples.py",
                           "tests/test_paper_fidelity.py"],
    "ssl_bench/compare.py": ["tests/test_compare_tables.py", "tests/test_compare_semantics.py",
                             "tests/test_compare_sweep.py", "tests/test_results_doc.py",
                             "tests/test_hostile_input.py", "tests/test_hostile_outputs.py",
                             "tests/test_evaluate_cmd.py", "tests/evaluate/test_trust.py"],
    "ssl_bench/step.py": ["tests/test_training_path.py", "tests/test_train_data_on.py",
                          "tests/selectors/test_selectors.py", "tests/test_precision.py"],
}
# tests that read functions' signatures (the recipe reference documents objectives' defaults from
# them) without running their bodies: a mutated default of a function header runs them too
READS_SIGNATURES = {"tests/test_reference.py"}
SWAPS_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
             ast.Mod: ast.Mult, ast.Pow: ast.Mult, ast.MatMult: ast.Mult}
SWAPS_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
             ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
SWAPS_NAME = {"max": "min", "min": "max", "argmax": "argmin", "argmin": "argmax", "amax": "amin", "amin": "amax"}
SKIP_CALLS = {"SSLBenchError", "warn", "log", "print", "ValueError", "RuntimeError", "TypeError", "KeyError", "secho",
              "echo"}


def test_files(module: str) -> list[str]:
    for prefix, tests in TARGETS.items():
        if module.startswith(prefix):
            return tests
    raise SystemExit(f"{module} is not a mutated module ({', '.join(TARGETS)})")


def _skipped_lines(tree: ast.AST) -> set[int]:
    """Lines of docstrings, raise statements, annotations and logging calls."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
                    and isinstance(first.value.value, str)):
                out |= set(range(first.lineno, first.end_lineno + 1))
        if isinstance(node, (ast.Raise, ast.Assert, ast.Import, ast.ImportFrom)) or (
            isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) in SKIP_CALLS or getattr(node.func, "attr", None) in SKIP_CALLS)
        ):
            out |= set(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.AnnAssign) and node.value is None:
            out.add(node.lineno)
    return out


def statement_lines(source: str) -> dict[int, int]:
    """Line → first line of the innermost statement that contains it (coverage.py reports a
    multi-line statement at its first line)."""
    out: dict[int, int] = {}
    for node in sorted((n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.stmt)), key=lambda n: n.lineno):
        body_start = min((c.lineno for f in ("body", "orelse", "finalbody", "handlers")
                          for c in getattr(node, f, []) or []),
                         default=node.end_lineno + 1)
        for line in range(node.lineno, min(node.end_lineno, body_start - 1) + 1):
            out[line] = node.lineno  # inner statements come later in line order and overwrite
    return out


def mutants(source: str) -> list[tuple[int, str, str]]:
    """Every single-site mutant of ``source``: (line, description, mutated source)."""
    tree = ast.parse(source)
    skip = _skipped_lines(tree)
    in_annotation: set[int] = set()
    for node in ast.walk(tree):
        for ann in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if ann is not None:
                in_annotation |= {id(n) for n in ast.walk(ann)}
    nodes = list(ast.walk(tree))
    out = []
    for i, node in enumerate(nodes):
        if not hasattr(node, "lineno") or node.lineno in skip or id(node) in in_annotation:
            continue
        for desc, change in _changes(node):
            t2 = copy.deepcopy(tree)
            target = list(ast.walk(t2))[i]
            replacement = change(target)
            t2 = _Replace(target, replacement).visit(t2)
            ast.fix_missing_locations(t2)
            out.append((node.lineno, desc, _spliced(source, node, replacement, t2)))
    return out


_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**",
        ast.MatMult: "@"}


def _spliced(source: str, node: ast.AST, replacement: ast.AST, mutated_tree: ast.AST) -> str:
    """``source`` with only ``node``'s text replaced, so that comments, the layout and every line
    number stay as they were (an unparsed module loses its comments, from which `ssl-bench list`
    takes the help of recipe options: every mutant then failed the recipe-reference test).  Checked:
    the result parses to ``mutated_tree``; where it would not, the whole module is unparsed."""
    raw = source.encode()  # AST column offsets count UTF-8 bytes
    starts = [0]
    for line in raw.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))

    def at(line: int, col: int) -> int:
        return starts[line - 1] + col

    def put(lo: int, hi: int, text: str) -> str:
        return (raw[:lo] + text.encode() + raw[hi:]).decode()

    def padded(expr: str, first: int, last: int) -> str:  # newlines inside the parentheses keep the line count
        return "(" + expr + "\n" * (last - first) + ")"

    try:
        if isinstance(node, ast.Attribute):  # only the attribute's name
            hi = at(node.end_lineno, node.end_col_offset)
            text = put(hi - len(node.attr.encode()), hi, replacement.attr)
        elif isinstance(node, ast.Return):
            v = node.value
            text = put(at(v.lineno, v.col_offset), at(v.end_lineno, v.end_col_offset),
                       padded("None", v.lineno, v.end_lineno))
        elif isinstance(node, ast.AugAssign):  # the operator between target and value: `x += y` → `x -= y`
            lo, hi = at(node.target.end_lineno, node.target.end_col_offset), at(node.value.lineno,
                                                                                node.value.col_offset)
            gap = raw[lo:hi].decode()
            old, new = _OPS[type(node.op)] + "=", _OPS[type(replacement.op)] + "="
            if gap.count(old) != 1:
                raise ValueError(gap)
            text = put(lo, hi, gap.replace(old, new))
        else:  # an expression: the new one in parentheses, over as many lines as the old one
            lo, hi = at(node.lineno, node.col_offset), at(node.end_lineno, node.end_col_offset)
            text = put(lo, hi, padded(ast.unparse(replacement), node.lineno, node.end_lineno))
        if ast.dump(ast.parse(text)) == ast.dump(mutated_tree) and text.count("\n") == source.count("\n"):
            return text
    except (SyntaxError, ValueError, AttributeError):
        pass
    return ast.unparse(mutated_tree)


class _Replace(ast.NodeTransformer):
    def __init__(self, target: ast.AST, replacement: ast.AST):
        self.target, self.replacement = target, replacement

    def generic_visit(self, node):
        if node is self.target:
            return self.replacement
        return super().generic_visit(node)


def _set(node, attr, value):
    setattr(node, attr, value)
    return node


def _changes(node: ast.AST):
    """(description, node → its replacement) for each mutation of ``node``."""
    if isinstance(node, ast.BinOp) and type(node.op) in SWAPS_BIN:
        new = SWAPS_BIN[type(node.op)]
        yield f"{type(node.op).__name__} → {new.__name__}", lambda n, new=new: _set(n, "op", new())
    elif isinstance(node, ast.AugAssign) and type(node.op) in SWAPS_BIN:
        new = SWAPS_BIN[type(node.op)]
        yield f"{type(node.op).__name__}= → {new.__name__}=", lambda n, new=new: _set(n, "op", new())
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in SWAPS_CMP:
        new = SWAPS_CMP[type(node.ops[0])]
        yield f"{type(node.ops[0]).__name__} → {new.__name__}", lambda n, new=new: _set(n, "ops", [new()])
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield f"{type(node.op).__name__} → {new.__name__}", lambda n, new=new: _set(n, "op", new())
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        yield f"drop {type(node.op).__name__}", lambda n: n.operand
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield f"{node.value} → {not node.value}", lambda n: _set(n, "value", not n.value)
    elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        yield f"{node.value!r} → {node.value + 1!r}", lambda n: _set(n, "value", n.value + 1)
    elif isinstance(node, ast.Name) and node.id in SWAPS_NAME and isinstance(node.ctx, ast.Load):
        yield f"{node.id} → {SWAPS_NAME[node.id]}", lambda n: _set(n, "id", SWAPS_NAME[n.id])
    elif isinstance(node, ast.Attribute) and node.attr in SWAPS_NAME:
        yield f".{node.attr} → .{SWAPS_NAME[node.attr]}", lambda n: _set(n, "attr", SWAPS_NAME[n.attr])
    elif isinstance(node, ast.Return) and node.value is not None and not (isinstance(node.value, ast.Constant)
                                                                          and node.value.value is None):
        yield "return None", lambda n: _set(n, "value", ast.Constant(None))


# -------------------------------------------------------------------------------------------------
# The forking runner
# -------------------------------------------------------------------------------------------------
MAP_VERSION = "3"  # bump when what the coverage map records or how tests are chosen from it changes (cache rebuilt)
THREADS = 1  # torch threads of every test (--threads)
PYTEST_ARGS = ["-q", "-m", "not e2e and not soak", "-p", "no:cacheprovider", "-p", "no:randomly"]


def _pin_threads(n: int) -> None:
    """In a fork: every test runs with ``n`` torch threads, whatever its recipe's ``train.threads``
    says (a test asking for 2 threads on a core that other work shares slowed down 10-fold here)."""
    import torch

    torch.set_num_threads(n)
    torch.set_num_threads = lambda *_: None


def _forget_project_modules() -> None:
    """In a fork: drop ssl_bench and the tests from ``sys.modules`` so that they are imported anew
    (with the mutated file); torch, scikit-learn and lightly stay imported."""
    for name in [m for m in sys.modules if m == "ssl_bench"
                 or m.startswith(("ssl_bench.", "tests", "ssl_bench_plugin_"))]:
        del sys.modules[name]


# -------------------------------------------------------------------------------------------------
# Which tests execute which line (coverage.py, one context per test)
# -------------------------------------------------------------------------------------------------
def _runs_python(cmd) -> bool:
    """Whether a subprocess command runs Python (and so maybe a mutant): ``git`` (a run records its
    commit) does not, and counting it made every training test a subprocess test."""
    import shlex

    first = (shlex.split(cmd) if isinstance(cmd, str) else list(cmd or []))[:1]
    name = Path(str(first[0])).name if first else ""
    return "python" in name or name in {"ssl-bench", "torchrun", "pytest"}


class _PerTestCoverage:
    """pytest plugin: switch coverage's context to each test's node id, time each test, and note
    the tests that start a subprocess."""

    def __init__(self, cov):
        self.cov, self.durations, self.spawns, self.current, self._t0 = cov, {}, set(), None, 0.0
        self.failed: list[str] = []
        import multiprocessing.process

        subprocess.Popen.__init__ = self._noting(subprocess.Popen.__init__, python_only=True)
        multiprocessing.process.BaseProcess.start = self._noting(multiprocessing.process.BaseProcess.start)

    def _noting(self, real, python_only: bool = False):
        def wrapper(*a, **k):
            cmd = a[1] if len(a) > 1 else k.get("args")
            if self.current and (not python_only or _runs_python(cmd)):
                self.spawns.add(self.current)
            return real(*a, **k)

        return wrapper

    def pytest_runtest_protocol(self, item, nextitem):
        self.current = item.nodeid
        self.cov.switch_context(item.nodeid)
        self._t0 = time.monotonic()

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed.append(report.nodeid)

    def pytest_runtest_logfinish(self, nodeid, location):
        self.durations[nodeid] = self.durations.get(nodeid, 0.0) + time.monotonic() - self._t0
        self.current = None
        self.cov.switch_context("")


def _fingerprint(modules: list[str], tests: list[str]) -> str:
    h = hashlib.sha256(MAP_VERSION.encode())
    for rel in sorted(modules):
        h.update((REPO / rel).read_bytes())
    for t in tests:
        for f in sorted((REPO / t).rglob("*.py")) if (REPO / t).is_dir() else [REPO / t]:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def coverage_map(modules: list[str], tests: list[str]) -> dict:
    """Run ``tests`` once, in a fork, under coverage with per-test contexts: {"lines": {module:
    {line: [node ids]}}, "durations": {node id: s}, "spawns": [node ids], "all": [node ids]}."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            import coverage
            import pytest

            _forget_project_modules()
            _pin_threads(THREADS)
            cov = coverage.Coverage(data_file=None, include=[str(REPO / m) for m in modules])
            cov.start()
            plugin = _PerTestCoverage(cov)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            pytest.main([*PYTEST_ARGS, *tests], plugins=[plugin])
            cov.stop()
            data = cov.get_data()
            lines = {}
            for m in modules:
                by_line = data.contexts_by_lineno(str(REPO / m)) or {}
                lines[m] = {str(k): sorted(c for c in v if c) for k, v in by_line.items()}
            out = {"lines": lines, "durations": plugin.durations, "spawns": sorted(plugin.spawns),
                   "all": list(plugin.durations),
                   "failed": plugin.failed}
            with os.fdopen(wfd, "w") as f:
                json.dump(out, f)
            os._exit(0)
        except BaseException:
            os._exit(3)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        text = f.read()
    os.waitpid(pid, 0)
    if not text:
        raise SystemExit(f"collecting coverage of {modules} with {tests} failed")
    out = json.loads(text)
    if out["failed"]:  # every mutant would count as killed by these
        raise SystemExit("tests fail without any mutant; fix them first:\n  " + "\n  ".join(out["failed"]))
    return out


def definition_scopes(source: str) -> dict[int, tuple[int, int]]:
    """Line → (first, last) line of the function body that uses it, for a function's decorators,
    signature and defaults: they run at import time but act when the function runs.  (A class's
    decorators and attributes are left out: a test can build a dataclass, or have its fields
    checked, without running any of its methods.)"""
    out: dict[int, tuple[int, int]] = {}
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in sorted((n for n in ast.walk(ast.parse(source)) if isinstance(n, defs)), key=lambda n: n.lineno):
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        for line in range(first, node.body[0].lineno):
            out[line] = (node.body[0].lineno, node.end_lineno)
    return out


def selected_tests(cmap: dict, module: str, stmt_line: int, fallback: list[str],
                   scopes: dict[int, tuple[int, int]] | None = None,
                   stmt_lines: Iterable[int] = ()) -> list[str]:
    """The node ids that execute ``module``'s statement at ``stmt_line``, fastest first, then the
    subprocess-starting tests.  A statement run at import time only: for a function's header
    (``scopes``: decorators, defaults), the tests that run any line of its body (a default changes
    nothing for a test that never calls the function) and those that read signatures without
    calling them (:data:`READS_SIGNATURES`: the documented defaults); otherwise (a constant, a class
    attribute or dataclass field) ``fallback``, all mapped tests.  A statement never run: only the
    subprocess-starting tests (maybe none: survived, no test runs it).

    ``stmt_lines``: every line of the statement's header.  coverage.py records the lines Python
    reports, and a statement over several lines runs on its later lines (``if (`` alone on a line
    runs nothing): looking up its first line alone found 1 test of 102 for a condition of
    compare.py that every test runs, and its mutants survived untested."""
    lines = cmap["lines"].get(module, {})
    present = [str(n) for n in sorted(set(stmt_lines) | {stmt_line}) if str(n) in lines]
    if not present:  # no test executes it in-process: only a subprocess test can notice
        return list(cmap["spawns"])
    hits = [n for line in present for n in lines[line]]
    if not hits and scopes and stmt_line in scopes:
        lo, hi = scopes[stmt_line]
        hits = [n for line, ids in lines.items() if lo <= int(line) <= hi for n in ids]
        hits += [n for n in cmap.get("all", ()) if n.split("::")[0] in READS_SIGNATURES]
    if not hits:  # a module-level statement run at import time (a constant), or a body no test runs
        return fallback
    order = sorted(set(hits), key=lambda n: cmap["durations"].get(n, 0.0))
    return order + [n for n in cmap["spawns"] if n not in hits]


def expected_seconds(cmap: dict, tests: list[str]) -> float:
    """How long ``tests`` (node ids, or test files and folders) took without a mutant."""
    durations = cmap["durations"]
    def runs(node: str, t: str) -> bool:
        return node == t or node.startswith(t + "::") or node.startswith(t.rstrip("/") + "/")

    return sum(d for n, d in durations.items() if any(runs(n, t) for t in tests))


def run_mutant(path: Path, mutated: str, tests: list[str], timeout: float) -> str:
    """'killed' | 'survived' | 'timeout' | 'error' for one mutant, run in a fork."""
    original = path.read_text()
    pid = os.fork()
    if pid == 0:  # child: the mutated file, a fresh import of ssl_bench and the tests
        try:
            # never cache a mutant's bytecode: the next mutant of the same file can have the same size
            # and be written in the same second, and Python would then run this one's stale .pyc
            sys.dont_write_bytecode = True
            path.write_text(mutated)
            _forget_project_modules()
            _pin_threads(THREADS)
            import pytest

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = pytest.main(["-x", *PYTEST_ARGS, *tests])
            os._exit(0 if code == 0 else 1)
        except BaseException:
            os._exit(3)
    t0 = time.monotonic()
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                return {0: "survived", 1: "killed"}.get(code, "error")
            if time.monotonic() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout"
            time.sleep(0.05)
    finally:
        path.write_text(original)


def load_done(out: Path, retry_survivors: bool = False) -> dict:
    """{(module, line, mutation, index): result} of the mutants ``out`` holds; with
    ``retry_survivors``, without the survivors to run again: those run before the module or its tests
    last changed (a survivor already run against the same code and tests would survive again)."""
    done, ran_with = {}, {}
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            key = (r["module"], r["line"], r["mutation"], r["index"])
            done[key], ran_with[key] = r["result"], r.get("fingerprint")
    if retry_survivors:
        now = {m: _fingerprint([m], test_files(m)) for m in {k[0] for k in done} if (REPO / m).is_file()}
        done = {k: v for k, v in done.items() if v != "survived"
                or (ran_with[k] is not None and ran_with[k] == now.get(k[0]))}
    return done


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", help="a file under a mutated path (repeatable; default: all)")
    ap.add_argument("--out", default="mutation.jsonl", help="results, one JSON line per mutant (resumable)")
    ap.add_argument("--limit", type=int, default=None, help="stop after this many new mutants")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per mutant; a mutant past it counts as killed (a hang).  Default: 120 s + 5× the "
                         "unmutated time of the tests it runs (coverage selection), else 1800 s")
    ap.add_argument("--select", choices=("coverage", "files"), default="coverage",
                    help="run the tests that execute the mutated statement (default), or all mapped test files")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of every test, whatever its recipe asks (default 1: a run takes one core)")
    ap.add_argument("--retry-survivors", action="store_true",
                    help="run again the mutants that survived in --out (after adding tests; the new result is appended "
                         "and replaces the old one); a survivor already run against the module and its tests as they "
                         "are now is not run again, so a stopped retry resumes")
    ap.add_argument("--report", nargs="+", metavar="JSONL",
                    help="print the per-module table and the survivors of these result files (later files win "
                         "for a module they hold) as Markdown, and run nothing")
    args = ap.parse_args()
    if args.report:
        print(report([Path(f) for f in args.report]))
        return 0
    os.chdir(REPO)
    # a mutant left in place by a killed run would make every later result wrong: start clean only
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "ssl_bench", "tests"], capture_output=True,
                           text=True).stdout
    if dirty.strip():
        raise SystemExit(f"uncommitted changes under ssl_bench/ or tests/ (a mutant left by a killed run?):\n{dirty}"
                         "restore them (git checkout -- ssl_bench tests) or commit them first")
    # SIGTERM (kill, a job's time limit): leave through the `finally` that puts the original file back
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(REPO))
    global THREADS
    THREADS = args.threads
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    modules = args.module or sorted(
        str(p.relative_to(REPO)) for prefix in TARGETS
        for p in ([REPO / prefix] if prefix.endswith(".py") else sorted((REPO / prefix).glob("*.py")))
        if p.name != "__init__.py"
    )
    # the heavy imports, once, in the parent (forks inherit them)
    import lightly.models.modules  # noqa: F401
    import pytest  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import timm  # noqa: F401
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    done = load_done(out, args.retry_survivors)
    cmaps: dict = {}
    cache = Path(str(out) + ".coverage.json")
    if args.select == "coverage" and cache.is_file():
        cmaps = json.loads(cache.read_text())
    new = 0
    for module in modules:
        path = REPO / module
        source = path.read_text()
        tests = test_files(module)
        module_fp = _fingerprint([module], tests)
        stmts, scopes = statement_lines(source), definition_scopes(source)
        cmap = None
        if args.select == "coverage":
            group = [m for m in modules if test_files(m) == tests]
            key = ",".join(tests)
            fp = _fingerprint(group, tests)
            if cmaps.get(key, {}).get("fingerprint") != fp or any(m not in cmaps[key]["lines"] for m in group):
                t0 = time.monotonic()
                cmaps[key] = {**coverage_map(group, tests), "fingerprint": fp}
                cache.write_text(json.dumps(cmaps))
                print(f"coverage of {', '.join(group)} by {len(cmaps[key]['all'])} tests: "
                      f"{time.monotonic() - t0:.0f} s", flush=True)
            cmap = cmaps[key]
        for index, (line, desc, mutated) in enumerate(mutants(source)):
            key = (module, line, desc, index)
            if key in done:
                continue
            if args.limit is not None and new >= args.limit:
                break
            stmt = stmts.get(line, line)
            chosen = tests if cmap is None else selected_tests(cmap, module, stmt, tests, scopes,
                                                               [n for n, first in stmts.items() if first == stmt])
            t0 = time.monotonic()
            timeout = args.timeout or (1800.0 if cmap is None else 120.0 + 5 * expected_seconds(cmap, chosen))
            result = run_mutant(path, mutated, chosen, timeout) if chosen else "survived"
            rec = {"module": module, "line": line, "mutation": desc, "index": index, "result": result,
                   "seconds": round(time.monotonic() - t0, 1), "tests": len(chosen) if chosen is not tests else "all",
                   "covered": bool(chosen),
                   "code": source.splitlines()[line - 1].strip(), "fingerprint": module_fp}
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            done[key] = result
            new += 1
            print(f"{result:9s} {module}:{line}  {desc}  | {rec['code'][:80]}", flush=True)
    summarize(done)
    return 0


def report(files: list[Path]) -> str:
    """Markdown: one row per module (mutants, killed incl. time-outs, survived, of which no test
    runs, kill rate) and the surviving mutants with their line."""
    by_module: dict[str, dict] = {}
    for f in files:
        recs: dict[str, dict] = {}
        for line in f.read_text().splitlines():
            r = json.loads(line)
            recs.setdefault(r["module"], {})[(r["line"], r["mutation"], r["index"])] = r
        by_module.update(recs)  # a later file replaces a module's results
    rows = ["| module | mutants | killed | survived | of which no test runs | kill rate |", "|---|---|---|---|---|---|"]
    survivors, tot, stale = [], [0, 0, 0, 0], 0
    for module in sorted(by_module):
        # only results of the module's code as it is now (a mutant is its line, change and index)
        path = REPO / module
        current = {(line, desc, i)
                   for i, (line, desc, _) in enumerate(mutants(path.read_text()))} if path.is_file() else None
        recs = [r for key, r in by_module[module].items() if current is None or key in current]
        stale += len(by_module[module]) - len(recs)
        killed = sum(r["result"] in ("killed", "timeout") for r in recs)
        surv = [r for r in recs if r["result"] == "survived"]
        unrun = sum(r.get("covered") is False for r in surv)
        n = sum(r["result"] != "error" for r in recs)
        of = f" of {len(current)}" if current is not None and len(recs) < len(current) else ""
        rows.append(f"| `{module}` | {n}{of} | {killed} | {len(surv)} | {unrun} | {killed / max(n, 1):.1%} |")
        tot = [tot[0] + n, tot[1] + killed, tot[2] + len(surv), tot[3] + unrun]
        survivors += [f"- `{module}:{r['line']}` {r['mutation']}: `{r['code'][:90]}`"
                      for r in sorted(surv, key=lambda r: r["line"])]
    rows.append(f"| all | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} | {tot[1] / max(tot[0], 1):.1%} |")
    notes = [f"Left out: {stale} results of code that has changed since they were run."] if stale else []
    return "\n".join(rows + notes + ["", "Survivors:", *survivors]) + "\n"


def summarize(done: dict) -> None:
    total = len(done)
    killed = sum(r in ("killed", "timeout") for r in done.values())
    errors = sum(r == "error" for r in done.values())
    print(f"mutants: {total}, killed {killed}, survived {total - killed - errors}, errors {errors}; "
          f"kill rate {killed / max(total - errors, 1):.1%}")


if __name__ == "__main__":
    raise SystemExit(main())
