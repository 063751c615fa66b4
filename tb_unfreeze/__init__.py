"""tb_unfreeze: turn a frozen TensorFlow graph back into a trainable, verified model.

Importing the package is cheap and never imports TensorFlow; only `convert` does.
"""

from tb_unfreeze import errors
from tb_unfreeze.analysis import Inspection, inspect_graph, inspect_model
from tb_unfreeze.loading import FrozenGraph, load_graph
from tb_unfreeze.selection import Selection


def convert(*args, **kwargs) -> dict:
    """See tb_unfreeze.convert.convert."""
    from tb_unfreeze.convert import convert as _convert  # noqa: PLC0415

    return _convert(*args, **kwargs)


def log_graphs(*args, **kwargs):
    """See tb_unfreeze.graph_runs.log_graphs."""
    from tb_unfreeze.graph_runs import log_graphs as _log  # noqa: PLC0415

    return _log(*args, **kwargs)


__all__ = ["FrozenGraph", "Inspection", "Selection", "convert", "errors", "inspect_graph", "inspect_model",
           "load_graph", "log_graphs"]
