"""Inspect a frozen graph: its inputs, outputs, control flow and former variables. No TensorFlow."""

from __future__ import annotations

import collections
import dataclasses
import re
import sys

from tb_unfreeze import roles as R
from tb_unfreeze.candidates import Candidate, find_candidates, upstream_of_loops
from tb_unfreeze.graph_index import FLOAT_DTYPES, GraphIndex, attr_dtype, dtype_name, shape_attr, split_input
from tb_unfreeze.loading import FrozenGraph, load_graph

SCHEMA = "tb_unfreeze.inspect/1"
_KEEP_PROB = re.compile(r"keep_prob|dropout", re.I)
_LEARNING_PHASE = re.compile(r"learning_phase|is_training|training", re.I)


@dataclasses.dataclass
class GraphInput:
    name: str
    dtype: str
    shape: list[int] | None  # None: unknown rank
    kind: str  # "data", "dropout_keep_prob", "learning_phase", "unused"
    default: float | bool | None = None  # the value used when the caller does not feed it

    @property
    def tensor(self) -> str:
        return self.name + ":0"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "tensor": self.tensor, "unused": self.kind == "unused"}


@dataclasses.dataclass
class GraphOutput:
    name: str
    op: str
    kind: str = "sink"  # "sink", or "differentiable" for the float tensor behind a thresholded/cast sink

    @property
    def tensor(self) -> str:
        return self.name + ":0"

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "tensor": self.tensor, "kind": self.kind}


@dataclasses.dataclass
class Inspection:
    """Everything tb_unfreeze knows about a frozen graph before touching TensorFlow."""

    graph: FrozenGraph
    index: GraphIndex
    candidates: list[Candidate]
    inputs: list[GraphInput]
    outputs: list[GraphOutput]
    control_flow: str  # "none", "lowered_v1", "functional"
    op_counts: dict[str, int]
    unregistered_ops: list[str] | None  # None when TensorFlow was not loaded to check

    @property
    def training_paths(self) -> dict:
        if self.control_flow == "lowered_v1":
            return {
                "tf2_eager": False,
                "keras": False,
                "tf1_session": True,
                "note": "this graph has lowered TF1 while loops (Enter/Exit/NextIteration), which TensorFlow cannot "
                "differentiate after import: train it in a tf.compat.v1 Session (tf.compat.v1.gradients) with the "
                "variables upstream of the loops kept non-trainable (the default); for TF2 (GradientTape, Keras "
                "fit) or to train the loop's own weights, re-freeze the source with lower_control_flow=False",
            }
        return {"tf2_eager": True, "keras": True, "tf1_session": True, "note": ""}

    def candidate(self, name: str) -> Candidate | None:
        return next((c for c in self.candidates if c.name == name), None)

    def to_dict(self) -> dict:
        chosen = [c for c in self.candidates if c.recommended]
        return {
            "schema": SCHEMA,
            "model": {
                "path": self.graph.path,
                "format": self.graph.format,
                "size": self.graph.size,
                "nodes": len(self.graph.graph_def.node),
                "functions": len(self.graph.graph_def.library.function),
                "producer": self.graph.graph_def.versions.producer,
            },
            "inputs": [i.to_dict() for i in self.inputs],
            "outputs": [o.to_dict() for o in self.outputs],
            "control_flow": self.control_flow,
            "training_paths": self.training_paths,
            "unregistered_ops": self.unregistered_ops,
            "op_counts": self.op_counts,
            "candidates": [c.to_dict() for c in self.candidates],
            "totals": {
                "candidates": len(self.candidates),
                "recommended": len(chosen),
                "parameters": sum(c.size for c in chosen),
                "trainable_parameters": sum(c.size for c in chosen if c.trainable),
                "bytes": sum(c.nbytes for c in chosen),
            },
        }


def _feeds_random_branch(index: GraphIndex, name: str) -> bool:
    """True when a consumer of `name` also reads something computed from RandomUniform (TF1 dropout)."""
    for use in index.consumers(name):
        for raw in use.node.input:
            frontier, depth = [index.nodes.get(split_input(raw)[0])], 0
            while frontier and depth < 4:
                nxt = []
                for node in frontier:
                    if node is None:
                        continue
                    if node.op in ("RandomUniform", "RandomStandardNormal"):
                        return True
                    nxt.extend(index.nodes.get(split_input(i)[0]) for i in node.input if not i.startswith("^"))
                frontier, depth = nxt, depth + 1
    return False


_ELEMENTWISE = frozenset({"Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum"})


def _through_identities(index: GraphIndex, node, limit: int = 16):
    """Walk back through `Identity` ops (at most `limit`: a corrupt graph may hold an Identity cycle)."""
    while node is not None and node.op == "Identity" and limit > 0:
        node = index.producer(node, 0)
        limit -= 1
    return node


def _shape_from_consumers(index: GraphIndex, name: str) -> list[int] | None:
    """Guess a rank for an undeclared input from what reads it: [-1, k] before a MatMul with a [k, n] weight,
    [-1] before an element-wise op with a scalar. None when unsure (verification then asks for --probe)."""
    for use in index.consumers(name):
        if use.node.op == "MatMul" and use.slot == 0 and not use.node.attr["transpose_a"].b:
            weight = _through_identities(index, index.producer(use.node, 1))
            if weight is not None and weight.op == "Const":
                dims = [d.size for d in weight.attr["value"].tensor.tensor_shape.dim]
                if len(dims) == 2:
                    return [-1, dims[1] if weight and use.node.attr["transpose_b"].b else dims[0]]
        if use.node.op in _ELEMENTWISE:
            other = _through_identities(index, index.producer(use.node, 1 - use.slot)) if use.slot in (0, 1) else None
            if other is not None and other.op == "Const" and not other.attr["value"].tensor.tensor_shape.dim:
                return [-1]
    return None


def find_inputs(index: GraphIndex) -> list[GraphInput]:
    inputs = []
    for node in index.graph_def.node:
        if node.op not in R.INPUT_OPS:
            continue
        dtype = attr_dtype(node)
        shape = shape_attr(node)
        if shape == [] and index.graph_def.versions.producer < 21:
            shape = None  # before GraphDef version 21 an empty shape meant "unknown" (TensorFlow's own rule)
        if shape is None and node.op == "Placeholder":
            shape = _shape_from_consumers(index, node.name)
        used = bool(index.consumers(node.name))
        kind, default = "data", None
        if not used:
            kind = "unused"
        elif node.op == "PlaceholderWithDefault":
            kind = "learning_phase" if dtype_name(dtype) == "bool" else "data"
            default = False if kind == "learning_phase" else None
        elif dtype in FLOAT_DTYPES and (shape is None or shape == []) and (
            _KEEP_PROB.search(node.name) or _feeds_random_branch(index, node.name)
        ):
            kind, default = "dropout_keep_prob", 1.0
        elif dtype_name(dtype) == "bool" and (shape is None or shape == []) and _LEARNING_PHASE.search(node.name):
            kind, default = "learning_phase", False
        inputs.append(GraphInput(node.name, dtype_name(dtype), shape, kind, default))
    return inputs


def find_outputs(index: GraphIndex) -> list[GraphOutput]:
    """Sinks that depend on an input: the nodes nobody reads, which are what a caller fetches."""
    depends: set[str] = set()
    order = list(index.graph_def.node)
    frontier = [n.name for n in order if n.op in R.INPUT_OPS]
    depends.update(frontier)
    while frontier:
        name = frontier.pop()
        for use in index.consumers(name):
            if use.node.name not in depends:
                depends.add(use.node.name)
                frontier.append(use.node.name)
    outputs = []
    for node in order:
        if node.op in R.NOT_OUTPUTS or node.name not in depends:
            continue
        if index.consumers(node.name) or index.control_uses.get(node.name):
            continue
        outputs.append(GraphOutput(node.name, node.op))
        behind = _differentiable_source(index, node)
        if behind is not None and behind.name not in {o.name for o in outputs}:
            outputs.append(GraphOutput(behind.name, behind.op, kind="differentiable"))
    return outputs


# Ops whose output carries no gradient (class ids, masks): a model ending in one is trained on what feeds it.
NON_DIFFERENTIABLE = frozenset(
    {"Cast", "Greater", "GreaterEqual", "Less", "LessEqual", "Equal", "NotEqual", "ArgMax", "ArgMin", "Round",
     "Sign", "Floor", "Ceil"}
)


def _differentiable_source(index: GraphIndex, node):
    """For a sink like Cast(Greater(sigmoid, 0.5)), the sigmoid; None when the sink is differentiable."""
    if node.op not in NON_DIFFERENTIABLE:
        return None
    seen = 0
    while node is not None and node.op in NON_DIFFERENTIABLE and seen < 8:
        node = index.producer(node, 0)
        seen += 1
    if node is None or node.op in R.INPUT_OPS or node.op == "Const":
        return None
    return node


def control_flow_kind(op_counts: dict[str, int]) -> str:
    if any(op in op_counts for op in R.CONTROL_FLOW_V1):
        return "lowered_v1"
    if any(op in op_counts for op in R.FUNCTIONAL_OPS):
        return "functional"
    if any(op in op_counts for op in R.CONTROL_FLOW_COND_V1):
        return "lowered_v1_cond"
    return "none"


def unregistered_ops(op_types) -> list[str] | None:
    """Ops this TensorFlow does not know, if TensorFlow is already loaded; inspection never imports it."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.framework import op_def_registry  # noqa: PLC0415 (already imported)

    return sorted(op for op in op_types if op_def_registry.get(op) is None)


def inspect_graph(graph: FrozenGraph) -> Inspection:
    index = GraphIndex(graph.graph_def)
    counts = collections.Counter(n.op for n in graph.graph_def.node)
    for function in graph.graph_def.library.function:
        counts.update(n.op for n in function.node_def)
    library_ops = {f.signature.name for f in graph.graph_def.library.function}
    control_flow = control_flow_kind(counts)
    blocked = upstream_of_loops(index) if control_flow == "lowered_v1" else set()
    return Inspection(
        graph=graph,
        index=index,
        candidates=find_candidates(index, blocked),
        inputs=find_inputs(index),
        outputs=find_outputs(index),
        control_flow=control_flow,
        op_counts=dict(counts.most_common()),
        unregistered_ops=unregistered_ops(set(counts) - library_ops),
    )


def inspect_model(path) -> Inspection:
    """Load a frozen graph and inspect it. Raises a UserError naming the file if it is not one."""
    return inspect_graph(load_graph(path))
