"""The demo: real frozen digits models in both naming schemes, their graph runs, and a server with the tab."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("sklearn", reason="the demo's data ships with scikit-learn (pip install scikit-learn)")

from tb_unfreeze import errors, inspect_model  # noqa: E402
from tb_unfreeze.demo import CONVNET_FILE, TF1_MLP_FILE, load_digits, prepare_demo, serve  # noqa: E402


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> str:
    logdir = str(tmp_path_factory.mktemp("demo") / "out")
    started = time.perf_counter()
    paths = prepare_demo(logdir)
    prepare_demo.seconds = time.perf_counter() - started
    assert paths == [os.path.join(logdir, CONVNET_FILE), os.path.join(logdir, TF1_MLP_FILE)]
    return logdir


def test_digits_come_from_scikit_learn_split_deterministically():
    a, b = load_digits(), load_digits()
    assert a.x_train.shape == (1198, 8, 8, 1) and a.x_test.shape == (599, 8, 8, 1)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert (a.y_train == b.y_train).all() and set(a.y_test) == set(range(10))


def test_prepare_demo_is_fast(demo_dir):
    assert prepare_demo.seconds < 30


def test_convnet_is_frozen_by_tensorflows_own_freezer(demo_dir):
    ins = inspect_model(os.path.join(demo_dir, CONVNET_FILE)).to_dict()
    assert [i["name"] for i in ins["inputs"]] == ["image"]
    assert ins["inputs"][0]["shape"] == [-1, 8, 8, 1]
    assert len(ins["outputs"]) == 1
    roles = sorted(c["role"] for c in ins["candidates"])
    assert roles == sorted(
        ["kernel", "kernel", "kernel", "bias", "bias", "bn_gamma", "bn_beta", "bn_moving_mean", "bn_moving_variance"]
    )
    # TF2 names a weight after the op that read it; the variable name is rebuilt for display.
    assert all(c["name"].endswith("ReadVariableOp/resource") for c in ins["candidates"])
    assert any(c["variable_name"].endswith("conv1_1/kernel") for c in ins["candidates"])
    assert ins["control_flow"] == "none"


def test_tf1_mlp_keeps_variable_names_read_through_read_ops(demo_dir):
    ins = inspect_model(os.path.join(demo_dir, TF1_MLP_FILE)).to_dict()
    assert [i["name"] for i in ins["inputs"]] == ["pixels"]
    assert [o["name"] for o in ins["outputs"]] == ["probabilities"]
    by_name = {c["name"]: c for c in ins["candidates"]}
    assert sorted(by_name) == sorted(f"{s}/{w}" for s in ("fc1", "fc2", "logits") for w in ("weights", "biases"))
    assert by_name["fc1/weights"]["evidence"] == "read"
    assert by_name["fc1/weights"]["role"] == "kernel" and by_name["fc1/biases"]["role"] == "bias"


def test_both_graphs_are_logged_as_runs(demo_dir):
    for model_id in ("digits_convnet.pb", "digits_tf1_mlp.pb"):  # ids as the Unfreeze tab names them
        events = glob.glob(os.path.join(demo_dir, "unfreeze", model_id, "frozen", "events.out.tfevents.*"))
        assert events, f"no graph run for {model_id}"


def test_frozen_models_are_accurate_and_deterministic(demo_dir, tmp_path):
    from tb_unfreeze.finetune import frozen_metrics

    digits = load_digits()
    assert frozen_metrics(os.path.join(demo_dir, CONVNET_FILE), digits.x_test, digits.y_test)["accuracy"] > 0.9
    again = prepare_demo(str(tmp_path / "again"))
    for path in again:
        first = os.path.join(demo_dir, os.path.basename(path))
        with open(first, "rb") as a, open(path, "rb") as b:
            assert hashlib.sha256(a.read()).hexdigest() == hashlib.sha256(b.read()).hexdigest(), path


def test_a_file_as_logdir_is_a_user_error(tmp_path):
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    with pytest.raises(errors.UserError, match="not_a_dir"):
        prepare_demo(str(target))


def test_serving_a_missing_logdir_is_a_user_error(tmp_path):
    with pytest.raises(errors.NotFoundError, match="does not exist"):
        serve(str(tmp_path / "missing"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_tensorboard_with_the_unfreeze_tab(demo_dir):
    port = _free_port()
    code = f"from tb_unfreeze.demo import serve; serve({demo_dir!r}, '127.0.0.1', {port})"
    # A new session, so the server and the TensorBoard it starts stop together by their process group.
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline, listing = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugins_listing", timeout=2) as r:
                    listing = json.load(r)
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, proc.stderr.read().decode() if proc.poll() is not None else "no answer in 60 s"
        assert "unfreeze" in listing
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/graphs/info", timeout=10) as r:
            runs = json.load(r)
        assert any("digits_convnet" in run for run in runs), runs
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
