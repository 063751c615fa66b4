"""Eight simultaneous conversion requests against a real `tensorboard` process (loopback only).

Four requests for the same model and one each for four other models arrive at once. Each is accepted or refused
cleanly (409 while that model is queued or running); every accepted job finishes; the outputs are complete and
consistent (manifest, SavedModel that TensorFlow loads with the recorded variables, one history line per job,
no temporary folders); and the read routes (`/models`, the Graphs plugin's `/info`) keep answering meanwhile
within a bounded latency. All loops are bounded; the server is stopped by its PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import installed_command

from tb_unfreeze.output_dir import TMP_PREFIX

BASE = "/data/plugin/unfreeze"
START_TIMEOUT = 90  # s for TensorBoard to answer
JOBS_TIMEOUT = 300  # s for all conversions (one worker: they run one after another)
MAX_READ_LATENCY = 5.0  # s for a read route while conversions run
SAME = "same.pb"
OTHERS = {
    "b.pb": "tf2onnx_regression.pb",
    "sub/c.pb": "tf2onnx_regression.pb",
    "voice.pb": "hollance_voice_logreg.pb",
    "fc.pb": "tf2onnx_fc_layers.pb",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, str, float]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"} if body is not None else {}
    started = time.monotonic()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=timeout) as r:
            return r.status, r.read().decode(), time.monotonic() - started
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), time.monotonic() - started


@pytest.fixture(scope="module")
def server(tmp_path_factory, real_model):
    logdir = tmp_path_factory.mktemp("concurrency") / "logdir"
    (logdir / "sub").mkdir(parents=True)
    shutil.copyfile(real_model("tf2onnx_regression.pb"), logdir / SAME)
    for model_id, source in OTHERS.items():
        shutil.copyfile(real_model(source), logdir / model_id)
    port = _free_port()
    log = open(logdir.parent / "tensorboard.log", "w")
    proc = subprocess.Popen(
        [
            installed_command("tensorboard"),
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {proc.returncode}: {open(log.name).read()[-2000:]}")
            try:
                if _request(f"{url}{BASE}/models", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"tensorboard did not answer in {START_TIMEOUT} s")
        yield {"url": url, "logdir": str(logdir), "log": log.name}
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_eight_simultaneous_conversions(server):
    url, logdir = server["url"], server["logdir"]
    ids = [SAME] * 4 + list(OTHERS)
    barrier = threading.Barrier(len(ids))
    answers: list = [None] * len(ids)

    def send(i: int, model_id: str) -> None:
        barrier.wait(10)
        answers[i] = _request(f"{url}{BASE}/convert", {"model": model_id})

    threads = [threading.Thread(target=send, args=(i, m)) for i, m in enumerate(ids)]
    for t in threads:
        t.start()

    # the read routes keep answering while the conversions run
    latencies, read_errors = [], []
    jobs: dict[str, str] = {}
    deadline = time.monotonic() + JOBS_TIMEOUT
    done = False
    while time.monotonic() < deadline and not done:
        for route in (f"{BASE}/models", "/data/plugin/graphs/info", f"{BASE}/jobs"):
            status, text, seconds = _request(url + route, timeout=MAX_READ_LATENCY * 4)
            latencies.append(seconds)
            if status != 200:
                read_errors.append((route, status, text[:200]))
        if all(a is not None for a in answers):
            for t in threads:
                t.join(1)
            jobs = {
                json.loads(text)["job"]["id"]: ids[i] for i, (status, text, _) in enumerate(answers) if status == 200
            }
            states = {j["id"]: j["state"] for j in json.loads(_request(f"{url}{BASE}/jobs")[1])["jobs"]}
            done = all(states.get(j) in ("done", "failed") for j in jobs)
        time.sleep(0.3)
    assert done, f"jobs not finished after {JOBS_TIMEOUT} s: {answers}"
    assert not read_errors, read_errors
    assert max(latencies) < MAX_READ_LATENCY, f"a read took {max(latencies):.1f} s"

    # every request was accepted or refused cleanly
    for i, (status, text, _) in enumerate(answers):
        assert status in (200, 409), (ids[i], status, text)
        if status == 409:
            assert ids[i] == SAME and "already being converted" in text
    accepted = sorted(jobs.values())
    assert accepted.count(SAME) >= 1 and set(OTHERS) <= set(accepted)
    assert sum(status == 409 for status, _, _ in answers) >= 1, "four requests for one model all accepted"

    # every job finished well, and its output is complete and consistent with its record
    for job_id, model_id in jobs.items():
        job = json.loads(_request(f"{url}{BASE}/jobs?id={job_id}")[1])["job"]
        assert job["state"] == "done", (model_id, job["error"])
        assert job["result"]["verification"]["passed"] is True, (model_id, job["result"]["verification"])
    models = {m["id"]: m for m in json.loads(_request(f"{url}{BASE}/models")[1])["models"]}
    for model_id in set(jobs.values()):
        assert models[model_id]["status"] == "converted", models[model_id]
        manifest = json.loads(_request(f"{url}{BASE}/manifest?model={model_id}")[1])
        with open(os.path.join(logdir, model_id), "rb") as f:
            assert manifest["source"]["sha256"] == hashlib.sha256(f.read()).hexdigest()
        history = json.loads(_request(f"{url}{BASE}/history?model={model_id}")[1])["history"]
        assert len(history) == list(jobs.values()).count(model_id) and all(h["ok"] for h in history)
        latest = {h["job"] for h in history}
        assert latest == {j for j, m in jobs.items() if m == model_id}
    leftovers = [os.path.join(d, n) for d, dirs, _ in os.walk(logdir) for n in dirs if n.startswith(TMP_PREFIX)]
    assert not leftovers, leftovers

    # TensorFlow loads each SavedModel with exactly the variables its manifest lists (one child process for all)
    outputs = {m: os.path.join(logdir, "unfreeze", m, "model") for m in set(jobs.values())}
    script = (
        "import json, sys, tensorflow as tf\n"
        "out = {}\n"
        "for model_id, d in json.loads(sys.argv[1]).items():\n"
        "    m = tf.saved_model.load(d + '/saved_model')\n"
        "    out[model_id] = sorted(v.name.split(':')[0] for v in m.variables)\n"
        "print(json.dumps(out))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, json.dumps(outputs)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    variables = json.loads(loaded.stdout.strip().splitlines()[-1])
    for model_id, d in outputs.items():
        with open(os.path.join(d, "unfreeze.json")) as f:
            manifest = json.load(f)
        assert variables[model_id] == sorted(v["variable_name"] for v in manifest["variables"]), model_id
    print(
        f"\nconcurrency: {len(ids)} POSTs ({len(jobs)} accepted, {len(ids) - len(jobs)} refused 409), "
        f"{len(latencies)} reads during conversions, max latency {max(latencies):.2f} s"
    )


def test_server_still_healthy_after_the_burst(server):
    status, text, seconds = _request(f"{server['url']}/data/plugins_listing")
    assert status == 200 and "unfreeze" in json.loads(text)
    with open(server["log"]) as f:
        log = f.read()
    assert "Traceback" not in log, log[-3000:]
