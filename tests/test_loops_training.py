"""Lowered while loops train after conversion (issue 9, item 1) and a wrong loop gradient fails verification
(item 2).

- A TF1 `dynamic_rnn` LSTM (TensorArrayV3, lowered loop) frozen with TensorFlow's TF1 freezer: verified, its
  kernel trainable, trains in TF2 (GradientTape) and TF1 (Session), and its TF2 gradient equals the gradient of
  the original, unfrozen model (computed in the same graph before freezing).
- The real Keras LSTM frozen with `convert_variables_to_constants_v2` (lowered, TensorList): `UnfrozenLayer` in a
  Keras `fit` lowers the loss and changes the loop's kernel.
- The Object Detection API graph: feature extractor and box predictor weights get gradients in TF2 and one SGD
  step changes the loss over the manifest's trainable outputs.
- A loop gradient scaled by 1.5 fails verification (status "failed", exit code 3 from the CLI).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tb_unfreeze import convert  # noqa: E402
from tb_unfreeze import loop_gradients as LG  # noqa: E402

STEPS, FEATURES, UNITS, CLASSES, BATCH = 5, 3, 4, 2, 6
KERNEL = "rnn/lstm_cell/kernel"  # the LSTM's kernel, as the TF1 freezer names its constant


def _build_dynamic_rnn(path: str) -> dict:
    """x [batch, 5, 3] -> TF1 dynamic_rnn LSTM (lowered loop, TensorArrayV3) -> last h -> dense -> "out", frozen
    with tf.compat.v1.graph_util.convert_variables_to_constants. Also returns, computed on the unfrozen model in
    the same graph, the gradient of sum(out * proj) at `x` for every variable (keyed by variable op name)."""
    from tensorflow.python.ops import rnn_cell_impl  # noqa: PLC0415 (tf.compat.v1.nn.rnn_cell needs Keras 2)

    rng = np.random.default_rng(0)
    x_value = rng.standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)
    proj = rng.standard_normal((BATCH, CLASSES)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default(), LG.v1_control_flow():
        tf.compat.v1.set_random_seed(1)
        x = tf.compat.v1.placeholder(tf.float32, (None, STEPS, FEATURES), name="x")
        cell = rnn_cell_impl.LSTMCell(UNITS)
        _, state = tf.compat.v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
        w = tf.compat.v1.get_variable("head/w", (UNITS, CLASSES))
        out = tf.identity(tf.matmul(state.h, w), name="out")
        loss = tf.reduce_sum(out * tf.constant(proj))
        variables = tf.compat.v1.trainable_variables()
        grads = tf.compat.v1.gradients(loss, variables)
        ops = {n.op for n in graph.as_graph_def().node}
        assert {"TensorArrayV3", "Enter", "Exit", "NextIteration"} <= ops, "not a lowered TensorArrayV3 loop"
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            grad_values = sess.run(grads, {x: x_value})
            out_value = sess.run(out, {x: x_value})
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["out"])
    with open(path, "wb") as f:
        f.write(frozen.SerializeToString())
    return {
        "path": path,
        "x": x_value,
        "proj": proj,
        "out": out_value,
        "grads": {v.op.name: g for v, g in zip(variables, grad_values)},
    }


@pytest.fixture(scope="module")
def rnn(tmp_path_factory) -> dict:
    """The frozen dynamic_rnn graph, its original gradients, and its conversion with defaults."""
    work = tmp_path_factory.mktemp("dynamic_rnn")
    built = _build_dynamic_rnn(str(work / "dynamic_rnn.pb"))
    out = work / "out"
    built["manifest"] = convert(built["path"], out).to_json()
    built["out_dir"] = out
    return built


def _variable_by_source(manifest: dict) -> dict[str, dict]:
    return {v["source"]: v for v in manifest["variables"]}


def test_dynamic_rnn_lstm_converts_verified_with_trainable_kernel(rnn):
    m = rnn["manifest"]
    v = m["verification"]
    assert v["status"] == "verified", v.get("problems")
    assert v["passed"] is True
    assert v["gradients"]["finite_difference"]["passed"] is True
    assert m["control_flow"] == "lowered_v1"
    assert [lp["gradient"] for lp in m["loops"]] == ["rebuilt"]
    by_source = _variable_by_source(m)
    assert set(by_source) == set(rnn["grads"]), "every former variable converted"
    assert by_source[KERNEL]["trainable"] is True
    assert all(r["trainable"] for r in m["variables"]), "the loop's weights and the head all train"
    assert (rnn["out_dir"] / "saved_model" / "saved_model.pb").is_file()
    assert (rnn["out_dir"] / "saved_model_tf1" / "saved_model.pb").is_file()


def test_dynamic_rnn_variables_keep_their_tf1_names(rnn):
    """TF1 variables here are resource variables (the default of tf.compat.v1.get_variable under TF2): the TF1
    freezer names each Const after its variable and its read `<consumer>/ReadVariableOp` or
    `<variable>/Read/ReadVariableOp`. The converted variables keep the variables' names, as for ref variables
    (test_convert_built.test_tf1_graph_keeps_variable_names)."""
    names = {r["source"]: r["variable_name"] for r in rnn["manifest"]["variables"]}
    assert names == {
        "rnn/lstm_cell/kernel": "rnn/lstm_cell/kernel",
        "rnn/lstm_cell/bias": "rnn/lstm_cell/bias",
        "head/w": "head/w",
    }, names


def _tf2_model(rnn):
    model = tf.saved_model.load(str(rnn["out_dir"] / "saved_model"))
    fn = model.signatures["serving_default"]
    key = rnn["manifest"]["signature"]["outputs"]["out:0"]
    return model, (lambda x: fn(x=tf.constant(x))[key])


def test_dynamic_rnn_tf2_gradient_equals_the_unfrozen_models_gradient(rnn):
    model, run = _tf2_model(rnn)
    source_of = {r["variable_name"]: r["source"] for r in rnn["manifest"]["variables"]}
    variables = list(model.trainable_variables)
    with tf.GradientTape() as tape:
        out = run(rnn["x"])
        loss = tf.reduce_sum(out * rnn["proj"])
    np.testing.assert_allclose(out.numpy(), rnn["out"], atol=1e-5)
    grads = tape.gradient(loss, variables)
    compared = set()
    for variable, grad in zip(variables, grads):
        source = source_of[variable.name.rsplit(":", 1)[0]]
        assert grad is not None, f"{source} gets no TF2 gradient"
        np.testing.assert_allclose(
            grad.numpy(),
            rnn["grads"][source],
            rtol=0,
            atol=1e-5,
            err_msg=f"TF2 gradient of {source} differs from the unfrozen model's",
        )
        compared.add(source)
    assert compared == set(rnn["grads"])
    assert np.abs(rnn["grads"][KERNEL]).max() > 1e-3, "a vacuous comparison (zero gradient) proves nothing"


def _target() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((BATCH, CLASSES)).astype(np.float32)


def test_dynamic_rnn_trains_in_tf2_gradient_tape(rnn):
    model, run = _tf2_model(rnn)
    variables = list(model.trainable_variables)
    kernel_name = _variable_by_source(rnn["manifest"])[KERNEL]["variable_name"]
    kernel = next(v for v in variables if v.name.rsplit(":", 1)[0] == kernel_name)
    kernel_before = kernel.numpy().copy()
    target = _target()
    opt = tf.keras.optimizers.SGD(0.1)
    losses = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(run(rnn["x"]) - target))
        grads = tape.gradient(loss, variables)
        assert all(g is not None for g in grads)
        opt.apply_gradients(zip(grads, variables))
        losses.append(float(loss))
    final = float(tf.reduce_mean(tf.square(run(rnn["x"]) - target)))
    assert final < losses[0] * 0.98, losses + [final]
    assert all(b < a for a, b in zip(losses, losses[1:] + [final])), losses + [final]
    assert np.abs(kernel.numpy() - kernel_before).max() > 1e-5, "the LSTM kernel did not change"


def test_dynamic_rnn_trains_in_tf1_session(rnn):
    saved = str(rnn["out_dir"] / "saved_model_tf1")
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], saved)
        sig = meta.signature_def["serving_default"]
        x = graph.get_tensor_by_name(sig.inputs["x"].name)
        out = graph.get_tensor_by_name(sig.outputs["out"].name)
        kernel_name = _variable_by_source(rnn["manifest"])[KERNEL]["variable_name"]
        trainable = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
        assert kernel_name in {v.op.name for v in trainable}
        kernel = next(v for v in trainable if v.op.name == kernel_name)
        with graph.as_default(), LG.v1_control_flow():
            loss = tf.reduce_mean(tf.square(out - _target()))
            train = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
        feed = {x: rnn["x"]}
        kernel_before = sess.run(kernel)
        np.testing.assert_allclose(sess.run(out, feed), rnn["out"], atol=1e-5)
        losses = [sess.run(loss, feed)]
        for _ in range(5):
            sess.run(train, feed)
            losses.append(sess.run(loss, feed))
        assert losses[-1] < losses[0] * 0.98, losses
        assert all(b < a for a, b in zip(losses, losses[1:])), losses
        assert np.abs(sess.run(kernel) - kernel_before).max() > 1e-5, "the LSTM kernel did not change"


# --- a Keras LSTM frozen by TF2's freezer (lowered loop over a TensorList), trained with Keras fit ---


def test_keras_lstm_fits_through_unfrozen_layer(real_model, tmp_path):
    keras = pytest.importorskip("keras")
    from tb_unfreeze.keras import UnfrozenLayer  # noqa: PLC0415

    path = real_model("har_keras_frozen.pb")
    out = tmp_path / "har"
    manifest = convert(path, out).to_json()
    assert manifest["verification"]["status"] == "verified", manifest["verification"].get("problems")
    assert manifest["loops"], "the HAR graph's LSTM is a lowered while loop"
    (inp,) = manifest["inputs"]
    shape = list(inp["shape"][1:])
    layer = UnfrozenLayer(str(out))
    model = keras.Sequential([keras.Input(tuple(shape)), layer])
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, *shape)).astype(np.float32)
    y0 = np.asarray(model(x[:1]))
    y = rng.uniform(size=(16, *y0.shape[1:])).astype(np.float32)
    kernels = [
        w
        for w in layer.weights
        if "lstm" in w.path.lower() and "kernel" in w.path.lower() and "recurrent" not in w.path.lower()
    ]
    assert kernels, [w.path for w in layer.weights]
    assert all(w.trainable for w in kernels)
    before = [np.array(w.numpy()) for w in kernels]
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    loss_before = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    loss_after = model.evaluate(x, y, verbose=0)
    assert loss_after < loss_before, (loss_before, history.history["loss"], loss_after)
    assert any(np.abs(w.numpy() - b).max() > 1e-6 for w, b in zip(kernels, before)), "the loop kernel did not change"


# --- the Object Detection API's frozen_inference_graph.pb ---


@pytest.fixture(scope="module")
def object_detection(real_model, tmp_path_factory) -> tuple:
    """od_api_ssd_mobilenet_visionkit.pb converted with defaults (once: about 2-3 minutes on a loaded machine)."""
    path = real_model("od_api_ssd_mobilenet_visionkit.pb")
    out = tmp_path_factory.mktemp("od") / "out"
    return out, convert(path, out).to_json()


def test_object_detection_converts_verified_with_defaults(object_detection):
    _, manifest = object_detection
    v = manifest["verification"]
    assert v["status"] == "verified", v.get("problems")
    assert v["passed"] is True
    assert manifest["trainable_outputs"], "nothing to train on"


def test_object_detection_feature_extractor_and_box_predictor_train_in_tf2(object_detection):
    out, manifest = object_detection
    assert manifest["trainable_outputs"], "nothing to train on"
    model = tf.saved_model.load(str(out / "saved_model"))
    fn = model.signatures["serving_default"]
    sig = manifest["signature"]
    (inp,) = manifest["inputs"]
    image = np.random.default_rng(0).integers(0, 256, size=(1, 64, 64, 3)).astype(np.uint8)
    kwargs = {sig["inputs"][inp["name"]]: tf.constant(image)}
    keys = [sig["outputs"][t] for t in manifest["trainable_outputs"]]

    def loss_now():
        result = fn(**kwargs)
        return tf.add_n([tf.reduce_mean(tf.square(tf.cast(result[k], tf.float32) - 0.5)) for k in keys])

    variables = list(model.trainable_variables)
    with tf.GradientTape() as tape:
        loss = loss_now()
    grads = tape.gradient(loss, variables)
    name = {id(var): var.name.rsplit(":", 1)[0] for var in variables}
    by_name = {r["variable_name"]: r for r in manifest["variables"]}
    feature = [var for var in variables if name[id(var)].startswith("FeatureExtractor/")]
    boxes = [var for var in variables if name[id(var)].startswith("BoxPredictor")]
    assert feature and boxes, sorted(name.values())[:20]
    for group in ("FeatureExtractor/", "BoxPredictor"):
        kernels = [r for n, r in by_name.items() if n.startswith(group) and r["role"] in ("kernel", "depthwise_kernel")]
        assert kernels and all(r["trainable"] for r in kernels), f"{group} kernels not all trainable"
    watched = {id(var) for var in feature + boxes}
    missing = [name[id(var)] for var, g in zip(variables, grads) if g is None and id(var) in watched]
    assert not missing, f"{len(missing)} feature extractor / box predictor variables get no gradient: {missing[:5]}"
    assert all(np.isfinite(g.numpy()).all() for g in grads if g is not None)
    tf.keras.optimizers.SGD(0.05).apply_gradients([(g, var) for g, var in zip(grads, variables) if g is not None])
    after = float(loss_now())
    assert after != pytest.approx(float(loss), rel=1e-6, abs=0), "one optimizer step did not change the loss"


# --- a silently wrong gradient must fail verification ---


@pytest.fixture
def gradient_times_1_5(monkeypatch):
    """Every TF2 loop gradient built by tb_unfreeze comes out 1.5 times too large (outputs unchanged)."""
    original = LG.differentiable_function

    def scaled(tf_module, gradient_graph):
        call = original(tf_module, gradient_graph)

        def wrong(*args):
            ys = call(*args)
            # value: y; gradient: 1.5 x the true one
            return [y * 1.5 - tf_module.stop_gradient(y * 0.5) if y.dtype.is_floating else y for y in ys]

        wrong.forward = call.forward
        return wrong

    monkeypatch.setattr(LG, "differentiable_function", scaled)


def test_wrong_loop_gradient_fails_verification(rnn, tmp_path, gradient_times_1_5):
    manifest = convert(rnn["path"], tmp_path / "wrong").to_json()
    v = manifest["verification"]
    assert v["status"] == "failed", v
    assert v["passed"] is False
    assert v["gradients"]["finite_difference"]["passed"] is False
    assert any("finite difference" in p for p in v["problems"]), v["problems"]
    ratio = v["gradients"]["finite_difference"]["analytic"] / v["gradients"]["finite_difference"]["numeric"]
    assert 1.3 < ratio < 1.7, f"the check should measure the injected 1.5x error, measured {ratio}"


def test_wrong_loop_gradient_makes_cli_convert_exit_3(rnn, tmp_path, gradient_times_1_5, capsys):
    from tb_unfreeze import cli  # noqa: PLC0415

    out = tmp_path / "cli"
    code = cli.main(["convert", rnn["path"], "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 3, captured.err[-2000:]
    with open(out / "unfreeze.json") as f:
        assert json.load(f)["verification"]["status"] == "failed"
    assert "finite difference" in captured.err
    assert os.path.isdir(out / "saved_model"), "exit 3: the output is written, only not verified"
