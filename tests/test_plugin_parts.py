"""The plugin's parts that HTTP tests do not reach well: start-up without TensorFlow, flags, the history under
concurrent writers from several processes."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys

import pytest
from tensorboard.plugins import base_plugin

from tb_unfreeze.plugin import history
from tb_unfreeze.plugin.loader import UnfreezeLoader
from tb_unfreeze.plugin.plugin import UnfreezePlugin

LOAD_WITHOUT_TF = """
import argparse, sys
from tensorboard.plugins import base_plugin
from tb_unfreeze.plugin.loader import UnfreezeLoader
loader = UnfreezeLoader()
parser = argparse.ArgumentParser()
loader.define_flags(parser)
flags = parser.parse_args(["--unfreeze_model_dirs", sys.argv[2]])
loader.fix_flags(flags)
plugin = loader.load(base_plugin.TBContext(logdir=sys.argv[1], flags=flags))
assert plugin.is_active(), "the copied model should make the tab active"
plugin.models_impl(); plugin.candidates_impl("m.pb")
assert "tensorflow" not in sys.modules, "listing and inspecting must not import TensorFlow"
print("ok")
"""


def test_tensorboard_can_load_the_plugin_and_list_models_without_tensorflow(tmp_path, real_model):
    (tmp_path / "logdir").mkdir()
    (tmp_path / "zoo").mkdir()
    with open(real_model("tf2onnx_regression.pb"), "rb") as f:
        (tmp_path / "zoo" / "m.pb").write_bytes(f.read())
    out = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_TF, str(tmp_path / "logdir"), str(tmp_path / "zoo")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_entry_point_is_declared():
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="tensorboard_plugins") if e.name == "unfreeze"]
    assert ep.load() is UnfreezeLoader


def test_flags_are_checked(tmp_path):
    loader = UnfreezeLoader()
    parser = argparse.ArgumentParser()
    loader.define_flags(parser)
    with pytest.raises(base_plugin.FlagsError, match="not a folder"):
        loader.fix_flags(parser.parse_args(["--unfreeze_model_dirs", str(tmp_path / "missing")]))
    loader.fix_flags(parser.parse_args(["--unfreeze_model_dirs", str(tmp_path)]))


@pytest.mark.parametrize("logdir", ["", "gs://bucket/logs"])
def test_plugin_is_off_without_a_local_logdir(logdir):
    assert UnfreezePlugin.from_context(base_plugin.TBContext(logdir=logdir, flags=None)) is None


def _append_many(path: str, writer: int, count: int) -> None:
    for i in range(count):
        history.append(path, {"writer": writer, "i": i, "pad": "x" * 5000})  # larger than a pipe buffer


def test_history_from_several_processes_stays_one_record_per_line(tmp_path):
    path = str(tmp_path / "unfreeze" / "m.pb" / "history.jsonl")
    procs = [multiprocessing.get_context("spawn").Process(target=_append_many, args=(path, w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    records = history.read(path)
    assert len(records) == 240
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in range(4) for i in range(60)]
    with open(path, "rb") as f:
        assert f.read().count(b"\n") == 240


def test_history_of_all_models_comes_newest_first(tmp_path):
    h = history.History(str(tmp_path / "unfreeze"))
    h.append("a.pb", {"time": "2026-01-01T00:00:00.000Z", "ok": True})
    h.append("deep/b.pb", {"time": "2026-01-02T00:00:00.000Z", "ok": False})
    os.makedirs(tmp_path / "unfreeze" / "a.pb" / "model" / "saved_model")
    assert [(r["model"], r["ok"]) for r in h.all()] == [("deep/b.pb", False), ("a.pb", True)]
    assert h.latest("a.pb")["ok"] is True and h.latest("nope.pb") is None


def test_const_values_follow_tensorflows_encodings():
    """Values in typed fields (fewer than elements repeat the last one), bfloat16 bits, no TensorFlow needed."""
    import numpy as np
    from tensorboard.compat.proto import node_def_pb2

    from tb_unfreeze.plugin.graph_view import const_values, weight_stats

    node = node_def_pb2.NodeDef(name="c", op="Const")
    t = node.attr["value"].tensor
    t.dtype = 1
    t.tensor_shape.dim.add().size = 4
    t.float_val.extend([1.5, 2.0])
    assert const_values(node).tolist() == [1.5, 2.0, 2.0, 2.0]
    b = node_def_pb2.NodeDef(name="b", op="Const")
    tb = b.attr["value"].tensor
    tb.dtype = 14  # bfloat16
    tb.tensor_shape.dim.add().size = 2
    tb.tensor_content = (np.asarray([1.0, -2.0], dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    assert const_values(b).tolist() == [1.0, -2.0]
    from tensorboard.compat.proto import graph_pb2

    g = graph_pb2.GraphDef()
    g.node.add().CopyFrom(node)
    stats = weight_stats(g, "c")
    assert (
        stats["shape"] == [4] and stats["min"] == 1.5 and stats["max"] == 2.0 and sum(stats["histogram"]["counts"]) == 4
    )
    assert weight_stats(g, "missing") is None
