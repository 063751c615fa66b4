"""The benchmark's model set and how each one is built and frozen with TensorFlow's own freezer.

Every Keras application is built with `weights=None` (random initial weights: nothing is downloaded). Building
runs in a worker subprocess (`bench.worker freeze NAME`); only the freeze itself is timed.
"""

from __future__ import annotations

import dataclasses
import os
import time

CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache")


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # "keras_app", "lstm", "tf1"
    arg: str = ""  # Keras application name / loop lowering
    input_hw: int = 224

    @property
    def path(self) -> str:
        return os.path.join(CACHE, "models", f"{self.name}.pb")


MODELS = [
    Spec("MobileNetV2", "keras_app", "MobileNetV2"),
    Spec("EfficientNetB0", "keras_app", "EfficientNetB0"),
    Spec("DenseNet121", "keras_app", "DenseNet121"),
    Spec("InceptionV3", "keras_app", "InceptionV3", 299),
    Spec("ResNet50", "keras_app", "ResNet50"),
    Spec("VGG16", "keras_app", "VGG16"),
    Spec("LSTM_lowered", "lstm", "lowered"),
    Spec("LSTM_functional", "lstm", "functional"),
    Spec("TF1_MLP", "tf1"),
]
QUICK = ["MobileNetV2", "LSTM_lowered", "LSTM_functional", "TF1_MLP"]
BY_NAME = {m.name: m for m in MODELS}


def _freeze_v2(tf, fn, lower_control_flow: bool = True):
    """TensorFlow's own TF2 freezer, timed, then the GraphDef; returns (graph_def, seconds)."""
    from tensorflow.python.framework import convert_to_constants  # noqa: PLC0415

    t0 = time.perf_counter()
    frozen = convert_to_constants.convert_variables_to_constants_v2(fn, lower_control_flow=lower_control_flow)
    graph_def = frozen.graph.as_graph_def()
    return graph_def, time.perf_counter() - t0


def _keras_app(tf, spec: Spec):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, spec.arg)(weights=None, input_shape=(spec.input_hw, spec.input_hw, 3))
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(
        tf.TensorSpec([None, spec.input_hw, spec.input_hw, 3], tf.float32, name="input")
    )
    return _freeze_v2(tf, concrete)


def _lstm(tf, spec: Spec):
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 64)),
            keras.layers.LSTM(256, return_sequences=True),
            keras.layers.LSTM(256),
            keras.layers.Dense(10),
        ]
    )
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec([None, 32, 64], tf.float32, name="input"))
    return _freeze_v2(tf, concrete, lower_control_flow=spec.arg == "lowered")


def _tf1(tf, spec: Spec):
    """A TF1-style graph (ref variables, a keep_prob placeholder, dropout) frozen by the TF1 freezer."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        x = v1.placeholder(tf.float32, [None, 784], name="x")
        keep_prob = v1.placeholder(tf.float32, [], name="keep_prob")
        h = x
        for i, width in enumerate((1024, 1024, 512)):
            with v1.variable_scope(f"fc{i}"):
                w = v1.get_variable(
                    "weights", [h.shape[1], width], initializer=v1.glorot_uniform_initializer(), use_resource=False
                )
                b = v1.get_variable("biases", [width], initializer=v1.zeros_initializer(), use_resource=False)
                h = tf.nn.relu(tf.matmul(h, w) + b)
                h = v1.nn.dropout(h, keep_prob=keep_prob)
        with v1.variable_scope("logits"):
            w = v1.get_variable("weights", [h.shape[1], 10], use_resource=False)
            b = v1.get_variable("biases", [10], initializer=v1.zeros_initializer(), use_resource=False)
            logits = tf.matmul(h, w) + b
        tf.nn.softmax(logits, name="probs")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            t0 = time.perf_counter()
            graph_def = v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["probs"])
            return graph_def, time.perf_counter() - t0


BUILDERS = {"keras_app": _keras_app, "lstm": _lstm, "tf1": _tf1}
FREEZER = {
    "keras_app": "convert_variables_to_constants_v2",
    "lstm": "convert_variables_to_constants_v2",
    "tf1": "tf.compat.v1.graph_util.convert_variables_to_constants (TF1 Session freezer)",
}


def freeze(spec: Spec, write: bool) -> dict:
    """Build and freeze `spec`; time the freeze (and writing the .pb); cache it when asked."""
    import tensorflow as tf  # noqa: PLC0415

    graph_def, seconds = BUILDERS[spec.kind](tf, spec)
    t0 = time.perf_counter()
    data = graph_def.SerializeToString()
    serialize = time.perf_counter() - t0
    if write:
        os.makedirs(os.path.dirname(spec.path), exist_ok=True)
        tmp = spec.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, spec.path)
    return {
        "seconds": seconds + serialize,
        "freeze_call": seconds,
        "serialize": serialize,
        "bytes": len(data),
        "nodes": len(graph_def.node),
    }
