"""The Unfreeze plugin over TensorBoard's full WSGI stack, on copies of real frozen graphs in a temporary logdir.

Every request goes through `TensorBoardWSGI` as a browser's would; the Graphs plugin, fed by a real
`EventMultiplexer`, shows which runs the Unfreeze plugin wrote. Conversions run TensorFlow for real.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.graph import graphs_plugin
from tensorboard.util import tensor_util
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

import tb_unfreeze
from tb_unfreeze.plugin import graph_view, security
from tb_unfreeze.plugin.plugin import UnfreezePlugin

BASE = "/data/plugin/unfreeze"
REGRESSION = "tf2onnx_regression.pb"  # 8 nodes, candidates W and b
FC = "sub/tf2onnx_fc_layers.pb"
XSRF = {"X-XSRF-Protected": "1"}
JOB_TIMEOUT = 300


def _copy_tree(src: str, dst: str) -> None:
    """Copy without the read-only modes of the shared folder (so the test can clean up)."""
    for dirpath, _, filenames in os.walk(src):
        target = os.path.join(dst, os.path.relpath(dirpath, src))
        os.makedirs(target, exist_ok=True)
        for name in filenames:
            shutil.copyfile(os.path.join(dirpath, name), os.path.join(target, name))


@pytest.fixture
def logdir(tmp_path, real_model) -> str:
    """A logdir as users have them: models among event files, a SavedModel, junk and our own output tree."""
    d = tmp_path / "logdir"
    (d / "sub").mkdir(parents=True)
    shutil.copyfile(real_model("tf2onnx_regression.pb"), d / REGRESSION)
    shutil.copyfile(real_model("tf2onnx_fc_layers.pb"), d / FC)
    _copy_tree(real_model("tf2onnx_regression"), str(d / "exported" / "saved"))  # a SavedModel: skipped
    (d / "exported" / "saved" / "variables" / "extra.pb").write_bytes(b"")  # inside a SavedModel: skipped
    (d / "garbage.pb").write_bytes(b"\x00\x01 this is not a graph")  # listed as invalid
    (d / "events.out.tfevents.1.host.pb").write_bytes(b"")  # an event file: skipped
    (d / "unfreeze" / "old").mkdir(parents=True)
    shutil.copyfile(real_model("tf2onnx_regression.pb"), d / "unfreeze" / "old" / "copy.pb")  # our outputs: skipped
    (tmp_path / "outside").mkdir()
    shutil.copyfile(real_model("tf2onnx_regression.pb"), tmp_path / "outside" / "secret.pb")
    return str(d)


@pytest.fixture
def plugin(logdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # TensorBoard passes --logdir as typed: relative here
    p = UnfreezePlugin(base_plugin.TBContext(logdir="logdir", flags=None), scan_interval=0)
    yield p
    p.stop()


def client_for(plugin: UnfreezePlugin, logdir: str) -> werkzeug_test.Client:
    """The Unfreeze and Graphs plugins behind TensorBoard's WSGI app, with the logdir's runs loaded now."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    graphs = graphs_plugin.GraphsPlugin(base_plugin.TBContext(logdir=logdir, data_provider=provider))
    app = application.TensorBoardWSGI([plugin, graphs], data_provider=provider)
    return werkzeug_test.Client(app, wrappers.Response)


@pytest.fixture
def client(plugin, logdir):
    return client_for(plugin, logdir)


def graph_runs(plugin, logdir) -> dict:
    r = client_for(plugin, logdir).get("/data/plugin/graphs/info")
    assert r.status_code == 200
    return {run: info["run_graph"] for run, info in r.json.items()}


def tree(path: str) -> dict:
    """Every file under `path` with its size and mtime: to show a refusal wrote nothing."""
    out = {}
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            full = os.path.join(dirpath, name)
            st = os.stat(full)
            out[os.path.relpath(full, path)] = (st.st_size, st.st_mtime_ns)
    return out


def convert(client, body: dict, headers: dict | None = None, **kw):
    return client.post(
        f"{BASE}/convert",
        data=json.dumps(body),
        content_type="application/json",
        headers={**XSRF, **(headers or {})},
        **kw,
    )


def wait_done(plugin, job_id: str) -> dict:
    job = plugin.jobs.wait(job_id, JOB_TIMEOUT)
    return job.to_dict()


# -- listing and candidates -----------------------------------------------------------------------------------


def test_lists_frozen_graphs_and_skips_saved_models_event_files_and_own_outputs(client):
    r = client.get(f"{BASE}/models")
    assert r.status_code == 200 and r.mimetype == "application/json"
    models = {m["id"]: m for m in r.json["models"]}
    assert set(models) == {REGRESSION, FC, "garbage.pb"}
    assert models[REGRESSION]["status"] == "frozen"
    assert models[REGRESSION]["size"] == 350 and models[REGRESSION]["totals"]["candidates"] == 2
    assert models[FC]["path"].endswith(os.path.join("logdir", "sub", "tf2onnx_fc_layers.pb"))
    assert models["garbage.pb"]["status"] == "invalid"
    assert "garbage.pb" in models["garbage.pb"]["message"]
    assert models[REGRESSION]["latest"] is None and models[REGRESSION]["job"] is None


def test_model_dropped_in_later_appears_without_restart(client, logdir, real_model):
    assert "late.pb" not in {m["id"] for m in client.get(f"{BASE}/models").json["models"]}
    shutil.copyfile(real_model("tf2onnx_regression.pb"), os.path.join(logdir, "late.pb"))
    assert "late.pb" in {m["id"] for m in client.get(f"{BASE}/models").json["models"]}


def test_extra_model_folders_are_listed(logdir, tmp_path, real_model):
    extra = tmp_path / "zoo"
    extra.mkdir()
    shutil.copyfile(real_model("hollance_voice_logreg.pb"), extra / "voice.pb")
    p = UnfreezePlugin(base_plugin.TBContext(logdir=logdir, flags=None), model_dirs=[str(extra)], scan_interval=0)
    c = client_for(p, logdir)
    assert "voice.pb" in {m["id"] for m in c.get(f"{BASE}/models").json["models"]}
    assert c.get(f"{BASE}/candidates?model=voice.pb").status_code == 200


def test_unchanged_file_is_parsed_once_and_a_changed_one_again(plugin, logdir):
    model = plugin.discovery.get(REGRESSION)
    first = plugin.discovery.parsed(model)
    assert plugin.discovery.parsed(plugin.discovery.get(REGRESSION)) is first
    os.utime(os.path.join(logdir, REGRESSION), ns=(1, 10**18))
    assert plugin.discovery.parsed(plugin.discovery.get(REGRESSION)) is not first


def test_candidates_are_exactly_the_inspect_json(client, logdir):
    r = client.get(f"{BASE}/candidates?model={FC}")
    assert r.status_code == 200
    expected = tb_unfreeze.inspect_model(os.path.realpath(os.path.join(logdir, FC))).to_dict()
    assert r.json == json.loads(json.dumps(expected))
    assert [c["name"] for c in r.json["candidates"]]


def test_candidates_of_an_invalid_file_is_a_4xx_naming_it(client):
    r = client.get(f"{BASE}/candidates?model=garbage.pb")
    assert 400 <= r.status_code < 500 and "garbage.pb" in r.get_data(as_text=True)


def test_frozen_graph_run_is_logged_at_discovery(client, plugin, logdir):
    client.get(f"{BASE}/models")
    assert graph_runs(plugin, logdir).get(f"unfreeze/{REGRESSION}/frozen") is True
    assert all(not run.startswith("unfreeze/old") for run in graph_runs(plugin, logdir))


def test_frozen_graph_view_before_conversion(client):
    r = client.get(f"{BASE}/graph?model={REGRESSION}&which=frozen")
    assert r.status_code == 200
    nodes = {n["name"]: n for n in r.json["nodes"]}
    assert nodes["W"]["op"] == "Const" and nodes["W"]["dtype"] == "float32"
    assert "W" in nodes["W/read"]["inputs"]
    assert r.json["converted"] == [] and r.json["run"] == f"unfreeze/{REGRESSION}/frozen"


def test_graph_response_is_built_once_and_revalidated_by_its_etag(client, monkeypatch):
    built = []
    compact = graph_view.compact
    monkeypatch.setattr(graph_view, "compact", lambda *a, **k: built.append(1) or compact(*a, **k))
    url = f"{BASE}/graph?model={REGRESSION}&which=frozen"
    first = client.get(url)
    assert first.status_code == 200 and first.headers["ETag"].startswith('"')
    zipped = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.headers["ETag"] == first.headers["ETag"]
    assert json.loads(gzip.decompress(zipped.data)) == first.json
    again = client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert client.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200
    assert built == [1], "built and encoded once, then served from the cache"


def test_a_finished_conversion_has_both_graph_panes_ready_before_they_are_asked(client, plugin, monkeypatch):
    built, manifests = [], []
    compact = graph_view.compact
    monkeypatch.setattr(graph_view, "compact", lambda *a, **k: built.append(1) or compact(*a, **k))
    manifest_impl = plugin.manifest_impl
    monkeypatch.setattr(plugin, "manifest_impl", lambda *a: manifests.append(1) or manifest_impl(*a))
    job = convert(client, {"model": REGRESSION}).json["job"]
    assert wait_done(plugin, job["id"])["state"] == "done"
    deadline = time.time() + 60
    while len(built) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(built) == 2, "both panes built in the background after the conversion"
    unfrozen = client.get(f"{BASE}/graph?model={REGRESSION}&which=unfrozen")
    frozen = client.get(f"{BASE}/graph?model={REGRESSION}&which=frozen")
    assert unfrozen.status_code == frozen.status_code == 200 and unfrozen.json["converted"] == ["W", "b"]
    assert len(built) == 2, "opening the result built nothing more"
    assert manifests == [1], "the manifest was encoded in the background"
    manifest = client.get(f"{BASE}/manifest?model={REGRESSION}")
    assert manifest.status_code == 200 and manifest.json["totals"]["variables"] == 2
    assert manifests == [1], "and served as it was encoded"


def test_candidates_are_encoded_once_per_version_of_the_model_file(client, plugin, logdir, monkeypatch):
    calls = []
    candidates_impl = plugin.candidates_impl
    monkeypatch.setattr(plugin, "candidates_impl", lambda *a: calls.append(1) or candidates_impl(*a))
    first = client.get(f"{BASE}/candidates?model={REGRESSION}")
    again = client.get(f"{BASE}/candidates?model={REGRESSION}", headers={"If-None-Match": first.headers["ETag"]})
    assert first.status_code == 200 and again.status_code == 304 and calls == [1]
    # A new version of the file (another size and time) is inspected and encoded again.
    path = os.path.join(logdir, REGRESSION)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data + b"")
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    plugin.discovery.scan(force=True)
    third = client.get(f"{BASE}/candidates?model={REGRESSION}")
    assert third.status_code == 200 and third.json == first.json and calls == [1, 1]


def test_weights_of_a_frozen_constant(client, plugin):
    r = client.get(f"{BASE}/weights?model={REGRESSION}&node=W")
    assert r.status_code == 200, r.get_data(as_text=True)
    stats = r.json
    node = next(n for n in plugin.discovery.graph(plugin.discovery.get(REGRESSION)).graph_def.node if n.name == "W")
    values = tensor_util.make_ndarray(node.attr["value"].tensor).ravel()  # TensorBoard's own decoder
    assert stats["dtype"] == "float32" and stats["size"] == values.size and "variable" not in stats
    assert np.isclose(stats["mean"], values.mean()) and np.isclose(stats["std"], values.std())
    assert stats["min"] == float(values.min()) and stats["max"] == float(values.max())
    assert len(stats["histogram"]["counts"]) + 1 == len(stats["histogram"]["edges"])
    assert stats["first"] == [float(x) for x in values[:16]]
    assert client.get(f"{BASE}/weights?model={REGRESSION}&node=W/read").status_code == 404  # no constant
    assert client.get(f"{BASE}/weights?model={REGRESSION}").status_code == 400


def test_weight_drift_between_two_frozen_graphs(client, plugin, logdir):
    """A copy of the model with one weight moved (as fine-tuning and re-freezing would): that weight, by how much."""
    from tensorboard.compat.proto import graph_pb2

    g = graph_pb2.GraphDef()
    with open(os.path.join(logdir, REGRESSION), "rb") as f:
        g.ParseFromString(f.read())
    w = next(n for n in g.node if n.name == "W")
    values = tensor_util.make_ndarray(w.attr["value"].tensor).astype(np.float32)
    moved = values + 0.5
    w.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(moved))
    with open(os.path.join(logdir, "tuned.pb"), "wb") as f:
        f.write(g.SerializeToString())
    r = client.get(f"{BASE}/drift?model={REGRESSION}&other=tuned.pb")
    assert r.status_code == 200, r.get_data(as_text=True)
    d = r.json
    assert d["changed"] == 1 and d["weights"][0]["name"] == "W" and d["weights"][0]["changed"] is True
    assert np.isclose(d["weights"][0]["max_abs_diff"], 0.5) and np.isclose(d["weights"][0]["mean_abs_diff"], 0.5)
    expected = np.linalg.norm(moved.astype(np.float64) - values) / np.linalg.norm(values.astype(np.float64))
    assert np.isclose(d["weights"][0]["relative"], expected)
    assert all(not x["changed"] for x in d["weights"][1:])
    assert client.get(f"{BASE}/drift?model={REGRESSION}").status_code == 400
    assert client.get(f"{BASE}/drift?model={REGRESSION}&other=nope.pb").status_code == 404


# -- conversion -----------------------------------------------------------------------------------------------


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def post_probe(client, model: str, data: bytes, content_type: str = "application/octet-stream", headers=XSRF):
    return client.post(f"{BASE}/probe?model={model}", data=data, content_type=content_type, headers=headers)


def _hold_lock(plugin, model_id: str, purpose: str, seconds: float) -> threading.Thread:
    """Another TensorBoard on this logdir holding the model's lock (a separate Outputs, as another process has)."""
    from tb_unfreeze.plugin.outputs import Outputs

    taken = threading.Event()

    def hold() -> None:
        with Outputs(plugin.outputs.logdir).lock(model_id, wait=True, purpose=purpose):
            taken.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10)
    return thread


def test_a_conversion_waits_for_the_frozen_run_being_logged_but_not_for_another_conversion(client, plugin):
    """Clicking Convert while the plugin logs the frozen graph run (large graphs: seconds) converts once that is
    done; a conversion by another TensorBoard is refused at once, in one sentence."""
    from tb_unfreeze.plugin.outputs import CONVERTING, LOGGING

    holder = _hold_lock(plugin, REGRESSION, LOGGING, 2.0)
    started = time.monotonic()
    done = wait_done(plugin, convert(client, {"model": REGRESSION, "verify": False}).json["job"]["id"])
    assert done["state"] == "done", done["error"]
    assert time.monotonic() - started >= 1.5  # it did wait
    holder.join()

    holder = _hold_lock(plugin, REGRESSION, CONVERTING, 3.0)
    started = time.monotonic()
    failed = wait_done(plugin, convert(client, {"model": REGRESSION, "verify": False}).json["job"]["id"])
    assert failed["state"] == "failed" and "being converted by another TensorBoard" in failed["error"]
    assert time.monotonic() - started < 2.5  # at once, not after the other conversion
    holder.join()


def test_a_probe_uploaded_from_the_tab_is_what_verification_runs_on(client, plugin, logdir):
    """The remedy the tab offers for an unverified conversion: upload an .npz of inputs, convert again on it."""
    (x,) = [i for i in client.get(f"{BASE}/candidates?model={REGRESSION}").json["inputs"] if i["kind"] == "data"]
    assert x["shape"] == [-1]
    values = np.linspace(-3, 3, 7, dtype=np.float32)
    r = post_probe(client, REGRESSION, _npz(**{x["name"]: values}))
    assert r.status_code == 200, r.get_data(as_text=True)
    up = r.json
    assert up["inputs"] == {x["name"]: {"shape": [7], "dtype": "float32"}} and up["missing"] == []
    stored = os.path.join(os.path.realpath(logdir), "unfreeze", REGRESSION, "probes", up["probe"] + ".npz")
    with np.load(stored) as kept:
        assert np.array_equal(kept[x["name"]], values)

    job = convert(client, {"model": REGRESSION, "probe": up["probe"]}).json["job"]
    assert job["request"]["probe"] == stored  # the job runs on the stored file
    done = wait_done(plugin, job["id"])
    assert done["state"] == "done", done["error"]
    assert done["result"]["verification"]["status"] == "verified"
    manifest = client.get(f"{BASE}/manifest?model={REGRESSION}").json
    assert manifest["verification"]["probe_shapes"] == {x["name"]: [7]}  # not a searched-for probe
    assert manifest["request"]["probe"] == stored
    history = client.get(f"{BASE}/history?model={REGRESSION}").json["history"]
    assert history[0]["request"]["probe"] == stored


@pytest.mark.parametrize(
    ("data", "content_type", "headers", "code", "words"),
    [
        (b"PK not really a zip", "application/octet-stream", XSRF, 400, "not an .npz"),
        ("npz:nope", "application/octet-stream", XSRF, 400, "'nope' that matches no input"),
        ("npz:X2d", "application/octet-stream", XSRF, 400, "shape [2, 3]"),
        ("npz:empty", "application/octet-stream", XSRF, 400, "holds no array"),
        ("npz:X", "application/json", XSRF, 415, "application/octet-stream"),
        ("npz:X", "application/octet-stream", {}, 403, "X-XSRF-Protected"),
    ],
)
def test_a_bad_probe_is_refused_in_one_sentence_and_nothing_is_kept(
    client, logdir, data, content_type, headers, code, words
):
    arrays = {
        "npz:nope": {"nope": np.zeros(3, np.float32)},
        "npz:X2d": {"X": np.zeros((2, 3), np.float32)},
        "npz:empty": {},
        "npz:X": {"X": np.zeros(3, np.float32)},
    }
    body = _npz(**arrays[data]) if isinstance(data, str) else data
    r = post_probe(client, REGRESSION, body, content_type, headers)
    assert r.status_code == code and words in r.get_data(as_text=True), r.get_data(as_text=True)
    assert "\n" not in r.get_data(as_text=True).strip()
    assert not os.path.exists(os.path.join(logdir, "unfreeze", REGRESSION, "probes")) or not os.listdir(
        os.path.join(logdir, "unfreeze", REGRESSION, "probes")
    )


def test_a_probe_id_must_be_one_that_was_uploaded(client):
    assert convert(client, {"model": REGRESSION, "probe": "0123456789abcdef"}).status_code == 404
    assert convert(client, {"model": REGRESSION, "probe": "../../etc/passwd"}).status_code == 400
    assert post_probe(client, "nope.pb", _npz(X=np.zeros(3, np.float32))).status_code == 404


def test_convert_runs_in_background_and_records_everything(client, plugin, logdir):
    r = convert(
        client,
        {"model": REGRESSION, "trainable": {"b": False}},
        environ_base={"REMOTE_ADDR": "10.1.2.3"},
        headers={"User-Agent": "pytest-agent"},
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    job = r.json["job"]
    assert job["model"] == REGRESSION and job["state"] in ("queued", "running")

    done = wait_done(plugin, job["id"])
    assert done["state"] == "done", done["error"]
    assert done["progress"]["fraction"] == 1.0
    assert done["result"]["variables"] == 2 and done["result"]["trainable_variables"] == 1

    polled = client.get(f"{BASE}/jobs?id={job['id']}").json["job"]
    assert polled["state"] == "done" and polled["result"] == done["result"]
    assert job["id"] in {j["id"] for j in client.get(f"{BASE}/jobs").json["jobs"]}

    out = os.path.join(logdir, "unfreeze", REGRESSION, "model")
    assert os.path.isfile(os.path.join(out, "saved_model", "saved_model.pb"))
    manifest = client.get(f"{BASE}/manifest?model={REGRESSION}").json
    assert {v["source"]: v["trainable"] for v in manifest["variables"]} == {"W": True, "b": False}

    history = client.get(f"{BASE}/history?model={REGRESSION}").json["history"]
    assert len(history) == 1
    assert history[0]["ok"] is True and history[0]["client"] == "10.1.2.3"
    assert history[0]["user_agent"] == "pytest-agent" and history[0]["request"]["trainable"] == {"b": False}
    assert client.get(f"{BASE}/history").json["history"][0]["model"] == REGRESSION

    models = {m["id"]: m for m in client.get(f"{BASE}/models").json["models"]}
    assert models[REGRESSION]["status"] == "converted"
    assert models[REGRESSION]["latest"]["result"]["variables"] == 2
    assert graph_runs(plugin, logdir).get(f"unfreeze/{REGRESSION}/unfrozen") is True

    unfrozen = client.get(f"{BASE}/graph?model={REGRESSION}&which=unfrozen").json
    ops = {n["name"]: n["op"] for n in unfrozen["nodes"]}
    assert ops["W"] == "VarHandleOp" and {"W", "b"} <= set(unfrozen["converted"])
    frozen = client.get(f"{BASE}/graph?model={REGRESSION}&which=frozen").json
    assert frozen["converted"] == ["W", "b"]

    # One node per variable: the helpers tb_unfreeze writes per variable are folded into it, and the counts agree
    # with the manifest on both sides.
    assert unfrozen["converted"] == ["W", "b"] and unfrozen["variables"] == manifest["totals"]["variables"] == 2
    assert not [
        n
        for n in ops
        if n.startswith(("W/", "b/"))
        and n.split("/", 1)[1].startswith(("Initializer/", "IsInitialized/", "Assign", "Read/"))
    ], sorted(ops)
    w = next(n for n in unfrozen["nodes"] if n["name"] == "W")
    assert w["variable"]["trainable"] is True and "W/Read/ReadVariableOp" in w["variable"]["helpers"]
    assert unfrozen["folded"] == 12
    consumers = [n for n in unfrozen["nodes"] if "W" in n["inputs"]]
    assert consumers, "the read of W is folded into W: its consumers name W"

    # The weights of a variable are its frozen constant's (it starts equal): statistics and a histogram.
    stats = client.get(f"{BASE}/weights?model={REGRESSION}&node=W").json
    assert stats["source"] == "W" and stats["variable"] == "W" and stats["trainable"] is True
    assert stats["size"] == int(np.prod(stats["shape"])) and sum(stats["histogram"]["counts"]) == stats["size"]
    assert stats["min"] <= stats["mean"] <= stats["max"] and stats["std"] >= 0


def test_earlier_conversions_are_kept_and_can_be_opened(client, plugin, logdir):
    first = wait_done(plugin, convert(client, {"model": REGRESSION, "trainable": {"b": False}}).json["job"]["id"])
    second = wait_done(plugin, convert(client, {"model": REGRESSION, "only": ["W"]}).json["job"]["id"])
    assert first["state"] == second["state"] == "done", (first["error"], second["error"])
    kept = client.get(f"{BASE}/conversions?model={REGRESSION}").json["conversions"]
    assert kept == {first["id"]: "archived", second["id"]: "current"}

    old = client.get(f"{BASE}/conversion?model={REGRESSION}&job={first['id']}").json
    assert old["state"] == "archived"
    assert {v["source"]: v["trainable"] for v in old["manifest"]["variables"]} == {"W": True, "b": False}
    archive = os.path.join(logdir, "unfreeze", REGRESSION, "conversions", first["id"])
    assert old["manifest"]["out_dir"] == archive
    assert os.path.isfile(os.path.join(archive, "saved_model", "saved_model.pb"))
    assert old["graphs"]["unfrozen"]["converted"] == ["W", "b"] and old["graphs"]["frozen"]["converted"] == ["W", "b"]
    # The archive shares the files of the replaced output (hard links), and the current output is the new one.
    assert client.get(f"{BASE}/manifest?model={REGRESSION}").json["totals"]["variables"] == 1
    new = client.get(f"{BASE}/conversion?model={REGRESSION}&job={second['id']}").json
    assert new["state"] == "current" and new["graphs"]["unfrozen"]["converted"] == ["W"]
    assert client.get(f"{BASE}/conversion?model={REGRESSION}&job=0123456789ab").status_code == 404
    assert client.get(f"{BASE}/conversion?model={REGRESSION}&job=../model").status_code == 400


def test_second_conversion_of_the_same_model_is_refused_while_the_first_runs(client, plugin):
    first = convert(client, {"model": FC})
    assert first.status_code == 200
    second = convert(client, {"model": FC})
    assert second.status_code == 409 and "already being converted" in second.get_data(as_text=True)
    assert wait_done(plugin, first.json["job"]["id"])["state"] == "done"
    again = convert(client, {"model": FC, "verify": False})  # once done, a new conversion replaces the last one
    assert again.status_code == 200
    assert wait_done(plugin, again.json["job"]["id"])["state"] == "done"
    assert len(client.get(f"{BASE}/history?model={FC}").json["history"]) == 2


def test_conversion_the_library_refuses_fails_the_job_with_its_message(client, plugin):
    r = convert(client, {"model": REGRESSION, "only": []})  # nothing selected
    assert r.status_code == 200
    done = wait_done(plugin, r.json["job"]["id"])
    assert done["state"] == "failed" and REGRESSION in done["error"]
    assert client.get(f"{BASE}/history?model={REGRESSION}").json["history"][0]["ok"] is False
    model = {m["id"]: m for m in client.get(f"{BASE}/models").json["models"]}[REGRESSION]
    assert model["status"] == "failed" and model["message"] == done["error"]


# -- refusals: 4xx with a message, never a 500, nothing written --------------------------------------------------


def _refused(r, code: int, words: str) -> None:
    text = r.get_data(as_text=True)
    assert r.status_code == code, (r.status_code, text)
    assert words.lower() in text.lower(), text


@pytest.fixture
def quiet_logdir(client, plugin, logdir):
    """The logdir after a first listing (which logs the frozen runs); the test must leave it exactly so."""
    client.get(f"{BASE}/models")
    before = tree(logdir)
    yield logdir
    assert tree(logdir) == before
    assert plugin.jobs.list() == []


def _post(client, data, content_type, headers=XSRF, **kw):
    return client.post(f"{BASE}/convert", data=data, content_type=content_type, headers=headers, **kw)


BODY = json.dumps({"model": REGRESSION})


@pytest.mark.parametrize(
    "send, code, words",
    [
        (lambda c: _post(c, BODY, "application/json", headers={}), 403, "X-XSRF-Protected"),
        (lambda c: _post(c, BODY, "application/json", headers={"X-XSRF-Protected": "0"}), 403, "X-XSRF-Protected"),
        (lambda c: _post(c, f"model={REGRESSION}", "application/x-www-form-urlencoded"), 415, "application/json"),
        (lambda c: _post(c, BODY, "multipart/form-data; boundary=x"), 415, "application/json"),
        (lambda c: _post(c, BODY, "text/plain"), 415, "application/json"),
        (lambda c: c.get(f"{BASE}/convert?model={REGRESSION}"), 405, "POST"),
        (lambda c: _post(c, "{not json", "application/json"), 400, "not valid JSON"),
        (lambda c: _post(c, "[1, 2]", "application/json"), 400, "JSON object"),
        (lambda c: _post(c, json.dumps({"model": REGRESSION, "x": 1}), "application/json"), 400, "unknown field"),
        (lambda c: _post(c, json.dumps({"model": REGRESSION, "only": "W"}), "application/json"), 400, "list"),
        (lambda c: _post(c, json.dumps({"model": REGRESSION, "only": ["Mul"]}), "application/json"), 400, "'Mul'"),
        (
            lambda c: _post(c, json.dumps({"model": REGRESSION, "trainable": {"W": "yes"}}), "application/json"),
            400,
            "true or false",
        ),
        (lambda c: _post(c, json.dumps({"model": REGRESSION, "pad": "x" * 70000}), "application/json"), 413, "large"),
        (lambda c: _post(c, json.dumps({"model": "nope.pb"}), "application/json"), 404, "nope.pb"),
        (lambda c: _post(c, json.dumps({"model": "garbage.pb"}), "application/json"), 400, "garbage.pb"),
        (lambda c: _post(c, json.dumps({}), "application/json"), 400, "model"),
        (lambda c: c.post(f"{BASE}/models", headers=XSRF), 405, "GET"),
    ],
    ids=[
        "no-header",
        "header-0",
        "form",
        "multipart",
        "text",
        "get",
        "bad-json",
        "not-object",
        "unknown-field",
        "only-not-list",
        "only-not-candidate",
        "trainable-not-bool",
        "too-large",
        "unknown-model",
        "invalid-model",
        "no-model",
        "post-to-read-route",
    ],
)
def test_write_requests_are_refused(quiet_logdir, client, send, code, words):
    _refused(send(client), code, words)


def test_an_allowed_method_header_comes_with_405(quiet_logdir, client):
    assert client.get(f"{BASE}/convert").headers["Allow"] == "POST"


TRAVERSALS = [
    "../outside/secret.pb",
    "sub/../tf2onnx_regression.pb",
    "./tf2onnx_regression.pb",
    "%2e%2e%2foutside%2fsecret.pb",  # decoded once by werkzeug: '../outside/secret.pb'
    "%252e%252e%252foutside%252fsecret.pb",  # double-encoded: reaches us as '%2e%2e%2f...'
    "..%2foutside%2fsecret.pb",
    "..%5coutside%5csecret.pb",  # backslashes
    "%2Fetc%2Fpasswd",  # absolute
    "sub//tf2onnx_fc_layers.pb",
    "tf2onnx_regression.pb%00.txt",  # NUL
    "tf2onnx_regression.pb%0a",
]


@pytest.mark.parametrize("model_id", TRAVERSALS)
@pytest.mark.parametrize("route", ["candidates", "graph", "manifest", "history", "convert"])
def test_path_traversal_ids_are_refused(quiet_logdir, client, route, model_id):
    if route == "convert":
        from urllib.parse import unquote

        r = _post(client, json.dumps({"model": unquote(model_id)}), "application/json")
    else:
        r = client.get(f"{BASE}/{route}?model={model_id}")
    assert 400 <= r.status_code < 500, r.status_code
    text = r.get_data(as_text=True)
    assert "model id" in text or "Not found" in text
    assert "secret" not in json.dumps(r.json) if r.is_json else True


def test_symlink_out_of_the_logdir_is_neither_listed_nor_served(client, plugin, logdir, tmp_path):
    os.symlink(tmp_path / "outside" / "secret.pb", os.path.join(logdir, "link.pb"))
    os.symlink(tmp_path / "outside", os.path.join(logdir, "linkdir"))
    assert not {"link.pb", "linkdir/secret.pb"} & {m["id"] for m in client.get(f"{BASE}/models").json["models"]}
    before = tree(logdir)
    for model_id in ("link.pb", "linkdir/secret.pb"):
        _refused(client.get(f"{BASE}/candidates?model={model_id}"), 404, model_id)
        _refused(_post(client, json.dumps({"model": model_id}), "application/json"), 404, model_id)
    with pytest.raises(Exception, match="outside"):
        security.resolve_inside(logdir, "link.pb")
    assert tree(logdir) == before and plugin.jobs.list() == []


@pytest.mark.parametrize(
    "base_url",
    ["http://evil.example/", "http://evil.example:6006/", "http://localhost.evil.example/", "http://127.0.0.1.nip.io/"],
)
def test_foreign_host_is_refused_on_every_route(quiet_logdir, plugin, logdir, base_url):
    c = client_for(plugin, logdir)
    _refused(c.get(f"{BASE}/models", base_url=base_url), 403, "Host")
    _refused(c.get(f"{BASE}/candidates?model={REGRESSION}", base_url=base_url), 403, "Host")
    _refused(_post(c, BODY, "application/json", base_url=base_url), 403, "Host")


def test_host_with_another_port_than_served_is_refused(quiet_logdir, client):
    r = client.get(f"{BASE}/models", environ_overrides={"HTTP_HOST": "localhost:6006", "SERVER_PORT": "6007"})
    _refused(r, 403, "Host")
    r = client.get(f"{BASE}/models", environ_overrides={"HTTP_HOST": "localhost:6006", "SERVER_PORT": "6006"})
    assert r.status_code == 200


def test_cross_origin_post_is_refused(quiet_logdir, client):
    _refused(_post(client, BODY, "application/json", headers={**XSRF, "Origin": "http://evil.example"}), 403, "origin")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST."])
def test_loopback_hosts_are_accepted(client, host):
    r = client.get(f"{BASE}/models", environ_overrides={"HTTP_HOST": host})
    assert r.status_code == 200


def test_host_policy_follows_the_host_flag():
    policy = security.HostPolicy(host="box.lan", allowed=["proxy.example:443"])

    def request(host, port):
        return wrappers.Request({"HTTP_HOST": host, "SERVER_PORT": port, "wsgi.url_scheme": "http"})

    policy.check(request("box.lan:6006", "6006"))
    policy.check(request("proxy.example:443", "6006"))
    with pytest.raises(Exception, match="Host"):
        policy.check(request("10.0.0.5:6006", "6006"))  # an IP is accepted only when bound to all interfaces
    security.HostPolicy(bind_all=True).check(request("10.0.0.5:6006", "6006"))


@pytest.mark.parametrize(
    "url, code, words",
    [
        (f"{BASE}/candidates", 400, "'model'"),
        (f"{BASE}/candidates?model=missing.pb", 404, "missing.pb"),
        (f"{BASE}/graph?model={REGRESSION}&which=both", 400, "which"),
        (f"{BASE}/graph?model={REGRESSION}&which=unfrozen", 404, "not been converted"),
        (f"{BASE}/manifest?model={REGRESSION}", 404, "not been converted"),
        (f"{BASE}/jobs?id=0123456789ab", 404, "no job"),
        (f"{BASE}/jobs?id=../../x", 400, "job id"),
        (f"{BASE}/history?model={REGRESSION}&limit=0", 400, "limit"),
        (f"{BASE}/models?x=1&x=2", 200, "models"),
        (f"{BASE}/static/../plugin.py", 404, "Not found"),
        (f"{BASE}/static/%2e%2e/plugin.py", 404, "Not found"),
    ],
)
def test_bad_reads_are_4xx_with_a_message(quiet_logdir, client, url, code, words):
    _refused(client.get(url), code, words)


# -- static files -----------------------------------------------------------------------------------------------


def test_frontend_files_are_served_with_their_types(logdir, tmp_path):
    static = tmp_path / "static"
    p = UnfreezePlugin(base_plugin.TBContext(logdir=logdir, flags=None), static_dir=str(static))
    c = client_for(p, logdir)
    _refused(c.get(f"{BASE}/index.js"), 404, "frontend is not built")
    (static / "assets").mkdir(parents=True)
    (static / "index.js").write_text("export function render() {}\n")
    (static / "assets" / "app.css").write_text("body{}\n")
    r = c.get(f"{BASE}/index.js")
    assert r.status_code == 200 and r.mimetype == "text/javascript" and b"render" in r.data
    r = c.get(f"{BASE}/static/assets/app.css")
    assert r.status_code == 200 and r.mimetype == "text/css"
    # A browser that has the file revalidates it by its ETag; a changed file is sent again.
    etag = c.get(f"{BASE}/index.js").headers["ETag"]
    assert c.get(f"{BASE}/index.js", headers={"If-None-Match": etag}).status_code == 304
    (static / "index.js").write_text("export function render() { return 1; }\n")
    r = c.get(f"{BASE}/index.js", headers={"If-None-Match": etag})
    assert r.status_code == 200 and b"return 1" in r.data and r.headers["ETag"] != etag
    assert p.frontend_metadata().es_module_path == "/index.js" and p.frontend_metadata().tab_name == "Unfreeze"
    listing = c.get("/data/plugins_listing").json["unfreeze"]
    assert listing["enabled"] is True and listing["tab_name"] == "Unfreeze"
