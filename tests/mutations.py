"""Ways a frozen graph arrives broken, for the fuzz tests (test_fuzz_inspect.py, test_fuzz_convert.py).

Each structural mutation takes a parsed `GraphDef` (changed in place) and a `random.Random`, and returns a short
description; the benign ones (`BENIGN`) keep the computation, so their graphs must convert and verify. Byte
mutations work on the serialized file. No TensorFlow.
"""

from __future__ import annotations

import math
import random
import re

import numpy as np
from tensorboard.compat.proto import graph_pb2, node_def_pb2, types_pb2

_READ_VARIABLE = re.compile(r"(^|/)ReadVariableOp(_\d+)?$")  # the TF2 freezer's read op
HUGE = 10**12  # elements declared by the "huge shape" mutations: 4 TB of float32


def parse(data: bytes) -> graph_pb2.GraphDef:
    graph_def = graph_pb2.GraphDef()
    graph_def.ParseFromString(data)
    return graph_def


def _consts(g: graph_pb2.GraphDef, float_only: bool = True) -> list:
    return [
        n for n in g.node if n.op == "Const" and (not float_only or n.attr["value"].tensor.dtype == types_pb2.DT_FLOAT)
    ]


def _pick(rng: random.Random, items: list, k: int = 3) -> list:
    return rng.sample(items, min(k, len(items))) if items else []


def duplicate_names(g, rng):
    victim = rng.choice(list(g.node))
    copy = g.node.add()
    copy.CopyFrom(victim)
    if rng.random() < 0.5 and len(g.node) > 2:  # or rename another node to the same name
        other = rng.choice(list(g.node)[:-1])
        other.name = victim.name
    return f"duplicate name {victim.name!r}"


def missing_input(g, rng):
    node = rng.choice([n for n in g.node if n.input] or list(g.node))
    ghost = rng.choice(["ghost", "ghost:1", "^ghost", "nope/x:99999999999999999999", "", ":", "a:b:c"])
    if node.input and rng.random() < 0.5:
        node.input[rng.randrange(len(node.input))] = ghost
    else:
        node.input.append(ghost)
    return f"{node.name!r} reads {ghost!r}"


def cycle(g, rng):
    """Rewire inputs so the graph has a cycle: an Identity ring, a self-loop, or a node reading a later one."""
    kind = rng.choice(["identity_ring", "self", "back_edge"])
    nodes = list(g.node)
    if kind == "identity_ring":
        a, b = g.node.add(), g.node.add()
        a.name, a.op, b.name, b.op = "ring_a", "Identity", "ring_b", "Identity"
        a.input.append("ring_b")
        b.input.append("ring_a")
        for consumer in _pick(rng, [n for n in nodes if n.input], 2):
            consumer.input[0] = "ring_a"
        ph = next((n for n in nodes if n.op == "Placeholder"), None)
        if ph is not None:  # also make the ring a consumer of an input (the walks that hung started there)
            add = g.node.add()
            add.name, add.op = "ring_add", "AddV2"
            add.input.extend([ph.name, "ring_a"])
    elif kind == "self":
        node = rng.choice(nodes)
        node.input.append(node.name)
    else:
        withs = [n for n in nodes if n.input]
        if withs:
            first = withs[0]
            first.input[0] = nodes[-1].name
    return f"cycle ({kind})"


def huge_shape(g, rng):
    """Declare 10^12 elements on a Const (content left as it was, or emptied) or on a Placeholder."""
    targets = _consts(g) + [n for n in g.node if n.op == "Placeholder"]
    node = rng.choice(targets or list(g.node))
    if node.op == "Const":
        tensor = node.attr["value"].tensor
        del tensor.tensor_shape.dim[:]
        for size in (10**6, 10**6):
            tensor.tensor_shape.dim.add().size = size
        if rng.random() < 0.5:
            tensor.ClearField("tensor_content")
            del tensor.float_val[:]
            tensor.float_val.append(1.0)
    else:
        shape = node.attr["shape"].shape
        del shape.dim[:]
        shape.unknown_rank = False
        for size in (-1, 10**6, 10**6):
            shape.dim.add().size = size
    return f"huge shape on {node.name!r}"


def content_mismatch(g, rng):
    """tensor_content (or the typed values) longer or shorter than the shape says."""
    node = rng.choice(_consts(g) or _consts(g, False) or list(g.node))
    tensor = node.attr["value"].tensor
    delta = rng.choice([-8, -4, -1, 1, 4, 4096])
    if tensor.tensor_content:
        content = tensor.tensor_content
        tensor.tensor_content = content[: len(content) + delta] if delta < 0 else content + b"\x7f" * delta
    else:
        tensor.float_val.extend([0.5] * max(delta, 2))
    return f"content of {node.name!r} off by {delta}"


def nan_inf_weights(g, rng):
    for node in _consts(g):
        tensor = node.attr["value"].tensor
        if tensor.tensor_content:
            content = tensor.tensor_content
            values = np.frombuffer(content[: len(content) // 4 * 4], np.float32).copy()
            values[:: rng.randint(2, 5)] = rng.choice([np.nan, np.inf, -np.inf])
            tensor.tensor_content = values.tobytes()
        elif tensor.float_val:
            tensor.float_val[0] = rng.choice([math.nan, math.inf, -math.inf])
    return "NaN/Inf weights"


def wrong_dtypes(g, rng):
    """A Const's value dtype, its dtype attribute, or a placeholder's dtype set to another or an invalid type."""
    node = rng.choice(_consts(g) + [n for n in g.node if n.op == "Placeholder"] or list(g.node))
    dtype = rng.choice(
        [
            types_pb2.DT_INT64,
            types_pb2.DT_STRING,
            types_pb2.DT_DOUBLE,
            types_pb2.DT_QUINT8,
            types_pb2.DT_RESOURCE,
            types_pb2.DT_FLOAT_REF,
            999,
        ]
    )
    where = rng.choice(["value", "attr"]) if node.op == "Const" else "attr"
    if where == "value":
        node.attr["value"].tensor.dtype = dtype
    else:
        node.attr["dtype"].type = dtype
    return f"{node.name!r} {where} dtype -> {dtype}"


def negative_dims(g, rng):
    node = rng.choice(_consts(g, False) or list(g.node))
    node.attr["value"].tensor.tensor_shape.dim.add().size = rng.choice([-1, -7, -(2**62)])
    return f"negative dim on {node.name!r}"


def garbage_attrs(g, rng):
    """Attributes of the wrong kind: a Const whose value is a string, a missing value, a list shape."""
    node = rng.choice(list(g.node))
    kind = rng.choice(["value_is_string", "no_value", "shape_is_list", "op_renamed"])
    if kind == "value_is_string":
        node.attr["value"].s = b"\x00" * 8
    elif kind == "no_value":
        if "value" in node.attr:
            del node.attr["value"]
    elif kind == "shape_is_list":
        node.attr["shape"].list.i.extend([1, 2, 3])
    else:
        node.op = rng.choice(["NoSuchOp", "Const", "Placeholder", "Identity"])
    return f"{kind} on {node.name!r}"


STRUCTURAL = {
    f.__name__: f
    for f in (
        duplicate_names,
        missing_input,
        cycle,
        huge_shape,
        content_mismatch,
        nan_inf_weights,
        wrong_dtypes,
        negative_dims,
        garbage_attrs,
    )
}


# --- valid graphs in unusual shapes: the same computation, so these must convert, verify and find the same
# candidates (a fuzz run where everything is refused would otherwise pass) ---


def shuffle_nodes(g, rng):
    """The nodes in a random order (a GraphDef need not be topologically sorted)."""
    nodes = []
    for n in g.node:
        copy = node_def_pb2.NodeDef()
        copy.CopyFrom(n)
        nodes.append(copy)
    rng.shuffle(nodes)
    del g.node[:]
    g.node.extend(nodes)
    return "nodes shuffled"


def insert_identity(g, rng):
    """An extra Identity in front of the real consumers of up to three float Consts: after the Const, or after its
    freezer's read op (`W/read`, `.../ReadVariableOp`) when it has one, which stays the Const's direct consumer as
    freezers write it (the read op is the evidence that the Const was a variable)."""
    names = []
    for const in _pick(rng, [c for c in _consts(g) if _consumers(g, c.name)]):
        tensor = const.name
        reads = [
            n
            for n in _consumers(g, tensor)
            if n.op == "Identity" and (n.name == f"{const.name}/read" or _READ_VARIABLE.search(n.name))
        ]
        if reads:
            tensor = reads[0].name
        consumers = _consumers(g, tensor)
        ident = g.node.add()
        ident.name, ident.op = f"{tensor}/extra_identity", "Identity"
        ident.input.append(tensor)
        ident.attr["T"].type = const.attr["dtype"].type
        for consumer in consumers:
            for i, inp in enumerate(consumer.input):
                if inp in (tensor, f"{tensor}:0"):
                    consumer.input[i] = ident.name
        names.append(tensor)
    return f"Identity inserted after {names}"


def repack_values(g, rng):
    """Up to three float Consts' bytes re-encoded as float_val (the other encoding a freezer may write)."""
    names = []
    for const in _pick(rng, [c for c in _consts(g) if c.attr["value"].tensor.tensor_content]):
        tensor = const.attr["value"].tensor
        values = np.frombuffer(tensor.tensor_content, np.float32)
        tensor.ClearField("tensor_content")
        tensor.float_val.extend(values.tolist())
        names.append(const.name)
    return f"values of {names} as float_val"


def _consumers(g, name: str) -> list:
    return [n for n in g.node if any(i in (name, f"{name}:0") for i in n.input)]


BENIGN = {f.__name__: f for f in (shuffle_nodes, insert_identity, repack_values)}


def mutate(data: bytes, names: list[str], seed: int) -> tuple[bytes, str]:
    """Apply the named structural (or benign) mutations to a serialized GraphDef; (new bytes, what was done)."""
    rng = random.Random(seed)
    g = parse(data)
    done = [(STRUCTURAL.get(name) or BENIGN[name])(g, rng) for name in names]
    return g.SerializeToString(), "; ".join(done)


def truncate(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[(p >> 3) % len(out)] ^= 1 << (p & 7)
    return bytes(out)
