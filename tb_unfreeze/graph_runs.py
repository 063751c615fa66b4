"""Put frozen and unfrozen graphs into TensorBoard's graph context, without TensorFlow.

Each graph is its own run (`<logdir>/unfreeze/<model id>/frozen`, `.../unfrozen`): TensorBoard serves a second
graph in the same run inconsistently, so a new graph replaces the run's event file instead of appending.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time

from tensorboard.compat.proto import event_pb2, graph_pb2

from tb_unfreeze.loading import FrozenGraph, load_graph

RUNS_ROOT = "unfreeze"
DISPLAY_LIMIT = 1024  # bytes of constant content kept in display copies


def run_dir(logdir: str, model_id: str, which: str) -> str:
    return os.path.join(logdir, RUNS_ROOT, *model_id.split("/"), which)


def run_name(model_id: str, which: str) -> str:
    """The run name TensorBoard shows for a model's graph (always '/'-separated)."""
    return f"{RUNS_ROOT}/{model_id}/{which}"


def display_copy(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """A copy whose large constants keep dtype and shape but drop their bytes (the UI shows 1 KB of them anyway)."""
    slim = graph_pb2.GraphDef()
    slim.versions.CopyFrom(graph_def.versions)
    slim.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        if node.op == "Const" and "value" in node.attr and node.attr["value"].tensor.ByteSize() > DISPLAY_LIMIT:
            copy = slim.node.add()
            copy.name, copy.op, copy.device = node.name, node.op, node.device
            copy.input.extend(node.input)
            for key, value in node.attr.items():
                if key != "value":
                    copy.attr[key].CopyFrom(value)
            tensor = node.attr["value"].tensor
            copy.attr["value"].tensor.dtype = tensor.dtype
            copy.attr["value"].tensor.tensor_shape.CopyFrom(tensor.tensor_shape)
        else:
            slim.node.add().CopyFrom(node)
    return slim


def write_graph_run(directory: str, graph_def: graph_pb2.GraphDef) -> str:
    """Replace the run in `directory` with one event holding `graph_def`. Returns the directory."""
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".graph-run-", dir=parent)
    try:
        # RecordWriter on a plain file: TensorBoard's EventFileWriter would import TensorFlow for tf.io.gfile.
        # Imported here: the tensorboard.summary package is slow to import, and inspection never needs it.
        from tensorboard.summary.writer.record_writer import RecordWriter  # noqa: PLC0415

        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.tb_unfreeze"
        with open(os.path.join(staging, name), "wb") as f:
            writer = RecordWriter(f)
            writer.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
            writer.write(
                event_pb2.Event(wall_time=now, step=0, graph_def=graph_def.SerializeToString()).SerializeToString()
            )
            writer.flush()
        if os.path.isdir(directory):
            old = directory + f".old-{os.getpid()}-{time.time_ns()}"
            os.rename(directory, old)
            os.rename(staging, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _as_graph(frozen) -> FrozenGraph:
    return frozen if isinstance(frozen, FrozenGraph) else load_graph(frozen)


def log_graphs(logdir: str, model_id: str, frozen=None, unfrozen: str | None = None) -> dict[str, str]:
    """Write the frozen graph (a path or FrozenGraph) and/or the unfrozen graph of a conversion output directory
    as runs under `<logdir>/unfreeze/<model_id>/`. Returns {which: run name}."""
    runs = {}
    if frozen is not None:
        write_graph_run(run_dir(logdir, model_id, "frozen"), display_copy(_as_graph(frozen).graph_def))
        runs["frozen"] = run_name(model_id, "frozen")
    if unfrozen is not None:
        from tb_unfreeze.contract import Layout  # noqa: PLC0415

        graph_def = graph_pb2.GraphDef()
        with open(Layout(unfrozen).unfrozen_graph, "rb") as f:
            graph_def.ParseFromString(f.read())
        write_graph_run(run_dir(logdir, model_id, "unfrozen"), display_copy(graph_def))
        runs["unfrozen"] = run_name(model_id, "unfrozen")
    return runs
