"""Compact JSON of a GraphDef for the side-by-side view: names, ops, edges, dtype/shape, what the conversion changed.

Constants' values are never sent: a 20k-node graph stays a few MB. No TensorFlow: protos come from TensorBoard.
"""

from __future__ import annotations

from collections.abc import Iterable

from tensorboard.compat.proto import graph_pb2, types_pb2

# TensorFlow's Python names for the enum values whose proto names differ from them.
_DTYPE_NAMES = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16", "DT_BFLOAT16": "bfloat16"}
_DTYPE_ATTRS = ("dtype", "T", "DstT", "out_type", "output_type")


def dtype_name(value: int) -> str | None:
    try:
        name = types_pb2.DataType.Name(value)
    except ValueError:
        return None
    if name == "DT_INVALID":
        return None
    base = name[:-4] if name.endswith("_REF") else name
    return _DTYPE_NAMES.get(base) or base[3:].lower()


def _shape(proto) -> list[int] | None:
    if proto.unknown_rank:
        return None
    return [d.size for d in proto.dim]


def _node_shape(node) -> list[int] | None:
    attr = node.attr
    if "shape" in attr and attr["shape"].HasField("shape"):
        return _shape(attr["shape"].shape)
    if "value" in attr and attr["value"].HasField("tensor"):
        return _shape(attr["value"].tensor.tensor_shape)
    if "_output_shapes" in attr and attr["_output_shapes"].list.shape:
        return _shape(attr["_output_shapes"].list.shape[0])
    return None


def _input_name(name: str) -> tuple[str, bool]:
    control = name.startswith("^")
    name = name[1:] if control else name
    head, sep, port = name.rpartition(":")
    return (head if sep and port.isdigit() else name), control


def compact(graph_def: graph_pb2.GraphDef, converted: Iterable[str] = (), added: Iterable[str] = ()) -> dict:
    """{nodes: [{name, op, inputs, control_inputs?, dtype?, shape?, device?, converted?}], converted, added}."""
    converted, added = set(converted), set(added)
    nodes = []
    for node in graph_def.node:
        inputs, controls = [], []
        for raw in node.input:
            name, control = _input_name(raw)
            target = controls if control else inputs
            if name not in target:
                target.append(name)
        item: dict = {"name": node.name, "op": node.op, "inputs": inputs}
        if controls:
            item["control_inputs"] = controls
        for key in _DTYPE_ATTRS:
            if key in node.attr and node.attr[key].type:
                item["dtype"] = dtype_name(node.attr[key].type)
                break
        shape = _node_shape(node)
        if shape is not None:
            item["shape"] = shape
        if node.name in converted:
            item["converted"] = True
        if node.name in added:
            item["added"] = True
        nodes.append(item)
    names = {n.name for n in graph_def.node}
    return {
        "nodes": nodes,
        "converted": sorted(converted & names),
        "added": sorted(added & names),
        "functions": len(graph_def.library.function),
    }


def changes(frozen: graph_pb2.GraphDef, unfrozen: graph_pb2.GraphDef, manifest: dict | None) -> dict[str, set[str]]:
    """Which nodes the conversion changed, on each side.

    Frozen side: the constants that became variables and the nodes removed with them. Unfrozen side: the
    variables and the nodes under their name scopes (handle, read, initializer). Other nodes that only exist in
    the unfrozen graph (saving, restoring) are `added`.
    """
    frozen_ops = {n.name: n.op for n in frozen.node}
    unfrozen_ops = {n.name: n.op for n in unfrozen.node}
    manifest = manifest or {}
    variables = manifest.get("variables") or []
    sources = {_input_name(str(v.get("source", "")))[0] for v in variables}
    var_names = {str(v.get("variable_name", "")) for v in variables} - {""}
    removed = set(manifest.get("removed_nodes") or [])
    frozen_changed = (sources | removed) & set(frozen_ops)
    frozen_changed |= {n for n, op in frozen_ops.items() if n in unfrozen_ops and unfrozen_ops[n] != op}
    if not variables:  # no manifest: fall back to the difference of the two graphs
        frozen_changed |= set(frozen_ops) - set(unfrozen_ops)

    def under_variable(name: str) -> bool:
        parts = name.split("/")
        return any("/".join(parts[:i]) in var_names for i in range(1, len(parts) + 1))

    new = set(unfrozen_ops) - set(frozen_ops)
    unfrozen_changed = {n for n in new if under_variable(n)}
    unfrozen_changed |= {n for n, op in unfrozen_ops.items() if n in frozen_ops and frozen_ops[n] != op}
    if not var_names:
        unfrozen_changed |= {n for n in new if unfrozen_ops[n] in ("VarHandleOp", "VariableV2", "ReadVariableOp")}
    return {"frozen": frozen_changed, "unfrozen": unfrozen_changed, "added": new - unfrozen_changed}
