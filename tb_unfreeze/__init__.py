"""tb_unfreeze: turn a frozen TensorFlow graph back into a trainable, verified model.

Importing the package is cheap and never imports TensorFlow; only `convert` does.
"""

from tb_unfreeze import errors
from tb_unfreeze.analysis import Inspection, inspect_graph, inspect_model
from tb_unfreeze.loading import FrozenGraph, load_graph
from tb_unfreeze.selection import Selection
from tb_unfreeze.convert import convert  # noqa: E402  (the module imports TensorFlow only when called)
from tb_unfreeze.graph_runs import log_graphs


__all__ = ["FrozenGraph", "Inspection", "Selection", "convert", "errors", "inspect_graph", "inspect_model",
           "load_graph", "log_graphs"]
