"""YAML for recipes and run files: safe types only, bounded expansion, no duplicate keys.

``yaml.safe_load`` constructs no Python objects, but it still expands anchors and aliases without
limit (a few hundred bytes of nested aliases — the "billion laughs" — grow to gigabytes) and keeps
the last of two equal keys silently.  :func:`load` composes the document first, counts the values
its aliases would expand to (memoised: fast on any input), refuses more than :data:`MAX_VALUES`,
refuses a key given twice in one mapping, and only then constructs it.
"""

from __future__ import annotations

from typing import Any

import yaml

from ssl_bench.errors import SSLBenchError

__all__ = ["MAX_DEPTH", "load", "load_json"]

MAX_VALUES = 200_000  # a resolved recipe has a few hundred; a generous bound on legitimate anchors
MAX_DEPTH = 32  # nesting: a recipe has 4 levels (evaluate → transfer → protocol → augment); Python's parsers recurse
_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
         yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def load(text: str | bytes, where: str) -> Any:
    """Parse ``text`` (a recipe, ``--set`` value or run file) safely; one-line :class:`SSLBenchError`
    naming ``where`` (and the line) for anything wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SSLBenchError(f"{where} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from e
    _check_depth(text, where)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError as e:  # not reached with the depth check; kept as the last guard
        raise SSLBenchError(f"{where} is nested too deeply to read") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise SSLBenchError(f"{where}{line} is not valid YAML: {getattr(e, 'problem', None) or e}") from e
    if node is None:
        return None
    size = _expanded_size(node, {}, where)
    if size > MAX_VALUES:
        raise SSLBenchError(
            f"{where}: its anchors and aliases expand to more than {MAX_VALUES:,} values; refused (a YAML alias bomb?)"
        )
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise SSLBenchError(f"{where}{line}: {getattr(e, 'problem', None) or e}") from e
    finally:
        loader.dispose()


def _check_depth(text: str, where: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` from the token stream (the scanner does not recurse;
    the composer, OmegaConf and JSON would, into a RecursionError)."""
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    line = token.start_mark.line + 1
                    raise SSLBenchError(f"{where} line {line}: nested more than {MAX_DEPTH} levels deep; refused")
            elif isinstance(token, _CLOSE):
                depth -= 1
    except yaml.YAMLError:
        return  # not YAML: the composer reports it with its line


def load_json(text: str | bytes, where: str) -> Any:
    """``json.loads`` for files a user may have edited (run files): invalid JSON and nesting too deep
    for Python's parser are one line naming ``where``."""
    import json

    try:
        return json.loads(text)
    except RecursionError as e:
        raise SSLBenchError(f"{where} is nested too deeply to read") from e
    except ValueError as e:  # JSONDecodeError, and bytes that are not UTF-8
        raise SSLBenchError(f"{where} is not valid JSON: {str(e).splitlines()[0][:160]}") from e


def _expanded_size(node: yaml.Node, memo: dict[int, int], where: str) -> int:
    """How many values ``node`` stands for once every alias is expanded (each node counted once per use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_VALUES + 1  # a recursive alias (a node inside itself) expands without end
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        total = 1
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                if k.value in seen:
                    raise SSLBenchError(
                        f"{where} line {k.start_mark.line + 1}: key '{k.value}' is given twice in one mapping "
                        f"(also line {seen[k.value] + 1}); YAML would keep only the last"
                    )
                seen[k.value] = k.start_mark.line
            total += _expanded_size(k, memo, where) + _expanded_size(v, memo, where)
            if total > MAX_VALUES:
                break
    elif isinstance(node, yaml.SequenceNode):
        total = 1
        for v in node.value:
            total += _expanded_size(v, memo, where)
            if total > MAX_VALUES:
                break
    else:
        total = 1
    memo[key] = total
    return total
