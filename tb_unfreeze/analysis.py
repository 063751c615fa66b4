"""Inspect a frozen graph: its inputs, outputs, control flow and former variables. No TensorFlow."""

from __future__ import annotations

import collections
import dataclasses
import re
import sys

from tb_unfreeze import control_flow as CF
from tb_unfreeze import roles as R
from tb_unfreeze.candidates import Candidate, find_candidates
from tb_unfreeze.graph_index import FLOAT_DTYPES, GraphIndex, attr_dtype, dtype_name, shape_attr, split_input
from tb_unfreeze.loading import FrozenGraph, load_graph
from tb_unfreeze.pipeline import KNOB_ATTR, cut_input_pipeline, expose_constant_dropout

SCHEMA = "tb_unfreeze.inspect/2"
_KEEP_PROB = re.compile(r"keep_prob|dropout", re.I)
_LEARNING_PHASE = re.compile(r"learning_phase|is_training|training", re.I)


@dataclasses.dataclass
class GraphInput:
    name: str
    dtype: str
    shape: list[int] | None  # None: unknown rank
    # "data" (fed), "dropout_keep_prob" / "learning_phase" (knobs with a constant default), "optional" (a
    # PlaceholderWithDefault whose default the graph computes: left unfed, an override), "unused"
    kind: str  # (also "dropout_rate": a dropout frozen in training mode, exposed by prepare_graph, default 0)
    default: float | bool | None = None  # the value used when the caller does not feed a knob

    @property
    def tensor(self) -> str:
        return self.name + ":0"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "tensor": self.tensor, "unused": self.kind == "unused"}


@dataclasses.dataclass
class GraphOutput:
    name: str
    op: str
    # "sink", or "differentiable": the float tensor a model is trained on behind a sink that has no gradient
    # (a threshold, a cast, a CTC decoder, or a while loop whose gradient cannot be rebuilt)
    kind: str = "sink"
    output: int = 0
    trains: bool = True  # whether training losses can be taken on it (gradients flow back from it)
    note: str = ""

    @property
    def tensor(self) -> str:
        return f"{self.name}:{self.output}"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "op": self.op,
            "tensor": self.tensor,
            "kind": self.kind,
            "trains": self.trains,
            "note": self.note,
        }


@dataclasses.dataclass
class Inspection:
    """Everything tb_unfreeze knows about a frozen graph before touching TensorFlow."""

    graph: FrozenGraph
    index: GraphIndex
    candidates: list[Candidate]
    inputs: list[GraphInput]
    outputs: list[GraphOutput]
    control_flow: str  # "none", "lowered_v1", "lowered_v1_cond", "functional"
    op_counts: dict[str, int]
    unregistered_ops: list[str] | None  # None when TensorFlow was not loaded to check
    loops: list[CF.Loop] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)  # what was done to the graph to make it usable

    @property
    def loop_problems(self) -> list[str]:
        return CF.unsupported_loops(self.loops)

    @property
    def training_paths(self) -> dict:
        if self.control_flow == "lowered_v1":
            note = (
                f"{len(self.loops)} lowered while loop(s): their contexts are rebuilt, so every variable, the "
                "loops' own weights included, trains; TF2 (GradientTape, Keras fit) uses saved_model/, whose "
                "gradient is TensorFlow's TF1 gradient graph; TF1 Session training uses saved_model_tf1/ and needs "
                "TF1 control flow (tf.compat.v1.disable_control_flow_v2() or disable_v2_behavior()) before "
                "building gradients"
            )
            problems = self.loop_problems
            if problems:
                note += (
                    "; no gradient flows back through "
                    + "; ".join(problems)
                    + ": train on the outputs marked differentiable (the tensors entering those loops)"
                )
            return {"tf2_eager": True, "keras": True, "tf1_session": True, "note": note, "tf1_control_flow_v1": True}
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
            "loops": [{"frame": lp.frame, "loop_variables": len(lp.switches)} for lp in self.loops],
            "notes": self.notes,
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
        declared = shape
        if shape is None and node.op == "Placeholder":
            shape = _shape_from_consumers(index, node.name)
        used = bool(index.consumers(node.name))
        kind, default = "data", None
        if not used:
            kind = "unused"
        elif node.op == "PlaceholderWithDefault":
            kind, default = _with_default(index, node, dtype, shape)
        elif (
            dtype in FLOAT_DTYPES
            and (declared is None or declared == [])
            and (_KEEP_PROB.search(node.name) or _feeds_random_branch(index, node.name))
        ):
            # (judged on the declared shape: dropout's Sub(1, keep_prob) would make the guess a vector)
            kind, default, shape = "dropout_keep_prob", 1.0, declared
        elif dtype_name(dtype) == "bool" and (shape is None or shape == []) and _LEARNING_PHASE.search(node.name):
            kind, default = "learning_phase", False
        inputs.append(GraphInput(node.name, dtype_name(dtype), shape, kind, default))
    return inputs


def _scalar_const_value(node):
    """The value of a scalar bool/float Const, or None."""
    if node is None or node.op != "Const":
        return None
    tensor = node.attr["value"].tensor
    if [d.size for d in tensor.tensor_shape.dim] not in ([], [1]):
        return None
    if tensor.bool_val:
        return bool(tensor.bool_val[0])
    if tensor.float_val:
        return float(tensor.float_val[0])
    if tensor.double_val:
        return float(tensor.double_val[0])
    if tensor.dtype in FLOAT_DTYPES | {10}:
        content = tensor.tensor_content  # one read: each read of a bytes field copies it
        if content:
            import struct  # noqa: PLC0415

            fmt = {1: "<f", 2: "<d", 10: "<?"}.get(tensor.dtype)
            return struct.unpack(fmt, content[: struct.calcsize(fmt)])[0] if fmt else None
    return None


def _with_default(index: GraphIndex, node, dtype, shape) -> tuple[str, float | bool | None]:
    """A PlaceholderWithDefault is a knob when its default is a constant (learning phase, keep_prob) and an
    optional override when the graph computes it (retrain.py's bottleneck input: feeding it would cut the base
    network off, so it is left unfed)."""
    if KNOB_ATTR in node.attr and node.attr[KNOB_ATTR].s == b"dropout_rate":
        return "dropout_rate", 0.0
    source = _through_identities(index, index.producer(node, 0))
    value = _scalar_const_value(source)
    if value is None:
        return "optional", None
    if dtype_name(dtype) == "bool":
        return "learning_phase", bool(value)
    if dtype in FLOAT_DTYPES and (_KEEP_PROB.search(node.name) or _feeds_random_branch(index, node.name)):
        return "dropout_keep_prob", float(value)
    return "optional", None


def find_outputs(index: GraphIndex) -> list[GraphOutput]:
    """Sinks that depend on an input: the nodes nobody reads, which are what a caller fetches."""
    depends = input_dependent(index)
    order = list(index.graph_def.node)
    outputs = []
    for node in order:
        if node.op in R.NOT_OUTPUTS or node.name not in depends:
            continue
        if index.consumers(node.name) or index.control_uses.get(node.name):
            continue
        behind = _differentiable_source(index, node)
        # a thresholded/decoded sink carries no gradient: the model is trained on what feeds it
        outputs.append(
            GraphOutput(
                node.name,
                node.op,
                trains=behind is None,
                note="" if behind is None else f"no gradient flows through {node.op}; train on '{behind.name}'",
            )
        )
        if behind is not None and behind.name not in {o.name for o in outputs}:
            outputs.append(GraphOutput(behind.name, behind.op, kind="differentiable"))
    return outputs


def input_dependent(index: GraphIndex) -> set[str]:
    """Nodes whose value depends on a graph input."""
    depends: set[str] = set()
    frontier = [n.name for n in index.graph_def.node if n.op in R.INPUT_OPS]
    depends.update(frontier)
    while frontier:
        name = frontier.pop()
        for use in index.consumers(name):
            if use.node.name not in depends:
                depends.add(use.node.name)
                frontier.append(use.node.name)
    return depends


def _loop_entries(index: GraphIndex, loop: CF.Loop, depends: set[str]) -> list[tuple[str, int]]:
    """The float tensors a loop reads from outside (Enter inputs, TensorArray scatter/write values) that depend on
    an input: what a model is trained on when the loop itself cannot be differentiated."""
    found = []
    for name in loop.nodes:
        node = index.nodes.get(name)
        if node is None or node.op not in CF.ENTER_OPS or not node.input:
            continue
        producer_name, output, _ = split_input(node.input[0])
        producer = index.nodes.get(producer_name)
        candidates = []
        if producer is not None and producer.op == "TensorArrayV3":
            continue  # the array itself (handle, flow): its values come in through a scatter or write
        if producer is not None and producer.op.startswith("TensorArray"):
            if len(producer.input) > 2 and producer.attr["T"].type in FLOAT_DTYPES:
                candidates.append(split_input(producer.input[2])[:2])
        elif node.attr["T"].type in FLOAT_DTYPES:
            candidates.append((producer_name, output))
        for cand, out in candidates:
            if cand in depends and (cand, out) not in found:
                found.append((cand, out))
    return found


def _mark_loop_outputs(index: GraphIndex, outputs: list[GraphOutput], loops: list[CF.Loop]) -> list[GraphOutput]:
    """Outputs computed through a loop whose gradient cannot be rebuilt do not train; the float tensors that enter
    such a loop are added as the outputs to train on."""
    bad = [(lp, msg) for lp in loops for msg in CF.unsupported_loops([lp])]
    if not bad:
        return outputs
    frames, _ = CF.node_frames(index.graph_def)
    depends = input_dependent(index)
    result = list(outputs)
    for loop, message in bad:
        members = set(loop.nodes)
        downstream: set[str] = set()
        frontier = [n for n in loop.nodes if index.nodes.get(n) is not None and index.nodes[n].op in CF.EXIT_OPS]
        while frontier:
            name = frontier.pop()
            for use in index.consumers(name):
                if use.node.name not in downstream:
                    downstream.add(use.node.name)
                    frontier.append(use.node.name)
        for out in result:
            if out.name in downstream or out.name in members:
                out.trains = False
                out.note = f"computed through {message}, whose gradient cannot be rebuilt"
        taken = {o.tensor for o in result}
        for name, k in _loop_entries(index, loop, depends):
            node = index.nodes[name]
            out = GraphOutput(
                name,
                node.op,
                kind="differentiable",
                output=k,
                note=f"enters the while loop '{loop.frame}' ({message.split(' contains ')[-1]})",
            )
            if out.tensor not in taken and frames.get(name, "") == "":
                result.append(out)
                taken.add(out.tensor)
    return result


# Ops whose output carries no gradient (class ids, masks): a model ending in one is trained on what feeds it.
NON_DIFFERENTIABLE = frozenset(
    {
        "Cast",
        "Greater",
        "GreaterEqual",
        "Less",
        "LessEqual",
        "Equal",
        "NotEqual",
        "ArgMax",
        "ArgMin",
        "Round",
        "Sign",
        "Floor",
        "Ceil",
    }
)
# Decoders: their integer results carry no gradient; the float input (slot 0) is what the model is trained on.
DECODERS = frozenset(
    {
        "CTCGreedyDecoder",
        "CTCBeamSearchDecoder",
        "TopKV2",
        "NonMaxSuppressionV3",
        "NonMaxSuppressionV4",
        "NonMaxSuppressionV5",
    }
)
# Sinks that densify a decoder's sparse result, and the ops between a decoder and the sink a caller fetches.
_DECODED_SINKS = frozenset({"SparseToDense", "SparseTensorDenseAdd"})
_DECODER_PLUMBING = frozenset(
    {"SparseToDense", "SparseTensorDenseAdd", "Identity", "Reshape", "Cast", "Squeeze", "ExpandDims", "Transpose"}
)


def _differentiable_source(index: GraphIndex, node):
    """For a sink like Cast(Greater(sigmoid, 0.5)) the sigmoid, for a CTC decoder's dense result the logits;
    None when the sink is differentiable."""
    if node.op in _DECODED_SINKS or node.op in DECODERS:
        frontier, seen = [node], 0
        while frontier and seen < 16:
            current = frontier.pop(0)
            seen += 1
            if current.op in DECODERS:
                source = index.producer(current, 0)
                return None if source is None or source.op in R.INPUT_OPS or source.op == "Const" else source
            if current.op in _DECODER_PLUMBING:
                frontier.extend(
                    p for p in (index.producer(current, s) for s in range(len(current.input))) if p is not None
                )
        return None
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


def prepare_graph(graph_def) -> list[str]:
    """What tb_unfreeze does to a frozen graph before anything else (in place): cut a tf.data input pipeline.
    The same on TensorBoard's and TensorFlow's GraphDef classes; returns the notes to show the user."""
    return cut_input_pipeline(graph_def) + expose_constant_dropout(graph_def)


def inspect_graph(graph: FrozenGraph) -> Inspection:
    notes = prepare_graph(graph.graph_def)
    index = GraphIndex(graph.graph_def)
    counts = collections.Counter(n.op for n in graph.graph_def.node)
    for function in graph.graph_def.library.function:
        counts.update(n.op for n in function.node_def)
    library_ops = {f.signature.name for f in graph.graph_def.library.function}
    control_flow = control_flow_kind(counts)
    loops: list[CF.Loop] = []
    if control_flow == "lowered_v1":
        try:
            loops = CF.find_loops(graph.graph_def)
        except CF.ControlFlowError as e:
            notes.append(f"{e}: gradients through it cannot be rebuilt")
    depends = input_dependent(index)
    outputs = _mark_loop_outputs(index, find_outputs(index), loops)
    return Inspection(
        graph=graph,
        index=index,
        candidates=find_candidates(index, depends),
        inputs=find_inputs(index),
        outputs=outputs,
        control_flow=control_flow,
        op_counts=dict(counts.most_common()),
        unregistered_ops=unregistered_ops(set(counts) - library_ops),
        loops=loops,
        notes=notes,
    )


def inspect_model(path) -> Inspection:
    """Load a frozen graph and inspect it. Raises a UserError naming the file if it is not one."""
    return inspect_graph(load_graph(path))
