"""Convert every convertible real frozen graph and check the result from both TensorFlow faces.

Each file is converted once (module-scoped cache, library call) into a tmp folder; the checks then load the
SavedModel with `tf.saved_model.load` (TF2) and `tf.compat.v1.saved_model.load` in a Session (TF1) independently
of the manifest's own verification, and compare with the frozen graph run by TensorFlow on the same probe.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import MODELS_DIR, model_entries

tf = pytest.importorskip("tensorflow")

from tb_unfreeze import Selection, convert, errors, inspect_model  # noqa: E402
from tb_unfreeze.cli import main as cli_main  # noqa: E402

REAL = model_entries("real")
# Not convertible here, each for a reason the user is told (tested below): custom ops, all-quantized weights.
NOT_CONVERTIBLE = {
    "deepmd_deeppot.pbtxt",
    "tf_android_stylize_quantized.pb",
    # converts by default, but its gradients are not finite on the probes (tested below): not verified
    "opencv_face_detector_uint8.pb",
}
CONVERTIBLE = [p for p in REAL if p.values[0] is None or os.path.basename(p.values[0]) not in NOT_CONVERTIBLE]
STATE_ROLES = {"bn_moving_mean", "bn_moving_variance"}
# Files whose gradient values cannot be checked by finite differences, and why (reported as warnings, exit 0):
# FakeQuant's straight-through gradient is by design not the forward pass's derivative; the other two saturate on
# the probe inputs (a softmax at exactly 0/1, a sigmoid at 1 - 1e-6), so the loss does not move in float32.
# The two ReLU6 MobileNets are curved along the gradient: the estimates approach it as the step shrinks but reach
# float32 round-off first ("inconclusive", not a failure: a wrong gradient gives a plateau away from it).
EXPECTED_WARNINGS = {
    "qat_fakequant_mlp_edgetpu.pb": "straight-through",
    "cnn_tfrecord_iterator_mouth.pb": "vacuous",
    "hollance_voice_logreg.pb": "vacuous",
    "mobilenet_v1_025_128_slim_frozen.pb": "inconclusive",
    "rranddom_doc_localisation_mnv2.pb": "inconclusive",
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each real file converted once with the defaults (no --probe: probes are found from the graph)."""
    cache: dict[str, tuple[str, dict, dict]] = {}

    def get(path: str):
        if path not in cache:
            name = os.path.basename(path)
            out = tmp_path_factory.mktemp(name.replace(".", "_")) / "out"
            manifest = convert(path, out).to_json()
            with open(out / "unfreeze.json") as f:
                on_disk = json.load(f)
            cache[path] = (str(out), manifest, on_disk)
        return cache[path]

    return get


def _tolerance_ok(ref: np.ndarray, got: np.ndarray) -> bool:
    """|got - ref| <= 1e-5 * max(1, |ref|) everywhere (fixed here, not the tool's own); NaN only where the
    frozen graph gives NaN too; non-numeric outputs equal."""
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape:
        return False
    if not np.issubdtype(ref.dtype, np.number) and ref.dtype != bool:
        return bool(np.all(ref == got))
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    if not np.array_equal(np.isnan(ref), np.isnan(got)):
        return False
    ok = ~np.isnan(ref)
    return float(np.max(np.abs(ref[ok] - got[ok]), initial=0.0)) <= 1e-5 * max(
        1.0, float(np.max(np.abs(ref[ok]), initial=0.0))
    )


@pytest.mark.parametrize("path", CONVERTIBLE)
def test_defaults_give_a_verified_model_with_every_weight_trainable(path, converted):
    """The promise, per real file: `convert` with defaults is verified (outputs equal, gradients present, finite
    and equal to a finite difference) and every recommended variable trains unless it is batch-norm state."""
    out, manifest, on_disk = converted(path)
    assert on_disk["schema"] == "tb_unfreeze.manifest/2"
    assert on_disk["variables"] == json.loads(json.dumps(manifest["variables"]))
    import hashlib

    with open(path, "rb") as f:
        assert on_disk["source"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    ver = on_disk["verification"]
    warning = EXPECTED_WARNINGS.get(os.path.basename(path))
    expected = "verified_with_warnings" if warning else "verified"
    assert ver["status"] == expected, (ver["status"], ver.get("problems"), ver.get("note"))
    assert ver["performed"] and ver["passed"] is True
    for output, cmp in ver["outputs"].items():
        assert cmp["passed"] and cmp["max_abs_diff"] <= cmp["tolerance"], (output, cmp)
    assert ver["tf1_session"]["outputs_match"] and ver["tf2"]["outputs_match"]
    grads = ver["gradients"]
    assert grads["checked"] == on_disk["totals"]["trainable_variables"] > 0
    assert grads["missing"] == [] and grads["finite"] is True and grads["errors"] == []
    fd = grads["finite_difference"]
    if warning:
        assert fd["passed"] is None and warning in fd["note"], fd
        assert ver["problems"] and all("finite-difference" in p for p in ver["problems"]), ver["problems"]
    else:
        assert fd["passed"] is True and fd["relative_error"] <= 2e-2 and fd["variables"] == grads["checked"]
    assert on_disk["training_paths"]["tf2_eager"] and on_disk["training_paths"]["keras"]
    ins = inspect_model(path)
    recommended = {c.name: c for c in ins.candidates if c.recommended}
    assert {v["source"] for v in on_disk["variables"]} == set(recommended)
    for v in on_disk["variables"]:
        c = recommended[v["source"]]
        assert (v["role"], v["shape"]) == (c.role, c.shape)
        assert v["trainable"] == (c.role not in STATE_ROLES), (v["variable_name"], v["role"], v["trainable"])
    expected_dirs = {"saved_model", "unfrozen_graph.pb", "unfreeze.json"}
    if on_disk["loops"]:
        expected_dirs.add("saved_model_tf1")
    assert set(os.listdir(out)) == expected_dirs


def _frozen_outputs(path: str, feeds: dict, fetches: list[str], defaults: dict) -> list[np.ndarray]:
    from tb_unfreeze.analysis import prepare_graph
    from tb_unfreeze.loading import load_graph

    graph_def = load_graph(path, tf.compat.v1.GraphDef).graph_def
    prepare_graph(graph_def)
    graph = tf.Graph()
    with graph.as_default():
        names = [f"{n}:0" for n in feeds] + [f"{n}:0" for n in defaults] + fetches
        tensors = tf.import_graph_def(graph_def, return_elements=names, name="frozen_for_test")
    with tf.compat.v1.Session(graph=graph) as sess:
        feed = dict(zip(tensors, [*feeds.values(), *defaults.values()]))
        return sess.run(tensors[len(feed) :], feed)


def _probes_used(path: str, manifest: dict) -> dict:
    """The same probe inputs the conversion found (deterministic), made again here."""
    from tb_unfreeze import probes
    from tb_unfreeze.analysis import GraphInput, prepare_graph
    from tb_unfreeze.loading import load_graph

    graph_def = load_graph(path, tf.compat.v1.GraphDef).graph_def
    prepare_graph(graph_def)
    inputs = [
        GraphInput(**{k: i[k] for k in ("name", "dtype", "shape", "kind", "default")}) for i in manifest["inputs"]
    ]
    made = probes.make_probes(inputs, None, graph_def, manifest["outputs"])
    assert {k: list(np.shape(v)) for k, v in made.items()} == manifest["verification"]["probe_shapes"]
    return made


def _loss(outputs: dict, keys: list[str]):
    """A loss of this test's own: sum of squares of the trainable float outputs."""
    terms = [tf.reduce_sum(tf.square(tf.cast(outputs[k], tf.float64))) for k in keys if outputs[k].dtype.is_floating]
    return tf.add_n(terms)


@pytest.mark.parametrize("path", CONVERTIBLE)
def test_tf2_gradient_tape_trains_every_trainable_variable_and_matches_frozen(path, converted):
    out, manifest, _ = converted(path)
    loaded = tf.saved_model.load(os.path.join(out, "saved_model"))
    flags = {v.name.rsplit(":", 1)[0]: v.trainable for v in loaded.variables}
    assert flags == {v["variable_name"]: v["trainable"] for v in manifest["variables"]}
    fn = loaded.signatures["serving_default"]
    sig = manifest["signature"]
    assert set(fn.structured_input_signature[1]) == set(sig["inputs"].values())
    assert set(fn.structured_outputs) == set(sig["outputs"].values())
    feeds = _probes_used(path, manifest)
    trainable = [v for v in loaded.variables if v.trainable]
    keys = [sig["outputs"][t] for t in manifest["trainable_outputs"]]
    with tf.GradientTape() as tape:
        result = fn(**{sig["inputs"][n]: tf.constant(v) for n, v in feeds.items()})
        loss = _loss(result, keys)
    grads = tape.gradient(loss, trainable)
    assert [v.name for v, g in zip(trainable, grads) if g is None] == []
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)
    frozen = _frozen_outputs(path, feeds, list(sig["outputs"]), manifest["input_defaults"])
    for (tensor, key), ref in zip(sig["outputs"].items(), frozen):
        assert _tolerance_ok(ref, result[key].numpy()), tensor


@pytest.mark.parametrize("path", CONVERTIBLE)
def test_tf1_session_trains_every_trainable_variable_and_matches_frozen(path, converted):
    out, manifest, _ = converted(path)
    from tb_unfreeze.loop_gradients import v1_control_flow

    sig = manifest["signature"]
    feeds = _probes_used(path, manifest)
    tf1_dir = os.path.join(out, os.path.basename(manifest["saved_model_tf1"]))
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], tf1_dir)
        sd = meta.signature_def["serving_default"]
        assert set(sd.inputs) == set(sig["inputs"].values())
        trainable = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
        assert {v.op.name for v in trainable} == {v["variable_name"] for v in manifest["variables"] if v["trainable"]}
        fetch_keys = list(sig["outputs"].items())
        fetches = [graph.get_tensor_by_name(sd.outputs[k].name) for _, k in fetch_keys]
        feed = {graph.get_tensor_by_name(sd.inputs[sig["inputs"][n]].name): v for n, v in feeds.items()}
        with v1_control_flow():
            loss = _loss(
                dict(zip([k for _, k in fetch_keys], fetches)),
                [sig["outputs"][t] for t in manifest["trainable_outputs"]],
            )
            grads = tf.compat.v1.gradients(loss, trainable)
        assert [v.op.name for v, g in zip(trainable, grads) if g is None] == []
        values = sess.run(fetches, feed)
        assert all(np.all(np.isfinite(g)) for g in sess.run(grads, feed))
    frozen = _frozen_outputs(path, feeds, [t for t, _ in fetch_keys], manifest["input_defaults"])
    for (tensor, _), ref, got in zip(fetch_keys, frozen, values):
        assert _tolerance_ok(ref, got), tensor


def test_unregistered_ops_fail_conversion_naming_them(real_model, tmp_path, capsys):
    path = real_model("deepmd_deeppot.pbtxt")
    out = tmp_path / "out"
    with pytest.raises(errors.UnsupportedOpsError) as e:
        convert(path, out)
    for op in ("ProdEnvMatA", "ProdForceSeA", "ProdVirialSeA"):
        assert op in str(e.value)
    assert cli_main(["convert", path, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ProdEnvMatA" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_quantized_weights_become_float_variables_by_default_named_after_their_dequantize(converted, real_model):
    path = real_model("opencv_face_detector_uint8.pb")
    out, manifest, _ = converted(path)
    ins = inspect_model(path)
    assert len(manifest["variables"]) == sum(c.recommended for c in ins.candidates) == 90
    assert all(v["dtype"] == "float32" and v["role"] == "quantized_weight" for v in manifest["variables"])
    graph_def = tf.compat.v1.GraphDef()
    with open(os.path.join(out, "unfrozen_graph.pb"), "rb") as f:
        graph_def.ParseFromString(f.read())
    ops = {n.name: n.op for n in graph_def.node}
    for c in (c for c in ins.candidates if c.recommended):
        assert c.variable_name == c.tensor.split(":")[0], "named after its Dequantize, like the original variable"
        assert ops.get(c.name) is None and ops[c.variable_name] == "VarHandleOp"
    # Outputs are exact, but on the probe inputs some gradients are NaN (a normalisation of all-zero features):
    # the conversion says so and is not reported as verified (the CLI exits 3).
    ver = manifest["verification"]
    assert ver["tf1_session"]["outputs_match"] and ver["tf2"]["outputs_match"]
    assert ver["status"] == "failed" and not ver["passed"]
    assert "some gradients are not finite (NaN or Inf)" in ver["problems"]


def test_fully_quantized_graph_refused_in_one_line_then_dequantized_and_verified(real_model, tmp_path, capsys):
    path = real_model("tf_android_stylize_quantized.pb")
    out = tmp_path / "out"
    assert cli_main(["convert", path, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fully quantized" in err and "QuantizedConv2D" in err and "--dequantize" in err
    assert "Traceback" not in err and not out.exists()
    manifest = convert(path, out, dequantize=True).to_json()
    ver = manifest["verification"]
    assert ver["status"] == "verified" and ver["passed"], ver.get("problems")
    assert ver["quantized_reference"]["passed"]
    for cmp in ver["quantized_reference"]["outputs"].values():
        assert cmp["correlation"] >= 0.99 and cmp["mean_abs_diff"] <= 0.03 * cmp["range"]
    assert len(manifest["variables"]) == 18
    assert all(v["dtype"] == "float32" and v["trainable"] and v["role"] == "kernel" for v in manifest["variables"])
    graph_def = tf.compat.v1.GraphDef()
    with open(out / "unfrozen_graph.pb", "rb") as f:
        graph_def.ParseFromString(f.read())
    ops = {n.op for n in graph_def.node}
    assert "QuantizedConv2D" not in ops and "Conv2D" in ops


# --- output directory rules and atomicity (small graph, tmp copy as the source) ---


@pytest.fixture
def small_source(real_model, tmp_path):
    src_dir = tmp_path / "models"
    src_dir.mkdir()
    src = src_dir / "regression.pb"
    shutil.copy(real_model("tf2onnx_regression.pb"), src)
    return src


def _snapshot(folder) -> dict:
    return {
        os.path.relpath(os.path.join(d, f), folder): os.path.getsize(os.path.join(d, f))
        for d, _, fs in os.walk(folder)
        for f in fs
    }


@pytest.mark.parametrize("where", ["source_itself", "folder_containing_source", "inside_source"])
def test_output_dir_never_the_source_or_its_folder(where, small_source, tmp_path, capsys):
    out = {
        "source_itself": small_source,
        "folder_containing_source": small_source.parent,
        "inside_source": small_source / "out",
    }[where]
    before = _snapshot(tmp_path)
    for replace in ([], ["--replace"]):
        assert cli_main(["convert", str(small_source), "-o", str(out), *replace]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "output" in err
    assert _snapshot(tmp_path) == before


def test_non_empty_output_refused_then_replaced(small_source, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = _snapshot(tmp_path)
    assert cli_main(["convert", str(small_source), "-o", str(out)]) == 2
    assert "--replace" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before
    manifest = convert(small_source, out, replace=True).to_json()
    assert set(os.listdir(out)) == {"saved_model", "unfrozen_graph.pb", "unfreeze.json"}
    assert manifest["verification"]["passed"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tb_unfreeze-tmp-")]


def test_empty_existing_output_dir_is_used(small_source, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    convert(small_source, out, verify=False)
    assert (out / "unfreeze.json").is_file()


def test_failure_during_build_leaves_nothing(small_source, tmp_path, capsys):
    out = tmp_path / "nested" / "out"
    # 'pred' exists but has no output 7: TensorFlow refuses the import after the staging folder was made
    assert cli_main(["convert", str(small_source), "-o", str(out), "--outputs", "pred:7"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
    assert not out.exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".tb_unfreeze-tmp-")]
    assert not leftovers


def test_stale_temporary_folder_of_a_killed_run_is_cleaned(small_source, tmp_path):
    stale = tmp_path / ".tb_unfreeze-tmp-killed"
    stale.mkdir()
    (stale / ".owner-pid").write_text("999999999")  # no such process
    (stale / "half.pb").write_bytes(b"x" * 10)
    convert(small_source, tmp_path / "out", verify=False)
    assert not stale.exists()
    assert (tmp_path / "out" / "saved_model").is_dir()


def test_source_file_unchanged_by_conversion(small_source, tmp_path):
    import hashlib

    digest = hashlib.sha256(small_source.read_bytes()).hexdigest()
    manifest = convert(small_source, tmp_path / "out", verify=False).to_json()
    assert hashlib.sha256(small_source.read_bytes()).hexdigest() == digest == manifest["source"]["sha256"]


@pytest.mark.skipif(not os.path.isdir(MODELS_DIR), reason="shared models folder absent")
def test_selection_overrides_trainable_and_exclude(small_source, tmp_path):
    manifest = convert(
        small_source, tmp_path / "out", verify=True, selection=Selection(exclude=["b"], trainable={"W": False})
    ).to_json()
    assert [(v["source"], v["trainable"]) for v in manifest["variables"]] == [("W", False)]
    with pytest.raises(errors.SelectionError):
        convert(small_source, tmp_path / "out2", selection=Selection(only=["no_such_const"]))
    assert not (tmp_path / "out2").exists()
