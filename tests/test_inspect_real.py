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
    "name", "tensor", "role", "trainable", "recommended", "dtype", "shape", "size", "nbytes", "variable_name",
    "reason", "recommendation", "consumers", "evidence",
}
TOP_KEYS = {"schema", "model", "inputs", "outputs", "control_flow", "training_paths", "unregistered_ops",
            "op_counts", "candidates", "totals"}
TRAINABLE_ROLES = {"kernel", "depthwise_kernel", "bias", "bn_gamma", "bn_beta", "embedding", "rnn_kernel", "rnn_bias",
                   "weight"}


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
    for name, read_op in proven.items():
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
    assert d["schema"] == "tb_unfreeze.inspect/1"
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
            assert not c["recommended"]
        else:
            assert oracle.dtype(node) in FLOAT
            assert c["nbytes"] == size * {"float": 4, "double": 8, "half": 2, "bfloat16": 2}[c["dtype"]]
            assert c["tensor"] == c["name"] + ":0"
        if c["role"] in ("bn_moving_mean", "bn_moving_variance", "other", "quantized_weight"):
            assert not c["trainable"] or c["evidence"] == "read"
        elif ins.control_flow != "lowered_v1":
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
def test_lowered_loops_keep_upstream_weights_non_trainable_and_say_why(path, inspected):
    ins, _, d = inspected(path)
    if ins.control_flow != "lowered_v1":
        assert d["training_paths"]["tf2_eager"] is True
        return
    assert d["training_paths"] == {**d["training_paths"], "tf2_eager": False, "tf1_session": True}
    assert "lower_control_flow=False" in d["training_paths"]["note"]
    loop_fed = [c for c in ins.candidates if c.role.startswith("rnn_")]
    assert loop_fed and not any(c.trainable for c in loop_fed)
    assert all("lower_control_flow=False" in c.recommendation for c in loop_fed if c.role in TRAINABLE_ROLES)


@pytest.mark.parametrize("path", REAL)
def test_cli_inspect_json_equals_library(path, inspected):
    _, _, d = inspected(path)
    proc = subprocess.run([sys.executable, "-m", "tb_unfreeze", "inspect", path, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)
    assert cli.pop("unregistered_ops") is None, "the CLI's inspect never imports TensorFlow"
    # in this process TensorFlow may already be imported (other test modules), which fills unregistered_ops
    lib = {k: v for k, v in json.loads(json.dumps(d)).items() if k != "unregistered_ops"}
    assert cli == lib


def test_cli_console_script_inspect_json(real_model):
    path = real_model("tf2onnx_regression.pb")
    proc = subprocess.run([installed_command("tb-unfreeze"), "inspect", path, "--json"], capture_output=True, text=True, timeout=120)
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


def test_quantized_weights_found_but_not_recommended(real_model):
    ins = inspect_model(real_model("opencv_face_detector_uint8.pb"))
    assert ins.candidates and all(c.role == "quantized_weight" and not c.recommended for c in ins.candidates)
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
    proc = subprocess.run([sys.executable, "-c", NO_TF_LIB, *_real_paths()], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_cli_inspect_does_not_import_tensorflow(real_models_dir):
    proc = subprocess.run([sys.executable, "-c", NO_TF_CLI, *_real_paths()], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
