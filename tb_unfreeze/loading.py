"""Load a frozen GraphDef from a `.pb` or `.pbtxt` file, without importing TensorFlow.

The file type is told from its content, not its name: users' `.pb` files are sometimes SavedModel or
MetaGraphDef protos, and text graphs exist in the wild. Every way a file can fail to be a frozen graph gets its
own one-sentence error.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat

from google.protobuf import message as pb_message
from google.protobuf import text_format
from tensorboard.compat.proto import graph_pb2, meta_graph_pb2

from tb_unfreeze.errors import NotAGraphError, NotFoundError, NotFrozenError

# Ops that only exist in graphs that still hold variables.
VARIABLE_OPS = frozenset(
    {"VariableV2", "Variable", "VarHandleOp", "AutoReloadVariable", "TemporaryVariable", "_VarHandlesOp"}
)
_OP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_>]*$")
_TEXT_HEAD = re.compile(rb"^\s*(#[^\n]*\n\s*)*([a-z_]+)\s*[{:]")


@dataclasses.dataclass
class FrozenGraph:
    """A parsed frozen graph and where it came from."""

    path: str
    graph_def: graph_pb2.GraphDef
    format: str  # "binary" or "text"
    size: int
    mtime: float


def _read(path: str) -> tuple[bytes, os.stat_result]:
    if not os.path.lexists(path):
        raise NotFoundError(f"{path}: no such file; pass the path of a frozen graph (.pb or .pbtxt).")
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "saved_model.pb")) or os.path.exists(
            os.path.join(path, "saved_model.pbtxt")
        ):
            raise NotFrozenError(
                f"{path} is a SavedModel directory, not a frozen graph; load it with tf.saved_model.load "
                "(its variables are already trainable), or freeze it first."
            )
        raise NotAGraphError(f"{path} is a directory; pass the path of a frozen graph file (.pb or .pbtxt).")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            # a FIFO, socket or device: opening it could block forever or read without end
            raise NotAGraphError(f"{path} is not a regular file; pass the path of a frozen graph file (.pb or .pbtxt).")
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except OSError as e:
        raise NotFoundError(f"{path}: cannot be read ({e.strerror}); check the path and its permissions.") from None
    return data, st


def _top_level_fields(data: bytes, limit: int = 4) -> list[tuple[int, int]]:
    """(field number, wire type) of the first few top-level protobuf fields; [] if the bytes are not protobuf."""
    fields, pos = [], 0
    n = len(data)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= n or shift > 63:
                raise ValueError
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    try:
        while pos < n and len(fields) < limit:
            key = varint()
            field, wire = key >> 3, key & 7
            if field == 0:
                raise ValueError
            if wire == 0:
                varint()
            elif wire == 1:
                pos += 8
            elif wire == 2:
                length = varint()  # read before adding: `pos += varint()` would use the old pos
                pos += length
            elif wire == 5:
                pos += 4
            else:
                raise ValueError
            if pos > n:
                raise ValueError
            fields.append((field, wire))
    except ValueError:
        return []
    return fields


def _looks_like_graph(graph_def: graph_pb2.GraphDef) -> bool:
    if not graph_def.node and not graph_def.library.function:
        return False
    return all(node.name and _OP_NAME.match(node.op) for node in graph_def.node)


def _parse_binary(path: str, data: bytes, graph_def_class=graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    fields = _top_level_fields(data)
    if fields[:1] == [(1, 0)] and (2, 2) in fields:
        raise NotFrozenError(
            f"{path} is a SavedModel proto (saved_model.pb), not a frozen graph, even though it is named "
            f"{os.path.splitext(path)[1] or 'so'}; load its directory with tf.saved_model.load, or freeze it first."
        )
    graph_def = graph_def_class()
    try:
        graph_def.ParseFromString(data)
        ok = _looks_like_graph(graph_def)
    except (pb_message.DecodeError, RuntimeError, ValueError):
        ok = False
    if ok:
        return graph_def
    meta = meta_graph_pb2.MetaGraphDef()
    try:
        meta.ParseFromString(data)
        is_meta = bool(meta.graph_def.node) and _looks_like_graph(meta.graph_def)
    except (pb_message.DecodeError, RuntimeError, ValueError):
        is_meta = False
    if is_meta:
        raise NotFrozenError(
            f"{path} is a MetaGraphDef (a checkpoint's .meta file), not a frozen graph; restore it with its "
            "checkpoint and freeze it first, or train it directly with tf.compat.v1.train.import_meta_graph."
        )
    raise NotAGraphError(
        f"{path} is not a TensorFlow GraphDef (empty, truncated or another format); pass a frozen graph "
        "written by tf.io.write_graph or a freezer."
    )


def _parse_text(path: str, text: str, graph_def_class=graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    head = _TEXT_HEAD.match(text.encode()[:4096])
    first = head.group(2).decode() if head else ""
    if first in {"saved_model_schema_version", "meta_graphs"}:
        raise NotFrozenError(
            f"{path} is a SavedModel in text format, not a frozen graph; load it with tf.saved_model.load."
        )
    if first in {"meta_info_def", "graph_def", "saver_def", "collection_def", "signature_def"}:
        raise NotFrozenError(
            f"{path} is a MetaGraphDef in text format, not a frozen graph; restore it with its checkpoint "
            "and freeze it first."
        )
    graph_def = graph_def_class()
    try:
        text_format.Parse(text, graph_def, allow_unknown_field=False)
    except (text_format.ParseError, ValueError, RecursionError) as e:
        raise NotAGraphError(
            f"{path} looks like a text proto but is not a valid GraphDef ({str(e).splitlines()[0][:160]}); "
            "fix the file or pass a binary .pb."
        ) from None
    if not _looks_like_graph(graph_def):
        raise NotAGraphError(f"{path} is a text proto with no graph nodes; pass a frozen graph.")
    return graph_def


def _as_text(data: bytes) -> str | None:
    if not data or b"\x00" in data[:4096]:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _TEXT_HEAD.match(data[:4096]) else None


def check_frozen(path: str, graph_def: graph_pb2.GraphDef) -> None:
    """Raise NotFrozenError if the graph still holds variables."""
    variables = [n for n in graph_def.node if n.op in VARIABLE_OPS]
    for function in graph_def.library.function:
        variables.extend(n for n in function.node_def if n.op in VARIABLE_OPS)
    if variables:
        raise NotFrozenError(
            f"{path} is not frozen: it still has {len(variables)} variable op(s) (e.g. '{variables[0].name}', "
            f"{variables[0].op}); its weights live in a checkpoint, so freeze it first or train it as it is."
        )


def load_graph(path: str | os.PathLike, graph_def_class=graph_pb2.GraphDef) -> FrozenGraph:
    """Read and parse a frozen graph; raise a UserError naming the file if it is not one.

    `graph_def_class` may be TensorFlow's own GraphDef (same schema) for callers that execute the graph.
    """
    graph, _ = load_graph_and_bytes(path, graph_def_class)
    return graph


def load_graph_and_bytes(path: str | os.PathLike, graph_def_class=graph_pb2.GraphDef) -> tuple[FrozenGraph, bytes]:
    """`load_graph`, also returning the file's bytes, for callers that parse them again (conversion parses them
    into TensorFlow's own GraphDef class with `reparse`) or hash them, without reading the file twice."""
    path = os.fspath(path)
    data, st = _read(path)
    if not data:
        raise NotAGraphError(f"{path} is empty; pass a frozen graph (.pb or .pbtxt).")
    text = _as_text(data)
    if text is not None:
        graph_def, fmt = _parse_text(path, text, graph_def_class), "text"
    else:
        graph_def, fmt = _parse_binary(path, data, graph_def_class), "binary"
    check_frozen(path, graph_def)
    return FrozenGraph(path=path, graph_def=graph_def, format=fmt, size=st.st_size, mtime=st.st_mtime), data


def reparse(graph: FrozenGraph, data: bytes, graph_def_class) -> FrozenGraph:
    """The same graph parsed from the same bytes into another GraphDef class of the same schema (TensorFlow's)."""
    graph_def = graph_def_class()
    if graph.format == "text":
        text_format.Parse(data.decode("utf-8"), graph_def)
    else:
        graph_def.ParseFromString(data)
    return dataclasses.replace(graph, graph_def=graph_def)
