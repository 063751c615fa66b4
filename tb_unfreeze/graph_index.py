"""A read-only index over a GraphDef: nodes by name, who consumes each output, and tensor metadata.

Pure protobuf; never decodes weight bytes.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from tensorboard.compat.proto import graph_pb2, node_def_pb2, types_pb2

# One dtype vocabulary everywhere (inspect, manifest, tab): TensorFlow's own `tf.DType.name` ("float32", "int64").
_RENAMED = {"DT_FLOAT": "float32", "DT_HALF": "float16", "DT_DOUBLE": "float64"}
DTYPE_NAMES = {
    v: _RENAMED.get(k, k[3:].lower())
    for k, v in types_pb2.DataType.items()
    if k.startswith("DT_") and not k.endswith("_REF")
}
FLOAT_DTYPES = frozenset({types_pb2.DT_HALF, types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_BFLOAT16})
QUANTIZED_DTYPES = frozenset(
    {types_pb2.DT_QUINT8, types_pb2.DT_QINT8, types_pb2.DT_QUINT16, types_pb2.DT_QINT16, types_pb2.DT_QINT32}
)
_ITEM_SIZE = {
    types_pb2.DT_HALF: 2,
    types_pb2.DT_BFLOAT16: 2,
    types_pb2.DT_FLOAT: 4,
    types_pb2.DT_DOUBLE: 8,
    types_pb2.DT_INT8: 1,
    types_pb2.DT_UINT8: 1,
    types_pb2.DT_QUINT8: 1,
    types_pb2.DT_QINT8: 1,
    types_pb2.DT_INT16: 2,
    types_pb2.DT_UINT16: 2,
    types_pb2.DT_QINT16: 2,
    types_pb2.DT_QUINT16: 2,
    types_pb2.DT_INT32: 4,
    types_pb2.DT_UINT32: 4,
    types_pb2.DT_QINT32: 4,
    types_pb2.DT_INT64: 8,
    types_pb2.DT_UINT64: 8,
    types_pb2.DT_BOOL: 1,
    types_pb2.DT_COMPLEX64: 8,
    types_pb2.DT_COMPLEX128: 16,
}


def dtype_name(dtype: int) -> str:
    return DTYPE_NAMES.get(dtype, f"dtype_{dtype}")


def item_size(dtype: int) -> int:
    return _ITEM_SIZE.get(dtype, 0)


def split_input(name: str) -> tuple[str, int, bool]:
    """The one parser of input and tensor names: 'scope/op:1' -> ('scope/op', 1, False); '^op' -> ('op', -1, True);
    'op' -> ('op', 0, False)."""
    if name.startswith("^"):
        return name[1:], -1, True
    node, _, index = name.partition(":")
    try:
        return node, int(index) if index else 0, False
    except ValueError:
        return name, 0, False


def node_name(name: str) -> str:
    """The node an input or tensor name refers to: 'scope/op:1', '^scope/op' and 'scope/op' -> 'scope/op'."""
    return split_input(name)[0]


def tensor_name(name: str) -> str:
    """The tensor an output name means: 'op' -> 'op:0'; 'op:1' stays."""
    node, index, _ = split_input(name)
    return f"{node}:{max(index, 0)}"


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
        self.data_inputs: dict[str, list[str]] = {}  # node -> producer node of each data input, by slot
        self.op_types: set[str] = set()
        for node in graph_def.node:
            self.nodes.setdefault(node.name, node)
            self.op_types.add(node.op)
        for node in graph_def.node:
            slot = 0
            producers = []
            for raw in node.input:
                producer, output, control = split_input(raw)
                if control:
                    self.control_uses[producer].append(node)
                    continue
                self.uses[producer].append(Use(node, slot, output))
                producers.append(producer)
                slot += 1
            self.data_inputs.setdefault(node.name, producers)

    def producer(self, node: node_def_pb2.NodeDef, slot: int) -> node_def_pb2.NodeDef | None:
        """The node feeding data input `slot` of `node`, if it exists."""
        producers = self.data_inputs.get(node.name, ())
        return self.nodes.get(producers[slot]) if slot < len(producers) else None

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


MAX_CONST_BYTES = 2**31  # a protobuf (so a frozen graph) holds at most 2 GB: no real constant declares more
_VALUE_FIELDS = (
    "half_val",
    "float_val",
    "double_val",
    "int_val",
    "string_val",
    "int64_val",
    "bool_val",
    "resource_handle_val",
    "variant_val",
    "uint32_val",
    "uint64_val",
    "float8_val",
)


def const_problem(node: node_def_pb2.NodeDef) -> str | None:
    """Why TensorFlow could not (or should not try to) materialize this Const, or None. Decodes no weight.

    TensorFlow's own rules (Tensor::FromProto): `tensor_content` holds exactly elements x item size bytes; else
    the typed `*_val` field holds at most one value per element (fewer repeat the last one). A declared shape
    beyond what a frozen graph can hold is refused before anything is allocated for it.
    """
    if "value" not in node.attr or not node.attr["value"].HasField("tensor"):
        return "it has no tensor value"
    tensor = node.attr["value"].tensor
    if "dtype" in node.attr and node.attr["dtype"].type != tensor.dtype:
        return (
            f"its dtype attribute says {dtype_name(node.attr['dtype'].type)} but its value is "
            f"{dtype_name(tensor.dtype)}"
        )
    dims = [d.size for d in tensor.tensor_shape.dim]
    if any(d < 0 for d in dims):
        return f"its shape {dims} has a negative dimension"
    count = num_elements(dims)
    size = item_size(tensor.dtype)
    if count * max(size, 1) > MAX_CONST_BYTES:
        return f"its shape {dims} declares {count:,} elements, more than a frozen graph can hold"
    content = len(tensor.tensor_content)  # one read: each read of a bytes field copies it (528 MB for VGG16)
    if content:
        if size and content != count * size:
            return (
                f"its tensor_content has {content:,} bytes but shape {dims} of "
                f"{dtype_name(tensor.dtype)} needs {count * size:,}"
            )
        return None
    values = max(len(getattr(tensor, f)) for f in _VALUE_FIELDS)
    values = max(values, len(tensor.scomplex_val) // 2, len(tensor.dcomplex_val) // 2)
    if values > count:
        return f"it holds {values:,} values for shape {dims} ({count:,} elements)"
    return None
