"""A read-only index over a GraphDef: nodes by name, who consumes each output, and tensor metadata.

Pure protobuf; never decodes weight bytes.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from tensorboard.compat.proto import graph_pb2, node_def_pb2, types_pb2

DTYPE_NAMES = {v: k[3:].lower() for k, v in types_pb2.DataType.items() if k.startswith("DT_") and not k.endswith("_REF")}
FLOAT_DTYPES = frozenset(
    {types_pb2.DT_HALF, types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_BFLOAT16}
)
QUANTIZED_DTYPES = frozenset(
    {types_pb2.DT_QUINT8, types_pb2.DT_QINT8, types_pb2.DT_QUINT16, types_pb2.DT_QINT16, types_pb2.DT_QINT32}
)
_ITEM_SIZE = {
    types_pb2.DT_HALF: 2, types_pb2.DT_BFLOAT16: 2, types_pb2.DT_FLOAT: 4, types_pb2.DT_DOUBLE: 8,
    types_pb2.DT_INT8: 1, types_pb2.DT_UINT8: 1, types_pb2.DT_QUINT8: 1, types_pb2.DT_QINT8: 1,
    types_pb2.DT_INT16: 2, types_pb2.DT_UINT16: 2, types_pb2.DT_QINT16: 2, types_pb2.DT_QUINT16: 2,
    types_pb2.DT_INT32: 4, types_pb2.DT_UINT32: 4, types_pb2.DT_QINT32: 4, types_pb2.DT_INT64: 8,
    types_pb2.DT_UINT64: 8, types_pb2.DT_BOOL: 1, types_pb2.DT_COMPLEX64: 8, types_pb2.DT_COMPLEX128: 16,
}


def dtype_name(dtype: int) -> str:
    return DTYPE_NAMES.get(dtype, f"dtype_{dtype}")


def item_size(dtype: int) -> int:
    return _ITEM_SIZE.get(dtype, 0)


def split_input(name: str) -> tuple[str, int, bool]:
    """'scope/op:1' -> ('scope/op', 1, False); '^op' -> ('op', -1, True)."""
    if name.startswith("^"):
        return name[1:], -1, True
    node, _, index = name.partition(":")
    try:
        return node, int(index) if index else 0, False
    except ValueError:
        return name, 0, False


@dataclasses.dataclass(frozen=True)
class Use:
    """One consumer of a tensor: `node` reads output `output` of the producer at input slot `slot`."""

    node: node_def_pb2.NodeDef
    slot: int
    output: int


class GraphIndex:
    """Nodes by name and consumers by producer, built once per graph."""

    def __init__(self, graph_def: graph_pb2.GraphDef):
        self.graph_def = graph_def
        self.nodes: dict[str, node_def_pb2.NodeDef] = {}
        self.uses: dict[str, list[Use]] = defaultdict(list)
        self.control_uses: dict[str, list[node_def_pb2.NodeDef]] = defaultdict(list)
        for node in graph_def.node:
            self.nodes.setdefault(node.name, node)
        for node in graph_def.node:
            slot = 0
            for raw in node.input:
                producer, output, control = split_input(raw)
                if control:
                    self.control_uses[producer].append(node)
                    continue
                self.uses[producer].append(Use(node, slot, output))
                slot += 1

    def producer(self, node: node_def_pb2.NodeDef, slot: int) -> node_def_pb2.NodeDef | None:
        """The node feeding data input `slot` of `node`, if it exists."""
        data_inputs = [i for i in node.input if not i.startswith("^")]
        if slot >= len(data_inputs):
            return None
        return self.nodes.get(split_input(data_inputs[slot])[0])

    def consumers(self, name: str) -> list[Use]:
        return self.uses.get(name, [])


def attr_dtype(node: node_def_pb2.NodeDef, key: str = "dtype") -> int:
    return node.attr[key].type if key in node.attr else types_pb2.DT_INVALID


def const_tensor(node: node_def_pb2.NodeDef):
    return node.attr["value"].tensor if "value" in node.attr else None


def const_shape(node: node_def_pb2.NodeDef) -> list[int]:
    tensor = const_tensor(node)
    return [d.size for d in tensor.tensor_shape.dim] if tensor is not None else []


def shape_attr(node: node_def_pb2.NodeDef, key: str = "shape") -> list[int] | None:
    """A placeholder's declared shape; None for unknown rank, -1 for unknown dims."""
    if key not in node.attr:
        return None
    shape = node.attr[key].shape
    if shape.unknown_rank:
        return None
    return [d.size for d in shape.dim]


def num_elements(shape: list[int]) -> int:
    count = 1
    for d in shape:
        count *= max(d, 0)
    return count


def parent_scope(name: str) -> str:
    return name.rpartition("/")[0]
