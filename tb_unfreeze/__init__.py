"""tb_unfreeze: turn a frozen TensorFlow graph back into a trainable, verified model.

Importing the package is cheap and never imports TensorFlow (nor numpy): `convert` and `log_graphs` load their
modules on first use, and only `convert` imports TensorFlow.
"""

from tb_unfreeze import errors
from tb_unfreeze.analysis import Inspection, inspect_graph, inspect_model
from tb_unfreeze.loading import FrozenGraph, load_graph
from tb_unfreeze.selection import Selection

_LAZY = {"convert": "tb_unfreeze.conversion", "log_graphs": "tb_unfreeze.graph_runs"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tb_unfreeze' has no attribute {name!r}")


__all__ = [
    "FrozenGraph",
    "Inspection",
    "Selection",
    "convert",
    "errors",
    "inspect_graph",
    "inspect_model",
    "load_graph",
    "log_graphs",
]
