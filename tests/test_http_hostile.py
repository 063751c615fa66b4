"""Hostile HTTP requests to the Unfreeze routes, over TensorBoard's full WSGI stack (in process, no conversions).

Extends tests/test_plugin_http.py (which covers the basic refusals) where it had gaps: every route against
every traversal variant (raw, encoded, NUL, symlinked), every method, a foreign or malformed Host on every
route, cross-site POSTs, oversized and malformed bodies, unknown models and jobs, and hypothesis-generated ids
and bodies. The property is always the same: a 4xx with a message, never a 500, nothing written, no job.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

from tb_unfreeze.contract import ConversionRequest
from tb_unfreeze.plugin import metadata
from tb_unfreeze.plugin.jobs import DONE, Job, JobRunner
from tb_unfreeze.plugin.plugin import UnfreezePlugin

BASE = "/data/plugin/unfreeze"
MODEL = "tf2onnx_regression.pb"
XSRF = {"X-XSRF-Protected": "1"}
GET_ROUTES = ["models", "candidates", "jobs", "history", "graph", "manifest", "index.js", "static/app.js"]
MODEL_ROUTES = [
    "candidates?model={}",
    "graph?model={}",
    "graph?which=unfrozen&model={}",
    "manifest?model={}",
    "history?model={}",
    "history?limit=5&model={}",
]
STATS = {"requests": 0}
OUTSIDE: list[str] = []  # absolute paths no answer may mention (the folder outside the logdir)


def tree(path: str) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            full = os.path.join(dirpath, name)
            st_ = os.lstat(full)
            out[os.path.relpath(full, path)] = (st_.st_size, st_.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, real_models_dir):
    """A logdir with two models, junk and symlinks leading out; a secret outside; a static dir with a link out."""
    root = tmp_path_factory.mktemp("hostile")
    logdir, outside, static = root / "logdir", root / "outside", root / "static"
    (logdir / "sub").mkdir(parents=True)
    outside.mkdir()
    static.mkdir()
    src = os.path.join(real_models_dir, "real")
    shutil.copyfile(os.path.join(src, MODEL), logdir / MODEL)
    shutil.copyfile(os.path.join(src, "hollance_voice_logreg.pb"), logdir / "sub" / "voice.pb")
    shutil.copyfile(os.path.join(src, MODEL), outside / "secret.pb")
    (outside / "secret.txt").write_text("SECRET-CONTENT")
    OUTSIDE[:] = [str(outside), os.path.realpath(outside)]
    (logdir / "garbage.pb").write_bytes(b"\x00garbage")
    os.symlink(outside / "secret.pb", logdir / "link.pb")
    os.symlink(outside, logdir / "linkdir")
    (static / "index.js").write_text("export function render() {}\n")
    (static / "app.js").write_text("//\n")
    os.symlink(outside / "secret.txt", static / "leak.js")
    os.symlink(outside, static / "leakdir")
    plugin = UnfreezePlugin(
        base_plugin.TBContext(logdir=str(logdir), flags=None), scan_interval=0, static_dir=str(static)
    )
    client = werkzeug_test.Client(application.TensorBoardWSGI([plugin]), wrappers.Response)
    assert client.get(f"{BASE}/models").status_code == 200  # the first listing logs the frozen runs
    yield {"root": str(root), "logdir": str(logdir), "plugin": plugin, "client": client}
    plugin.stop()
    print(f"\nhostile HTTP: {STATS['requests']} requests")


@pytest.fixture
def quiet(world):
    """The whole tree (logdir, outside, static) must be exactly as before, and no job queued."""
    before = tree(world["root"])
    yield world["client"]
    assert tree(world["root"]) == before, "a refused request wrote something"
    assert world["plugin"].jobs.list() == []


def refused(r, codes=range(400, 500), words: str = "") -> str:
    STATS["requests"] += 1
    text = r.get_data(as_text=True)
    assert r.status_code in codes, (r.status_code, text[:300])
    assert text.strip(), "a refusal without a message"
    assert "SECRET-CONTENT" not in text and "Set-Cookie" not in r.headers
    assert not any(p in text for p in OUTSIDE), text[:300]
    assert words.lower() in text.lower(), text[:300]
    return text


def post(client, body, content_type="application/json", headers=XSRF, **kw):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(f"{BASE}/convert", data=data, content_type=content_type, headers=headers, **kw)


# -- traversal on every route that takes a model ----------------------------------------------------------------

# ids as they arrive in the query string (so encodings stay encoded) / as they are in a JSON body
TRAVERSAL_QUERY = [
    "/etc/passwd",
    "//etc/passwd",
    "../outside/secret.pb",
    "..%2F..%2Foutside%2Fsecret.pb",
    "%252e%252e%252fx.pb",
    "%25252e%25252e%25252foutside",
    "%c0%ae%c0%ae/outside/secret.pb",
    "%ef%bc%8e%ef%bc%8e/outside/secret.pb",
    "....//outside/secret.pb",
    "sub/../../outside/secret.pb",
    "sub/./voice.pb",
    "sub/voice.pb/",
    "~/secret.pb",
    "C:%5Csecret.pb",
    "%5C%5Cserver%5Cshare%5Cx.pb",
    MODEL + "%00",
    "%00" + MODEL,
    MODEL + "%00.txt",
    "sub%00/voice.pb",
    MODEL + "%0d%0aSet-Cookie:%20a=b",
    "%e2%80%ae" + MODEL,
    "link.pb",
    "linkdir/secret.pb",
    "linkdir/../" + MODEL,
    "garbage.pb/..",
    "a" * 1025,
    "%20",
    ".",
    "..",
]


@pytest.mark.parametrize("route", MODEL_ROUTES)
@pytest.mark.parametrize("model_id", TRAVERSAL_QUERY, ids=lambda v: v[:40])
def test_traversal_ids_on_read_routes(quiet, route, model_id):
    refused(quiet.get(f"{BASE}/{route.format(model_id)}"))


@pytest.mark.parametrize("model_id", TRAVERSAL_QUERY, ids=lambda v: v[:40])
def test_traversal_ids_in_convert_bodies(quiet, model_id):
    refused(post(quiet, {"model": urllib.parse.unquote(model_id)}))
    refused(post(quiet, {"model": model_id}))  # the same text, not decoded


@pytest.mark.parametrize(
    "path",
    [
        "../plugin.py",
        "%2e%2e/plugin.py",
        "..%252fplugin.py",
        "%2e%2e%2f%2e%2e%2fsetup.py",
        "//etc/passwd",
        "%2fetc%2fpasswd",
        "app.js%00.png",
        "%00",
        "leak.js",
        "leakdir/secret.txt",
        "leakdir/../../outside/secret.txt",
        "./app.js/..",
        "a/" * 500 + "x.js",
        "%c0%ae%c0%ae/plugin.py",
    ],
)
def test_static_traversal_and_links_out_are_404(quiet, path):
    refused(quiet.get(f"{BASE}/static/{path}"), (404,))


# -- unknown models and jobs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", MODEL_ROUTES)
@pytest.mark.parametrize(
    "model_id",
    [
        "nope.pb",
        "sub/nope.pb",
        "sub",
        "outside/secret.pb",
        "unfreeze/x.pb",
        "ünïcødé.pb",
        "a b.pb",
        "TF2ONNX_REGRESSION.PB",
    ],
)
def test_unknown_models_are_404_naming_them(quiet, route, model_id):
    if route.startswith("history") or model_id != "sub":
        refused(quiet.get(f"{BASE}/{route.format(urllib.parse.quote(model_id))}"), (404,), "not found")
    else:
        refused(quiet.get(f"{BASE}/{route.format(model_id)}"))


def test_invalid_model_on_every_model_route(quiet):
    for route in MODEL_ROUTES[:4]:
        refused(quiet.get(f"{BASE}/{route.format('garbage.pb')}"), words="garbage.pb")


@pytest.mark.parametrize(
    "query, code",
    [
        ("id=", 400),
        ("id=ABCDEF", 400),
        ("id=%00", 400),
        ("id=a&id=b", 400),
        ("id=" + "a" * 65, 400),
        ("id=..%2F..%2Fx", 400),
        ("id=0123456789ab%0a", 400),
        ("id=%20abc", 400),
        ("id=deadbeef", 404),
        ("id=" + "f" * 64, 404),
    ],
)
def test_unknown_or_malformed_job_ids(quiet, query, code):
    refused(quiet.get(f"{BASE}/jobs?{query}"), (code,))


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=-1",
        "limit=10001",
        "limit=1e3",
        "limit=%00",
        "limit=",
        "limit=99999999999999999999999999",
        "limit=1&limit=2",
        "model=x&model=y",
    ],
)
def test_bad_history_arguments(quiet, query):
    refused(quiet.get(f"{BASE}/history?{query}"), (400,))


# -- methods, hosts, cross-site ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND"])
@pytest.mark.parametrize("route", GET_ROUTES + ["convert"])
def test_other_methods_are_405_with_allow(quiet, route, method):
    r = quiet.open(
        f"{BASE}/{route}",
        method=method,
        headers=XSRF,
        data=json.dumps({"model": MODEL}),
        content_type="application/json",
    )
    refused(r, (405,), "method not allowed")
    assert r.headers["Allow"] == ("POST" if route == "convert" else "GET")


@pytest.mark.parametrize("route", GET_ROUTES + ["convert", f"candidates?model={MODEL}", f"graph?model={MODEL}"])
@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:80",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "localhost:6006",
        "[::2]",
        "10.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
    ],
)
def test_foreign_host_on_every_route(quiet, route, host):
    method = "POST" if route == "convert" else "GET"
    r = quiet.open(
        f"{BASE}/{route}",
        method=method,
        headers=XSRF,
        data=json.dumps({"model": MODEL}),
        content_type="application/json",
        environ_overrides={"HTTP_HOST": host, "SERVER_PORT": "80"},
    )
    refused(r, (403,), "Host")


@pytest.mark.parametrize(
    "host",
    [
        "localhost:abc",
        "localhost@evil.example",
        "evil.example\\@localhost",
        "127.0.0.1:6006.evil",
        "[::1",
        "localhost:80 evil",
        "localhost/x",
        "localhost#",
        "localhost\x00evil",
        "user:pw@localhost",
        "localhost:-1",
        "localhost:1:2",
        "",
    ],
)
def test_malformed_host_headers(quiet, host):
    for route in ("models", "convert"):
        r = quiet.open(
            f"{BASE}/{route}",
            method="POST" if route == "convert" else "GET",
            headers=XSRF,
            data=json.dumps({"model": MODEL}),
            content_type="application/json",
            environ_overrides={"HTTP_HOST": host, "SERVER_PORT": "80"},
        )
        refused(r, (400, 403))


@pytest.mark.parametrize(
    "content_type, headers, code",
    [
        ("application/x-www-form-urlencoded", {}, 403),  # a plain HTML form: no custom header
        ("multipart/form-data; boundary=b", {}, 403),
        ("text/plain", {}, 403),  # fetch(no-cors) with a text body
        ("text/plain", XSRF, 415),
        ("application/json", {"X-XSRF-Protected": "true"}, 403),
        ("application/json", {**XSRF, "Sec-Fetch-Site": "cross-site"}, 403),
        ("application/json", {**XSRF, "Origin": "http://evil.example"}, 403),
        ("application/json", {**XSRF, "Origin": "http://localhost:1234"}, 403),  # another local app's page
        ("application/json", {**XSRF, "Origin": "http://localhost.evil.example"}, 403),
        ("application/json", {**XSRF, "Origin": "https://localhost"}, 403),
        ("application/jsonp", XSRF, 415),
        ("application/json-patch+json", XSRF, 415),
        ("", XSRF, 415),
    ],
)
def test_cross_site_posts_are_refused(quiet, content_type, headers, code):
    r = quiet.post(
        f"{BASE}/convert", data=json.dumps({"model": MODEL}), headers={"Content-Type": content_type, **headers}
    )
    refused(r, (code,))


# -- oversized and malformed bodies -----------------------------------------------------------------------------


def _raw_post(client, raw: bytes, length: str | None):
    headers = {**XSRF, "Content-Type": "application/json"}
    environ = {"CONTENT_LENGTH": length} if length is not None else {}
    return client.post(f"{BASE}/convert", input_stream=io.BytesIO(raw), headers=headers, environ_overrides=environ)


@pytest.mark.parametrize(
    "raw, length, code",
    [
        (b'{"model": "x"}', str(10**12), 413),
        (b'{"model": "x"}', str(metadata.MAX_BODY_BYTES + 1), 413),
        (b'{"model": "' + MODEL.encode() + b'"}' + b" " * 100, "4", 400),  # body longer than announced: cut, invalid
        (b"{}", "abc", 400),
        (b"{}", "-5", 400),
        (b"{}", "0", 400),
    ],
)
def test_lying_content_lengths(quiet, raw, length, code):
    refused(_raw_post(quiet, raw, length), (code, 411))


def test_chunked_body_without_length_is_411(quiet):
    r = quiet.post(
        f"{BASE}/convert",
        input_stream=io.BytesIO(b'{"model": "x"}'),
        headers={**XSRF, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    refused(r, (411,))


@pytest.mark.parametrize(
    "body, words",
    [
        ("[" * 30_000 + "]" * 30_000, "nested too deeply"),  # was a RecursionError: HTTP 500
        ('{"model":' + "[" * 20_000 + "]" * 20_000 + "}", "nested"),
        ('{"only": ' + "{" * 10_000, "JSON"),
        (b'{"model": "\xff\xfe"}', "JSON"),
        (b"\xef\xbb\xbf" + json.dumps({"model": "nope.pb"}).encode(), ""),  # a BOM: refused or parsed, never a 500
        ('{"model": 1' + "0" * 5000 + "}", ""),  # an int beyond Python's digit limit
        ('{"model": 1e999999}', "model"),
        ('{"model": NaN}', "model"),
        ('{"model": "nope.pb", "verify": Infinity}', "verify"),
        ("null", "object"),
        ('"model"', "object"),
        ('{"model": "nope.pb", "model": "' + MODEL + '", "only": ["nope"]}', "not candidates"),
        ('{"model": ["' + MODEL + '"]}', "model"),
        ('{"model": {"$ne": 1}}', "model"),
        ('{"model": "' + MODEL + '", "only": [null]}', "list"),
        ('{"model": "' + MODEL + '", "only": ["W\\u0000"]}', "names"),
        ('{"model": "' + MODEL + '", "exclude": ["' + "x" * 5000 + '"]}', "names"),
        ('{"model": "' + MODEL + '", "trainable": []}', "trainable"),
        ('{"model": "' + MODEL + '", "trainable": {"W": 1}}', "trainable"),
        ('{"model": "' + MODEL + '", "verify": "false"}', "verify"),
        ('{"model": "' + MODEL + '", "__proto__": {}}', "unknown field"),
        ('{"model": "' + MODEL + '", "only": ["W"], "exclude": ["W"], "trainable": {"\\ud800": true}}', "trainable"),
        (json.dumps({"model": "nope.pb"}) + " " * (metadata.MAX_BODY_BYTES - 40), "nope.pb"),  # at the limit: parsed
        (json.dumps({"model": MODEL, "only": ["x"] * 20_000}), "large"),
    ],
    ids=lambda v: repr(v)[:30] if not isinstance(v, str) or len(v) < 30 else f"{v[:20]}..{len(v)}",
)
def test_malformed_bodies(quiet, body, words):
    refused(post(quiet, body), words=words)


# -- generated ids and bodies -------------------------------------------------------------------------------------

HYPO = settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ID_ALPHABET = st.sampled_from(list("./\\%:~ \x00\n\x7fa_-") + ["..", "%2e", "%2f", "%00", "%25", "ı", "．", "\u202e"])


@HYPO
@given(st.lists(ID_ALPHABET, max_size=30).map("".join), st.sampled_from(MODEL_ROUTES))
def test_generated_ids_never_500(world, model_id, route):
    before = tree(world["root"])
    r = world["client"].get(f"{BASE}/{route.format(urllib.parse.quote(model_id, safe='%/'))}")
    refused(r)  # no generated id names a real model: always a refusal
    assert tree(world["root"]) == before


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@HYPO
@given(
    st.dictionaries(
        st.sampled_from(["model", "only", "exclude", "trainable", "verify", "inputs", "outputs", "extra"]),
        JSON_VALUES,
        max_size=5,
    )
)
def test_generated_bodies_never_500(world, body):
    """Bodies with any fields; none names a model of the logdir, so each is refused."""
    if body.get("model") in (MODEL, "sub/voice.pb"):  # a generated body must not queue a real conversion
        body["model"] = "nope.pb"
    before = tree(world["root"])
    refused(post(world["client"], json.dumps(body, allow_nan=True)))
    assert tree(world["root"]) == before and world["plugin"].jobs.list() == []


class RecordingJobs(JobRunner):
    """Takes what the plugin would queue and runs nothing (no conversion, no thread)."""

    def __init__(self) -> None:
        super().__init__(run=lambda job, progress: {})
        self.accepted: list[Job] = []

    def submit(self, model_id: str, request: ConversionRequest, client: dict | None = None) -> Job:
        job = Job(id=f"{len(self.accepted):x}", model=model_id, request=request, client=client or {}, state=DONE)
        self.accepted.append(job)
        return job


@pytest.fixture(scope="module")
def recording(world):
    """The same logdir behind a plugin whose job runner only records: bodies naming the real model get past the
    model lookup, so the validation of every other field is what the generated bodies exercise."""
    jobs = RecordingJobs()
    plugin = UnfreezePlugin(base_plugin.TBContext(logdir=world["logdir"], flags=None), scan_interval=0, jobs=jobs)
    client = werkzeug_test.Client(application.TensorBoardWSGI([plugin]), wrappers.Response)
    yield {"client": client, "jobs": jobs}
    plugin.stop()


NAMES = st.lists(st.sampled_from(["W", "b", "W/read", "X", "pred", "nope", ""]), max_size=3)
FIELD_VALUES = (
    JSON_VALUES | NAMES | st.dictionaries(st.sampled_from(["W", "b", "X"]), st.booleans() | JSON_VALUES, max_size=2)
)
CANDIDATES = {"W", "b"}


@HYPO
@given(
    st.dictionaries(
        st.sampled_from(["only", "exclude", "trainable", "verify", "inputs", "outputs", "extra"]),
        FIELD_VALUES,
        max_size=4,
    )
)
def test_generated_bodies_for_a_real_model_are_validated_never_500(world, recording, body):
    """Either a 4xx with a message, or accepted with a well-formed request naming only candidates; never a 500."""
    before = tree(world["root"])
    queued = len(recording["jobs"].accepted)
    r = post(recording["client"], json.dumps({"model": MODEL, **body}, allow_nan=True))
    assert tree(world["root"]) == before
    if r.status_code != 200:
        refused(r)
        assert len(recording["jobs"].accepted) == queued
        return
    (job,) = recording["jobs"].accepted[queued:]
    assert isinstance(job.request, ConversionRequest)
    params = job.request.to_json()
    assert job.model == MODEL and r.get_json()["job"]["request"] == params
    assert ConversionRequest.from_json(params) == job.request  # the JSON form round-trips
    assert set(body) <= set(params) and "extra" not in params
    assert isinstance(params["verify"], bool) and params["verify"] == body.get("verify", True)
    for key in ("only", "exclude", "inputs", "outputs"):
        assert params[key] is None or all(isinstance(n, str) for n in params[key]), (key, params)
    assert set(params["only"] or []) | set(params["exclude"]) | set(params["trainable"]) <= CANDIDATES, params
    assert all(isinstance(v, bool) for v in params["trainable"].values())


@pytest.mark.parametrize(
    "origin, ok",
    [
        ("http://localhost", True),
        ("http://LOCALHOST", True),
        ("null", True),
        ("https://localhost", False),
        ("http://localhost:99999", False),
        ("http://[::1", False),
        ("garbage", False),
        ("http://localhost:80@evil.example", False),
        ("http://127.0.0.1", False),
    ],
)
def test_origin_must_be_this_server(world, origin, ok):
    """Origin is compared by host and effective port; a malformed one is a 403, not a 500 (was: ValueError)."""
    r = world["client"].get(f"{BASE}/jobs", headers={"Origin": origin})
    if ok:
        assert r.status_code == 200, r.get_data(as_text=True)
    else:
        refused(r, (403,), "cross-origin")


# -- POST /probe: uploaded bytes ----------------------------------------------------------------------------------


def _post_probe(client, model_id: str, data: bytes, content_type="application/octet-stream", headers=XSRF):
    return client.post(
        f"{BASE}/probe?model={urllib.parse.quote(model_id, safe='/')}",
        data=data,
        content_type=content_type,
        headers=headers,
    )


def _zip_bomb() -> bytes:
    """A valid .npz whose one array inflates to 2 GiB of zeros from a few MB: refused by its declared size."""
    import zipfile

    buf = io.BytesIO()
    header = b"\x93NUMPY\x01\x00" + b"v\x00" + b"{'descr': '<f4', 'fortran_order': False, 'shape': (536870912,), }"
    header = header.ljust(127, b" ") + b"\n"
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("X.npy", "w", force_zip64=True) as f:
        f.write(header)
        chunk = bytes(1 << 24)
        for _ in range(128):
            f.write(chunk)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("model_id", "data", "content_type", "headers", "code", "words"),
    [
        (MODEL, b"", "application/octet-stream", XSRF, 411, "Length required"),  # no body: no Content-Length
        (MODEL, b"\x93NUMPY\x01\x00", "application/octet-stream", XSRF, 400, "not an .npz"),  # a bare .npy
        ("../outside/secret.pb", b"PK", "application/octet-stream", XSRF, 400, ""),
        ("garbage.pb", b"PK", "application/octet-stream", XSRF, 400, ""),
        (MODEL, b"PK", "multipart/form-data", XSRF, 415, "octet-stream"),
        (MODEL, b"PK", "application/octet-stream", {}, 403, "X-XSRF-Protected"),
    ],
)
def test_hostile_probe_uploads_are_refused_and_write_nothing(quiet, model_id, data, content_type, headers, code, words):
    refused(_post_probe(quiet, model_id, data, content_type, headers), codes=(code,), words=words)


def test_a_zip_bomb_probe_is_refused_before_it_is_inflated(quiet):
    refused(_post_probe(quiet, MODEL, _zip_bomb()), codes=(400,), words="bytes of arrays; the limit is")


def test_a_pickled_probe_is_refused_not_loaded(quiet):
    buf = io.BytesIO()
    import numpy as np

    np.savez(buf, X=np.array([{"a": 1}], dtype=object))  # object arrays are pickles
    refused(_post_probe(quiet, MODEL, buf.getvalue()), codes=(400,), words="not an .npz")


@HYPO
@given(st.binary(max_size=600) | st.binary(max_size=200).map(lambda b: b"PK\x03\x04" + b))
def test_generated_probe_bodies_never_500(world, data):
    before = tree(world["root"])
    refused(_post_probe(world["client"], MODEL, data))
    assert tree(world["root"]) == before
