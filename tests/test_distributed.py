"""Fine-tuning a converted model under tf.distribute.MirroredStrategy on two logical CPUs matches one device.

Logical devices must be configured before TensorFlow initialises, so the training runs in a fresh subprocess; the
conversion it trains is made here, through the public API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the demo's data ships with scikit-learn (pip install scikit-learn)")

from tb_unfreeze import convert  # noqa: E402
from tb_unfreeze.demo import freeze_keras_model, load_digits, train_convnet  # noqa: E402

# Two replicas each average half a batch and the strategy sums the halves: the same gradient up to float rounding.
RTOL, ATOL = 1e-4, 1e-5

WORKER = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np
    from tb_unfreeze.demo import load_digits
    from tb_unfreeze.finetune import build_model, finetune_model, shift_images

    saved_model, out = sys.argv[1], sys.argv[2]
    digits = load_digits()
    x, y = shift_images(digits.x_train[:512], "invert"), digits.y_train[:512]

    def train(strategy):
        model, layer, history = finetune_model(
            saved_model, x, y, epochs=2, batch_size=64, learning_rate=0.05, optimizer="sgd",
            strategy=strategy, shuffle=False,
        )
        names = [w.name for w in layer.weights]
        assert len(set(names)) == len(names), names  # compared by name, never by list order
        return {
            "replicas": model.distribute_strategy.num_replicas_in_sync,
            "variable_types": sorted({type(getattr(w, "value", w)).__name__ for w in layer.trainable_weights}),
            "loss": [float(v) for v in history.history["loss"]],
            "weights": weights_of(layer),
            "trainable": sorted(w.name for w in layer.trainable_weights),
        }

    def weights_of(layer):
        return {w.name: np.asarray(w.numpy()).tolist() for w in layer.weights}

    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    result = {"devices": devices, "initial": weights_of(build_model(saved_model)[1]), "single": train(None)}
    try:
        result["mirrored"] = train(tf.distribute.MirroredStrategy(devices))
    except Exception as e:  # reported by the tests that need it, so the single-device checks still run
        import traceback
        result["mirrored_error"] = "".join(traceback.format_exception_only(e)).strip() + " at " + "; ".join(
            f"{f.filename}:{f.lineno}" for f in traceback.extract_tb(e.__traceback__)[-3:])
    with open(out, "w") as f:
        json.dump(result, f)
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("distributed")
    digits = load_digits()
    frozen = tmp / "digits_convnet.pb"
    frozen.write_bytes(freeze_keras_model(train_convnet(digits, epochs=3)))
    manifest = convert(str(frozen), str(tmp / "converted")).to_json()
    out = tmp / "runs.json"
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, manifest["saved_model"], str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def _mirrored(runs) -> dict:
    assert "mirrored" in runs, f"fit under MirroredStrategy failed: {runs.get('mirrored_error')}"
    return runs["mirrored"]


def test_two_logical_devices_make_two_replicas(runs):
    assert len(runs["devices"]) == 2
    assert runs["single"]["replicas"] == 1
    _mirrored(runs)
    assert runs["mirrored"]["replicas"] == 2
    assert runs["mirrored"]["trainable"] == runs["single"]["trainable"]
    assert len(runs["single"]["trainable"]) == 7  # kernels, biases, gamma, beta; not the moving statistics


def test_mirrored_training_matches_single_device_training(runs):
    single, mirrored = runs["single"], _mirrored(runs)
    np.testing.assert_allclose(mirrored["loss"], single["loss"], rtol=RTOL, atol=ATOL)
    assert single["weights"].keys() == mirrored["weights"].keys()
    worst = 0.0
    for name, value in single["weights"].items():
        a, b = np.asarray(value), np.asarray(mirrored["weights"][name])
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=name)
        worst = max(worst, float(np.max(np.abs(a - b))))
    print(f"max abs weight difference, 2 replicas vs 1 device: {worst:.2e}")


def test_training_really_happened_and_only_to_trainable_weights(runs):
    single, initial = runs["single"], runs["initial"]
    assert single["loss"][-1] < single["loss"][0]
    assert initial.keys() == single["weights"].keys()
    for name, value in initial.items():
        changed = not np.array_equal(np.asarray(value), np.asarray(single["weights"][name]))
        assert changed == (name in single["trainable"]), name
