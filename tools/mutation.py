"""Mutation testing of ssl-bench's core: plant small bugs one at a time and see whether the fast
tests notice.

    python tools/mutation.py [--module ssl_bench/selectors/tracin.py ...] [--out mutation.jsonl] [--limit N]

For each mutant — one operator or constant changed in one place (``a + b`` → ``a - b``, ``<`` → ``<=``,
``and`` → ``or``, ``not x`` → ``x``, ``-x`` → ``x``, ``n`` → ``n + 1``, ``True`` → ``False``,
``max`` ↔ ``min``, ``argmax`` ↔ ``argmin``, ``amax`` ↔ ``amin``, ``largest=True`` → ``False``, a
``return x`` → ``return None``), the module's mapped fast tests run (``pytest -x -m "not slow"``); a
mutant is *killed* when a test fails (or it times out), and *survives* otherwise.  Survivors are
printed with their line; those that cannot change behaviour (equivalent mutants) are judged by hand
and listed in the README's testing section.

Speed on 2 cores: a forking server imports torch, scikit-learn, lightly and pytest once; each
mutant runs in a fork that re-imports only ``ssl_bench`` (with the mutated file) and the tests.
Results are appended to ``--out`` as JSON lines and mutants already in it are skipped, so a long run
can be stopped and resumed.  Not part of CI (hours); part of the release checklist.

Mutated: ``ssl_bench/selectors/``, ``ssl_bench/objectives/``, ``ssl_bench/evaluate/``,
``ssl_bench/compare.py`` and the training step ``ssl_bench/step.py``.  Not mutated: docstrings,
strings, annotations, error messages (arguments of ``raise``), logging and warnings.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {
    "ssl_bench/selectors": ["tests/selectors", "tests/test_training_path.py", "tests/test_distributed.py"],
    "ssl_bench/objectives": ["tests/objectives", "tests/test_training_path.py", "tests/selectors/test_tracin.py"],
    "ssl_bench/evaluate": ["tests/evaluate", "tests/test_plugin_examples.py"],
    "ssl_bench/compare.py": ["tests/test_compare_tables.py", "tests/test_compare_sweep.py"],
    "ssl_bench/step.py": ["tests/test_training_path.py", "tests/test_train_data_on.py", "tests/selectors/test_selectors.py"],
}
SWAPS_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
             ast.Mod: ast.Mult, ast.Pow: ast.Mult, ast.MatMult: ast.Mult}
SWAPS_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
             ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
SWAPS_NAME = {"max": "min", "min": "max", "argmax": "argmin", "argmin": "argmax", "amax": "amin", "amin": "amax"}
SKIP_CALLS = {"SSLBenchError", "warn", "log", "print", "ValueError", "RuntimeError", "TypeError", "KeyError", "secho", "echo"}


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
            if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) and isinstance(first.value.value, str):
                out |= set(range(first.lineno, first.end_lineno + 1))
        if isinstance(node, (ast.Raise, ast.Assert, ast.Import, ast.ImportFrom)) or (
            isinstance(node, ast.Call) and (getattr(node.func, "id", None) in SKIP_CALLS or getattr(node.func, "attr", None) in SKIP_CALLS)
        ):
            out |= set(range(node.lineno, node.end_lineno + 1))
        if isinstance(node, ast.AnnAssign) and node.value is None:
            out.add(node.lineno)
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
            out.append((node.lineno, desc, ast.unparse(t2)))
    return out


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
    elif isinstance(node, ast.Return) and node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
        yield "return None", lambda n: _set(n, "value", ast.Constant(None))


# -------------------------------------------------------------------------------------------------
# The forking runner
# -------------------------------------------------------------------------------------------------
def run_mutant(path: Path, mutated: str, tests: list[str], timeout: float) -> str:
    """'killed' | 'survived' | 'timeout' | 'error' for one mutant, run in a fork."""
    original = path.read_text()
    pid = os.fork()
    if pid == 0:  # child: the mutated file, a fresh import of ssl_bench and the tests
        try:
            path.write_text(mutated)
            for name in [m for m in sys.modules if m == "ssl_bench" or m.startswith(("ssl_bench.", "tests", "ssl_bench_plugin_"))]:
                del sys.modules[name]
            import pytest

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = pytest.main(["-x", "-q", "-m", "not slow", "-p", "no:cacheprovider", "-p", "no:randomly", *tests])
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", action="append", help="a file under a mutated path (repeatable; default: all)")
    ap.add_argument("--out", default="mutation.jsonl", help="results, one JSON line per mutant (resumable)")
    ap.add_argument("--limit", type=int, default=None, help="stop after this many new mutants")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (a hang counts as killed)")
    args = ap.parse_args()
    os.chdir(REPO)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    modules = args.module or sorted(
        str(p.relative_to(REPO)) for prefix in TARGETS for p in ([REPO / prefix] if prefix.endswith(".py") else sorted((REPO / prefix).glob("*.py")))
        if p.name != "__init__.py"
    )
    # the heavy imports, once, in the parent (forks inherit them)
    import lightly.models.modules  # noqa: F401
    import pytest  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import timm  # noqa: F401
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[(r["module"], r["line"], r["mutation"], r["index"])] = r["result"]
    new = 0
    for module in modules:
        path = REPO / module
        source = path.read_text()
        tests = test_files(module)
        for index, (line, desc, mutated) in enumerate(mutants(source)):
            key = (module, line, desc, index)
            if key in done:
                continue
            if args.limit is not None and new >= args.limit:
                break
            t0 = time.monotonic()
            result = run_mutant(path, mutated, tests, args.timeout)
            rec = {"module": module, "line": line, "mutation": desc, "index": index, "result": result,
                   "seconds": round(time.monotonic() - t0, 1), "code": source.splitlines()[line - 1].strip()}
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            done[key] = result
            new += 1
            print(f"{result:9s} {module}:{line}  {desc}  | {rec['code'][:80]}", flush=True)
    summarize(done)
    return 0


def summarize(done: dict) -> None:
    total = len(done)
    killed = sum(r in ("killed", "timeout") for r in done.values())
    errors = sum(r == "error" for r in done.values())
    print(f"mutants: {total}, killed {killed}, survived {total - killed - errors}, errors {errors}; "
          f"kill rate {killed / max(total - errors, 1):.1%}")


if __name__ == "__main__":
    raise SystemExit(main())
