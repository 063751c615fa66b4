"""Compact JSON of a GraphDef for the side-by-side view: names, ops, edges, dtype/shape, what the conversion changed.

Constants' values are never sent: a 20k-node graph stays a few MB. No TensorFlow: protos come from TensorBoard.
"""

from __future__ import annotations

from collections.abc import Iterable

from tensorboard.compat.proto import graph_pb2, types_pb2

from tb_unfreeze.contract import ConversionResult
from tb_unfreeze.graph_index import node_name, split_input

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


# The nodes tb_unfreeze writes per variable besides its VarHandleOp (tb_unfreeze/variable_nodes.py): shown folded
# into the variable's one node, the way a person thinks of a variable.
_BUNDLE_PREFIXES = ("/Initializer/", "/IsInitialized/")
_BUNDLE_NAMES = ("/Assign", "/Read/ReadVariableOp")


def bundle_owner(name: str, variables: set[str]) -> str | None:
    """The variable whose helper node `name` is (initializer, is-initialized, assign, read), or None."""
    for suffix in _BUNDLE_NAMES:
        if name.endswith(suffix) and name[: -len(suffix)] in variables:
            return name[: -len(suffix)]
    for marker in _BUNDLE_PREFIXES:
        at = name.find(marker)
        while at > 0:
            if name[:at] in variables:
                return name[:at]
            at = name.find(marker, at + 1)
    return None


def compact(
    graph_def: graph_pb2.GraphDef,
    converted: Iterable[str] = (),
    added: Iterable[str] = (),
    *,
    changed: dict[str, str] | None = None,
    variables: dict[str, dict] | None = None,
) -> dict:
    """{nodes: [{name, op, inputs, control_inputs?, dtype?, shape?, converted?, added?, changed?, variable?}],
    converted, added, changed, variables, folded}.

    `variables` (variable name → manifest entry) folds each variable's helper nodes into its one node: they are
    left out, inputs naming them name the variable, and the variable's node lists them under `variable.helpers`.
    `changed` (node → what changed) marks nodes both graphs have that the conversion altered without making them
    variables (e.g. a `keep_prob` Placeholder given a default).
    """
    converted, added, changed = set(converted), set(added), dict(changed or {})
    variables = variables or {}
    var_names = set(variables)
    owner: dict[str, str] = {}
    if var_names:
        for node in graph_def.node:
            v = bundle_owner(node.name, var_names)
            if v is not None and v != node.name:
                owner[node.name] = v
    helpers: dict[str, list[str]] = {}
    nodes = []
    for node in graph_def.node:
        if node.name in owner:
            helpers.setdefault(owner[node.name], []).append(node.name)
            continue
        inputs, controls = [], []
        for raw in node.input:
            name, _, control = split_input(raw)
            name = owner.get(name, name)
            if name == node.name:
                continue
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
        if node.name in changed:
            item["changed"] = changed[node.name]
        nodes.append(item)
    by_name = {n["name"]: n for n in nodes}
    for name, entry in variables.items():
        if name in by_name:
            by_name[name]["variable"] = {
                "source": entry.get("source"),
                "trainable": bool(entry.get("trainable")),
                "role": entry.get("role"),
                "helpers": sorted(helpers.get(name, [])),
            }
    names = set(by_name)
    return {
        "nodes": nodes,
        "converted": sorted(converted & names),
        "added": sorted(added & names),
        "changed": {k: v for k, v in sorted(changed.items()) if k in names},
        "variables": len(var_names & names),
        "folded": len(owner),
        "functions": len(graph_def.library.function),
    }


def changes(frozen: graph_pb2.GraphDef, unfrozen: graph_pb2.GraphDef, conversion: ConversionResult | None) -> dict:
    """What the conversion changed, on each side.

    `frozen`: the constants that became variables (one per variable, so its size is the manifest's count).
    `unfrozen`: the variables. `changed_frozen` / `changed_unfrozen`: nodes both graphs have whose op changed
    although they are no variable (a `keep_prob` Placeholder given a default), node → "Placeholder → …".
    `removed`: other frozen nodes the conversion dropped. `added`: nodes only the unfrozen graph has that are no
    variable helper (saving, restoring). `variables`: variable name → manifest entry.
    """
    frozen_ops = {n.name: n.op for n in frozen.node}
    unfrozen_ops = {n.name: n.op for n in unfrozen.node}
    entries = [v.to_json() for v in conversion.variables] if conversion is not None else []
    variables = {v["variable_name"]: v for v in entries if v["variable_name"] in unfrozen_ops}
    sources = {node_name(v["source"]) for v in entries}
    frozen_converted = sources & set(frozen_ops)
    removed = (set(conversion.removed_nodes if conversion is not None else ()) & set(frozen_ops)) - frozen_converted
    if not entries:  # no manifest: fall back to the difference of the two graphs
        variables = {
            n: {"variable_name": n, "source": n}
            for n, op in unfrozen_ops.items()
            if op in ("VarHandleOp", "VariableV2")
        }
        frozen_converted = {n for n in variables if n in frozen_ops}
    var_names = set(variables)
    both = set(frozen_ops) & set(unfrozen_ops)
    changed = {
        n: f"{frozen_ops[n]} → {unfrozen_ops[n]}"
        for n in both
        if frozen_ops[n] != unfrozen_ops[n] and n not in var_names and n not in frozen_converted
    }
    new = set(unfrozen_ops) - set(frozen_ops)
    added = {n for n in new if n not in var_names and bundle_owner(n, var_names) is None}
    return {
        "frozen": frozen_converted,
        "unfrozen": var_names & set(unfrozen_ops),
        "changed_frozen": changed,
        "changed_unfrozen": changed,
        "removed": removed,
        "added": added,
        "variables": variables,
    }


# DataType enum → numpy dtype name, for the constants whose values the node panel summarizes. bfloat16 has no numpy
# type: its bits are widened to float32 by hand.
_NUMPY = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    9: "int64",
    10: "bool",
    11: "int8",
    12: "uint8",
    13: "int32",
    15: "int16",
    16: "uint16",
    17: "uint16",
    19: "float16",
    22: "uint32",
    23: "uint64",
}
_VALUE_FIELD = {
    1: "float_val",
    2: "double_val",
    9: "int64_val",
    10: "bool_val",
    19: "half_val",
    14: "half_val",
    22: "uint32_val",
    23: "uint64_val",
}
HISTOGRAM_BINS = 40
PREVIEW_VALUES = 16


def const_values(node):
    """The value of a Const node as a flat numpy array (no TensorFlow), or None if it is no numeric Const."""
    import numpy as np  # noqa: PLC0415 (numpy is a TensorBoard dependency; only this route needs it)

    if node.op != "Const" or "value" not in node.attr or not node.attr["value"].HasField("tensor"):
        return None
    tensor = node.attr["value"].tensor
    dims = [d.size for d in tensor.tensor_shape.dim]
    count = int(np.prod(dims)) if dims else 1
    if tensor.dtype == 14:  # bfloat16: the upper half of a float32
        if tensor.tensor_content:
            bits = np.frombuffer(tensor.tensor_content, dtype="<u2")
        else:
            bits = np.asarray(tensor.half_val, dtype=np.uint16)
        values = (bits.astype(np.uint32) << 16).view(np.float32)
    else:
        dtype = _NUMPY.get(tensor.dtype)
        if dtype is None:
            return None
        if tensor.tensor_content:
            values = np.frombuffer(tensor.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
        else:
            field = _VALUE_FIELD.get(tensor.dtype, "int_val")
            raw = getattr(tensor, field)
            if tensor.dtype == 19:
                values = np.asarray(raw, dtype=np.uint16).view(np.float16)
            else:
                values = np.asarray(raw, dtype=dtype)
    if values.size == count:
        return values
    if values.size == 0 or values.size > count:
        return np.zeros(count, dtype=values.dtype) if values.size == 0 else None
    # Fewer values than elements: TensorFlow repeats the last one.
    return np.concatenate([values, np.full(count - values.size, values[-1], dtype=values.dtype)])


def weight_stats(graph_def: graph_pb2.GraphDef, name: str) -> dict | None:
    """Shape, dtype, min/max/mean/std, a histogram and the first values of Const `name`; None if it is none."""
    import numpy as np  # noqa: PLC0415

    node = next((n for n in graph_def.node if n.name == name), None)
    if node is None:
        return None
    values = const_values(node)
    if values is None:
        return None
    tensor = node.attr["value"].tensor
    out: dict = {
        "name": name,
        "dtype": dtype_name(tensor.dtype),
        "shape": [d.size for d in tensor.tensor_shape.dim],
        "size": int(values.size),
    }
    data = values.astype(np.float64) if values.dtype != np.float64 else values
    finite = data[np.isfinite(data)]
    out["nonfinite"] = int(data.size - finite.size)
    out["zeros"] = int(np.count_nonzero(data == 0))
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        out.update(min=lo, max=hi, mean=float(finite.mean()), std=float(finite.std()))
        if hi > lo:
            counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS, range=(lo, hi))
        else:
            counts, edges = np.asarray([finite.size]), np.asarray([lo, hi])
        out["histogram"] = {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
    else:
        out.update(min=None, max=None, mean=None, std=None, histogram=None)
    out["first"] = [float(x) if np.isfinite(x) else None for x in data[:PREVIEW_VALUES]]
    return out


def weight_drift(a: graph_pb2.GraphDef, b: graph_pb2.GraphDef, limit: int = 5000) -> dict:
    """How far each weight moved between two frozen graphs (e.g. the original and one re-frozen after fine-tuning).

    Constants are matched by name (a re-frozen graph names each weight after its variable, which keeps the
    constant's name). Per weight: max |b − a|, mean |b − a| and the relative change ||b − a|| / ||a||; weights of
    one graph only, or whose shape or dtype differ, are listed apart. Sorted by relative change, largest first.
    """
    import numpy as np  # noqa: PLC0415

    def consts(g) -> dict:
        out = {}
        for node in g.node:
            if node.op == "Const" and "value" in node.attr and node.attr["value"].HasField("tensor"):
                tensor = node.attr["value"].tensor
                if tensor.dtype in (1, 2, 14, 19):  # float weights: what training moves
                    out[node.name] = node
        return out

    ca, cb = consts(a), consts(b)
    rows, mismatched = [], []
    for name in sorted(set(ca) & set(cb)):
        ta, tb = ca[name].attr["value"].tensor, cb[name].attr["value"].tensor
        shape_a = [d.size for d in ta.tensor_shape.dim]
        shape_b = [d.size for d in tb.tensor_shape.dim]
        if shape_a != shape_b or ta.dtype != tb.dtype:
            mismatched.append(
                {
                    "name": name,
                    "a": {"shape": shape_a, "dtype": dtype_name(ta.dtype)},
                    "b": {"shape": shape_b, "dtype": dtype_name(tb.dtype)},
                }
            )
            continue
        va, vb = const_values(ca[name]), const_values(cb[name])
        if va is None or vb is None or va.size == 0:
            continue
        va, vb = va.astype(np.float64), vb.astype(np.float64)
        diff = np.abs(vb - va)
        norm = float(np.linalg.norm(va))
        rows.append(
            {
                "name": name,
                "shape": shape_a,
                "size": int(va.size),
                "max_abs_diff": float(diff.max()),
                "mean_abs_diff": float(diff.mean()),
                "relative": float(np.linalg.norm(vb - va) / norm) if norm > 0 else (0.0 if not diff.any() else None),
                "changed": bool(diff.any()),
            }
        )
    rows.sort(key=lambda r: (-(r["relative"] if r["relative"] is not None else float("inf")), r["name"]))
    return {
        "weights": rows[:limit],
        "compared": len(rows),
        "changed": sum(1 for r in rows if r["changed"]),
        "only_a": sorted(set(ca) - set(cb))[:limit],
        "only_b": sorted(set(cb) - set(ca))[:limit],
        "mismatched": mismatched[:limit],
    }
