"""`inspect` on every real frozen graph in the shared models folder, checked against what each graph proves.

Parametrized over the directory listing, so a file added to `real/` later is covered without editing this file.
The oracle (tests/graph_oracle.py) reads the graph independently of tb_unfreeze's detector.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import installed_command, model_entries
from graph_oracle import FLOAT, NON_WEIGHT_DTYPES, Oracle

from tb_unfreeze import inspect_model

REAL = model_entries("real")
CANDIDATE_KEYS = {
    "name",
    "tensor",
    "role",
    "trainable",
    "recommended",
    "dtype",
    "shape",
    "size",
    "nbytes",
    "variable_name",
    "reason",
    "recommendation",
    "consumers",
    "evidence",
}
TOP_KEYS = {
    "schema",
    "model",
    "inputs",
    "outputs",
    "control_flow",
    "training_paths",
    "unregistered_ops",
    "op_counts",
    "candidates",
    "totals",
}
TRAINABLE_ROLES = {
    "kernel",
    "depthwise_kernel",
    "bias",
    "bn_gamma",
    "bn_beta",
    "embedding",
    "rnn_kernel",
    "rnn_bias",
    "weight",
}


@pytest.fixture(scope="module")
def inspected():
    cache = {}

    def get(path):
        if path not in cache:
            ins = inspect_model(path)
            cache[path] = (ins, Oracle(ins.graph.graph_def), ins.to_dict())
        return cache[path]

    return get


@pytest.mark.parametrize("path", REAL)
def test_every_proven_variable_is_a_recommended_candidate(path, inspected):
    ins, oracle, _ = inspected(path)
    proven = oracle.proven_variables()
    by_name = {c.name: c for c in ins.candidates}
    missing = sorted(set(proven) - set(by_name))
    assert not missing, f"{len(missing)} consts read through a freezer's read op are not candidates: {missing[:5]}"
    for name in proven:
        c = by_name[name]
        assert c.evidence == "read", (name, c.evidence)
        assert c.recommended, (name, c.recommendation)


@pytest.mark.parametrize("path", REAL)
def test_no_integer_string_or_bool_const_is_a_candidate(path, inspected):
    ins, oracle, _ = inspected(path)
    bad = {n.name for n in oracle.consts if oracle.dtype(n) in NON_WEIGHT_DTYPES}
    assert not bad & {c.name for c in ins.candidates}


@pytest.mark.parametrize("path", REAL)
def test_no_rank0_const_without_read_proof_is_a_candidate(path, inspected):
    ins, oracle, _ = inspected(path)
    scalars = {n.name for n in oracle.consts if not oracle.shape(n) and not oracle.read_proof(n)}
    assert not scalars & {c.name for c in ins.candidates}


@pytest.mark.parametrize("path", REAL)
def test_no_const_feeding_only_shape_axis_stride_or_padding_slots_is_a_candidate(path, inspected):
    ins, oracle, _ = inspected(path)
    shape_only = {n.name for n in oracle.consts if oracle.only_shape_slots(n)}
    assert not shape_only & {c.name for c in ins.candidates}


@pytest.mark.parametrize("path", REAL)
def test_batchnorm_moving_statistics_are_never_trainable(path, inspected):
    ins, oracle, _ = inspected(path)
    stats = oracle.bn_statistics()
    for c in ins.candidates:
        if c.name in stats:
            assert not c.trainable, f"{c.name} is a batch-norm moving {stats[c.name]} but trainable ({c.role})"
            assert c.role in ("bn_moving_mean", "bn_moving_variance", "quantized_weight"), (c.name, c.role)
        if c.role in ("bn_moving_mean", "bn_moving_variance"):
            assert not c.trainable


@pytest.mark.parametrize("path", REAL)
def test_candidates_have_documented_keys_and_consistent_values(path, inspected):
    ins, oracle, d = inspected(path)
    assert TOP_KEYS <= set(d)
    assert d["schema"] == "tb_unfreeze.inspect/2"
    names = [c["name"] for c in d["candidates"]]
    assert len(names) == len(set(names))
    variable_names = [c["variable_name"] for c in d["candidates"]]
    assert len(variable_names) == len(set(variable_names)), "variable names must be unique"
    for c in d["candidates"]:
        assert CANDIDATE_KEYS <= set(c), CANDIDATE_KEYS - set(c)
        node = oracle.nodes[c["name"]]
        assert node.op == "Const"
        assert c["shape"] == oracle.shape(node)
        size = 1
        for dim in c["shape"]:
            size *= dim
        assert c["size"] == size
        assert c["evidence"] in ("read", "structure", "none")
        assert isinstance(c["reason"], str) and c["reason"]
        assert c["recommendation"].startswith("converted by default" if c["recommended"] else "not converted")
        assert isinstance(c["consumers"], list)
        if c["role"] == "quantized_weight":
            assert c["recommended"] or "same value" in c["recommendation"], c["recommendation"]
        else:
            assert oracle.dtype(node) in FLOAT
            assert c["nbytes"] == size * {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}[c["dtype"]]
            assert c["tensor"] == c["name"] + ":0"
        if c["role"] in ("bn_moving_mean", "bn_moving_variance", "other"):
            assert not c["trainable"] or c["evidence"] == "read"
        elif c["role"] == "quantized_weight":
            assert c["trainable"] == ("moving" not in c["reason"]), (c["name"], c["reason"])
        else:
            assert c["trainable"], (c["name"], c["role"])
    totals = d["totals"]
    assert totals["candidates"] == len(d["candidates"])
    assert totals["recommended"] == sum(c["recommended"] for c in d["candidates"])
    assert {"name", "dtype", "shape", "kind", "unused"} <= set(d["inputs"][0]) if d["inputs"] else True
    assert d["outputs"], "every real graph has at least one detected output"


@pytest.mark.parametrize("path", REAL)
def test_variable_names_are_readable(path, inspected):
    ins, oracle, _ = inspected(path)
    for c in ins.candidates:
        assert "ReadVariableOp" not in c.variable_name, c.variable_name
        assert not c.variable_name.endswith("/resource"), c.variable_name
        assert ":" not in c.variable_name
        if oracle.read_proof(oracle.nodes[c.name]).endswith("/read"):
            assert c.variable_name.startswith(c.name), "a TF1 freezer's const keeps the variable's own name"


@pytest.mark.parametrize("path", REAL)
def test_lowered_loops_train_their_own_weights_and_outputs_say_what_trains(path, inspected):
    """Loops no longer block training: the loop's own weights (rnn_*) and everything upstream are trainable, every
    loop is listed, and an output computed through a loop whose gradient cannot be rebuilt says so, with the
    tensors entering that loop offered as the outputs to train on."""
    ins, oracle, d = inspected(path)
    assert d["training_paths"]["tf2_eager"] is True and d["training_paths"]["tf1_session"] is True
    if ins.control_flow != "lowered_v1":
        assert d["loops"] == []
        return
    frames = {n.attr["frame_name"].s.decode() for n in oracle.nodes.values() if n.op == "Enter"}
    assert {lp["frame"] for lp in d["loops"]} == frames
    loop_fed = [c for c in ins.candidates if c.role.startswith("rnn_")]
    assert all(c.trainable for c in loop_fed)  # (the Object Detection API's loops hold no weights)
    assert "trains" in d["training_paths"]["note"]
    for out in d["outputs"]:
        if not out["trains"]:
            assert "while loop" in out["note"] or "no gradient flows through" in out["note"]
    if any(not o["trains"] for o in d["outputs"]):
        assert any(o["trains"] and o["kind"] == "differentiable" for o in d["outputs"])


def test_object_detection_api_graph_trains_on_the_tensors_entering_non_max_suppression(real_model):
    ins = inspect_model(real_model("od_api_ssd_mobilenet_visionkit.pb"))
    by_name = {o.name: o for o in ins.outputs}
    for sink in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
        assert not by_name[sink].trains and "tf.cond" in by_name[sink].note
    trained = [o for o in ins.outputs if o.trains]
    assert trained and all(o.name.startswith("Postprocessor/") and o.kind == "differentiable" for o in trained)
    anchors = [c for c in ins.candidates if c.name.startswith("MultipleGridAnchorGenerator/")]
    assert anchors and not any(c.recommended for c in anchors)
    assert not any(c.role == "bn_gamma" for c in anchors), "an anchor multiplier is not a batch-norm scale"
    weights = [c for c in ins.candidates if c.recommended and c.role in ("kernel", "depthwise_kernel")]
    assert len(weights) > 20 and all(c.trainable for c in weights)


def test_ctc_decoder_output_trains_on_its_logits(real_model):
    ins = inspect_model(real_model("captcha_cnn5_lstm_ctc.pb"))
    by_name = {o.name: o for o in ins.outputs}
    assert by_name["dense_decoded"].kind == "sink" and not by_name["dense_decoded"].trains
    assert by_name["output/transpose"].kind == "differentiable" and by_name["output/transpose"].trains


def test_iterator_fed_graph_gets_placeholders_for_the_iterator_components(real_model):
    ins = inspect_model(real_model("cnn_tfrecord_iterator_mouth.pb"))
    fed = [i for i in ins.inputs if i.kind == "data"]
    assert [i.name for i in fed] == ["IteratorGetNext/component_0", "IteratorGetNext/component_1"]
    assert fed[1].shape == [-1, 32, 32, 1] and fed[1].dtype == "float32"
    assert ins.notes and "IteratorGetNext" in ins.notes[0]
    assert not any(n.op.startswith("Iterator") or "Dataset" in n.op for n in ins.graph.graph_def.node)
    assert [o.name for o in ins.outputs] == ["softmax_tensor"]


@pytest.mark.parametrize("path", REAL)
def test_cli_inspect_json_equals_library(path, inspected):
    _, _, d = inspected(path)
    proc = subprocess.run(
        [sys.executable, "-m", "tb_unfreeze", "inspect", path, "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    assert cli.pop("unregistered_ops") is None, "the CLI's inspect never imports TensorFlow"
    # in this process TensorFlow may already be imported (other test modules), which fills unregistered_ops
    lib = {k: v for k, v in json.loads(json.dumps(d)).items() if k != "unregistered_ops"}
    assert cli == lib


def test_cli_console_script_inspect_json(real_model):
    path = real_model("tf2onnx_regression.pb")
    proc = subprocess.run(
        [installed_command("tb-unfreeze"), "inspect", path, "--json"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert {c["name"] for c in d["candidates"]} == {"W", "b"}
    assert all(c["trainable"] and c["evidence"] == "read" for c in d["candidates"])


def test_regression_scalar_weights_are_found(real_model):
    """A rank-0 const *with* /read proof (TF1 linear regression) is a trainable candidate."""
    ins = inspect_model(real_model("tf2onnx_regression.pb"))
    assert {(c.name, tuple(c.shape), c.trainable) for c in ins.candidates} == {("W", (), True), ("b", (), True)}


def test_tf2_frozen_names_rebuilt_from_scope(real_model):
    ins = inspect_model(real_model("cms_track_classifier_ckf_run3.pb"))
    names = {c.variable_name for c in ins.candidates}
    assert {"model/dense/kernel", "model/dense/bias"} <= names
    assert all(c.name.endswith("/resource") for c in ins.candidates)


def test_quantized_weights_are_converted_into_float_variables_by_default(real_model):
    ins = inspect_model(real_model("opencv_face_detector_uint8.pb"))
    assert ins.candidates and all(c.role == "quantized_weight" for c in ins.candidates)
    assert all(c.recommended or "same value" in c.recommendation for c in ins.candidates)
    assert sum(c.recommended for c in ins.candidates) == 90  # 12 gamma/beta vectors hold one value: never trained
    assert all(c.dtype == "float32" for c in ins.candidates)
    stats = [
        c
        for c in ins.candidates
        if "batch norm" in c.reason and ("moving mean" in c.reason or "moving variance" in c.reason)
    ]
    assert all(not c.trainable for c in stats)
    assert sum(c.trainable for c in ins.candidates) > 20
    assert all(c.tensor != c.name + ":0" for c in ins.candidates), "the variable replaces the Dequantize output"


def test_unregistered_ops_reported_when_tensorflow_is_loaded(real_model):
    """With TensorFlow already imported (by the caller, never by inspection) the ops it lacks are listed; without
    it the field is None (asserted in the no-TensorFlow subprocess below)."""
    pytest.importorskip("tensorflow")
    d = inspect_model(real_model("deepmd_deeppot.pbtxt")).to_dict()
    assert {"ProdEnvMatA", "ProdForceSeA", "ProdVirialSeA"} <= set(d["unregistered_ops"])
    assert inspect_model(real_model("tf2onnx_regression.pb")).to_dict()["unregistered_ops"] == []


NO_TF_LIB = """
import sys
from tb_unfreeze import inspect_model
for p in sys.argv[1:]:
    assert inspect_model(p).to_dict()["unregistered_ops"] is None
assert "tensorflow" not in sys.modules, sorted(m for m in sys.modules if m.startswith("tensorflow"))[:5]
print("ok")
"""

NO_TF_CLI = """
import sys, io, contextlib
from tb_unfreeze.cli import main
for p in sys.argv[1:]:
    for extra in (["--json"], []):
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["inspect", p, *extra]) == 0
assert "tensorflow" not in sys.modules, sorted(m for m in sys.modules if m.startswith("tensorflow"))[:5]
print("ok")
"""


def _real_paths():
    return [p.values[0] for p in REAL if p.values[0] is not None]


def test_inspect_does_not_import_tensorflow(real_models_dir):
    proc = subprocess.run(
        [sys.executable, "-c", NO_TF_LIB, *_real_paths()], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_cli_inspect_does_not_import_tensorflow(real_models_dir):
    proc = subprocess.run(
        [sys.executable, "-c", NO_TF_CLI, *_real_paths()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
