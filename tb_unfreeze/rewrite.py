"""Rewrite a frozen GraphDef so chosen constants become variables (TensorFlow graph mode).

Each chosen tensor's consumers are pointed at a reserved name that `import_graph_def(input_map=...)` binds to
the variable's read; the constants (and what only fed them, e.g. a quantized value's Dequantize) are removed.
The frozen graph is imported with `name=""` into a graph holding only the variables, after checking that no
name can collide (a collision would make TensorFlow rename ops silently; PITFALLS §5).
"""

from __future__ import annotations

import dataclasses
import re

from tensorboard.compat.proto import graph_pb2

from tb_unfreeze.analysis import GraphInput
from tb_unfreeze.graph_index import split_input
from tb_unfreeze.selection import Chosen

MAPPED_PREFIX = "__tb_unfreeze__/"


@dataclasses.dataclass
class Rewritten:
    graph_def: graph_pb2.GraphDef
    mapped: dict[str, Chosen]  # reserved input name -> the candidate it stands for
    variable_names: dict[str, str]  # const name -> final variable name
    removed: list[str]


_BUNDLE = (
    "",
    "/Initializer/zeros/shape",
    "/Initializer/zeros/value",
    "/Initializer/zeros",
    "/IsInitialized/VarIsInitializedOp",
    "/Assign",
    "/Read/ReadVariableOp",
)  # variable_nodes.py's names


def _unique_variable_names(chosen: list[Chosen], graph_names: set[str]) -> dict[str, str]:
    """Variable names whose nodes (variable_nodes.add_variable_nodes) collide with no node of the graph."""
    taken: set[str] = set()
    result = {}
    for c in chosen:
        base = c.candidate.variable_name
        name, k = base, 0
        while name in taken or any(f"{name}{s}" in graph_names for s in _BUNDLE):
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        result[c.candidate.name] = name
    return result


def _default_node(graph_def, inp: GraphInput, node) -> None:
    """Turn a dropout keep_prob / learning-phase Placeholder into a PlaceholderWithDefault."""
    from tensorflow.core.framework import tensor_pb2, types_pb2  # noqa: PLC0415

    const = graph_def.node.add()
    const.name = f"{node.name}/tb_unfreeze_default"
    const.op = "Const"
    dtype = node.attr["dtype"].type
    const.attr["dtype"].type = dtype
    tensor = tensor_pb2.TensorProto(dtype=dtype)
    if dtype == types_pb2.DT_BOOL:
        tensor.bool_val.append(bool(inp.default))
    elif dtype == types_pb2.DT_DOUBLE:
        tensor.double_val.append(float(inp.default))
    else:
        tensor.float_val.append(float(inp.default))
    const.attr["value"].tensor.CopyFrom(tensor)
    node.op = "PlaceholderWithDefault"
    node.input[:] = [const.name]
    if "shape" not in node.attr or node.attr["shape"].shape.unknown_rank:
        node.attr["shape"].shape.Clear()  # scalar default
        node.attr["shape"].shape.unknown_rank = False


def rewrite(graph_def: graph_pb2.GraphDef, chosen: list[Chosen], inputs: list[GraphInput]) -> Rewritten:
    """Point consumers of chosen tensors at reserved names and drop what only fed them. Mutates graph_def."""
    replaced = {}  # tensor name ('node:0') -> reserved name
    for i, c in enumerate(chosen):
        replaced[c.candidate.tensor] = f"{MAPPED_PREFIX}{i}:0"
    mapped = {f"{MAPPED_PREFIX}{i}:0": c for i, c in enumerate(chosen)}
    replaced_nodes = {split_input(t)[0] for t in replaced}
    for node in graph_def.node:
        for j, raw in enumerate(node.input):
            producer, output, control = split_input(raw)
            if control:
                if producer in replaced_nodes:
                    node.input[j] = ""  # control edge on a removed const: nothing to wait for
                continue
            key = f"{producer}:{output}"
            if key in replaced:
                node.input[j] = replaced[key]
        if "" in node.input:
            kept = [x for x in node.input if x]
            del node.input[:]
            node.input.extend(kept)
    _fold_freezer_reads(graph_def, mapped)
    removed = _remove_dangling(graph_def, replaced_nodes)
    _drop_colocation(graph_def, set(removed) | replaced_nodes)
    _drop_custom_gradients(graph_def)
    by_name = {n.name: n for n in graph_def.node}
    for inp in inputs:
        if inp.default is not None and inp.name in by_name and by_name[inp.name].op == "Placeholder":
            _default_node(graph_def, inp, by_name[inp.name])
    names = {n.name for n in graph_def.node}
    variable_names = _unique_variable_names(chosen, names)
    return Rewritten(graph_def, mapped, variable_names, removed)


def _fold_freezer_reads(graph_def: graph_pb2.GraphDef, mapped: dict[str, Chosen]) -> None:
    """Drop the freezer's `Identity` reads named like the nodes a variable gets (`<variable>/Read/ReadVariableOp`,
    TF1 freezer with resource variables): they would take the variable's name. Their readers read the variable."""
    taken_by = {}
    for reserved, c in mapped.items():
        base = c.candidate.variable_name
        for suffix in ("/Read/ReadVariableOp", "/read"):
            taken_by[base + suffix] = reserved
    doomed = {
        n.name: taken_by[n.name]
        for n in graph_def.node
        if n.name in taken_by and n.op == "Identity" and list(n.input) == [taken_by[n.name]]
    }
    if not doomed:
        return
    for node in graph_def.node:
        for i, raw in enumerate(node.input):
            producer, output, control = split_input(raw)
            if producer in doomed and not control and output == 0:
                node.input[i] = doomed[producer]
            elif producer in doomed and control:
                node.input[i] = ""
        if "" in node.input:
            kept = [x for x in node.input if x]
            del node.input[:]
            node.input.extend(kept)
    kept = [n for n in graph_def.node if n.name not in doomed]
    del graph_def.node[:]
    graph_def.node.extend(kept)


def _remove_dangling(graph_def: graph_pb2.GraphDef, start: set[str]) -> list[str]:
    """Remove `start` and, transitively, their inputs that nothing else reads any more."""
    consumers: dict[str, int] = {}
    by_name = {n.name: n for n in graph_def.node}
    for node in graph_def.node:
        for raw in node.input:
            consumers[split_input(raw)[0]] = consumers.get(split_input(raw)[0], 0) + 1
    doomed, frontier = set(), [n for n in start if consumers.get(n, 0) == 0]
    while frontier:
        name = frontier.pop()
        if name in doomed or name not in by_name:
            continue
        doomed.add(name)
        for raw in by_name[name].input:
            producer = split_input(raw)[0]
            consumers[producer] -= 1
            if (
                consumers[producer] == 0
                and by_name.get(producer) is not None
                and by_name[producer].op in ("Const", "Identity", "Dequantize", "Cast")
            ):
                frontier.append(producer)
    kept = [n for n in graph_def.node if n.name not in doomed]
    del graph_def.node[:]
    graph_def.node.extend(kept)
    return sorted(doomed)


def _drop_colocation(graph_def: graph_pb2.GraphDef, gone: set[str]) -> None:
    """Remove `_class: loc:@X` hints naming removed nodes (import refuses colocation with unknown nodes)."""
    for node in graph_def.node:
        if "_class" not in node.attr:
            continue
        kept = [v for v in node.attr["_class"].list.s if v.decode(errors="replace").removeprefix("loc:@") not in gone]
        if kept:
            del node.attr["_class"].list.s[:]
            node.attr["_class"].list.s.extend(kept)
        else:
            del node.attr["_class"]


def _drop_custom_gradients(graph_def: graph_pb2.GraphDef) -> None:
    """Forget `tf.custom_gradient` markers (`_gradient_op_type`, e.g. Keras swish's IdentityN): the Python
    function that defined the gradient is gone with the process that froze the graph, so TensorFlow would find no
    gradient at all. The forward ops are still in the graph, and their own gradients are the true gradient."""
    for node in graph_def.node:
        if "_gradient_op_type" in node.attr:
            del node.attr["_gradient_op_type"]
    for function in graph_def.library.function:
        for node in function.node_def:
            if "_gradient_op_type" in node.attr:
                del node.attr["_gradient_op_type"]


_SIGNATURE_KEY = re.compile(r"[^A-Za-z0-9_]")


def signature_keys(names: list[str]) -> dict[str, str]:
    """Node name -> a key usable as a Python keyword argument (signatures are called with **kwargs)."""
    keys, taken = {}, set()
    for name in names:
        key = _SIGNATURE_KEY.sub("_", name).strip("_") or "tensor"
        if key[0].isdigit():
            key = "t_" + key
        base, k = key, 0
        while key in taken:
            k += 1
            key = f"{base}_{k}"
        taken.add(key)
        keys[name] = key
    return keys
