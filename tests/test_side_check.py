"""The TF1 Session check in a second process, beside the TF2 check (issue 12): it runs there for a model big enough,
its outputs and gradients are the ones judged, its errors read as they would in one process, and a second process
that dies or is not ready yet leaves the check to this one, which the record says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from test_verify_cost import _frozen_mlp  # noqa: E402

from tb_unfreeze import convert  # noqa: E402
from tb_unfreeze import side_check as SC  # noqa: E402
from tb_unfreeze import verify as V  # noqa: E402
from tb_unfreeze.contract import Layout  # noqa: E402
from tb_unfreeze.errors import ConversionError  # noqa: E402

BIG = 1100  # an 1100 x 1100 float32 weight: 4.8 MB, above SIDE_MIN_BYTES: checked with a second process by default


def _not_here(*a, **k):
    raise AssertionError("the TF1 Session check ran in the test's process")


@pytest.fixture(scope="module")
def big_mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("side")
    path = str(d / "mlp.pb")
    _frozen_mlp(path, big=BIG)
    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    probes = {"x": np.random.default_rng(3).standard_normal((2, 8)).astype(np.float32)}
    return {
        "path": path,
        "graph_def": graph_def,
        "probes": probes,
        "frozen_out": V.run_frozen(graph_def, probes, ["y:0"], {}),
    }


@pytest.fixture(scope="module")
def converted(big_mlp, tmp_path_factory):
    out = tmp_path_factory.mktemp("side_out") / "out"
    convert(big_mlp["path"], out)
    with open(out / "unfreeze.json") as f:
        return {"layout": Layout(str(out)), "manifest": json.load(f)}


def _ready_side() -> SC.SideCheck:
    side = SC.SideCheck()
    assert side.wait_ready(120), "TensorFlow imported in the second process"
    return side


def test_a_big_enough_model_is_checked_in_a_second_process_and_passes(big_mlp, tmp_path, monkeypatch):
    """This model's own checks take less than a second here, less than importing TensorFlow in the second
    process: its start is made to wait for the import (a bigger model's conversion overlaps it)."""
    start = SC.start

    def start_when_ready(*a):
        side = start(*a)
        assert side is not None, "the policy chose a second process for this model"
        assert side.wait_ready(120)
        return side

    monkeypatch.setattr(SC, "start", start_when_ready)
    monkeypatch.setattr(V, "run_saved_model_tf1", _not_here)
    ver = convert(big_mlp["path"], tmp_path / "out").verification.details
    assert ver["status"] == "verified", ver["problems"]
    tf1 = ver["tf1_session"]
    assert tf1["process"] == "second process" and "process_note" not in tf1
    assert tf1["outputs_match"] and tf1["gradients_finite"] and tf1["missing_gradients"] == []
    assert tf1["process_peak_mb"] > 100, "the second process imported TensorFlow and loaded the model"
    assert ver["outputs"]["y:0"]["max_abs_diff"] <= ver["outputs"]["y:0"]["tolerance"]


def test_the_second_processs_outputs_are_the_ones_judged(big_mlp, converted):
    """Reference outputs off by 0.5: the TF1 outputs computed in the second process are compared with them."""
    wrong = {k: v + 0.5 for k, v in big_mlp["frozen_out"].items()}
    sig = converted["manifest"]["signature"]
    ver = V.verify_conversion(converted["layout"], sig, big_mlp["probes"], wrong, side=_ready_side())
    assert ver["tf1_session"]["process"] == "second process"
    assert ver["tf1_session"]["outputs_match"] is False and ver["status"] == "failed"
    assert ver["outputs"]["y:0"]["max_abs_diff"] == pytest.approx(0.5, abs=1e-3)
    assert "the TF1 SavedModel's outputs differ from the frozen graph's" in ver["problems"]


def test_a_second_process_that_dies_leaves_the_check_to_this_one(big_mlp, converted):
    side = SC.SideCheck()
    submit = side.submit

    def submit_then_die(args):
        sent = submit(args)
        side.proc.kill()
        side.proc.wait()
        return sent

    side.submit = submit_then_die
    sig = converted["manifest"]["signature"]
    ver = V.verify_conversion(converted["layout"], sig, big_mlp["probes"], big_mlp["frozen_out"], side=side)
    assert ver["status"] == "verified", ver["problems"]
    assert ver["tf1_session"]["process"] == "this process"
    assert "ended" in ver["tf1_session"]["process_note"] and "signal 9" in ver["tf1_session"]["process_note"]


def test_a_second_process_not_ready_in_time_is_not_waited_for(big_mlp, converted):
    side = SC.SideCheck()
    sig = converted["manifest"]["signature"]
    assert side.submit(
        (converted["layout"].saved_model_tf1, sig, big_mlp["probes"], big_mlp["frozen_out"], None, False)
    )
    reply = side.result()  # at once: TensorFlow takes seconds to import there
    assert "still starting TensorFlow" in reply["unavailable"]
    assert side.proc.poll() is not None, "the process is stopped, not left running"


def test_an_error_in_the_second_process_reads_as_it_would_here(big_mlp, converted, monkeypatch):
    sig = dict(converted["manifest"]["signature"], inputs={"x": "no_such_key"})
    args = (converted["layout"], sig, big_mlp["probes"], big_mlp["frozen_out"])
    with pytest.raises(ConversionError) as here:
        V.verify_conversion(*args)
    monkeypatch.setattr(V, "run_saved_model_tf1", _not_here)
    with pytest.raises(ConversionError) as there:
        V.verify_conversion(*args, side=_ready_side())
    assert str(here.value).startswith("the converted model does not run in a TF1 Session")
    assert str(there.value) == str(here.value)


def test_which_models_get_a_second_process(monkeypatch):
    monkeypatch.delenv("TB_UNFREEZE_SIDE_CHECK", raising=False)
    monkeypatch.setattr(SC.os, "cpu_count", lambda: 2)
    assert SC.wanted(14 << 20, 300), "MobileNetV2-sized: yes"
    assert SC.wanted(100 << 20, 4000), "ResNet50-sized: yes"
    assert not SC.wanted(528 << 20, 100), "VGG16-sized: no, two loads at once would double its peak memory"
    assert not SC.wanted(1 << 20, 200), "small: no, the check is quicker than starting a process"
    assert SC.wanted(1 << 20, 2000), "small weights but a big graph: yes"
    monkeypatch.setenv("TB_UNFREEZE_SIDE_CHECK", "0")
    assert not SC.wanted(100 << 20, 4000), "turned off"
    monkeypatch.delenv("TB_UNFREEZE_SIDE_CHECK")
    monkeypatch.setattr(SC.os, "cpu_count", lambda: 1)
    assert not SC.wanted(100 << 20, 4000), "one core: nothing to gain"


def test_tensorflow_without_its_eager_keras_import_still_has_keras_on_first_use():
    """The processes that only convert import TensorFlow without Keras (~1.6 s less); Keras is not blocked after."""
    code = (
        "import sys\n"
        "from tb_unfreeze.tensorflow_env import import_tensorflow\n"
        "tf = import_tensorflow(keras=False)\n"
        "print('keras' in sys.modules, 'sklearn' in sys.modules)\n"
        "print(tf.keras.layers.Dense(3)(tf.ones([2, 4])).shape)\n"
        "print('keras' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    lines = out.stdout.split("\n")
    assert lines[0] == "False False", "not imported with TensorFlow"
    assert lines[1] == "(2, 3)" and lines[2] == "True", "imported on first use of tf.keras"


def test_the_clis_convert_imports_no_keras(big_mlp, tmp_path):
    code = (
        "import sys\n"
        "from tb_unfreeze.cli import main\n"
        f"code = main(['convert', {big_mlp['path']!r}, '-o', {str(tmp_path / 'out')!r}, '--json'])\n"
        "print('KERAS', 'keras' in sys.modules, code)\n"
    )
    env = {**os.environ, "TB_UNFREEZE_SIDE_CHECK": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert "KERAS False 0" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
