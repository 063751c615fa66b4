"""Inputs as the frozen graph means them (issue 9, items 3 and 6).

- retrain.py / "TensorFlow for Poets": a PlaceholderWithDefault whose default is the base network's bottleneck is
  an optional override: left unfed, so the base network trains; an "overrides" signature still accepts it.
- Constant-default knobs (learning phase, keep_prob) keep their kinds and defaults.
- slim's batch norm without a learned scale: the freezer's vector of ones is not a variable to recommend.
- A graph frozen with its tf.data pipeline is cut at IteratorGetNext, with a note.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tb_unfreeze import convert, inspect_model  # noqa: E402

BOTTLENECK = "input/BottleneckInputPlaceholder"
SIZE, CHANNELS, WIDTH, CLASSES = 8, 3, 6, 4


def _freeze(graph, sess, outputs: list[str], path) -> str:
    frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), outputs)
    with open(path, "wb") as f:
        f.write(frozen.SerializeToString())
    return str(path)


def _build_retrain_pattern(path) -> str:
    """images -> base network (conv + bias, relu, mean pool: the bottleneck) -> PlaceholderWithDefault(bottleneck)
    named input/BottleneckInputPlaceholder (as retrain.py adds it) -> new dense head -> final_result."""
    graph = tf.Graph()
    with graph.as_default():
        init = tf.compat.v1.random_normal_initializer(stddev=0.5, seed=2)
        images = tf.compat.v1.placeholder(tf.float32, (None, SIZE, SIZE, CHANNELS), name="images")
        with tf.compat.v1.variable_scope("base"):
            w = tf.compat.v1.get_variable("conv/weights", (3, 3, CHANNELS, WIDTH), initializer=init)
            b = tf.compat.v1.get_variable("conv/biases", (WIDTH,), initializer=init)
        h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(images, w, strides=[1, 1, 1, 1], padding="SAME"), b))
        bottleneck = tf.reduce_mean(h, axis=[1, 2], name="base/bottleneck")
        with tf.name_scope("input"):
            bottleneck_input = tf.compat.v1.placeholder_with_default(
                bottleneck, shape=[None, WIDTH], name="BottleneckInputPlaceholder"
            )
        with tf.compat.v1.variable_scope("final_training_ops"):
            fw = tf.compat.v1.get_variable("weights", (WIDTH, CLASSES), initializer=init)
            fb = tf.compat.v1.get_variable("biases", (CLASSES,), initializer=tf.compat.v1.zeros_initializer())
        tf.nn.softmax(tf.matmul(bottleneck_input, fw) + fb, name="final_result")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return _freeze(graph, sess, ["final_result"], path)


@pytest.fixture(scope="module")
def retrain(tmp_path_factory):
    work = tmp_path_factory.mktemp("retrain")
    path = _build_retrain_pattern(work / "retrained_graph.pb")
    out = work / "out"
    return path, out, convert(path, out).to_json()


def test_retrain_bottleneck_is_an_optional_input(retrain):
    path, _, _ = retrain
    kinds = {i.name: (i.kind, i.default) for i in inspect_model(path).inputs}
    assert kinds[BOTTLENECK] == ("optional", None), kinds
    assert kinds["images"] == ("data", None), kinds


def test_retrain_converts_verified_without_feeding_the_bottleneck(retrain):
    _, out, manifest = retrain
    v = manifest["verification"]
    assert v["status"] == "verified", v.get("problems")
    assert v["gradients"]["missing"] == []
    assert BOTTLENECK not in manifest["signature"]["inputs"]
    assert [i["name"] for i in manifest["inputs"]] == ["images"]
    assert BOTTLENECK not in v["probe_shapes"], "the probe must not override the computed default"
    assert BOTTLENECK in manifest["optional_inputs"]
    model = tf.saved_model.load(str(out / "saved_model"))
    _, keywords = model.signatures["serving_default"].structured_input_signature
    assert set(keywords) == {"images"}, keywords


def _retrain_inputs():
    rng = np.random.default_rng(1)
    return rng.standard_normal((3, SIZE, SIZE, CHANNELS)).astype(np.float32), rng.integers(0, CLASSES, 3)


def test_retrain_base_network_gets_gradients_in_tf2(retrain):
    _, out, manifest = retrain
    model = tf.saved_model.load(str(out / "saved_model"))
    fn = model.signatures["serving_default"]
    key = manifest["signature"]["outputs"]["final_result:0"]
    x, y = _retrain_inputs()
    variables = [v for v in model.variables if v.trainable]
    source = {r["variable_name"]: r["source"] for r in manifest["variables"]}
    names = [source[v.name.rsplit(":", 1)[0]] for v in variables]
    assert {"base/conv/weights", "base/conv/biases", "final_training_ops/weights"} <= set(names), names
    with tf.GradientTape() as tape:
        probs = fn(images=tf.constant(x))[key]
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(y, probs))
    grads = dict(zip(names, tape.gradient(loss, variables)))
    for name in ("base/conv/weights", "base/conv/biases"):
        assert grads[name] is not None, f"the base network's {name} gets no gradient"
        assert np.abs(grads[name].numpy()).max() > 0, f"the base network's {name} gets a zero gradient"


def test_retrain_overrides_signature_accepts_the_bottleneck(retrain):
    _, out, manifest = retrain
    model = tf.saved_model.load(str(out / "saved_model"))
    assert "overrides" in model.signatures, list(model.signatures)
    overrides = model.signatures["overrides"]
    key_of = manifest["signature"]["optional_inputs"]
    _, keywords = overrides.structured_input_signature
    assert key_of[BOTTLENECK] in keywords and "images" in keywords, keywords
    x, _ = _retrain_inputs()
    out_key = manifest["signature"]["outputs"]["final_result:0"]
    served = model.signatures["serving_default"](images=tf.constant(x))[out_key].numpy()
    bottleneck = np.random.default_rng(5).standard_normal((3, WIDTH)).astype(np.float32)
    fed = overrides(images=tf.constant(x), **{key_of[BOTTLENECK]: tf.constant(bottleneck)})[out_key].numpy()
    # the head alone on the fed bottleneck: softmax(b @ W + bias) with the converted head weights
    by_source = {r["source"]: r["variable_name"] for r in manifest["variables"]}
    value = {v.name.rsplit(":", 1)[0]: v.numpy() for v in model.variables}
    logits = bottleneck @ value[by_source["final_training_ops/weights"]] + value[by_source["final_training_ops/biases"]]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(fed, expected, atol=1e-5)
    assert np.abs(fed - served).max() > 1e-3, "feeding the bottleneck changed nothing"


# --- constant-default knobs keep today's treatment ---


def _build_learning_phase(path) -> str:
    """x -> dense, scaled by a learning-phase PlaceholderWithDefault(False, [])."""
    graph = tf.Graph()
    with graph.as_default():
        init = tf.compat.v1.random_normal_initializer(stddev=0.5, seed=3)
        x = tf.compat.v1.placeholder(tf.float32, (None, 5), name="x")
        phase = tf.compat.v1.placeholder_with_default(False, [], name="is_training")
        w = tf.compat.v1.get_variable("dense/kernel", (5, 3), initializer=init)
        tf.identity(tf.matmul(x, w) * (1.0 + tf.cast(phase, tf.float32)), name="y")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return _freeze(graph, sess, ["y"], path)


def test_constant_default_learning_phase_keeps_its_kind_and_default(tmp_path):
    path = _build_learning_phase(tmp_path / "phase.pb")
    inputs = {i.name: i for i in inspect_model(path).inputs}
    assert (inputs["is_training"].kind, inputs["is_training"].default) == ("learning_phase", False)
    assert inputs["x"].kind == "data"
    manifest = convert(path, tmp_path / "out").to_json()
    assert manifest["verification"]["status"] == "verified", manifest["verification"].get("problems")
    assert manifest["input_defaults"] == {"is_training": False}
    assert set(manifest["signature"]["inputs"]) == {"x"}
    assert manifest["optional_inputs"] == []
    model = tf.saved_model.load(str(tmp_path / "out" / "saved_model"))
    _, keywords = model.signatures["training"].structured_input_signature
    assert "is_training" in keywords and "x" in keywords, keywords


def _build_keep_prob(path) -> str:
    """The TF1 idiom: keep_prob = tf.placeholder(tf.float32, name="keep_prob") (no shape), and
    tf.nn.dropout(h, keep_prob=keep_prob), which since TF 1.13 computes rate = 1 - keep_prob."""
    graph = tf.Graph()
    with graph.as_default():
        init = tf.compat.v1.random_normal_initializer(stddev=0.5, seed=3)
        x = tf.compat.v1.placeholder(tf.float32, (None, 5), name="x")
        keep_prob = tf.compat.v1.placeholder(tf.float32, name="keep_prob")
        w = tf.compat.v1.get_variable("dense/kernel", (5, 3), initializer=init)
        tf.identity(tf.compat.v1.nn.dropout(tf.matmul(x, w), keep_prob=keep_prob), name="y")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return _freeze(graph, sess, ["y"], path)


def test_keep_prob_placeholder_still_defaults_to_one(tmp_path):
    path = _build_keep_prob(tmp_path / "keep_prob.pb")
    inputs = {i.name: i for i in inspect_model(path).inputs}
    assert (inputs["keep_prob"].kind, inputs["keep_prob"].default) == ("dropout_keep_prob", 1.0), inputs["keep_prob"]
    assert inputs["x"].kind == "data"
    manifest = convert(path, tmp_path / "out").to_json()
    assert manifest["verification"]["status"] == "verified", manifest["verification"].get("problems")
    assert manifest["input_defaults"] == {"keep_prob": 1.0}
    assert set(manifest["signature"]["inputs"]) == {"x"}


# --- batch norm without a learned scale (slim's batch_norm(scale=False)) ---


def _build_bn_without_scale(path) -> str:
    graph = tf.Graph()
    with graph.as_default():
        init = tf.compat.v1.random_normal_initializer(stddev=0.5, seed=4)
        x = tf.compat.v1.placeholder(tf.float32, (None, SIZE, SIZE, CHANNELS), name="images")
        with tf.compat.v1.variable_scope("Conv"):
            w = tf.compat.v1.get_variable("weights", (3, 3, CHANNELS, WIDTH), initializer=init)
            h = tf.nn.conv2d(x, w, strides=[1, 1, 1, 1], padding="SAME")
            with tf.compat.v1.variable_scope("BatchNorm"):
                gamma = tf.ones([WIDTH], name="Const")  # slim: no learned scale, a constant vector of ones
                beta = tf.compat.v1.get_variable("beta", (WIDTH,), initializer=init)
                mean = tf.compat.v1.get_variable("moving_mean", (WIDTH,), initializer=init, trainable=False)
                var = tf.compat.v1.get_variable(
                    "moving_variance", (WIDTH,), trainable=False, initializer=tf.compat.v1.constant_initializer(2.0)
                )
                h, _, _ = tf.compat.v1.nn.fused_batch_norm(h, gamma, beta, mean, var, is_training=False)
        tf.identity(tf.reduce_mean(tf.nn.relu(h), axis=[1, 2]), name="features")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return _freeze(graph, sess, ["features"], path)


def test_batch_norm_ones_scale_is_not_recommended(tmp_path):
    path = _build_bn_without_scale(tmp_path / "bn_no_scale.pb")
    inspection = inspect_model(path)
    graph_ops = {n.name: n.op for n in inspection.graph.graph_def.node}
    bn = next(n for n in inspection.graph.graph_def.node if n.op.startswith("FusedBatchNorm"))
    scale_input = bn.input[1].split(":")[0]
    assert graph_ops[scale_input] == "Const", "the freezer's ones-vector is a plain Const feeding the scale slot"
    by_name = {c.name: c for c in inspection.candidates}
    ones = by_name.get(scale_input)
    assert ones is not None, f"the scale constant {scale_input} is not even listed"
    assert ones.recommended is False, ones
    assert "same value" in ones.recommendation and "tf.ones" in ones.recommendation, ones.recommendation
    for name in ("Conv/BatchNorm/beta", "Conv/BatchNorm/moving_mean", "Conv/BatchNorm/moving_variance"):
        assert name in by_name, sorted(by_name)
        assert by_name[name].recommended is True, by_name[name]
    roles = {name: by_name[name].role for name in by_name}
    assert roles["Conv/BatchNorm/moving_mean"] == "bn_moving_mean", roles
    assert roles["Conv/BatchNorm/moving_variance"] == "bn_moving_variance", roles


# --- a graph frozen with its tf.data input pipeline ---


def test_iterator_fed_graph_converts_with_component_inputs_and_a_note(real_model, tmp_path):
    path = real_model("cnn_tfrecord_iterator_mouth.pb")
    manifest = convert(path, tmp_path / "out").to_json()
    inputs = list(manifest["signature"]["inputs"])
    components = [n for n in inputs if n.startswith("IteratorGetNext/component_")]
    assert components, inputs
    # exit 0 of the CLI: verified, or verified with a warning (this CNN saturates on probe inputs, so its
    # finite-difference check can be vacuous); never failed or not verified
    assert manifest["verification"]["passed"] is True, manifest["verification"].get("problems")
    assert manifest["verification"]["status"] in ("verified", "verified_with_warnings")
    notes = manifest["notes"]
    assert any("IteratorGetNext" in note and "component_0" in note for note in notes), notes
    assert all(i["name"] in inputs for i in manifest["inputs"])
