"""Fine-tuning a converted model with MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1, TF_CONFIG each.

Worker 0 runs `python -m tb_unfreeze.finetune`, worker 1 `tb-unfreeze finetune` (the documented cluster entry points)
on a small model frozen and converted here; the test process trains alone, with the same loop, on the same global
batches. The workers must end with equal weights, and those must equal single-worker training within 1e-5.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import installed_command

from tb_unfreeze import convert
from tb_unfreeze.finetune import finetune_distributed, layer_weights
from tb_unfreeze.keras import UnfrozenLayer

ATOL = 1e-5  # the target: two-worker weights equal single-worker weights within 1e-5
BATCH, EXAMPLES = 64, 256  # 2 epochs of 4 global batches, 32 examples per worker per step
TIMEOUT = 180


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _frozen_mlp() -> bytes:
    """Dense(16, relu) -> Dense(4, softmax) on 8 features, frozen with convert_variables_to_constants_v2."""
    import keras

    from tb_unfreeze.demo import freeze_keras_model

    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(4, activation="softmax", name="probabilities"),
        ]
    )
    return freeze_keras_model(model)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("multiworker")
    frozen = tmp / "mlp.pb"
    frozen.write_bytes(_frozen_mlp())
    manifest = convert(str(frozen), str(tmp / "converted")).to_json()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(EXAMPLES, 8)).astype(np.float32)
    y = (x[:, :4].argmax(1) + (x[:, 4] > 0)) % 4  # learnable labels
    np.savez(tmp / "data.npz", x=x, y=y)

    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    args = [
        manifest["out_dir"],
        "--data",
        str(tmp / "data.npz"),
        "--epochs",
        "2",
        "--batch-size",
        str(BATCH),
        "--learning-rate",
        "0.1",
        "--optimizer",
        "sgd",
    ]
    # Worker 0 through the module, worker 1 through the console script: the two documented entry points.
    commands = [
        [sys.executable, "-m", "tb_unfreeze.finetune", *args],
        [installed_command("tb-unfreeze"), "finetune", *args],
    ]
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    procs = {}
    started = time.perf_counter()
    for i in range(2):
        config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        procs[f"worker{i}"] = subprocess.Popen(
            commands[i] + ["--weights-out", str(tmp / f"worker{i}.npz"), "-o", str(tmp / f"finetuned{i}")],
            env={**env, "TF_CONFIG": json.dumps(config)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    out = {}
    try:
        # Meanwhile, the same loop in this process, without a cluster, on the same global batches.
        _, layer, losses = finetune_distributed(
            manifest["out_dir"], x, y, epochs=2, batch_size=BATCH, learning_rate=0.1, optimizer="sgd"
        )
        out["single"] = {
            "replicas": 1,
            "loss": losses,
            "weights": layer_weights(layer),
            "trainable": sorted(w.name for w in layer.trainable_weights),
        }
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, f"{name} failed:\n{stderr[-4000:]}"
            out[name] = json.loads(stdout.strip().splitlines()[-1])
            with np.load(tmp / f"{name}.npz") as w:
                out[name]["weights"] = dict(w)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    out["seconds"] = time.perf_counter() - started
    out["initial"] = layer_weights(UnfrozenLayer(manifest["saved_model"]))
    out["tmp"] = tmp
    return out


def test_two_workers_form_one_cluster(runs):
    print(f"2 workers (+ the single run here) took {runs['seconds']:.1f} s")
    assert runs["worker0"]["replicas"] == runs["worker1"]["replicas"] == 2
    assert runs["single"]["replicas"] == 1
    assert runs["worker0"]["chief"] and not runs["worker1"]["chief"]
    assert runs["worker0"]["trainable"] == runs["single"]["trainable"] and len(runs["single"]["trainable"]) == 4


def test_workers_agree_and_match_single_worker_training(runs):
    w0, w1, single = (runs[k]["weights"] for k in ("worker0", "worker1", "single"))
    assert w0.keys() == w1.keys() == single.keys()
    worst_between, worst_single = 0.0, 0.0
    for name in single:
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)  # all-reduced: bit for bit the same
        np.testing.assert_allclose(w0[name], single[name], rtol=0, atol=ATOL, err_msg=name)
        worst_between = max(worst_between, float(np.max(np.abs(w0[name] - w1[name]))))
        worst_single = max(worst_single, float(np.max(np.abs(w0[name] - single[name]))))
    np.testing.assert_allclose(runs["worker0"]["loss"], runs["single"]["loss"], rtol=1e-5)
    print(f"max abs diff: worker0 vs worker1 {worst_between:.1e}, 2 workers vs 1 {worst_single:.1e}")


def test_training_moved_the_weights_and_only_the_chief_wrote(runs):
    initial, single = runs["initial"], runs["single"]["weights"]
    assert initial.keys() == single.keys()
    assert all(not np.allclose(initial[n], single[n]) for n in runs["single"]["trainable"])
    assert (runs["tmp"] / "finetuned0" / "saved_model" / "saved_model.pb").is_file()
    assert not (runs["tmp"] / "finetuned1").exists()


def test_the_chiefs_result_refreezes_with_the_trained_weights(runs):
    from tb_unfreeze.refreeze import refreeze

    report = refreeze(str(runs["tmp"] / "finetuned0"), str(runs["tmp"] / "finetuned.pb"))
    assert report["verification"]["passed"]
    trained = layer_weights(UnfrozenLayer(str(runs["tmp"] / "finetuned0")))
    for name, value in runs["worker0"]["weights"].items():
        np.testing.assert_array_equal(trained[name], value, err_msg=name)
