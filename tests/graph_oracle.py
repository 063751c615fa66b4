"""What a frozen graph itself proves about its constants, computed independently of tb_unfreeze's detector.

The tests compare `inspect` against these facts; nothing here imports tb_unfreeze's candidate code, so a bug in
the detector cannot hide behind the same bug in the oracle. Pure protobuf: no TensorFlow.
"""

from __future__ import annotations

import re
from collections import defaultdict

from tensorboard.compat.proto import types_pb2

FLOAT = {types_pb2.DT_HALF, types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_BFLOAT16}
NON_WEIGHT_DTYPES = {
    types_pb2.DT_INT8,
    types_pb2.DT_INT16,
    types_pb2.DT_INT32,
    types_pb2.DT_INT64,
    types_pb2.DT_UINT8,
    types_pb2.DT_UINT16,
    types_pb2.DT_UINT32,
    types_pb2.DT_UINT64,
    types_pb2.DT_STRING,
    types_pb2.DT_BOOL,
}
READ_VARIABLE = re.compile(r"(^|/)ReadVariableOp(_\d+)?$")

# Input slots that hold a shape, an axis, strides, paddings, sizes or indices: never a weight.
SHAPE_SLOTS: dict[str, set[int]] = {
    "Reshape": {1},
    "ExpandDims": {1},
    "Transpose": {1},
    "Tile": {1},
    "Fill": {0},
    "BroadcastTo": {1},
    "Pad": {1},
    "PadV2": {1},
    "MirrorPad": {1},
    "StridedSlice": {1, 2, 3},
    "Slice": {1, 2},
    "Sum": {1},
    "Mean": {1},
    "Max": {1},
    "Min": {1},
    "Prod": {1},
    "All": {1},
    "Any": {1},
    "ArgMax": {1},
    "ArgMin": {1},
    "Split": {0},
    "SplitV": {1, 2},
    "GatherV2": {1, 2},
    "Range": {0, 1, 2},
    "Conv2DBackpropInput": {0},
    "ResizeBilinear": {1},
    "ResizeNearestNeighbor": {1},
    "OneHot": {1},
    "SpaceToBatchND": {1, 2},
    "BatchToSpaceND": {1, 2},
    "ConcatV2": set(),
    "Cumsum": {1},
    "TopKV2": {1},
}


def split(raw: str) -> tuple[str, int, bool]:
    if raw.startswith("^"):
        return raw[1:], -1, True
    node, _, idx = raw.partition(":")
    return node, int(idx) if idx.isdigit() else 0, False


class Oracle:
    def __init__(self, graph_def):
        self.nodes = {n.name: n for n in graph_def.node}
        self.consumers: dict[str, list[tuple]] = defaultdict(list)  # producer -> [(node, slot)]
        for node in graph_def.node:
            slot = 0
            for raw in node.input:
                prod, _, control = split(raw)
                if control:
                    continue
                self.consumers[prod].append((node, slot))
                slot += 1
        self.consts = [n for n in graph_def.node if n.op == "Const" and "value" in n.attr]

    # --- facts about one const ---
    @staticmethod
    def dtype(node) -> int:
        return node.attr["value"].tensor.dtype

    @staticmethod
    def shape(node) -> list[int]:
        return [d.size for d in node.attr["value"].tensor.tensor_shape.dim]

    def read_proof(self, node) -> str:
        """The freezer's read op that proves `node` was a variable: `<const>/read`, or a `…/ReadVariableOp`
        Identity reading a `…/resource` const (TF2 freezer). '' when the graph proves nothing."""
        for consumer, _ in self.consumers.get(node.name, []):
            if consumer.op != "Identity":
                continue
            if consumer.name == node.name + "/read":
                return consumer.name
            if node.name.endswith("/resource") and READ_VARIABLE.search(consumer.name):
                return consumer.name
        return ""

    def proven_variables(self) -> dict[str, str]:
        return {n.name: p for n in self.consts if self.dtype(n) in FLOAT and (p := self.read_proof(n))}

    def through_identity(self, name: str) -> list[tuple]:
        """(consumer, slot) pairs of `name`'s value after walking through Identity ops."""
        out, frontier, seen = [], [name], {name}
        while frontier:
            for consumer, slot in self.consumers.get(frontier.pop(), []):
                if consumer.op in ("Identity", "Snapshot") and consumer.name not in seen:
                    seen.add(consumer.name)
                    frontier.append(consumer.name)
                elif consumer.op not in ("Identity", "Snapshot"):
                    out.append((consumer, slot))
        return out

    def only_shape_slots(self, node) -> bool:
        uses = self.through_identity(node.name)
        return bool(uses) and all(
            slot in SHAPE_SLOTS.get(c.op, set())
            or (c.op == "ConcatV2" and slot == len([i for i in c.input if not i.startswith("^")]) - 1)
            for c, slot in uses
        )

    def source_const(self, name: str, depth: int = 8):
        """Walk back from a tensor through Identity/Enter/Switch/Cast/Dequantize to a Const (or None)."""
        node = self.nodes.get(name)
        while (
            node is not None
            and depth > 0
            and node.op in ("Identity", "Enter", "Switch", "RefSwitch", "Cast", "Snapshot", "Dequantize", "Merge")
        ):
            node = self.nodes.get(split(node.input[0])[0]) if node.input else None
            depth -= 1
        return node if node is not None and node.op == "Const" else None

    def input_node(self, node, slot: int):
        data = [i for i in node.input if not i.startswith("^")]
        return self.nodes.get(split(data[slot])[0]) if slot < len(data) else None

    def bn_statistics(self) -> dict[str, str]:
        """Const name -> 'mean'/'variance' for every batch-norm moving statistic the graph shows, fused
        (FusedBatchNorm* inputs 3/4; BatchNormWithGlobalNormalization inputs 1/2) and unfused (Keras:
        variance -> Add(eps) -> Rsqrt; mean -> Mul(.., rsqrt or rsqrt*gamma) -> Sub slot 1)."""
        stats: dict[str, str] = {}
        for node in self.nodes.values():
            slots = {}
            if node.op.startswith("FusedBatchNorm") and not node.op.startswith("FusedBatchNormGrad"):
                slots = {3: "mean", 4: "variance"}
            elif node.op == "BatchNormWithGlobalNormalization":
                slots = {1: "mean", 2: "variance"}
            for slot, what in slots.items():
                data = [i for i in node.input if not i.startswith("^")]
                if slot < len(data) and (c := self.source_const(split(data[slot])[0])) is not None:
                    stats[c.name] = what
            if node.op in ("Rsqrt",):
                add = self.input_node(node, 0)
                if add is not None and add.op in ("Add", "AddV2"):
                    for s in (0, 1):
                        c = self.source_const(split([i for i in add.input if not i.startswith("^")][s])[0])
                        if c is not None and self.shape(c):
                            stats[c.name] = "variance"
            if node.op == "Sub":
                mul = self.input_node(node, 1)
                if mul is None or mul.op != "Mul":
                    continue
                ins = [self.input_node(mul, s) for s in (0, 1)]
                for s in (0, 1):
                    other = ins[1 - s]
                    while other is not None and other.op in ("Identity", "Enter", "Switch", "Merge"):
                        other = self.input_node(other, 0)
                    is_scale = other is not None and (
                        other.op == "Rsqrt"
                        or (
                            other.op == "Mul"
                            and any((x := self.input_node(other, k)) is not None and x.op == "Rsqrt" for k in (0, 1))
                        )
                    )
                    data = [i for i in mul.input if not i.startswith("^")]
                    c = self.source_const(split(data[s])[0])
                    if is_scale and c is not None and self.shape(c):
                        stats[c.name] = "mean"
        return stats
