"""Fully quantized graphs (TensorFlow's eight-bit `quantize_graph`: QuantizedConv2D, QuantizedMatMul, ... on quint8
weights): say what is quantized, and rewrite it into a float graph whose weights can become float variables.

Pure protobuf and numpy: works on TensorFlow's and TensorBoard's GraphDef classes alike, never imports TensorFlow.

The semantics are TensorFlow's own (tensorflow/core/kernels/quantization_utils.h, quantized_conv_ops.cc,
quantized_matmul_op.cc): a quantized op computes on `(q - offset) * scale` with
`scale = (max - min) / (2^bits - 1)` and `offset = FloatToQuantizedUnclamped(0, min, max)
= lowest - round(min / scale)`, so the float value the integer arithmetic stands for is
`(q - lowest + round(min / scale)) * scale` — the same as `QuantizedToFloat` (range_min rounded to a multiple
of the step). The rewrite gives each weight exactly that value, as a float Const, and replaces the quantized op
by its float op. Activations are no longer rounded to 8 bits between ops (QuantizeV2 -> x, Requantize -> x),
which is where the rewritten graph differs from the quantized one: by the quantization noise of the activations.
"""

from __future__ import annotations

import collections

import numpy as np
from tensorboard.compat.proto import types_pb2

from tb_unfreeze.graph_index import split_input

_QUANTIZED_DTYPES = {
    types_pb2.DT_QUINT8: (np.uint8, 0, 8),
    types_pb2.DT_QINT8: (np.int8, -128, 8),
    types_pb2.DT_QUINT16: (np.uint16, 0, 16),
    types_pb2.DT_QINT16: (np.int16, -32768, 16),
}
_DT_FLOAT = types_pb2.DT_FLOAT
_DT_INT32 = types_pb2.DT_INT32

# Quantized compute ops whose weights make a graph "fully quantized".
_COMPUTE = (
    "QuantizedConv2D",
    "QuantizedMatMul",
    "QuantizedDepthwiseConv2D",
    "QuantizedBatchNormWithGlobalNormalization",
)

# For each quantized op: the slots of its quantized values and, for each, the slots of their min and max.
_RANGES = {
    "QuantizedConv2D": {0: (2, 3), 1: (4, 5)},
    "QuantizedDepthwiseConv2D": {0: (2, 3), 1: (4, 5)},
    "QuantizedMatMul": {0: (2, 3), 1: (4, 5)},
    "QuantizedBiasAdd": {0: (2, 3), 1: (4, 5)},
    "QuantizedAdd": {0: (2, 3), 1: (4, 5)},
    "QuantizedMul": {0: (2, 3), 1: (4, 5)},
    "QuantizedRelu": {0: (1, 2)},
    "QuantizedRelu6": {0: (1, 2)},
    "QuantizedMaxPool": {0: (1, 2)},
    "QuantizedAvgPool": {0: (1, 2)},
    "QuantizedReshape": {0: (2, 3)},
    "Requantize": {0: (1, 2)},
    "QuantizeDownAndShrinkRange": {0: (1, 2)},
    "Dequantize": {0: (1, 2)},
}
# Quantized op -> (float op, attrs copied from it, number of leading data inputs, extra inputs kept as they are).
_FLOAT_OPS = {
    "QuantizedConv2D": ("Conv2D", ("strides", "padding", "dilations"), 2, ()),
    "QuantizedDepthwiseConv2D": ("DepthwiseConv2dNative", ("strides", "padding", "dilations"), 2, ()),
    "QuantizedMatMul": ("MatMul", ("transpose_a", "transpose_b"), 2, ()),
    "QuantizedBiasAdd": ("BiasAdd", (), 2, ()),
    "QuantizedAdd": ("AddV2", (), 2, ()),
    "QuantizedMul": ("Mul", (), 2, ()),
    "QuantizedRelu": ("Relu", (), 1, ()),
    "QuantizedRelu6": ("Relu6", (), 1, ()),
    "QuantizedMaxPool": ("MaxPool", ("ksize", "strides", "padding"), 1, ()),
    "QuantizedAvgPool": ("AvgPool", ("ksize", "strides", "padding"), 1, ()),
    "QuantizedReshape": ("Reshape", ("Tshape",), 1, (1,)),
}
# Ops whose output 0 stands for the float value of their input 0 (8-bit rounding aside).
_PASS = {"Requantize": 0, "QuantizeDownAndShrinkRange": 0, "QuantizeV2": 0, "Dequantize": 0}


def _split(ref: str) -> tuple[str, int]:
    name, index, _ = split_input(ref)
    return name, max(index, 0)


def _ref(name: str, index: int) -> str:
    return name if index == 0 else f"{name}:{index}"


def _through_identity(nodes: dict, ref: str):
    node = nodes.get(_split(ref)[0])
    for _ in range(16):
        if node is None or node.op not in ("Identity", "Snapshot") or not node.input:
            break
        node = nodes.get(_split(node.input[0])[0])
    return node


def _tensor_shape(tensor) -> list[int]:
    return [d.size for d in tensor.tensor_shape.dim]


def _const_array(node) -> np.ndarray | None:
    """The value of a float or quantized Const, decoded with numpy (None for other dtypes)."""
    tensor = node.attr["value"].tensor
    shape = _tensor_shape(tensor)
    count = int(np.prod(shape)) if shape else 1
    if tensor.dtype == _DT_FLOAT:
        np_dtype, values = np.dtype("<f4"), list(tensor.float_val)
    elif tensor.dtype in _QUANTIZED_DTYPES:
        np_dtype, values = np.dtype(_QUANTIZED_DTYPES[tensor.dtype][0]).newbyteorder("<"), list(tensor.int_val)
    else:
        return None
    content = tensor.tensor_content  # one read: each read of a bytes field copies it
    if content:
        return np.frombuffer(content, dtype=np_dtype).reshape(shape).copy()
    if not values:
        return np.zeros(shape, np_dtype)
    array = np.asarray(values + [values[-1]] * (count - len(values)), dtype=np_dtype)
    return array.reshape(shape)


def _scalar(nodes: dict, ref: str) -> float | None:
    node = _through_identity(nodes, ref)
    if node is None or node.op != "Const":
        return None
    value = _const_array(node)
    return float(value.reshape(-1)[0]) if value is not None and value.size else None


def dequantized_values(q: np.ndarray, range_min: float, range_max: float, dtype: int = types_pb2.DT_QUINT8):
    """The float values the quantized kernels compute with: `(q - offset) * scale`, offset as
    FloatToQuantizedUnclamped(0, min, max) (quantization_utils.h)."""
    _, lowest, bits = _QUANTIZED_DTYPES[dtype]
    if range_max == range_min:
        return np.full(q.shape, range_min, np.float32)
    steps = float((1 << bits) - 1)
    scale = (float(range_max) - float(range_min)) / steps
    zero = float(lowest) - np.round(float(range_min) * (steps / (float(range_max) - float(range_min))))
    return ((q.astype(np.float64) - zero) * scale).astype(np.float32)


def _quantized_weights(graph_def) -> list[tuple]:
    """(consumer, slot, const node) for every quantized Const read as a value by a quantized compute op."""
    nodes = {n.name: n for n in graph_def.node}
    found = []
    for node in graph_def.node:
        if node.op not in _RANGES or not node.op.startswith("Quantized"):
            continue
        for slot in _RANGES[node.op]:
            if slot >= len(node.input):
                continue
            const = _through_identity(nodes, node.input[slot])
            if const is not None and const.op == "Const" and const.attr["value"].tensor.dtype in _QUANTIZED_DTYPES:
                found.append((node, slot, const))
    return found


def describe_quantization(graph_def) -> str | None:
    """One line saying what is quantized when the graph computes with quantized ops on quantized weights
    (QuantizedConv2D/QuantizedMatMul... on quint8 constants), else None. Graphs that only store weights as
    quint8 and Dequantize them into float ops are not "fully quantized": they return None."""
    weights = [(c, s, k) for c, s, k in _quantized_weights(graph_def) if c.op in _COMPUTE or c.op == "QuantizedBiasAdd"]
    if not any(c.op in _COMPUTE for c, _, _ in weights):
        return None
    ops = collections.Counter(n.op for n in graph_def.node)
    compute = ", ".join(f"{ops[o]} {o}" for o in _COMPUTE if ops[o])
    unique = {k.name: k for _, _, k in weights}
    dtypes = sorted({types_pb2.DataType.Name(k.attr["value"].tensor.dtype)[3:].lower() for k in unique.values()})
    values = sum(int(np.prod(_tensor_shape(k.attr["value"].tensor) or [1])) for k in unique.values())
    plumbing = ", ".join(f"{ops[o]} {o}" for o in ("QuantizeV2", "Requantize", "Dequantize") if ops[o])
    other = sorted(o for o in ops if o.startswith("Quantized") and o not in _COMPUTE)
    rest = f" (with {', '.join(f'{ops[o]} {o}' for o in other)})" if other else ""
    return (
        f"fully quantized graph: {compute}{rest} compute on {len(unique)} {'/'.join(dtypes)} weight tensor(s) "
        f"({values:,} values) with 8-bit activations ({plumbing}); integer ops have no gradient, so these weights "
        "can only train once the quantized ops are rewritten into float Conv2D/MatMul ops on dequantized float "
        "weights (tb_unfreeze.quantized.dequantize_graph)"
    )


class _Rewriter:
    def __init__(self, graph_def):
        self.source = graph_def
        self.nodes = {n.name: n for n in graph_def.node}
        self.names = set(self.nodes)
        self.new_nodes: list = []
        self.made: dict = {}  # (node, index) -> ref of its float equivalent
        self.consts: dict = {}  # (const, min ref, max ref) -> float const name
        self.replaced: dict = {}  # Dequantize name -> ref of the float tensor that replaces it

    def _unique(self, name: str) -> str:
        base, i = name, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def _new(self, name: str, op: str, inputs: list[str], like=None):
        node = type(self.source.node[0])() if self.source.node else None
        node.name, node.op = self._unique(name), op
        node.input.extend(inputs)
        if like is not None and like.device:
            node.device = like.device
        self.new_nodes.append(node)
        return node

    def float_const(self, const, min_ref: str, max_ref: str) -> str | None:
        key = (const.name, min_ref, max_ref)
        if key in self.consts:
            return self.consts[key]
        low, high = _scalar(self.nodes, min_ref), _scalar(self.nodes, max_ref)
        q = _const_array(const)
        if low is None or high is None or q is None:
            return None
        values = dequantized_values(q, low, high, const.attr["value"].tensor.dtype)
        name = const.name
        for suffix in ("_quint8_const", "_qint8_const", "_quantized_const", "_quint8", "_const"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        node = self._new(name if name != const.name else f"{name}_float", "Const", [], const)
        node.attr["dtype"].type = _DT_FLOAT
        tensor = node.attr["value"].tensor
        tensor.dtype = _DT_FLOAT
        tensor.tensor_shape.CopyFrom(const.attr["value"].tensor.tensor_shape)
        tensor.tensor_content = values.astype("<f4").tobytes()
        self.consts[key] = node.name
        return node.name

    def float_of(self, consumer, slot: int, depth: int = 0) -> str | None:
        """The float tensor standing for the quantized value `consumer` reads at `slot` (None: unsupported)."""
        if depth > 400 or slot >= len(consumer.input):
            return None
        ref = consumer.input[slot]
        name, index = _split(ref)
        producer = self.nodes.get(name)
        if producer is None or index != 0:
            return None
        if producer.op in ("Identity", "Snapshot"):
            return self.float_of(producer, 0, depth + 1)
        if producer.op == "Const":
            ranges = _RANGES.get(consumer.op, {}).get(slot)
            if consumer.op == "QuantizeV2" or ranges is None:
                return None
            return self.float_const(producer, consumer.input[ranges[0]], consumer.input[ranges[1]])
        key = (producer.name, 0)
        if key in self.made:
            return self.made[key]
        result = None
        if producer.op == "QuantizeV2":
            result = producer.input[0]  # the float tensor it quantized
        elif producer.op in _PASS:
            result = self.float_of(producer, 0, depth + 1)
        elif producer.op in _FLOAT_OPS:
            op, attrs, data, kept = _FLOAT_OPS[producer.op]
            inputs = [self.float_of(producer, s, depth + 1) for s in range(data)]
            if None not in inputs:
                inputs += [producer.input[s] for s in kept]
                node = self._new(f"{producer.name}/float", op, inputs, producer)
                node.attr["T"].type = _DT_FLOAT
                for attr in attrs:
                    if attr in producer.attr:
                        node.attr[attr].CopyFrom(producer.attr[attr])
                if op == "Reshape" and "Tshape" not in producer.attr:
                    node.attr["Tshape"].type = _DT_INT32
                if op in ("Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool", "BiasAdd"):
                    node.attr["data_format"].s = b"NHWC"
                result = node.name
        self.made[key] = result
        return result

    def run(self):
        out = type(self.source)()
        out.versions.CopyFrom(self.source.versions)
        out.library.CopyFrom(self.source.library)
        for node in self.source.node:
            if node.op == "Dequantize":
                source = self.float_of(node, 0)
                producer = self.nodes.get(_split(node.input[0])[0])
                if source is not None and producer is not None and producer.op != "Const":
                    self.replaced[node.name] = source
        uses = collections.Counter()
        for node in self.new_nodes:
            uses.update(_split(i)[0] for i in node.input)
        for target in self.replaced.values():
            uses[_split(target)[0]] += 1
        renamed = {}  # a float op made for one Dequantize only takes that Dequantize's name (the float name)
        for dequantize, target in self.replaced.items():
            name = _split(target)[0]
            made = next((n for n in self.new_nodes if n.name == name), None)
            if made is not None and uses[name] == 1 and made.op != "Const" and name not in renamed:
                renamed[name] = dequantize
        for node in self.new_nodes:
            if node.name in renamed:
                node.name = renamed[node.name]
            node.input[:] = [_rename(i, renamed) for i in node.input]
        kept = []
        for node in self.source.node:
            if node.name in self.replaced:
                if split_input(self.replaced[node.name])[0] in renamed:
                    continue  # the float op now carries this name
                copy = type(node)()
                copy.name, copy.op = node.name, "Identity"
                copy.device = node.device
                copy.input.append(_rename(self.replaced[node.name], renamed))
                copy.input.extend(i for i in node.input if i.startswith("^"))
                copy.attr["T"].type = _DT_FLOAT
                kept.append(copy)
            else:
                kept.append(node)
        kept.extend(self.new_nodes)
        out.node.extend(_prune(self.source, kept))
        return out


def _rename(ref: str, renamed: dict) -> str:
    control = ref.startswith("^")
    name, index = _split(ref)
    name = renamed.get(name, name)
    return ("^" if control else "") + (name if control else _ref(name, index))


def _prune(source, nodes: list) -> list:
    """Keep what the original graph's sinks (and its placeholders) still need; the quantization plumbing that
    fed only replaced ops (QuantizeV2, Min/Max of their inputs, RequantizationRange, ...) goes."""
    consumed = {_split(i)[0] for n in source.node for i in n.input}
    roots = [n.name for n in source.node if n.name not in consumed or n.op in ("Placeholder", "PlaceholderWithDefault")]
    by_name = {n.name: n for n in nodes}
    keep, stack = set(), [r for r in roots if r in by_name]
    while stack:
        name = stack.pop()
        if name in keep:
            continue
        keep.add(name)
        stack.extend(_split(i)[0] for i in by_name[name].input if _split(i)[0] in by_name)
    return [n for n in nodes if n.name in keep]


def dequantize_graph(graph_def):
    """A float copy of `graph_def`: QuantizedConv2D / QuantizedMatMul / QuantizedDepthwiseConv2D /
    QuantizedBiasAdd / QuantizedRelu(6) / QuantizedMax/AvgPool / QuantizedAdd / QuantizedMul / QuantizedReshape
    become their float ops on float Const weights holding the dequantized values; QuantizeV2 / Requantize /
    Dequantize plumbing around them disappears (each Dequantize becomes the float op of the same name, or an
    Identity of it). Chains with other quantized ops are left as they are. The input is not modified."""
    if not graph_def.node:
        return type(graph_def)()
    return _Rewriter(graph_def).run()
