"""Probe inputs the frozen graph accepts, so that verification can always run.

`make_probes` keeps what `verify.make_probes` did (arrays from `--probe FILE.npz`, defaults for keep_prob and
learning-phase inputs, random normal floats, small ints) and then makes sure the frozen graph really runs on the
probes, fetching every output it is given. What it cannot read from the declared shapes it reads from the graph:

- shapes of inputs declared without one: ranks and sizes from the consumers (MatMul weights, Conv2D filters,
  batch-norm and bias widths, Reshape targets, ConcatV2 and element-wise partners; through Identity, Cast,
  Switch, Pad, ExpandDims, ...), checked against TensorFlow's own shape inference, then the sizes still unknown
  are tried (1, 2, 4, 8, ...) until the frozen graph runs;
- scalars: the constants the graph compares them with first, then a few plain values (0.5, 0.7, ...);
- integer inputs used as indices (Gather, embedding lookups, OneHot): values within the table size;
- strings decoded by DecodeWav / DecodeJpeg / DecodePng / DecodeImage / DecodeBmp / DecodeRaw: a synthesized
  valid file (16-bit mono WAV of the `desired_samples` length, a small random JPEG/PNG/BMP image, raw bytes of
  the length a downstream Reshape asks for).

Each attempt runs the frozen graph (imported under a prefix, in a TF1 Session without Grappler unless it is
needed, as `verify.run_frozen` does: `verify.FrozenRunner`), with a per-run timeout. When nothing works,
`ProbeError` names the input and asks for `--probe FILE.npz`.

The outputs of the run that confirmed the probes are kept, so that `run_frozen` here, called right after with
the same probes, returns them instead of running the frozen graph once more.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
import re
import struct
import threading
import time
import wave

import numpy as np

from tb_unfreeze.analysis import GraphInput
from tb_unfreeze.errors import UserError
from tb_unfreeze.graph_index import tensor_name
from tb_unfreeze.verify import FrozenRunner, ProbeError
from tb_unfreeze.verify import run_frozen as _run_frozen_uncached

_LOG = logging.getLogger(__name__)

UNKNOWN_DIM = 2  # the first size tried for unknown dimensions (today's behaviour)
FIRST_RUN_TIMEOUT_S = 900.0  # the first run also pays for setting up the whole graph (VGG16: ~10 s)
RUN_TIMEOUT_S = 60.0  # each later attempt, at least (a scalar like MTCNN's `factor` >= 1 can loop forever)
TOTAL_BUDGET_S = 120.0  # all later attempts together, at least
MAX_ATTEMPTS = 160

# (batch, other) sizes for the dimensions still unknown, in the order tried.
# Then every other size up to 64 (a Flatten -> Dense fixes one exact size) and common image sizes, while the
# time budget lasts.
_PROFILES = [
    (2, 2),
    (1, 1),
    (2, 1),
    (1, 2),
    (2, 4),
    (2, 8),
    (2, 16),
    (1, 16),
    (2, 32),
    (1, 32),
    (2, 64),
    (1, 64),
    (1, 100),
    (1, 128),
    (1, 224),
    (1, 256),
    (1, 300),
    (1, 512),
]
_PROFILES += [(2, n) for n in range(3, 64) if n not in (4, 8, 16, 32)]
_PROFILES += [(1, n) for n in (96, 112, 120, 150, 160, 192, 200, 227, 240, 299, 320, 331, 384, 416, 448, 480, 600, 640)]
_SCALAR_FLOATS = [0.5, 0.7, 0.9, 2.0, 1.0, 0.25, 0.1, 3.0, 4.0, 10.0, 20.0]
_SCALAR_INTS = [1, 2, 4, 8, 16, 3, 32, 0, 64, 128]
_RAW_LENGTHS = [784, 3072, 1, 4, 16, 64, 256, 1024, 4096, 16384]

_FLOAT = {"float32": np.float32, "float16": np.float16, "float64": np.float64, "bfloat16": np.float32}
_INT = ("int32", "int64", "int8", "int16", "uint8", "uint16", "uint32", "uint64")

# Ops whose output 0 has the shape of their input 0 (what a hint on the output says about the input).
_SAME_SHAPE = frozenset(
    {
        "Identity",
        "IdentityN",
        "StopGradient",
        "PreventGradient",
        "Snapshot",
        "CheckNumerics",
        "Cast",
        "Bitcast",
        "Switch",
        "RefSwitch",
        "Merge",
        "Enter",
        "Exit",
        "NextIteration",
        "Relu",
        "Relu6",
        "Elu",
        "Selu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Softplus",
        "Softsign",
        "Neg",
        "Abs",
        "Square",
        "Sqrt",
        "Rsqrt",
        "Exp",
        "Log",
        "Log1p",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "Sin",
        "Cos",
        "Erf",
        "ZerosLike",
        "OnesLike",
        "QuantizeV2",
        "Dequantize",
        "FakeQuantWithMinMaxVars",
        "FakeQuantWithMinMaxArgs",
        "FakeQuantWithMinMaxVarsPerChannel",
        "Softmax",
        "LogSoftmax",
        "L2Loss",
        "ClipByValue",
        "Mish",
        "Gelu",
    }
)
_ELEMENTWISE = frozenset(
    {
        "Add",
        "AddV2",
        "Sub",
        "Mul",
        "RealDiv",
        "Div",
        "DivNoNan",
        "FloorDiv",
        "FloorMod",
        "Maximum",
        "Minimum",
        "SquaredDifference",
        "Pow",
        "BiasAdd",
        "LogicalAnd",
        "LogicalOr",
        "Select",
        "SelectV2",
    }
)
_COMPARE = frozenset({"Equal", "NotEqual", "Less", "LessEqual", "Greater", "GreaterEqual"})
_NHWC_RANK4 = {
    "Conv2D": "filter",
    "DepthwiseConv2dNative": "filter",
    "QuantizedConv2D": "filter",
    "FusedBatchNorm": "scale",
    "FusedBatchNormV2": "scale",
    "FusedBatchNormV3": "scale",
    "MaxPool": None,
    "AvgPool": None,
    "QuantizedMaxPool": None,
    "QuantizedAvgPool": None,
    "LRN": None,
    "ResizeBilinear": None,
    "ResizeNearestNeighbor": None,
    "ResizeBicubic": None,
    "ResizeArea": None,
    "SpaceToDepth": None,
    "DepthToSpace": None,
    "Conv2DBackpropInput": None,
}
_DECODERS = frozenset(
    {"DecodeWav", "DecodeJpeg", "DecodeAndCropJpeg", "DecodePng", "DecodeImage", "DecodeBmp", "DecodeGif", "DecodeRaw"}
)
_INDEX_OPS = frozenset(
    {
        "Gather",
        "GatherV2",
        "ResourceGather",
        "GatherNd",
        "OneHot",
        "SparseSegmentSum",
        "SparseSegmentMean",
        "SparseSegmentSqrtN",
    }
)


@dataclasses.dataclass
class _Hint:
    """What the graph says about one input: rank, sizes per axis (negative axes when the rank is unknown)."""

    rank: int | None = None
    dims: dict = dataclasses.field(default_factory=dict)
    proposals: list = dataclasses.field(default_factory=list)  # whole shapes that fit (Reshape targets)
    scalar_values: list = dataclasses.field(default_factory=list)  # (comparison, constant) the input meets
    index_bound: int | None = None  # values must lie in [0, index_bound)
    decoder: object = None  # the tf.Operation decoding a string input
    raw_elements: int | None = None  # DecodeRaw: elements a downstream Reshape wants
    compared_scalar: bool = False

    def add_dims(self, rank: int | None, dims: dict) -> None:
        if rank is not None and self.rank is None:
            self.rank = rank
            self.dims = {(a if a >= 0 else a + rank): s for a, s in self.dims.items() if a < rank and a >= -rank}
        for axis, size in dims.items():
            if rank is None and self.rank is not None:
                if not -self.rank <= axis < self.rank:
                    continue
                axis = axis if axis >= 0 else axis + self.rank
            elif rank is not None and self.rank is not None and rank != self.rank:
                continue
            if size is not None and size > 0:
                self.dims.setdefault(axis, int(size))


@dataclasses.dataclass
class _Plan:
    """How probe values are made for one input that needs them."""

    inp: GraphInput
    shapes: list  # candidate partial shapes (-1 unknown), best first; [None] for a string of decoded content
    hint: _Hint
    guessed: bool  # the shape was not declared


# --------------------------------------------------------------------------------------------------- npz ---


def _load_npz(npz: str | None) -> dict:
    if not npz:
        return {}
    try:
        with np.load(npz, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{npz}: cannot read probe inputs ({e}); pass an .npz keyed by input name.") from None


# ------------------------------------------------------------------------------------------ graph reading ---


def _static_shape(tensor) -> list | None:
    shape = tensor.shape
    if shape.rank is None:
        return None
    return [-1 if d is None else int(d) for d in shape.as_list()]


def _const_value(tensor, depth: int = 8):
    """The value of a tensor computed from constants only through Identity-like ops, else None."""
    from tensorflow.python.framework import tensor_util  # noqa: PLC0415

    op = tensor.op
    while op.type in ("Identity", "Snapshot", "StopGradient", "Enter") and depth > 0:
        op, depth = op.inputs[0].op, depth - 1
    if op.type == "Const":
        try:
            return tensor_util.MakeNdarray(op.get_attr("value"))
        except (TypeError, ValueError):
            return None
    try:
        return tensor_util.constant_value(tensor)  # Shape of a static shape, Pack of constants, ...
    except Exception:  # constant_value is best effort
        return None


def _slot(op, tensor) -> int:
    for i, t in enumerate(op.inputs):
        if t is tensor:
            return i
    return -1


_RANK_KEEPING = frozenset({"Pad", "PadV2", "MirrorPad", "ExpandDims", "ConcatV2", "Transpose"})


def _uses(tensor, limit: int = 10):
    """(op, slot, path) for every consumer of `tensor`, walking through shape-keeping ops; `path` is the list
    of (op, slot) walked through, used to map a hint on the consumer's input back onto `tensor`."""
    seen = set()
    stack = [(tensor, [])]
    while stack:
        t, path = stack.pop()
        if t.name in seen or len(path) > limit:
            continue
        seen.add(t.name)
        for op in t.consumers():
            slot = _slot(op, t)
            yield op, slot, path
            step = path + [(op, slot)]
            if op.type == "IdentityN":  # output k is input k
                stack.append((op.outputs[slot], step))
            elif op.type in _SAME_SHAPE and (slot == 0 or op.type == "Merge") or op.type in _RANK_KEEPING and slot == 0:
                for out in op.outputs[:2] if op.type in ("Switch", "RefSwitch") else op.outputs[:1]:
                    stack.append((out, step))
            elif op.type == "ConcatV2" and slot < len(op.inputs) - 1:
                stack.append((op.outputs[0], step))
            elif op.type in _ELEMENTWISE and slot in (0, 1) and len(op.inputs) == 2:
                other = _static_shape(op.inputs[1 - slot])
                if other is not None and len(other) <= 1:  # a per-channel or scalar partner keeps the shape
                    stack.append((op.outputs[0], step))


def _map_back(rank, dims, path):
    """A hint (rank, dims) on the input of the last op of `path`, carried back to the walked tensor."""
    for op, _slot in reversed(path):
        if op.type == "ExpandDims":
            axis = _const_value(op.inputs[1])
            if axis is None or rank is None:
                return None, {}
            axis = int(np.asarray(axis).reshape(-1)[0])
            axis = axis if axis >= 0 else axis + rank
            dims = {(a if a < axis else a - 1): s for a, s in dims.items() if a >= 0 and a != axis}
            rank -= 1
        elif op.type in ("Pad", "PadV2", "MirrorPad"):
            pads = _const_value(op.inputs[1])
            if pads is None:
                return rank, {}
            pads = np.asarray(pads).reshape(-1, 2)
            rank = len(pads) if rank is None else rank
            dims = {a: s for a, s in dims.items() if -len(pads) <= a < len(pads) and not pads[a].any()}
        elif op.type == "ConcatV2":
            axis = _const_value(op.inputs[-1])
            if axis is None:
                return rank, {}
            axis = int(axis)
            dims = {a: s for a, s in dims.items() if a != axis and (rank is None or a != axis % rank)}
        elif op.type == "Transpose":
            perm = _const_value(op.inputs[1])
            if perm is None:
                return rank, {}
            perm = [int(p) for p in np.asarray(perm).reshape(-1)]
            rank = len(perm)
            dims = {perm[a % rank]: s for a, s in dims.items() if -rank <= a < rank}
    return rank, dims


def _channel_axis(op, rank: int) -> int:
    try:
        fmt = op.get_attr("data_format")
    except ValueError:
        return rank - 1
    fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
    return 1 if fmt.startswith("NC") else rank - 1


_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})


def _function_arg(op, slot: int):
    """The placeholder of argument `slot` inside the function a (Stateful)PartitionedCall runs (Keras 3 wraps
    its convolutions in one), in a graph built with the call's input shapes; None when it cannot be built."""
    try:
        from tensorflow.python.framework.function_def_to_graph import function_def_to_graph  # noqa: PLC0415

        name = op.get_attr("f").name
        fdef = op.graph._get_function(name).cached_definition  # the only way to the FunctionDef
        shapes = [t.shape for t in op.inputs]
        func_graph = function_def_to_graph(fdef, input_shapes=shapes)
        return func_graph.inputs[slot]
    except Exception:  # best effort: a hint less
        return None


def _hint_for(tensor, depth: int = 0) -> _Hint:
    """Everything the consumers of `tensor` say about the values it must hold."""
    hint = _Hint()
    weak: list = []  # (rank, dims) from element-wise partners, applied after the strong hints
    for op, slot, path in _uses(tensor):
        kind = op.type
        rank, dims = None, {}
        if kind in ("MatMul", "QuantizedMatMul") and slot in (0, 1):
            other = _static_shape(op.inputs[1 - slot])
            ta, tb = (bool(op.get_attr(a)) for a in ("transpose_a", "transpose_b"))
            rank = 2
            if other is not None and len(other) == 2:
                if slot == 0:
                    k = other[1] if tb else other[0]
                    dims = {0 if ta else 1: k}
                else:
                    k = other[0] if ta else other[1]
                    dims = {1 if tb else 0: k}
        elif kind in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3") and slot in (0, 1):
            other = _static_shape(op.inputs[1 - slot])
            if other is not None and len(other) >= 2:
                adj_x, adj_y = (bool(op.get_attr(a)) for a in ("adj_x", "adj_y"))
                rank = len(other)
                if slot == 0:
                    dims = {rank - 2 if adj_x else rank - 1: other[-1] if adj_y else other[-2]}
                else:
                    dims = {rank - 1 if adj_y else rank - 2: other[-2] if adj_x else other[-1]}
        elif kind in _NHWC_RANK4 and slot == (2 if kind == "Conv2DBackpropInput" else 0):
            rank = 4
            source = _NHWC_RANK4[kind]
            if source == "filter":
                filt = _static_shape(op.inputs[1])
                if filt is not None and len(filt) == 4:
                    dims = {_channel_axis(op, 4): filt[2]}
            elif source == "scale":
                scale = _static_shape(op.inputs[1])
                if scale is not None and len(scale) == 1:
                    dims = {_channel_axis(op, 4): scale[0]}
        elif kind in ("Conv3D", "MaxPool3D", "AvgPool3D") and slot == 0:
            rank = 5
            filt = _static_shape(op.inputs[1]) if kind == "Conv3D" else None
            if filt is not None and len(filt) == 5:
                dims = {_channel_axis(op, 5): filt[3]}
        elif kind == "BatchNormWithGlobalNormalization" and slot == 0:
            rank = 4
            mean = _static_shape(op.inputs[1])
            dims = {3: mean[0]} if mean and len(mean) == 1 else {}
        elif kind == "BiasAdd" and slot == 0:
            bias = _static_shape(op.inputs[1])
            if bias is not None and len(bias) == 1:
                axis = _channel_axis(op, 4)
                weak.append((path, None if axis != 1 else 4, {-1 if axis != 1 else 1: bias[0]}))
            continue
        elif kind in ("Reshape", "QuantizedReshape") and slot == 0:
            target = _const_value(op.inputs[1])
            if target is not None:
                target = [int(d) for d in np.asarray(target).reshape(-1)]
                r, d = _map_back(len(target), dict(enumerate(target)), path)
                if r is not None:
                    hint.proposals.append([d.get(a, -1) for a in range(r)])
            continue
        elif kind in _ELEMENTWISE and slot in (0, 1) and len(op.inputs) == 2:
            other = _static_shape(op.inputs[1 - slot])
            if other is not None and len(other) >= 1:
                # A per-channel partner ([C], even C = 1) gives the last size; in higher ranks a 1 broadcasts.
                weak.append(
                    (
                        path,
                        None,
                        {-(i + 1): s for i, s in enumerate(reversed(other)) if s > 1 or len(other) == 1 and s == 1},
                    )
                )
            continue
        elif kind in _COMPARE and slot in (0, 1):
            value = _const_value(op.inputs[1 - slot])
            if value is not None and np.ndim(value) == 0 and all(o.type in _SAME_SHAPE for o, _ in path):
                hint.compared_scalar = True
                # Read as `input <kind> value` (slot 0) or `value <kind> input` (slot 1).
                flipped = {
                    "Less": "Greater",
                    "LessEqual": "GreaterEqual",
                    "Greater": "Less",
                    "GreaterEqual": "LessEqual",
                }
                hint.scalar_values.append((kind if slot == 0 else flipped.get(kind, kind), float(value)))
            continue
        elif kind in _INDEX_OPS:
            bound = _index_bound(op, slot)
            if bound is not None:
                hint.index_bound = bound if hint.index_bound is None else min(hint.index_bound, bound)
            continue
        elif kind in _CALLS and depth < 3:
            inner = _function_arg(op, slot)
            if inner is None:
                continue
            sub = _hint_for(inner, depth + 1)
            rank, dims = _map_back(sub.rank, sub.dims, path)
            hint.add_dims(rank, dims)
            hint.proposals.extend(sub.proposals)
            hint.scalar_values.extend(sub.scalar_values)
            hint.compared_scalar |= sub.compared_scalar
            if sub.index_bound is not None:
                hint.index_bound = min(hint.index_bound or sub.index_bound, sub.index_bound)
            hint.decoder = hint.decoder or sub.decoder
            hint.raw_elements = hint.raw_elements or sub.raw_elements
            continue
        elif kind in _DECODERS and slot == 0:
            hint.decoder = op
            if kind == "DecodeRaw":
                hint.raw_elements = _raw_elements(op)
            continue
        else:
            continue
        rank, dims = _map_back(rank, dims, path)
        hint.add_dims(rank, dims)
    for path, rank, dims in weak:
        rank, dims = _map_back(rank, dims, path)
        hint.add_dims(rank, dims)
    return hint


def _index_bound(op, slot: int) -> int | None:
    kind = op.type
    if kind == "OneHot" and slot == 0:
        depth = _const_value(op.inputs[1])
        return int(depth) if depth is not None and int(depth) > 0 else None
    if kind in ("Gather", "GatherV2", "ResourceGather") and slot == 1:
        params = _static_shape(op.inputs[0])
        axis = 0
        if kind == "GatherV2":
            value = _const_value(op.inputs[2])
            axis = int(value) if value is not None else 0
        if params and params[axis] > 0:
            return params[axis]
    if kind == "GatherNd" and slot == 1:
        params = _static_shape(op.inputs[0])
        if params and params[0] > 0:
            return min(p for p in params if p > 0)
    if kind.startswith("SparseSegment") and slot == 1:
        params = _static_shape(op.inputs[0])
        if params and params[0] > 0:
            return params[0]
    return None


def _raw_elements(op) -> int | None:
    for user, slot, _ in _uses(op.outputs[0]):
        if user.type == "Reshape" and slot == 0:
            target = _const_value(user.inputs[1])
            if target is not None:
                target = np.asarray(target).reshape(-1)
                if target.size and (target > 0).all():
                    return int(np.prod(target))
    return None


# ------------------------------------------------------------------------------------------------ plans ---


def _strip_weights(graph_def):
    """A copy of the graph without the bytes of large float constants (enough for shape inference)."""
    import tensorflow as tf  # noqa: PLC0415

    light = tf.compat.v1.GraphDef()
    light.versions.CopyFrom(graph_def.versions)
    light.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        copy = light.node.add()
        if node.op == "Const" and len(node.attr["value"].tensor.tensor_content) > 4096:
            copy.name, copy.op, copy.device = node.name, node.op, node.device
            copy.input.extend(node.input)
            for key, value in node.attr.items():
                if key != "value":
                    copy.attr[key].CopyFrom(value)
            tensor = copy.attr["value"].tensor
            tensor.dtype = node.attr["value"].tensor.dtype
            tensor.tensor_shape.CopyFrom(node.attr["value"].tensor.tensor_shape)
        else:
            copy.CopyFrom(node)
    return light


def _shape_fits(tf, light, name: str, shape: list) -> bool:
    """TensorFlow's shape inference accepts `shape` for placeholder `name` (other inputs left as declared)."""
    node = next(n for n in light.node if n.name == name)
    saved = tf.compat.v1.AttrValue()
    saved.CopyFrom(node.attr["shape"])
    node.attr["shape"].shape.Clear()
    for d in shape:
        node.attr["shape"].shape.dim.add().size = d
    node.attr["shape"].shape.unknown_rank = False
    try:
        with tf.Graph().as_default():
            tf.import_graph_def(light, name="check")
        return True
    except (ValueError, tf.errors.OpError):
        return False
    finally:
        node.attr["shape"].CopyFrom(saved)


def _plan(tf, graph, graph_def, inp: GraphInput, light_holder: list) -> _Plan:
    tensor = graph.get_tensor_by_name(f"frozen/{inp.name}:0")
    hint = _hint_for(tensor)
    if inp.dtype == "string" and hint.decoder is not None:
        shape = inp.shape if inp.shape is not None else []
        return _Plan(inp, [shape], hint, inp.shape is None)
    if inp.shape is not None:
        shape = list(inp.shape)
        if hint.rank == len(shape):
            shape = [hint.dims.get(a, -1) if d < 0 else d for a, d in enumerate(shape)]
        return _Plan(inp, [shape], hint, False)
    candidates: list[list[int]] = []
    if hint.rank is not None:
        candidates.append([hint.dims.get(a, -1) for a in range(hint.rank)])
    for proposal in hint.proposals:
        if hint.rank is None or len(proposal) == hint.rank:
            merged = [hint.dims.get(a, d) for a, d in enumerate(proposal)] if hint.rank == len(proposal) else proposal
            candidates.append(merged)
    if hint.rank is None:
        order = [0, 2, 1, 3, 4] if hint.compared_scalar or inp.dtype == "string" else [2, 1, 3, 4, 0]
        if hint.index_bound is not None:
            order = [2, 1, 0, 3]
        need = max((-a for a in hint.dims if a < 0), default=0)
        for rank in order:
            if rank >= need:
                candidates.append([hint.dims.get(a - rank, -1) for a in range(rank)])
    unique = []
    for c in candidates:
        if c not in unique:
            unique.append(c)
    if len(unique) > 1:
        if not light_holder:
            light_holder.append(_strip_weights(graph_def))
        fitting = [c for c in unique if _shape_fits(tf, light_holder[0], inp.name, c)]
        unique = fitting or unique
    return _Plan(inp, unique[:4], hint, True)


# ------------------------------------------------------------------------------------------------ values ---


def _fill(shape: list, batch: int, size: int) -> list:
    return [
        d if d >= 0 else (batch if a == 0 and len(shape) > 1 or len(shape) == 1 else size) for a, d in enumerate(shape)
    ]


def _wav_bytes(samples: int, channels: int, rng) -> bytes:
    data = (rng.standard_normal((samples, channels)) * 3000).clip(-32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(data.tobytes())
    return buf.getvalue()


def _bmp_bytes(image: np.ndarray) -> bytes:
    h, w, _ = image.shape
    row = (w * 3 + 3) & ~3
    pixels = b"".join(image[y, :, ::-1].tobytes().ljust(row, b"\0") for y in range(h - 1, -1, -1))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def _image_bytes(tf, kind: str, side: int, channels: int, rng, dtype=np.uint8) -> bytes:
    channels = channels if channels in (1, 3, 4) else 3
    if kind in ("DecodeJpeg", "DecodeAndCropJpeg"):
        channels = 1 if channels == 1 else 3
    if kind == "DecodeBmp":
        return _bmp_bytes(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    image = rng.integers(0, np.iinfo(dtype).max + 1, (side, side, channels)).astype(dtype)
    with tf.Graph().as_default() as g:
        encoded = tf.io.encode_jpeg(image) if kind in ("DecodeJpeg", "DecodeAndCropJpeg") else tf.io.encode_png(image)
        with tf.compat.v1.Session(graph=g) as sess:
            return sess.run(encoded)


def _attr(op, name, default):
    try:
        return op.get_attr(name)
    except ValueError:
        return default


def _string_content(tf, plan: _Plan, variant: int, size: int, rng):
    op = plan.hint.decoder
    kind = op.type if op is not None else None
    if kind == "DecodeWav":
        samples = int(_attr(op, "desired_samples", -1))
        channels = int(_attr(op, "desired_channels", -1))
        return _wav_bytes(samples if samples > 0 else 16000, channels if channels > 0 else 1, rng)
    if kind in ("DecodeJpeg", "DecodeAndCropJpeg", "DecodePng", "DecodeImage", "DecodeBmp", "DecodeGif"):
        if kind == "DecodeGif":
            return None
        dtype = _attr(op, "dtype", tf.uint8)
        np_dtype = np.uint16 if getattr(dtype, "name", "") == "uint16" else np.uint8
        return _image_bytes(
            tf,
            "DecodePng" if kind == "DecodeImage" else kind,
            max(size, 8),
            int(_attr(op, "channels", 0)),
            rng,
            np_dtype,
        )
    if kind == "DecodeRaw":
        out = tf.as_dtype(_attr(op, "out_type", tf.uint8))
        lengths = [plan.hint.raw_elements] if plan.hint.raw_elements else _RAW_LENGTHS
        n = lengths[variant % len(lengths)]
        return rng.integers(0, 256, n * out.size, dtype=np.uint8).tobytes()
    return [b"0", b"", b"a"][variant % 3]


def _compared_values(compared: list) -> list:
    """Values to try for a scalar the graph compares with constants: the ones it tests for equality, the
    midpoints between the constants (a range check such as 0 < factor < 1), then just beyond each bound."""
    equal = [v for kind, v in compared if kind in ("Equal", "LessEqual", "GreaterEqual")]
    bounds = sorted({v for _, v in compared})
    mids = [(a + b) / 2 for a, b in zip(bounds, bounds[1:])]
    beyond = [v - 1 if kind.startswith("Less") else v + 1 for kind, v in compared if kind != "Equal"]
    return list(dict.fromkeys(equal + mids + beyond))


def _scalar_choices(plan: _Plan, integer: bool) -> list:
    values = _compared_values(plan.hint.scalar_values)
    base = _SCALAR_INTS if integer else _SCALAR_FLOATS
    if plan.hint.index_bound is not None:
        base = [0, 1] + [plan.hint.index_bound - 1]
    values = [v for v in values if not integer or float(v).is_integer()] + [v for v in base if v not in values]
    if integer and plan.inp.dtype.startswith("uint"):
        values = [v for v in values if v >= 0]
    return values


def _variants(plan: _Plan) -> int:
    """How many different value choices an input has (scalars, raw byte lengths)."""
    if plan.inp.dtype == "string":
        op = plan.hint.decoder
        if op is None:
            return 3
        if op.type == "DecodeRaw" and not plan.hint.raw_elements:
            return len(_RAW_LENGTHS)
        return 1
    if [] in plan.shapes and (plan.inp.dtype in _FLOAT or plan.inp.dtype in _INT):
        return len(_scalar_choices(plan, plan.inp.dtype in _INT))
    return 1


def _value(tf, plan: _Plan, shape: list, variant: int, batch: int, size: int, rng):
    dtype = plan.inp.dtype
    concrete = _fill(shape, batch, size)
    if dtype == "string":
        content = _string_content(tf, plan, variant, size, rng)
        if content is None:
            return None
        return np.full(concrete, content, dtype=object) if concrete else np.array(content, dtype=object)
    if concrete == [] and (dtype in _FLOAT or dtype in _INT):
        choices = _scalar_choices(plan, dtype in _INT)
        value = choices[variant % len(choices)]
        return np.asarray(value, dtype=_FLOAT.get(dtype, np.float32) if dtype in _FLOAT else dtype)
    if dtype in _FLOAT:
        return rng.standard_normal(concrete).astype(_FLOAT[dtype])
    if dtype in _INT:
        high = plan.hint.index_bound or 2
        return rng.integers(0, high, size=concrete).astype(dtype)
    if dtype == "bool":
        return np.zeros(concrete, dtype=bool)
    return None


# ------------------------------------------------------------------------------------------------ runner ---


_Runner = FrozenRunner  # lean Session, Grappler's defaults only when they give a clean run


_NOISE = re.compile(r"^(Graph execution error|Detected at node|Node:|Original stack trace|File |\[\[|\s*$)")


def _first_line(error: Exception) -> str:
    """The line of a TensorFlow error that says what went wrong (not the 'Graph execution error' banner)."""
    text = getattr(error, "message", None) or str(error)
    lines = [ln.strip() for ln in text.splitlines() if not _NOISE.match(ln.strip())]
    return re.sub(r"\s+", " ", lines[0] if lines else type(error).__name__)[:300]


def _implicit_defaults(graph_def, known: set) -> dict:
    """Values for the constant-default knobs (keep_prob, learning phase) that are not among `inputs`."""
    defaults = {}
    try:
        from tensorboard.compat.proto import graph_pb2  # noqa: PLC0415

        from tb_unfreeze.analysis import find_inputs  # noqa: PLC0415
        from tb_unfreeze.graph_index import GraphIndex  # noqa: PLC0415

        light = graph_pb2.GraphDef()
        light.node.extend(n for n in graph_def.node if n.op != "Const")
        light.versions.producer = graph_def.versions.producer
        for i in find_inputs(GraphIndex(light)):
            if i.name not in known and i.default is not None and i.kind in ("dropout_keep_prob", "learning_phase"):
                defaults[i.name] = i.default
    except Exception:  # the analysis module is being reworked: fall back on names
        for node in graph_def.node:
            if node.op != "Placeholder" or node.name in known:
                continue
            dtype = node.attr["dtype"].type
            if dtype == 10:  # DT_BOOL
                defaults[node.name] = False
            elif dtype == 1 and re.search(r"keep_prob|dropout", node.name, re.I):
                defaults[node.name] = 1.0
    return {k: np.asarray(v, dtype=bool if isinstance(v, bool) else np.float32) for k, v in defaults.items()}


# ------------------------------------------------------------------------------------------------- cache ---

_CACHE_LOCK = threading.Lock()
_CACHE: dict = {}


def _remember(graph_def, probes: dict, fetches: list[str], defaults: dict, outputs: dict) -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
        _CACHE.update(
            graph=id(graph_def), probes=dict(probes), fetches=list(fetches), defaults=dict(defaults), outputs=outputs
        )


def run_frozen(graph_def, feeds: dict, fetches: list[str], defaults: dict) -> dict:
    """`verify.run_frozen`, answered without running again when `make_probes` has just run the frozen graph on
    these very probe arrays (same objects), fetches and default values."""
    with _CACHE_LOCK:
        hit = (
            _CACHE.get("graph") == id(graph_def)
            and _CACHE["fetches"] == list(fetches)
            and _CACHE["probes"].keys() == feeds.keys()
            and all(_CACHE["probes"][k] is v for k, v in feeds.items())
            and _same_defaults(_CACHE["defaults"], defaults)
        )
        outputs = dict(_CACHE["outputs"]) if hit else None
        _CACHE.clear()
    if outputs is not None:
        return outputs
    return _run_frozen_uncached(graph_def, feeds, fetches, defaults)


def _same_defaults(used: dict, given: dict) -> bool:
    if set(used) != set(given):
        return False
    return all(np.array_equal(np.asarray(used[k]), np.asarray(given[k])) for k in used)


# ------------------------------------------------------------------------------------------- make_probes ---


def make_probes(
    inputs: list[GraphInput], npz: str | None, graph_def, fetches: list[str], seed: int = 0
) -> dict[str, np.ndarray]:
    """Probe values for the inputs that must be fed, keyed by node name, on which the frozen graph runs and
    computes every tensor of `fetches`. Raises ProbeError (naming the input) when no probe works."""
    supplied = _load_npz(npz)
    probes: dict = {}
    todo: list[GraphInput] = []
    for inp in inputs:
        if inp.default is not None:
            probes[inp.name] = np.asarray(inp.default, dtype=bool if inp.dtype == "bool" else np.float32)
            continue
        if inp.kind != "data":
            continue
        key = inp.name if inp.name in supplied else inp.name.replace("/", "_")
        if key in supplied:
            probes[inp.name] = supplied[key]
            continue
        todo.append(inp)
    missing = [k for k in supplied if k not in probes and k.replace("_", "/") not in probes]
    if npz and missing:
        raise UserError(f"{npz}: arrays {missing} match no input of the graph; name them after the input nodes.")
    if not todo:
        return probes

    import tensorflow as tf  # noqa: PLC0415

    fetches = [tensor_name(f) for f in fetches]
    defaults = _implicit_defaults(graph_def, {i.name for i in inputs})
    # Feed exactly what run_frozen will: the probes and the graph's constant defaults (never the same name twice).
    feed_names = list(dict.fromkeys([*probes, *(i.name for i in todo), *defaults]))
    runner = _Runner(tf, graph_def, feed_names, fetches)
    try:
        light: list = []
        plans = [_plan(tf, runner.graph, graph_def, inp, light) for inp in todo]
        del light
        return _search(tf, runner, plans, probes, defaults, graph_def, fetches, seed)
    finally:
        runner.close()


def _attempts(plans: list[_Plan]):
    """(profile, shape choice per input, variant) in the order tried."""
    combos = list(itertools.islice(itertools.product(*[range(len(p.shapes)) for p in plans]), 6))
    variants = max((_variants(p) for p in plans), default=1)
    unknown = any(-1 in s for p in plans for s in p.shapes if s is not None)
    profiles = _PROFILES if unknown else [(UNKNOWN_DIM, UNKNOWN_DIM)]
    for n, profile in enumerate(profiles):
        for combo in combos:
            for variant in range(variants if n < 4 else min(variants, 3)):
                yield profile, combo, variant


def _search(tf, runner, plans, probes, defaults, graph_def, fetches, seed):
    started = time.monotonic()
    last_error, fallback, tried = None, None, 0
    run_timeout, budget = FIRST_RUN_TIMEOUT_S, FIRST_RUN_TIMEOUT_S
    for (batch, size), combo, variant in _attempts(plans):
        elapsed = time.monotonic() - started
        if tried >= MAX_ATTEMPTS or elapsed > budget:
            break
        rng = np.random.default_rng(seed)
        values = dict(probes)
        for plan, choice in zip(plans, combo):
            value = _value(tf, plan, plan.shapes[choice], variant, batch, size, rng)
            if value is None:
                raise ProbeError(
                    f"cannot make a probe value for input '{plan.inp.name}' of type {plan.inp.dtype}; pass --probe "
                    f"FILE.npz with an array named '{plan.inp.name}', or --no-verify."
                )
            values[plan.inp.name] = value
        tried += 1
        attempt_started = time.monotonic()
        try:
            outputs = runner.run({**values, **defaults}, min(run_timeout, budget - elapsed + 1))
        except (tf.errors.OpError, ValueError, TypeError) as e:
            last_error = e
            _LOG.debug("probe attempt %d (%s) rejected: %s", tried, describe(values), _first_line(e))
            continue
        finally:
            if tried == 1:  # later attempts may take a few times what the first took, on a graph this size
                first = time.monotonic() - attempt_started
                run_timeout = max(RUN_TIMEOUT_S, 5 * first)
                budget = first + max(TOTAL_BUDGET_S, 10 * first)
        if not _degenerate(outputs) or tried >= MAX_ATTEMPTS:
            return _accept(values, probes, plans, outputs, defaults, graph_def, fetches)
        if fallback is None:
            fallback = (values, outputs, tried)
        elif tried - fallback[2] >= 8:
            break
    if fallback is not None:
        return _accept(fallback[0], probes, plans, fallback[1], defaults, graph_def, fetches)
    blamed = [p.inp.name for p in plans if p.guessed] or [p.inp.name for p in plans]
    names = " and ".join(f"'{n}'" for n in blamed)
    reason = f" (last error: {_first_line(last_error)})" if last_error is not None else ""
    raise ProbeError(
        f"the frozen graph rejected all {tried} probe value(s) tried for input{'s' if len(blamed) > 1 else ''} "
        f"{names}{reason}; pass --probe FILE.npz with an array named after each input, or --no-verify."
    )


def _degenerate(outputs) -> bool:
    """Outputs that would make a weak comparison: NaN/inf, or empty (a CTC decoder that found nothing)."""
    for out in outputs:
        out = np.asarray(out)
        if out.size == 0:
            return True
        if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all():
            return True
    return False


def _accept(values, probes, plans, outputs, defaults, graph_def, fetches):
    result = dict(probes)
    result.update({p.inp.name: values[p.inp.name] for p in plans})
    _remember(graph_def, result, fetches, defaults, dict(zip(fetches, outputs)))
    return result


def describe(probes: dict) -> dict:
    """{input: "shape dtype"} for logs and reports."""
    return {k: f"{list(np.shape(v))} {np.asarray(v).dtype}" for k, v in probes.items()}
