from typing import Optional

import pytest

from ssl_bench.errors import SSLBenchError
from ssl_bench.registry import Registry, load_plugin_file


@pytest.fixture
def reg():
    r = Registry("widget", plural="widgets_test")

    @r.register("tracin")
    class TracIn:
        """Closed-form TracIn selector.

        More text."""

        def __init__(self, k: int = 1, lr: float = 1.0, model: str = "online", ckpt: Optional[str] = None):
            self.k, self.lr, self.model, self.ckpt = k, lr, model, ckpt

    @r.register("fs")
    def fs(needed: int, layers: list[int] = (1, 2)):
        """Feature similarity."""
        return ("fs", needed, layers)

    return r


def test_build_passes_options(reg):
    obj = reg.build({"name": "tracin", "k": 3, "lr": 2})  # int accepted for float
    assert (obj.k, obj.lr, obj.model) == (3, 2, "online")
    assert reg.build({"name": "fs", "needed": 1, "layers": [3]}) == ("fs", 1, [3])


def test_unknown_name_suggests_closest(reg):
    with pytest.raises(SSLBenchError,
                       match=r"unknown widget 'tracn' \(recipe key selector.name\) — did you mean 'tracin'\?"):
        reg.build({"name": "tracn"}, key="selector")


def test_unknown_option_and_wrong_type_and_missing(reg):
    with pytest.raises(SSLBenchError,
                       match=r"unknown recipe key selector\.kk for widget 'tracin' — did you mean 'k'\?"):
        reg.build({"name": "tracin", "kk": 1}, key="selector")
    with pytest.raises(SSLBenchError, match=r"recipe key selector\.k must be int, got str 'two'"):
        reg.build({"name": "tracin", "k": "two"}, key="selector")
    with pytest.raises(SSLBenchError, match=r"recipe key selector\.k must be int, got bool"):
        reg.build({"name": "tracin", "k": True}, key="selector")
    with pytest.raises(SSLBenchError, match=r"recipe key selector\.needed is required"):
        reg.build({"name": "fs"}, key="selector")
    with pytest.raises(SSLBenchError, match=r"layers must be list\[int\]"):
        reg.build({"name": "fs", "needed": 1, "layers": ["a"]}, key="selector")
    with pytest.raises(SSLBenchError, match="name is missing"):
        reg.build({"k": 1}, key="selector")


def test_rows_and_wildcards(reg):
    rows = reg.rows()
    assert [r[0] for r in rows] == ["fs", "tracin"]
    assert rows[1][1] == "Closed-form TracIn selector."  # first docstring line
    assert reg.names("tr*") == ["tracin"]
    assert "tracin" in repr(reg)


def test_duplicate_registration_is_refused(reg):
    with pytest.raises(SSLBenchError, match="already registered"):

        @reg.register("fs")
        def other():
            """x"""


def test_plugin_file_registers_and_errors(tmp_path):
    from ssl_bench.selectors import SELECTORS

    plugin = tmp_path / "my_sel.py"
    plugin.write_text(
        "from ssl_bench.selectors import SELECTORS, Selector\n"
        "@SELECTORS.register('test_plugin_sel')\n"
        "class Mine(Selector):\n"
        "    '''A test plug-in.'''\n"
        "    def select(self, ctx):\n"
        "        return None\n"
    )
    load_plugin_file(plugin)
    assert "test_plugin_sel" in SELECTORS
    assert SELECTORS.build({"name": "test_plugin_sel", "k": 2}).k == 2

    with pytest.raises(SSLBenchError, match="plugin file not found: nope.py"):
        load_plugin_file("nope.py")
    bad = tmp_path / "bad.py"
    bad.write_text("raise ValueError('boom')\n")
    with pytest.raises(SSLBenchError, match=r"failed to import: ValueError: boom"):
        load_plugin_file(bad)


def test_entry_point_plugins_are_loaded(monkeypatch, tmp_path):
    import importlib.metadata

    import ssl_bench.registry as registry

    calls = []

    class EP:
        name, value = "demo", "demo:register"

        def load(self):
            calls.append(1)

    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [EP()] if group == "ssl_bench.plugins" else [])
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    Registry("ep_test").names()
    assert calls == [1]
