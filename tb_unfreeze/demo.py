"""The demo: two real frozen models of scikit-learn's digits, logged into a TensorBoard logdir, and a server.

`prepare_demo` trains a small Keras convnet and freezes it with TensorFlow's own TF2 freezer
(`convert_variables_to_constants_v2`, weights named after their `ReadVariableOp`), and a TF1-style MLP frozen with
`graph_util.convert_variables_to_constants` (weights named `fc1/weights`, read through `fc1/weights/read`), so both
naming schemes show in the Unfreeze tab. The data ships inside scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np

from tb_unfreeze import errors
from tb_unfreeze.output_dir import write_file_atomic
from tb_unfreeze.tensorflow_env import import_tensorflow

CONVNET_FILE = "digits_convnet.pb"
TF1_MLP_FILE = "digits_tf1_mlp.pb"
CONVNET_INPUT = "image"  # the frozen convnet's placeholder: float32 [None, 8, 8, 1], pixels in [0, 1]
TF1_MLP_INPUT = "pixels"  # the TF1 MLP's placeholder: float32 [None, 64]
TF1_MLP_OUTPUT = "probabilities"
SEED = 0


@dataclasses.dataclass
class Digits:
    """scikit-learn's 8x8 digits, split once and for all (pixels scaled to [0, 1])."""

    x_train: np.ndarray  # float32 [n, 8, 8, 1]
    y_train: np.ndarray  # int64 [n]
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits(seed: int = SEED) -> Digits:
    """The digits data set, deterministically split into 2/3 train and 1/3 test."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits  # noqa: PLC0415 (optional dependency)
    except ImportError as e:
        raise errors.UserError(
            "The demo needs scikit-learn for its digits data: run `pip install scikit-learn`."
        ) from e
    data = sk_load_digits()
    x = (data.images.astype(np.float32) / 16.0)[..., None]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_train = len(y) * 2 // 3
    return Digits(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def _tf():
    # TensorFlow is imported only by the steps that execute a model; its start-up chatter is not the user's concern.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = import_tensorflow()

    return tf


def train_convnet(digits: Digits, epochs: int = 12, seed: int = SEED):
    """A small Keras 3 convnet (conv, batch norm, conv, dense) trained on the digits; returns the model."""
    tf = _tf()
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name=CONVNET_INPUT),
            keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, activation="softmax", name="probabilities"),
        ],
        name="digits_convnet",
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with tf.device("/cpu:0"):
        model.fit(digits.x_train, digits.y_train, batch_size=64, epochs=epochs, verbose=0, shuffle=True)
    return model


def freeze_keras_model(model) -> bytes:
    """Freeze a Keras model the way most users' `.pb` files were made: TF2's `convert_variables_to_constants_v2`."""
    tf = _tf()
    from tensorflow.python.framework.convert_to_constants import (  # noqa: PLC0415
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=CONVNET_INPUT)
    concrete = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    return frozen.graph.as_graph_def().SerializeToString(deterministic=True)


def train_and_freeze_tf1_mlp(digits: Digits, steps: int = 300, seed: int = SEED) -> bytes:
    """A TF1-style MLP (reference variables, `tf.compat.v1` graph and session), frozen with TF1's freezer."""
    tf = _tf()
    v1 = tf.compat.v1
    x_train = digits.x_train.reshape(len(digits.x_train), 64)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        pixels = v1.placeholder(tf.float32, [None, 64], name=TF1_MLP_INPUT)
        labels = v1.placeholder(tf.int64, [None], name="labels")
        hidden = pixels
        init = v1.glorot_uniform_initializer(seed=seed)
        for scope, units in [("fc1", 64), ("fc2", 32), ("logits", 10)]:
            with v1.variable_scope(scope):
                # use_resource=False: reference variables, read through `<name>/read` like pre-2.0 graphs.
                w = v1.get_variable("weights", [hidden.shape[1], units], initializer=init, use_resource=False)
                b = v1.get_variable("biases", [units], initializer=v1.zeros_initializer(), use_resource=False)
                hidden = tf.nn.bias_add(tf.matmul(hidden, w), b)
                if scope != "logits":
                    hidden = tf.nn.relu(hidden)
        tf.nn.softmax(hidden, name=TF1_MLP_OUTPUT)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=hidden))
        train_op = v1.train.AdamOptimizer(1e-2).minimize(loss)
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            rng = np.random.default_rng(seed)
            for _ in range(steps):
                batch = rng.integers(0, len(x_train), 64)
                session.run(train_op, {pixels: x_train[batch], labels: digits.y_train[batch]})
            frozen = v1.graph_util.convert_variables_to_constants(session, graph.as_graph_def(), [TF1_MLP_OUTPUT])
    return frozen.SerializeToString(deterministic=True)


def prepare_demo(logdir: str = "out") -> list[str]:
    """Write the demo's frozen models into `logdir` and log their graphs for the Unfreeze tab.

    Returns the paths of the frozen graphs written (`digits_convnet.pb`, `digits_tf1_mlp.pb`). Deterministic: the
    same TensorFlow writes the same bytes. Existing demo files in `logdir` are replaced; nothing else is touched.
    """
    from tb_unfreeze import log_graphs  # noqa: PLC0415 (the core API; the demo never re-implements it)

    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise errors.OutputDirError(f"The demo logdir {logdir} is a file: pass --logdir a directory.")
    os.makedirs(logdir, exist_ok=True)
    digits = load_digits()
    written = []
    for filename, build in [
        (CONVNET_FILE, lambda: freeze_keras_model(train_convnet(digits))),
        (TF1_MLP_FILE, lambda: train_and_freeze_tf1_mlp(digits)),
    ]:
        path = os.path.join(logdir, filename)
        write_file_atomic(path, build())
        log_graphs(logdir, model_id_for(path), frozen=path)
        written.append(path)
    return written


def model_id_for(path: str) -> str:
    """The model id of a frozen graph at the top of the logdir: its file name, as the Unfreeze tab names it
    (a model's id is its path relative to the logdir), so the tab and the demo write the same runs."""
    return os.path.basename(path)


def serve(logdir: str = "out", host: str = "127.0.0.1", port: int = 6006) -> int:
    """Run TensorBoard on `logdir` (the Unfreeze tab is a registered plugin) until interrupted; returns its exit
    code."""
    if not os.path.isdir(logdir):
        raise errors.NotFoundError(f"The logdir {logdir} does not exist: run `tb-unfreeze demo --no-serve` first.")
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        logdir,
        "--host",
        host,
        "--port",
        str(port),
    ]
    print(f"TensorBoard on http://{host}:{port}/#unfreeze (Ctrl-C to stop)", flush=True)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
