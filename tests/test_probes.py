"""Probe inputs the frozen graph accepts (issue 9, "verification always runs"): shapes inferred from the graph,
scalars the graph accepts, indices within range, synthesized WAV/JPEG/PNG/raw files for decoded strings.

Real files: agent007 (string `wav_data` -> DecodeWav), cms_deepjet_v03 (five inputs declared without shapes),
har_keras_frozen, and every file of the shared models folder except DeePMD (custom ops). Built here: a scalar
`factor` checked to lie in (0, 1) and driving a while loop, an embedding lookup and a one-hot on int ids, a
JPEG-decoding input, Keras models frozen without an input shape, a raw-bytes input, a graph no probe satisfies.
"""

from __future__ import annotations

import io
import os
import wave

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import model_entries  # noqa: E402

from tb_unfreeze import inspect_model, probes  # noqa: E402
from tb_unfreeze.analysis import GraphInput  # noqa: E402
from tb_unfreeze.errors import UserError  # noqa: E402
from tb_unfreeze.verify import ProbeError, run_frozen  # noqa: E402

CUSTOM_OPS = {"deepmd_deeppot.pbtxt"}


def _graph_def(path: str):
    from google.protobuf import text_format

    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".pbtxt"):
        text_format.Parse(data.decode(), graph_def)
    else:
        graph_def.ParseFromString(data)
    try:  # what conversion does to the graph before probing it (a tf.data input pipeline becomes placeholders)
        from tb_unfreeze.pipeline import cut_input_pipeline
    except ImportError:
        return graph_def
    cut_input_pipeline(graph_def)
    return graph_def


def _io(path: str):
    inspection = inspect_model(path)
    feed = [i for i in inspection.inputs if i.kind == "data"]
    defaults = {i.name: i.default for i in inspection.inputs if i.default is not None and i.kind != "unused"}
    return feed, defaults, [o.tensor for o in inspection.outputs]


def _probe_and_run(path: str):
    feed, defaults, fetches = _io(path)
    graph_def = _graph_def(path)
    made = probes.make_probes(feed, None, graph_def, fetches)
    # The uncached runner: the probes must make the untouched frozen graph run, on its own.
    outputs = run_frozen(graph_def, {k: v for k, v in made.items() if k not in defaults}, fetches, defaults)
    return made, outputs


def _freeze_tf1(build, path) -> str:
    """Build a TF1 graph with `build()` (returns output tensor names) and freeze it with graph_util."""
    graph = tf.Graph()
    with graph.as_default():
        outputs = build()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), outputs)
    with open(path, "wb") as f:
        f.write(frozen.SerializeToString())
    return str(path)


# ------------------------------------------------------------------------------------------- real files ---


def test_wav_data_gets_a_valid_16bit_mono_wav(real_model):
    path = real_model("agent007_conv_206f896.pb")
    made, outputs = _probe_and_run(path)
    content = made["wav_data"]
    assert content.shape == () and isinstance(content.item(), bytes)
    with wave.open(io.BytesIO(content.item())) as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)
        assert w.getnframes() == 16000  # DecodeWav's desired_samples
    assert outputs["labels_softmax:0"].shape == (1, 12)
    np.testing.assert_allclose(outputs["labels_softmax:0"].sum(), 1.0, rtol=1e-5)


def test_inputs_without_shapes_get_shapes_from_the_graph(real_model):
    path = real_model("cms_deepjet_v03.pb")
    feed, _, _ = _io(path)
    assert {i.name for i in feed if i.shape is None} >= {"input_1", "input_2", "input_3", "input_4", "input_5"}
    made, outputs = _probe_and_run(path)
    # The widths come from the inputs' batch-norm constants, the ranks from the 1x1 convolutions (Conv1D as
    # ExpandDims + Conv2D) that read four of them; input_1 (globals) feeds dense layers only.
    assert made["input_1"].shape[1:] == (15,)
    assert made["input_2"].ndim == 3 and made["input_2"].shape[-1] == 16
    assert made["input_3"].ndim == 3 and made["input_3"].shape[-1] == 6
    assert made["input_4"].ndim == 3 and made["input_4"].shape[-1] == 12
    assert made["input_5"].shape[-1] == 1
    assert np.isfinite(outputs["regression_pred/BiasAdd:0"]).all()


def test_declared_shapes_keep_todays_probe(real_model):
    path = real_model("har_keras_frozen.pb")
    made, outputs = _probe_and_run(path)
    assert list(made) == ["x"]
    expected = np.random.default_rng(0).standard_normal([2, 100, 12]).astype(np.float32)
    np.testing.assert_array_equal(made["x"], expected)  # batch 2, random normal: what verify.make_probes made
    assert outputs["Identity:0"].shape == (2, 7)


REAL = [p for p in model_entries("real") if not any(name in str(p.values[0]) for name in CUSTOM_OPS)]


@pytest.mark.parametrize("path", REAL)
def test_every_real_file_gets_probes_the_frozen_graph_runs_on(path):
    made, outputs = _probe_and_run(path)
    for name, value in outputs.items():
        assert np.asarray(value).size > 0 or name == "dense_decoded:0", name


def test_probe_npz_still_wins_and_is_matched_with_slashes(real_model, tmp_path):
    path = real_model("hollance_voice_logreg.pb")
    feed, _, fetches = _io(path)
    x = np.ones((3, 20), np.float32)
    np.savez(tmp_path / "p.npz", **{"inputs_x-input": x})  # "/" cannot be in an npz key
    made = probes.make_probes(feed, str(tmp_path / "p.npz"), _graph_def(path), fetches)
    assert made["inputs/x-input"] is not None and np.array_equal(made["inputs/x-input"], x)
    np.savez(tmp_path / "bad.npz", nope=x)
    with pytest.raises(UserError, match="match no input"):
        probes.make_probes(feed, str(tmp_path / "bad.npz"), _graph_def(path), fetches)


def test_run_frozen_answers_from_the_confirming_run(real_model, monkeypatch):
    path = real_model("tf2onnx_fc_layers.pb")
    feed, defaults, fetches = _io(path)
    graph_def = _graph_def(path)
    made = probes.make_probes(feed, None, graph_def, fetches)
    calls = []
    monkeypatch.setattr(probes, "_run_frozen_uncached", lambda *a: calls.append(a) or {})
    cached = probes.run_frozen(graph_def, made, fetches, defaults)
    assert not calls and cached["output:0"].shape == (2, 10)
    np.testing.assert_array_equal(cached["output:0"], run_frozen(graph_def, made, fetches, defaults)["output:0"])
    probes.run_frozen(graph_def, made, fetches, defaults)  # the cache answers once
    assert len(calls) == 1


# --------------------------------------------------------------------------------------------- built ---


def test_scalar_factor_gets_a_value_the_graph_accepts(tmp_path):
    """MTCNN-like: `factor` must lie in (0, 1) (Asserts) and shrinks a scale in a while loop until it is < 12;
    a random normal value trips an Assert, factor >= 1 would loop forever."""

    def build():
        x = tf.compat.v1.placeholder(tf.float32, (None, 4), name="x")
        factor = tf.compat.v1.placeholder(tf.float32, None, name="factor")  # no shape, as in MTCNN graphs
        checks = [tf.compat.v1.assert_greater(factor, 0.0), tf.compat.v1.assert_less(factor, 1.0)]
        with tf.control_dependencies(checks):
            f = tf.identity(factor)
        n = tf.compat.v1.while_loop(
            lambda s, k: s >= 12.0,
            lambda s, k: (s * f, k + 1),
            [tf.constant(100.0), 0],
            shape_invariants=[tf.TensorShape(None), tf.TensorShape([])],
        )[1]
        w = tf.compat.v1.get_variable("w", (4, 2), initializer=tf.compat.v1.ones_initializer())
        tf.identity(tf.matmul(x, w) * tf.cast(n, tf.float32), name="y")
        return ["y"]

    path = _freeze_tf1(build, tmp_path / "scalar.pb")
    feed = [GraphInput("x", "float32", [-1, 4], "data"), GraphInput("factor", "float32", None, "data")]
    made = probes.make_probes(feed, None, _graph_def(path), ["y:0"])
    assert made["factor"].shape == () and 0 < float(made["factor"]) < 1
    assert made["x"].shape == (2, 4)
    assert run_frozen(_graph_def(path), made, ["y:0"], {})["y:0"].shape == (2, 2)


def test_int_ids_stay_within_the_embedding_table(tmp_path):
    vocab = 1000

    def build():
        ids = tf.compat.v1.placeholder(tf.int32, None, name="ids")  # no shape
        label = tf.compat.v1.placeholder(tf.int64, (None,), name="label")
        table = tf.compat.v1.get_variable("embedding", (vocab, 8))
        emb = tf.reduce_mean(tf.nn.embedding_lookup(table, ids), axis=1)
        tf.identity(emb + tf.reduce_sum(tf.one_hot(label, 5), axis=1, keepdims=True), name="out")
        return ["out"]

    path = _freeze_tf1(build, tmp_path / "embedding.pb")
    feed = [GraphInput("ids", "int32", None, "data"), GraphInput("label", "int64", [-1], "data")]
    made = probes.make_probes(feed, None, _graph_def(path), ["out:0"], seed=3)
    ids = made["ids"]
    assert ids.dtype == np.int32 and ids.ndim == 2
    assert ids.min() >= 0 and ids.max() < vocab and ids.max() > 1  # spread over the table, not just 0 and 1
    assert made["label"].min() >= 0 and made["label"].max() < 5  # OneHot depth
    assert run_frozen(_graph_def(path), made, ["out:0"], {})["out:0"].shape == (2, 8)


def test_jpeg_input_gets_an_encoded_image(tmp_path):
    def build():
        data = tf.compat.v1.placeholder(tf.string, None, name="jpeg_data")
        image = tf.image.decode_jpeg(data, channels=3)
        image = tf.image.resize(tf.cast(image, tf.float32)[tf.newaxis] / 255.0, (16, 16))
        w = tf.compat.v1.get_variable("conv/w", (3, 3, 3, 4))
        tf.identity(tf.reduce_mean(tf.nn.conv2d(image, w, 1, "SAME"), axis=[1, 2]), name="features")
        return ["features"]

    path = _freeze_tf1(build, tmp_path / "jpeg.pb")
    made = probes.make_probes([GraphInput("jpeg_data", "string", None, "data")], None, _graph_def(path), ["features:0"])
    content = made["jpeg_data"].item()
    assert content[:2] == b"\xff\xd8"  # a JPEG file
    assert tf.io.decode_jpeg(content).shape[-1] == 3
    assert run_frozen(_graph_def(path), made, ["features:0"], {})["features:0"].shape == (1, 4)


def test_png_and_raw_inputs(tmp_path):
    def build():
        png = tf.compat.v1.placeholder(tf.string, None, name="png")
        raw = tf.compat.v1.placeholder(tf.string, None, name="raw")
        image = tf.cast(tf.image.decode_png(png, channels=1), tf.float32)
        pixels = tf.reshape(tf.cast(tf.io.decode_raw(raw, tf.uint8), tf.float32), (1, 28, 28, 1))
        w = tf.compat.v1.get_variable("w", (784, 3))
        tf.identity(tf.matmul(tf.reshape(pixels, (1, 784)), w) + tf.reduce_mean(image), name="out")
        return ["out"]

    path = _freeze_tf1(build, tmp_path / "png_raw.pb")
    feed = [GraphInput("png", "string", None, "data"), GraphInput("raw", "string", None, "data")]
    made = probes.make_probes(feed, None, _graph_def(path), ["out:0"])
    assert made["png"].item()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(made["raw"].item()) == 784  # the length the Reshape after DecodeRaw asks for
    assert run_frozen(_graph_def(path), made, ["out:0"], {})["out:0"].shape == (1, 3)


def _freeze_keras(model, spec, path, strip_shape=False) -> str:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(spec))
    graph_def = frozen.graph.as_graph_def()
    if strip_shape:  # what older freezers and exporters leave: a Placeholder with no shape at all
        for node in graph_def.node:
            if node.op == "Placeholder":
                del node.attr["shape"]
    with open(path, "wb") as f:
        f.write(graph_def.SerializeToString())
    return str(path)


def test_keras_models_frozen_without_input_shape(tmp_path):
    keras = pytest.importorskip("keras")
    conv = keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    conv.build((None, 10, 10, 5))  # Flatten -> Dense fixes the spatial size: 10x10 is the only one that runs
    path = _freeze_keras(conv, tf.TensorSpec((None, None, None, None), tf.float32, name="x"), tmp_path / "c.pb")
    feed, _, fetches = _io(path)
    (x,) = [i for i in feed if i.name == "x"]
    made = probes.make_probes([GraphInput("x", "float32", [-1, -1, -1, -1], "data")], None, _graph_def(path), fetches)
    assert made["x"].shape[1:] == (10, 10, 5), made["x"].shape
    assert run_frozen(_graph_def(path), made, fetches, {})[fetches[0]].shape[-1] == 3

    dense = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    dense.build((None, 7))
    path = _freeze_keras(dense, tf.TensorSpec((None, 7), tf.float32, name="x"), tmp_path / "d.pb", strip_shape=True)
    feed, _, fetches = _io(path)
    made = probes.make_probes([GraphInput(feed[0].name, "float32", None, "data")], None, _graph_def(path), fetches)
    assert made[feed[0].name].shape == (2, 7)


def test_no_probe_works_names_the_input_and_asks_for_probe(tmp_path):
    def build():
        x = tf.compat.v1.placeholder(tf.float32, (None, 3), name="readings")
        with tf.control_dependencies([tf.compat.v1.assert_greater(x, 1e6)]):  # no probe is that large
            tf.identity(x * 2.0, name="y")
        return ["y"]

    path = _freeze_tf1(build, tmp_path / "picky.pb")
    with pytest.raises(ProbeError) as info:
        probes.make_probes([GraphInput("readings", "float32", [-1, 3], "data")], None, _graph_def(path), ["y:0"])
    message = str(info.value)
    assert "'readings'" in message and "--probe FILE.npz" in message
    assert "\n" not in message
    assert isinstance(info.value, UserError)


def test_defaults_are_fed_when_confirming(real_model):
    """tf2onnx_lstm has a keep_prob placeholder (default 1.0) that is not among the data inputs."""
    path = real_model("tf2onnx_lstm.pb")
    feed, defaults, fetches = _io(path)
    assert defaults == {"keep_prob": 1.0}
    graph_def = _graph_def(path)
    made = probes.make_probes(feed, None, graph_def, fetches)
    assert set(made) == {"X"}
    assert os.path.basename(path) == "tf2onnx_lstm.pb"
    # conversion's call right after (its defaults are the same knobs): answered from the confirming run
    calls = []
    real = probes._run_frozen_uncached
    probes._run_frozen_uncached = lambda *a: calls.append(a) or {}
    try:
        cached = probes.run_frozen(graph_def, made, fetches, defaults)
    finally:
        probes._run_frozen_uncached = real
    assert not calls
    np.testing.assert_array_equal(cached["output:0"], run_frozen(graph_def, made, fetches, defaults)["output:0"])
