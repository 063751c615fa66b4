"""One benchmark step in a fresh process: `python -m bench.worker STEP RESULT.json ARGS...`.

The runner starts one worker per step and repetition, so each step's peak RSS (VmHWM) is its own. The worker
writes {"seconds": timed part, "hwm_kb": peak RSS of the whole process, "base_kb": RSS before the timed part,
...} to RESULT.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def step_import_tf() -> dict:
    t0 = time.perf_counter()
    import tensorflow  # noqa: F401, PLC0415

    return {"seconds": time.perf_counter() - t0}


def step_freeze(name: str, write: str) -> dict:
    import tensorflow  # noqa: F401, PLC0415

    from bench import models  # noqa: PLC0415

    return models.freeze(models.BY_NAME[name], write == "1")


def step_parse(path: str) -> dict:
    from tensorboard.compat.proto import graph_pb2  # noqa: PLC0415

    t0 = time.perf_counter()
    with open(path, "rb") as f:
        data = f.read()
    t1 = time.perf_counter()
    graph_def = graph_pb2.GraphDef()
    graph_def.ParseFromString(data)
    t2 = time.perf_counter()
    return {"seconds": t2 - t1, "read": t1 - t0, "read+parse": t2 - t0, "nodes": len(graph_def.node)}


def step_inspect(path: str) -> dict:
    from tb_unfreeze.analysis import inspect_graph  # noqa: PLC0415
    from tb_unfreeze.loading import load_graph  # noqa: PLC0415

    t0 = time.perf_counter()
    graph = load_graph(path)  # inspect_model(path) is exactly these two calls
    tl = time.perf_counter()
    ins = inspect_graph(graph)
    t1 = time.perf_counter()
    d = ins.to_dict()
    t2 = time.perf_counter()
    return {
        "seconds": t1 - t0,
        "load": tl - t0,
        "analysis": t1 - tl,
        "to_dict": t2 - t1,
        "candidates": d["totals"]["candidates"],
        "recommended": d["totals"]["recommended"],
    }


def step_convert(path: str, out: str, verify: str) -> dict:
    t0 = time.perf_counter()
    import tensorflow  # noqa: F401, PLC0415

    import_tf = time.perf_counter() - t0
    base = _status_kb("VmRSS")
    from tb_unfreeze import convert  # noqa: PLC0415

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = convert(path, out, verify=verify == "1")
    seconds = time.perf_counter() - t0
    ver = result.verification
    return {
        "seconds": seconds,
        "import_tf": import_tf,
        "base_kb": base,
        "timings": result.timings,
        "variables": result.totals["variables"],
        "verified": ver.passed,
        "status": ver.status,
        "verify_note": ver.note,
        "tf1_process": (ver.details.get("tf1_session") or {}).get("process"),
        "tf1_process_peak_mb": (ver.details.get("tf1_session") or {}).get("process_peak_mb"),
    }


def step_recipe(path: str, out: str) -> dict:
    import tensorflow  # noqa: F401, PLC0415

    from bench.recipe import run_recipe  # noqa: PLC0415
    from tb_unfreeze import inspect_model  # noqa: PLC0415

    names = [c.name for c in inspect_model(path).candidates if c.recommended]  # same set as convert
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    timings = run_recipe(path, out, names)
    return {"seconds": time.perf_counter() - t0, "timings": timings, "variables": len(names)}


def step_io_floor(path: str, out: str) -> dict:
    """The least any converter must do: parse the graph and write its weight bytes once, as a checkpoint would."""
    from tensorboard.compat.proto import graph_pb2  # noqa: PLC0415

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    t0 = time.perf_counter()
    graph_def = graph_pb2.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    t1 = time.perf_counter()
    written = 0
    with open(os.path.join(out, "variables.data-00000-of-00001"), "wb") as f:
        for node in graph_def.node:
            if node.op == "Const":
                content = node.attr["value"].tensor.tensor_content
                if content:
                    written += f.write(content)
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "parse": t1 - t0, "write": t2 - t1, "written": written}


def step_plugin(path: str, logdir: str, warm_reps: str) -> dict:
    """GET /data/plugin/unfreeze/candidates through TensorBoard's WSGI app: first (cold) then warm requests."""
    from tensorboard.backend import application  # noqa: PLC0415
    from tensorboard.plugins import base_plugin  # noqa: PLC0415
    from werkzeug import test as werkzeug_test  # noqa: PLC0415
    from werkzeug import wrappers  # noqa: PLC0415

    from tb_unfreeze.plugin.plugin import UnfreezePlugin  # noqa: PLC0415

    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    target = os.path.join(logdir, os.path.basename(path))
    try:
        os.link(path, target)
    except OSError:
        shutil.copyfile(path, target)
    model_id = os.path.basename(path)
    plugin = UnfreezePlugin(base_plugin.TBContext(logdir=logdir, flags=None), scan_interval=0)
    app = application.TensorBoardWSGI([plugin])
    client = werkzeug_test.Client(app, wrappers.Response)
    url = f"/data/plugin/unfreeze/candidates?model={model_id}"
    times = []
    for _ in range(1 + int(warm_reps)):
        t0 = time.perf_counter()
        r = client.get(url)
        body = r.get_data()
        times.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {body[:300]!r}")
    stop = getattr(plugin, "stop", None)
    if stop:
        stop()
    warm = sorted(times[1:])
    return {
        "seconds": times[0],
        "cold": times[0],
        "warm": warm[len(warm) // 2],
        "warm_all": times[1:],
        "response_bytes": len(body),
    }


def step_frontend(path: str, logdir: str, loads: str = "5") -> dict:
    from bench.frontend import measure  # noqa: PLC0415

    return measure(path, logdir, int(loads))


def step_fwdbwd(name: str, batch: str = "2") -> dict:
    """The floor of any verification: one forward and backward pass of the same Keras model (random weights), loss
    and gradients of every trainable variable in one tf.function. `seconds` is the first call (tracing, graph
    optimisation and the run: verification pays this too, once per path); `steady` the median of 3 later calls."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from bench import models  # noqa: PLC0415

    spec = models.BY_NAME[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, spec.arg)(weights=None, input_shape=(spec.input_hw, spec.input_hw, 3))
    x = tf.random.uniform([int(batch), spec.input_hw, spec.input_hw, 3])

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=False))
        return loss, tape.gradient(loss, model.trainable_variables)

    t0 = time.perf_counter()
    loss, grads = step(x)
    float(loss)
    first = time.perf_counter() - t0
    later = []
    for _ in range(3):
        t0 = time.perf_counter()
        float(step(x)[0])
        later.append(time.perf_counter() - t0)
    return {"seconds": first, "steady": sorted(later)[1], "variables": len(grads)}


def step_plugin_convert(path: str, logdir: str, clicks: str = "2") -> dict:
    """The tab's path without the browser: TensorBoard's WSGI app with the Unfreeze plugin; GET /models (the tab is
    opened: the warm worker starts), wait until it has imported TensorFlow (a user reading the candidate table), then
    POST /convert (verify on, as the tab does) and poll /jobs every 50 ms until done: `clicks` times."""
    from tensorboard.backend import application  # noqa: PLC0415
    from tensorboard.plugins import base_plugin  # noqa: PLC0415
    from werkzeug import test as werkzeug_test  # noqa: PLC0415
    from werkzeug import wrappers  # noqa: PLC0415

    from tb_unfreeze import worker  # noqa: PLC0415
    from tb_unfreeze.plugin.plugin import UnfreezePlugin  # noqa: PLC0415

    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    model_id = os.path.basename(path)
    try:
        os.link(path, os.path.join(logdir, model_id))
    except OSError:
        shutil.copyfile(path, os.path.join(logdir, model_id))
    plugin = UnfreezePlugin(base_plugin.TBContext(logdir=logdir, flags=None), scan_interval=0)
    client = werkzeug_test.Client(application.TensorBoardWSGI([plugin]), wrappers.Response)
    api = "/data/plugin/unfreeze"
    t_open = time.perf_counter()
    assert client.get(f"{api}/models").status_code == 200
    runs = []
    for _ in range(int(clicks)):
        ready = worker.POOL.wait_ready()
        waited = time.perf_counter() - t_open
        t0 = time.perf_counter()
        r = client.post(
            f"{api}/convert",
            data=json.dumps({"model": model_id}),
            content_type="application/json",
            headers={"X-XSRF-Protected": "1"},
        )
        if r.status_code != 200:
            raise RuntimeError(f"POST /convert: HTTP {r.status_code}: {r.get_data()[:300]!r}")
        job_id = json.loads(r.get_data())["job"]["id"]
        steps: list[str] = []
        while True:
            job = json.loads(client.get(f"{api}/jobs?id={job_id}").get_data())["job"]
            if not steps or steps[-1] != job["progress"]["step"]:
                steps.append(job["progress"]["step"])
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        if job["state"] != "done":
            raise RuntimeError(f"conversion through the plugin failed: {job['error']}")
        from tb_unfreeze.contract import ConversionResult  # noqa: PLC0415

        result = ConversionResult.from_json(json.loads(client.get(f"{api}/manifest?model={model_id}").get_data()))
        runs.append(
            {
                "seconds": seconds,
                "ready": ready,
                "waited_for_worker": waited,
                "steps": steps,
                "pid": worker.POOL.last_pid,
                "timings": result.timings,
                "verified": result.verification.passed,
                "status": result.verification.status,
            }
        )
        t_open = time.perf_counter()
    plugin.stop()
    worker.POOL.shutdown()
    return {"seconds": runs[0]["seconds"], "runs": runs}


def step_click(path: str, logdir: str, clicks: str = "2") -> dict:
    from bench.frontend import click_to_done  # noqa: PLC0415

    return click_to_done(path, logdir, int(clicks))


STEPS = {
    "import_tf": step_import_tf,
    "freeze": step_freeze,
    "parse": step_parse,
    "inspect": step_inspect,
    "convert": step_convert,
    "recipe": step_recipe,
    "io_floor": step_io_floor,
    "plugin": step_plugin,
    "frontend": step_frontend,
    "fwdbwd": step_fwdbwd,
    "plugin_convert": step_plugin_convert,
    "click": step_click,
}


def main(argv: list[str]) -> int:
    step, result_path, *args = argv
    result = STEPS[step](*args)
    result["hwm_kb"] = _status_kb("VmHWM")
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
