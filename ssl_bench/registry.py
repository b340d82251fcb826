"""One generic registry, used for every swappable part (mmengine / timm style).

>>> SELECTORS = Registry("selector")
>>> @SELECTORS.register("oracle")
... class Oracle: ...
>>> SELECTORS.build({"name": "oracle", "k": 1})

Building from a mapping validates the options against the factory's signature (unknown option,
missing option, wrong type) so that recipe mistakes are reported with their dotted key before any
work starts.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import math
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from ssl_bench.errors import SSLBenchError

__all__ = [
    "ALL_REGISTRIES", "Registry", "factory_params", "accepted_options", "option_defaults", "check_kwargs",
    "plugin_path", "LOADED_FILES", "registrations", "undo_registrations", "load_plugin_file",
]

ALL_REGISTRIES: dict[str, "Registry"] = {}


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def module(self) -> str:
        mod = getattr(self.factory, "__module__", "?")
        if mod.startswith("ssl_bench_plugin_"):  # a plug-in file: show its path
            path = getattr(sys.modules.get(mod), "__file__", None)
            if path:
                try:
                    return str(Path(path).relative_to(Path.cwd()))
                except ValueError:
                    return path
        return mod


class Registry:
    """A name → factory mapping for one kind of component ("selector", "objective", ...)."""

    def __init__(
        self,
        kind: str,
        plural: str | None = None,
        provided: tuple[str, ...] = (),
        base: Optional[type | str] = None,
        fallback: Optional[Callable[[str], Optional[Callable[..., Any]]] | str] = None,
        fallback_names: Optional[Callable[[], Iterable[str]] | str] = None,
        finish: Optional[Callable[[Any], Any] | str] = None,
        locations: Optional[Mapping[str, str]] = None,
        contains: Optional[Callable[[str], bool] | str] = None,
    ):
        """``provided``: leading factory arguments that ssl-bench passes itself (not recipe keys),
        e.g. the backbone an objective wraps.  ``base``: what every built object must be an instance
        of (checked by :meth:`build`, so that plug-ins honour the interface).  ``fallback(name)``: a
        factory for names not registered (e.g. any timm model), or None; ``fallback_names()`` lists
        them (for "did you mean" and ``ssl-bench list``).  ``finish(obj)``: what :meth:`build` returns
        for a built object (e.g. a dataset's options → its loaded splits).  ``contains(name)``: whether
        ``fallback`` has ``name``, answered without building anything (and raising a one-line error for a
        name refused with a reason); default ``fallback(name) is not None``.  Each of these five may be
        given as ``"module:attribute"``, imported on first use.

        ``locations``: name → the module that registers it (mmengine's lazy ``locations``).  The
        registry knows these names without importing anything and imports a member's module the
        first time the member itself is needed, so that checking a recipe's names costs no import
        of torch (ssl_bench/catalog.py)."""
        self.kind = kind
        self.provided = tuple(provided)
        self._base, self._fallback, self._fallback_names, self._finish = base, fallback, fallback_names, finish
        self._contains = contains
        self.plural = plural or kind + "s"
        self.locations: dict[str, str] = dict(locations or {})
        self._entries: dict[str, Entry] = {}
        # what each location registered (put back after a plug-in's override is undone)
        self._builtin: dict[str, Entry] = {}
        ALL_REGISTRIES[self.plural] = self

    # "module:attribute" references, resolved when first used
    base = property(lambda self: _resolve(self._base))
    fallback = property(lambda self: _resolve(self._fallback))
    fallback_names = property(lambda self: _resolve(self._fallback_names))
    finish = property(lambda self: _resolve(self._finish))
    contains = property(lambda self: _resolve(self._contains))

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str | None = None, *, force: bool = False):
        """Decorator registering a class or factory function under ``name``."""

        def deco(factory):
            key = name or factory.__name__
            entry = Entry(key, factory)
            builtin = self.locations.get(key) == getattr(factory, "__module__", None)
            if builtin:
                self._builtin[key] = entry
                if key in self._entries and self._entries[key].factory is not factory:
                    return factory  # a plug-in replaced it (force=True) before its module was imported: keep that
            elif not force and key in self.locations and key not in self._entries:
                raise SSLBenchError(
                    f"{self.kind} '{key}' is already registered (by {self.locations[key]}); "
                    "pick another name or pass force=True"
                )
            if key in self._entries and not force and self._entries[key].factory is not factory:
                old = self._entries[key]
                raise SSLBenchError(
                    f"{self.kind} '{key}' is already registered (by {old.module}); "
                    "pick another name or pass force=True"
                )
            self._entries[key] = entry
            if inspect.isclass(factory) and "registered_name" not in vars(factory):
                factory.registered_name = key  # e.g. an evaluation's default result key
            return factory

        return deco

    # -- lookup -------------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        """Whether ``name`` is a member; imports nothing for a registered or located name."""
        load_entry_point_plugins()
        if not isinstance(name, str):
            return False
        if name in self._entries or name in self.locations:
            return True
        if self._contains is not None:
            return bool(self.contains(name))
        return self._fallback is not None and self.fallback(name) is not None

    def __len__(self) -> int:
        return len(self.names())

    def names(self, pattern: str | None = None) -> list[str]:
        """Every member's name (imports nothing)."""
        load_entry_point_plugins()
        names = sorted(set(self._entries) | set(self.locations))
        return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names

    def entries(self, pattern: str | None = None) -> list[Entry]:
        """Every member (imports the modules of those not imported yet)."""
        return [self._entry(n) for n in self.names(pattern)]

    def _entry(self, name: str) -> Entry:
        """The registered entry of ``name``, importing the module that registers it if need be."""
        if name not in self._entries and name in self.locations:
            if name in self._builtin:  # imported before; its entry was taken out (a plug-in's override undone)
                self._entries[name] = self._builtin[name]
            else:
                importlib.import_module(self.locations[name])
                if name not in self._entries:
                    raise SSLBenchError(f"{self.kind} '{name}': module {self.locations[name]} does not register it")
        return self._entries[name]

    def unknown(self, name: str, key: str | None = None, extra_names: Iterable[str] = ()) -> SSLBenchError:
        candidates = self.names() + list(extra_names) + (list(self.fallback_names()) if self.fallback_names else [])
        close = difflib.get_close_matches(str(name), candidates, n=3, cutoff=0.6)
        where = f" (recipe key {key})" if key else ""
        hint = (
            " — did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
            if close
            else f" — registered: {', '.join(self.names()) or 'none'}"
        )
        return SSLBenchError(f"unknown {self.kind} '{name}'{where}{hint}")

    def check_name(self, cfg: Any, key: str | None = None) -> None:
        """``cfg`` is a mapping naming a member (imports nothing for a built-in or registered name)."""
        key = key or self.kind
        if not isinstance(cfg, Mapping):
            raise SSLBenchError(f"recipe key {key} must be a mapping with a 'name', got {cfg!r}")
        if "name" not in cfg:
            raise SSLBenchError(f"recipe key {key}.name is missing (choose one of: {', '.join(self.names())})")
        if cfg["name"] not in self:
            raise self.unknown(cfg["name"], f"{key}.name")

    def get(self, name: str, key: str | None = None) -> Callable[..., Any]:
        load_entry_point_plugins()
        if isinstance(name, str) and (name in self._entries or name in self.locations):
            return self._entry(name).factory
        factory = self.fallback(name) if self.fallback is not None and isinstance(name, str) else None
        if factory is None:
            raise self.unknown(name, key)
        return factory

    # -- building -----------------------------------------------------------------------------
    def check(
        self, cfg: Mapping[str, Any], key: str | None = None, skip: Iterable[str] = (), n_args: int = 0
    ) -> None:
        """Validate ``cfg`` (a mapping with ``name``) against the factory's signature."""
        key = key or self.kind
        self.check_name(cfg, key)
        factory = self.get(cfg["name"], f"{key}.name")
        options = {k: v for k, v in cfg.items() if k != "name"}
        skip = set(skip) | set(self.provided)
        check_kwargs(factory, options, key=key, skip=skip, n_args=n_args, what=f"{self.kind} '{cfg['name']}'")
        validate_options = getattr(factory, "validate_options", None)  # checks that need no files (a flag name)
        if callable(validate_options):
            validate_options({k: v for k, v in options.items() if k not in skip}, key=key)

    def build(self, cfg: Mapping[str, Any], *args, key: str | None = None, **kwargs) -> Any:
        """Build ``cfg['name']`` with the other keys of ``cfg`` as keyword arguments.

        ``args``/``kwargs`` are passed on in addition (objects that are not part of the recipe,
        e.g. the backbone an objective wraps).
        """
        key = key or self.kind
        # positional ``args`` are the ``provided`` arguments (already skipped by name) plus any others
        self.check(cfg, key, skip=kwargs.keys(), n_args=max(len(args) - len(self.provided), 0))
        factory = self.get(cfg["name"], f"{key}.name")
        options = {k: v for k, v in cfg.items() if k != "name"}
        obj = factory(*args, **options, **kwargs)
        if self.finish is not None:
            obj = self.finish(obj)
        if self.base is not None and not isinstance(obj, self.base):
            raise SSLBenchError(
                f"{self.kind} '{cfg['name']}' (recipe key {key}.name) built a {type(obj).__name__}, not a "
                f"{self.base.__module__}.{self.base.__qualname__}: plug-in {self.plural} subclass it"
            )
        return obj

    # -- display ------------------------------------------------------------------------------
    def rows(self, pattern: str | None = None) -> list[tuple[str, str, str]]:
        return [(e.name, e.summary, e.module) for e in self.entries(pattern)]

    def __repr__(self) -> str:
        lines = [f"Registry({self.kind}: {len(self)} entries)"]
        width = max((len(n) for n in self.names()), default=0)
        for name, summary, module in self.rows():
            lines.append(f"  {name:<{width}}  {summary}  [{module}]")
        return "\n".join(lines)


def _resolve(ref: Any) -> Any:
    """``"module:attribute"`` → that attribute (imported now); anything else as it is."""
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        return getattr(importlib.import_module(module), attr)
    return ref


# -------------------------------------------------------------------------------------------------
# Signature-based option checking
# -------------------------------------------------------------------------------------------------
def factory_params(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """The parameters of a registered class's ``__init__`` (without ``self``) or of a function."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    return {n: p for n, p in inspect.signature(target).parameters.items() if n != "self"}


def accepted_options(factory: Callable[..., Any]) -> Optional[set[str]]:
    """Keyword options ``factory`` accepts, or None if it takes ``**kwargs`` (anything)."""
    params = factory_params(factory)
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if p.kind != p.VAR_POSITIONAL}


def option_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """Plain (YAML-able) default values of ``factory``'s options, to write a fully resolved recipe."""
    out = {}
    for n, p in factory_params(factory).items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is inspect.Parameter.empty:
            continue
        if isinstance(p.default, (int, float, str, bool, type(None), list, tuple)):
            out[n] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out

def _type_ok(value: Any, annotation: Any) -> bool:
    """A lenient runtime check of ``value`` against a type annotation (int→float allowed)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation is float:  # a number, and a finite one (.nan / .inf pass YAML but no option takes them)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annotation)
        if not args or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
            inner = args[0] if args else Any
            return all(_type_ok(v, inner) for v in value)
        if origin is tuple:
            return len(args) == len(value) and all(_type_ok(v, a) for v, a in zip(value, args))
        return all(_type_ok(v, args[0]) for v in value)
    if origin in (dict, typing.Mapping) or annotation is dict:
        return isinstance(value, Mapping)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def check_kwargs(
    factory: Callable[..., Any],
    options: Mapping[str, Any],
    *,
    key: str,
    what: str,
    skip: Iterable[str] = (),
    n_args: int = 0,
) -> None:
    """Raise a one-line :class:`SSLBenchError` if ``options`` do not fit ``factory``'s signature."""
    target = factory
    while isinstance(target, functools.partial):  # e.g. the timm fallback: TimmBackbone with its name bound
        target = target.func
    target = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to no type checks
        hints = {}
    all_params = factory_params(factory)
    params = {n: p for n, p in all_params.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in set(skip)}
    accepts_any = accepted_options(factory) is None
    for opt, value in options.items():
        if opt not in params:
            if accepts_any:
                continue
            close = difflib.get_close_matches(opt, list(params), n=1)
            hint = f" — did you mean '{close[0]}'?" if close else f" (options: {', '.join(params) or 'none'})"
            raise SSLBenchError(f"unknown recipe key {key}.{opt} for {what}{hint}")
        ann = hints.get(opt, params[opt].annotation)
        if not _type_ok(value, ann):
            if isinstance(value, float) and not math.isfinite(value):
                raise SSLBenchError(f"recipe key {key}.{opt} must be a finite number, got {value!r}")
            raise SSLBenchError(
                f"recipe key {key}.{opt} must be {_type_name(ann)}, got {type(value).__name__} {value!r}"
            )
    for n, p in list(params.items())[n_args:]:
        if p.default is inspect.Parameter.empty and n not in options:
            raise SSLBenchError(f"recipe key {key}.{n} is required for {what}")


# -------------------------------------------------------------------------------------------------
# Plug-ins
# -------------------------------------------------------------------------------------------------
_LOADED_FILES: dict[str, types.ModuleType] = {}
_ENTRY_POINTS_LOADED = False
ENTRY_POINT_GROUP = "ssl_bench.plugins"


def plugin_path(path: str | Path, base_dir: Optional[Path] = None, key: str = "plugins") -> Path:
    """The file a plug-in entry names: absolute as given, else relative to ``base_dir`` (the recipe
    file's folder; the working directory for a path typed on the command line) — nowhere else, so a
    same-named file elsewhere is never picked up."""
    p = Path(path).expanduser()
    found = p if p.is_absolute() else Path(base_dir or Path.cwd()) / p
    if not found.is_file():
        where = "" if p.is_absolute() else f", looked for {found}"
        raise SSLBenchError(f"plugin file not found: {path} (recipe key {key}{where})")
    return found.resolve()


# plug-in files imported in this process, in order (what a command says it loaded)
LOADED_FILES: list[Path] = []


def registrations() -> dict[str, dict[str, Entry]]:
    """What every registry holds now (to give to :func:`undo_registrations` later)."""
    return {kind: dict(reg._entries) for kind, reg in ALL_REGISTRIES.items()}


def undo_registrations(before: dict[str, dict[str, Entry]], made_by: Callable[[Entry], bool]) -> None:
    """Undo the registrations made since ``before`` by the code ``made_by`` picks: an entry it added
    is removed, a component it replaced (``force=True``) is put back."""
    for kind, reg in ALL_REGISTRIES.items():
        old = before.get(kind, {})
        for name, entry in list(reg._entries.items()):
            if entry is not old.get(name) and made_by(entry):
                if name in old:
                    reg._entries[name] = old[name]
                else:
                    del reg._entries[name]


def _unregister(mod_name: str, before: dict[str, dict[str, Entry]]) -> None:
    """A plug-in file that failed to import leaves nothing behind, so that a process that goes on (a
    notebook, a test) never builds a half-imported plug-in's components."""
    sys.modules.pop(mod_name, None)
    undo_registrations(before, lambda entry: getattr(entry.factory, "__module__", None) == mod_name)


def load_plugin_file(path: str | Path, base_dir: Optional[Path] = None, key: str = "plugins") -> types.ModuleType:
    """Import a Python file so that its ``@REGISTRY.register`` decorators run (once per process).

    Relative paths are relative to ``base_dir`` only (see :func:`plugin_path`).  An exception or a
    ``sys.exit`` while importing is a one-line error naming the file.
    """
    found = plugin_path(path, base_dir, key)
    if str(found) in _LOADED_FILES:
        return _LOADED_FILES[str(found)]
    mod_name = f"ssl_bench_plugin_{found.stem}_{abs(hash(str(found))) % 10**8}"
    spec = importlib.util.spec_from_file_location(mod_name, found)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    before = registrations()
    try:
        spec.loader.exec_module(module)
    except SSLBenchError:
        _unregister(mod_name, before)
        raise
    except SystemExit as e:  # a plug-in must not end the program that imports it
        _unregister(mod_name, before)
        raise SSLBenchError(f"plugin {found} (recipe key {key}) called sys.exit({e.code!r}) while being "
                            "imported") from None
    except Exception as e:  # a broken plug-in is the user's file: say which and why, in one line
        _unregister(mod_name, before)
        first = str(e).splitlines()[0] if str(e) else ""
        raise SSLBenchError(f"plugin {found} (recipe key {key}) failed to import: {type(e).__name__}: {first}") from e
    _LOADED_FILES[str(found)] = module
    LOADED_FILES.append(found)
    return module


def load_entry_point_plugins() -> None:
    """Import every installed package that declares the ``ssl_bench.plugins`` entry-point group."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:
            raise SSLBenchError(f"plugin entry point '{ep.name}' ({ep.value}) failed to load: {e}") from e
