"""ssl-bench: self-supervised pre-training on medical images with swappable positive pairs."""

__version__ = "0.1.0"


def __getattr__(name):  # the Python API, imported on first use (``import ssl_bench`` stays light)
    if name == "compare":  # the module, callable: ssl_bench.compare(paths) is ssl_bench.api.compare
        import importlib

        return importlib.import_module("ssl_bench.compare")
    if name in ("run", "open_run", "Run"):
        from ssl_bench import api

        return getattr(api, name)
    if name == "load_recipe":
        from ssl_bench.recipe import load_recipe

        return load_recipe
    if name in ("load_backbone", "export_backbone"):
        from ssl_bench import export

        return getattr(export, name)
    raise AttributeError(f"module 'ssl_bench' has no attribute {name!r}")


__all__ = ["__version__", "run", "open_run", "compare", "Run", "load_recipe", "load_backbone", "export_backbone"]
