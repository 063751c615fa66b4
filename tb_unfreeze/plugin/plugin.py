"""The Unfreeze plugin: thin `*_route` methods (HTTP parsing and checks) over plain `*_impl` methods.

Routes live under `/data/plugin/unfreeze/` and are documented in `http_api.md`. Every failure is raised as a
`tensorboard.errors` type (the client gets a 4xx and the message), never an opaque 500.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import json
import logging
import mimetypes
import os
import threading

from tensorboard import errors
from tensorboard.backend import http_util, json_util
from tensorboard.compat.proto import graph_pb2
from tensorboard.plugins import base_plugin
from werkzeug import security as wz_security
from werkzeug import wrappers

from tb_unfreeze.contract import Layout
from tb_unfreeze.errors import UserError
from tb_unfreeze.graph_index import node_name
from tb_unfreeze.plugin import graph_view, metadata, security, validation
from tb_unfreeze.plugin.discovery import Discovery, ModelFile
from tb_unfreeze.plugin.jobs import JobRunner
from tb_unfreeze.plugin.outputs import Outputs

logger = logging.getLogger(__name__)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_CONTENT_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".map": "application/json",
    ".json": "application/json",
    ".html": "text/html",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".wasm": "application/wasm",
}


class UserPublicError(errors.PublicError):
    """A library UserError on its way to the client, with the error's own HTTP code."""

    def __init__(self, error: UserError) -> None:
        super().__init__(str(error))
        code = getattr(error, "http_code", 400)
        self.http_code = code if 400 <= code < 500 else 400


# Encoded responses kept (graphs of both panes for a few models, their candidates and manifests).
GRAPH_CACHE_ENTRIES = 12


@dataclasses.dataclass(frozen=True)
class EncodedJson:
    """A JSON response (a graph, the candidates, a manifest) encoded once (JSON, gzip) and kept: a 20k-node graph
    took ~0.35 s to clean, encode and compress on every request. Its ETag is the content's hash, so a browser that
    has it gets a 304."""

    gzipped: bytes
    etag: str

    @classmethod
    def of(cls, content: dict) -> EncodedJson:
        raw = json.dumps(json_util.Cleanse(content)).encode("utf-8")
        gzipped = gzip.compress(raw, compresslevel=3, mtime=0)
        return cls(gzipped, _etag(raw))

    def respond(self, request: wrappers.Request) -> wrappers.Response:
        return _with_etag(request, self.etag, self.gzipped, "application/json", content_encoding="gzip")


def _etag(content: bytes) -> str:
    return '"' + hashlib.sha256(content).hexdigest()[:32] + '"'


def _with_etag(request: wrappers.Request, etag: str, content: bytes, content_type: str, **respond) -> wrappers.Response:
    """`content` with its ETag, or a bodiless 304 when the browser already has that version."""
    if etag in request.headers.get("If-None-Match", ""):
        return wrappers.Response(status=304, headers=[("ETag", etag), ("Cache-Control", "no-cache, must-revalidate")])
    return http_util.Respond(request, content, content_type, headers=[("ETag", etag)], **respond)


def _json(request: wrappers.Request, content) -> wrappers.Response:
    return http_util.Respond(request, content, "application/json")


def _route(method: str):
    """Wrap a `(self, request) -> Response` handler with the Host and method checks and UserError mapping."""

    def decorate(handler):
        @wrappers.Request.application
        def app(self, request: wrappers.Request) -> wrappers.Response:
            self._hosts.check(request)
            if method == "GET":
                security.check_read_request(request)
            try:
                return handler(self, request)
            except UserError as e:
                raise UserPublicError(e) from None

        app.__name__ = app.__qualname__ = handler.__name__
        app.__doc__ = handler.__doc__
        return app

    return decorate


class UnfreezePlugin(base_plugin.TBPlugin):
    """Lists frozen graphs in the logdir, converts them in the background and serves the side-by-side view."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(
        self,
        context: base_plugin.TBContext,
        *,
        model_dirs: list[str] | tuple[str, ...] = (),
        hosts: security.HostPolicy | None = None,
        jobs: JobRunner | None = None,
        index_interval: float | None = None,
        scan_interval: float = 2.0,
        static_dir: str = STATIC_DIR,
    ) -> None:
        """`context.logdir` holds models and outputs; `index_interval` (s) starts the background indexer;
        listings rescan the folders at most every `scan_interval` seconds."""
        if not context.logdir:
            raise ValueError("the Unfreeze plugin needs a local --logdir")
        self.outputs = Outputs(context.logdir)
        self.discovery = Discovery(
            [self.outputs.logdir, *model_dirs],
            skip=[self.outputs.root],
            min_interval=scan_interval,
            on_parsed=self._on_parsed,
        )
        self.jobs = jobs or JobRunner(self._run_job)
        self._hosts = hosts or security.HostPolicy()
        self._static_dir = static_dir
        self._graph_cache: collections.OrderedDict[tuple, object] = collections.OrderedDict()
        self._graph_pending: dict[tuple, threading.Event] = {}
        self._graph_lock = threading.Lock()
        self._weights_cache: collections.OrderedDict[tuple, dict] = collections.OrderedDict()
        self._stop = threading.Event()
        if index_interval:
            indexer = threading.Thread(target=self._index_loop, args=(index_interval,), name="unfreeze-index")
            indexer.daemon = True
            indexer.start()

    @classmethod
    def from_context(cls, context: base_plugin.TBContext) -> UnfreezePlugin | None:
        """Build from TensorBoard's flags; None (plugin skipped) without a local logdir."""
        flags = context.flags
        logdir = context.logdir or ""
        if not logdir or "://" in logdir:
            logger.warning("unfreeze: needs a local --logdir (got %r); the Unfreeze tab is off", logdir)
            return None
        split = lambda v: [p.strip() for p in (v or "").split(",") if p.strip()]  # noqa: E731
        hosts = security.HostPolicy(
            host=getattr(flags, "host", None),
            bind_all=bool(getattr(flags, "bind_all", False)),
            allowed=split(getattr(flags, "unfreeze_allowed_hosts", "")),
        )
        model_dirs = split(getattr(flags, "unfreeze_model_dirs", ""))
        return cls(context, model_dirs=model_dirs, hosts=hosts, index_interval=10.0)

    # -- TBPlugin ---------------------------------------------------------------------------------------------

    def get_plugin_apps(self) -> dict:
        return {
            "/index.js": self.index_js_route,
            "/static/*": self.static_route,
            "/models": self.models_route,
            "/candidates": self.candidates_route,
            "/convert": self.convert_route,
            "/probe": self.probe_route,
            "/jobs": self.jobs_route,
            "/history": self.history_route,
            "/graph": self.graph_route,
            "/manifest": self.manifest_route,
            "/weights": self.weights_route,
            "/conversions": self.conversions_route,
            "/conversion": self.conversion_route,
            "/drift": self.drift_route,
        }

    def is_active(self) -> bool:
        """Cheap: the last scan's answer (the indexer or a request keeps it fresh)."""
        return self.discovery.known()

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name=metadata.TAB_NAME)

    def stop(self) -> None:
        """Stop the background indexer and let the workers finish (tests)."""
        self._stop.set()
        self.jobs.stop()

    # -- background -------------------------------------------------------------------------------------------

    def _index_loop(self, interval: float) -> None:
        while not self._stop.is_set():
            try:
                self.discovery.scan(force=True)
                self.discovery.index_all()
            except Exception:  # keep indexing later; TensorBoard must not notice
                logger.exception("unfreeze: indexing failed")
            self._stop.wait(interval)

    def _on_parsed(self, model: ModelFile, inspection) -> None:
        self.outputs.ensure_frozen_run(model, inspection.graph)

    def _run_job(self, job, progress) -> dict:
        model = self.discovery.get(job.model)
        result = self.outputs.convert(model, job.request, {**job.client, "job": job.id}, progress)
        threading.Thread(target=self._warm_result, args=(model.id,), name="unfreeze-warm-result", daemon=True).start()
        return result

    # -- impls ------------------------------------------------------------------------------------------------

    def models_impl(self) -> list[dict]:
        """Every model with its status and latest conversion."""
        return [self._model_entry(m) for m in self.discovery.models()]

    def _model_entry(self, model: ModelFile) -> dict:
        parsed = self.discovery.parsed(model)
        latest = self.outputs.history.latest(model.id)
        job = self.jobs.active(model.id)
        status, message = "frozen", None
        if parsed.error is not None:
            status, message = "invalid", parsed.error
        elif job is not None:
            status = "converting"
        elif latest is not None and not latest.get("ok"):
            status, message = "failed", latest.get("error")
        elif latest is not None and self.outputs.result(model.id) is not None:
            status = "converted"
        source = (latest or {}).get("source") or {}
        totals = (parsed.inspection or {}).get("totals")
        return {
            "id": model.id,
            "path": model.path,
            "size": model.size,
            "mtime": model.mtime,
            "status": status,
            "message": message,
            "totals": totals,
            "latest": latest,
            "stale": bool(status == "converted" and source and source.get("mtime") != model.mtime),
            "job": job.to_dict() if job is not None else None,
            "runs": {
                w: metadata.run_name(model.id, w) if self.outputs.has_run(model.id, w) else None
                for w in (metadata.FROZEN_RUN, metadata.UNFROZEN_RUN)
            },
        }

    def candidates_impl(self, model_id: str) -> dict:
        """Exactly `inspect_model(path).to_dict()` (cached per file version)."""
        parsed = self.discovery.parsed(self.discovery.get(model_id))
        if parsed.error is not None:
            raise _user_error(parsed.error, parsed.http_code)
        return parsed.inspection

    def convert_impl(self, body: dict, client: dict) -> dict:
        """Validate a conversion request and queue it; 409 if the model is already converting."""
        model_id, request = validation.conversion_request(body)
        model = self.discovery.get(model_id)
        parsed = self.discovery.parsed(model)
        if parsed.error is not None:
            raise _user_error(parsed.error, parsed.http_code)
        validation.check_selection(request, parsed.inspection)
        if request.probe is not None:  # the uploaded file, by its id
            request = dataclasses.replace(request, probe=self.outputs.probe_path(model.id, request.probe))
        job = self.jobs.submit(model.id, request, client)
        return {"job": job.to_dict()}

    def probe_impl(self, model_id: str, data: bytes) -> dict:
        """Keep an uploaded .npz of probe inputs for the model's next conversions (`"probe": id` in POST /convert)."""
        model = self.discovery.get(model_id)
        parsed = self.discovery.parsed(model)
        if parsed.error is not None:
            raise _user_error(parsed.error, parsed.http_code)
        return self.outputs.store_probe(model.id, data, parsed.inspection.get("inputs") or [])

    def jobs_impl(self, job_id: str | None = None) -> dict:
        if job_id is not None:
            return {"job": self.jobs.get(validation.check_job_id(job_id)).to_dict()}
        return {"jobs": [j.to_dict() for j in self.jobs.list()]}

    def history_impl(self, model_id: str | None = None, limit: int = 200) -> dict:
        if model_id is None:
            records = self.outputs.history.all()
        else:
            self.discovery.get(model_id)
            records = list(reversed(self.outputs.history.for_model(model_id)))
        return {"history": records[:limit], "total": len(records)}

    def manifest_impl(self, model_id: str) -> dict:
        model = self.discovery.get(model_id)
        result = self.outputs.result(model.id)
        if result is None:
            raise errors.NotFoundError(f"{model_id} has not been converted yet; POST /convert first.")
        return result.to_json()

    def graph_impl(self, model_id: str, which: str) -> EncodedJson:
        """The compact graph of one side, with the nodes the conversion changed marked, as JSON ready to send."""
        if which not in (metadata.FROZEN_RUN, metadata.UNFROZEN_RUN):
            raise errors.InvalidArgumentError(f"which must be 'frozen' or 'unfrozen', not {which[:40]!r}.")
        model = self.discovery.get(model_id)
        parsed = self.discovery.parsed(model)
        if parsed.error is not None:
            raise _user_error(parsed.error, parsed.http_code)
        unfrozen_path = self.outputs.unfrozen_graph_path(model.id)
        try:
            st = os.stat(unfrozen_path)
            unfrozen_key = (st.st_size, st.st_mtime_ns)
        except OSError:
            unfrozen_key = None
        if which == metadata.UNFROZEN_RUN and unfrozen_key is None:
            raise errors.NotFoundError(f"{model_id} has not been converted yet; there is no unfrozen graph.")
        key = (model.key, unfrozen_key, which)
        return self._cached_encoded(key, lambda: self._build_graph(model, which, unfrozen_path, unfrozen_key))

    def _build_graph(self, model: ModelFile, which: str, unfrozen_path: str, unfrozen_key) -> EncodedJson:
        frozen = self.discovery.graph(model).graph_def
        unfrozen = None
        if unfrozen_key is not None:
            unfrozen = graph_pb2.GraphDef()
            with open(unfrozen_path, "rb") as f:
                unfrozen.ParseFromString(f.read())
        changes = graph_view.changes(frozen, unfrozen, self.outputs.result(model.id)) if unfrozen else None
        if which == metadata.FROZEN_RUN:
            result = graph_view.compact(
                frozen, changes["frozen"] if changes else (), changed=changes["changed_frozen"] if changes else None
            )
        else:
            result = graph_view.compact(
                unfrozen,
                changes["unfrozen"],
                changes["added"],
                changed=changes["changed_unfrozen"],
                variables=changes["variables"],
            )
        result.update(model=model.id, which=which, run=metadata.run_name(model.id, which))
        return EncodedJson.of(result)

    def _cached_encoded(self, key: tuple, build) -> EncodedJson:
        """One build per key: a second request for a graph being built waits for it instead of building it too
        (the tab asks for both panes at once, and a finished conversion warms them in the background)."""
        with self._graph_lock:
            cached = self._graph_cache.get(key)
            if cached is not None:
                self._graph_cache.move_to_end(key)
                return cached
            pending = self._graph_pending.get(key)
            mine = pending is None
            if mine:
                pending = self._graph_pending[key] = threading.Event()
        if not mine:
            pending.wait(600)
            with self._graph_lock:
                cached = self._graph_cache.get(key)
            if cached is not None:
                return cached
            return build()  # the first builder failed: fail (or succeed) here in this request's own right
        try:
            payload = build()
            with self._graph_lock:
                self._graph_cache[key] = payload
                while len(self._graph_cache) > GRAPH_CACHE_ENTRIES:
                    self._graph_cache.popitem(last=False)
            return payload
        finally:
            with self._graph_lock:
                self._graph_pending.pop(key, None)
            pending.set()

    def _candidates_payload(self, model: ModelFile) -> EncodedJson:
        """The candidates, encoded once per version of the model file (20k nodes: ~0.25 s per request before)."""
        return self._cached_encoded(("candidates", model.key), lambda: EncodedJson.of(self.candidates_impl(model.id)))

    def _manifest_payload(self, model: ModelFile) -> EncodedJson | None:
        """The manifest, encoded once per version of its file (6,666 variables: ~0.2-0.4 s per request before);
        None before the first conversion."""
        try:
            st = os.stat(Layout(self.outputs.out_dir(model.id)).manifest)
        except OSError:
            return None
        key = ("manifest", model.key, st.st_size, st.st_mtime_ns)
        return self._cached_encoded(key, lambda: EncodedJson.of(self.manifest_impl(model.id)))

    def _warm_result(self, model_id: str) -> None:
        """After a conversion: encode the manifest and build both panes' graph responses, so that opening the
        result does not wait for them."""
        steps = [
            ("manifest", lambda: self._manifest_payload(self.discovery.get(model_id))),
            *[
                (which, lambda which=which: self.graph_impl(model_id, which))
                for which in (metadata.FROZEN_RUN, metadata.UNFROZEN_RUN)
            ],
        ]
        for what, step in steps:
            try:
                step()
            except Exception:  # the request will build (and report) it again
                logger.debug("unfreeze: warming the %s of %s failed", what, model_id, exc_info=True)

    def weights_impl(self, model_id: str, node: str) -> dict:
        """Statistics of one weight: the frozen graph's Const `node`, or the Const a variable `node` was made from
        (a variable starts equal to its constant). Plain numpy on the parsed GraphDef: no TensorFlow."""
        if not node or len(node) > 4096 or "\x00" in node:
            raise errors.InvalidArgumentError("pass 'node', the name of a constant or a variable.")
        model = self.discovery.get(model_id)
        parsed = self.discovery.parsed(model)
        if parsed.error is not None:
            raise _user_error(parsed.error, parsed.http_code)
        conversion = self.outputs.result(model.id)
        variable = conversion.variable(node) if conversion is not None else None
        source = node_name(variable.source) if variable else node
        key = (model.key, "weights", source)
        with self._graph_lock:
            if key in self._weights_cache:
                stats = self._weights_cache[key]
                self._weights_cache.move_to_end(key)
            else:
                stats = None
        if stats is None:
            stats = graph_view.weight_stats(self.discovery.graph(model).graph_def, source)
            if stats is None:
                raise errors.NotFoundError(f"{model_id} has no constant {source[:200]!r} with a numeric value.")
            with self._graph_lock:
                self._weights_cache[key] = stats
                while len(self._weights_cache) > 256:
                    self._weights_cache.popitem(last=False)
        result = dict(stats, source=source)
        if variable is not None:
            result.update(
                variable=node,
                trainable=variable.trainable,
                role=variable.role,
                note="the variable's initial value: the frozen constant it was made from",
            )
        return result

    def conversions_impl(self, model_id: str) -> dict:
        """Which conversions of a model can still be opened: {job: "current" | "archived"}."""
        model = self.discovery.get(model_id)
        return {"conversions": self.outputs.kept(model.id)}

    def conversion_impl(self, model_id: str, job: str) -> dict:
        """One kept conversion: its manifest and its unfrozen graph (compact, against the model's frozen graph)."""
        job = validation.check_job_id(job)
        model = self.discovery.get(model_id)
        parsed = self.discovery.parsed(model)
        if parsed.error is not None:
            raise _user_error(parsed.error, parsed.http_code)
        folder = self.outputs.conversion_dir(model.id, job)
        kept = self.outputs.kept_result(model.id, job) if folder else None
        if kept is None:
            raise errors.NotFoundError(f"the output of conversion {job} of {model_id} is no longer kept.")
        path = kept.layout.unfrozen_graph
        st = os.stat(path)
        key = (model.key, "conversion", path, st.st_size, st.st_mtime_ns)
        with self._graph_lock:
            cached = self._graph_cache.get(key)
        if cached is None:
            unfrozen = graph_pb2.GraphDef()
            with open(path, "rb") as f:
                unfrozen.ParseFromString(f.read())
            frozen = self.discovery.graph(model).graph_def
            changes = graph_view.changes(frozen, unfrozen, kept)
            graphs = {
                "frozen": graph_view.compact(frozen, changes["frozen"], changed=changes["changed_frozen"]),
                "unfrozen": graph_view.compact(
                    unfrozen,
                    changes["unfrozen"],
                    changes["added"],
                    changed=changes["changed_unfrozen"],
                    variables=changes["variables"],
                ),
            }
            with self._graph_lock:
                self._graph_cache[key] = cached = graphs
                while len(self._graph_cache) > GRAPH_CACHE_ENTRIES:
                    self._graph_cache.popitem(last=False)
        state = self.outputs.kept(model.id).get(job, "archived")
        return {"job": job, "state": state, "manifest": kept.to_json(), "graphs": cached}

    def drift_impl(self, model_id: str, other_id: str) -> dict:
        """Per-weight drift between two frozen graphs of the logdir (numpy on the parsed graphs: no TensorFlow)."""
        models = []
        for mid in (model_id, other_id):
            model = self.discovery.get(mid)
            parsed = self.discovery.parsed(model)
            if parsed.error is not None:
                raise _user_error(parsed.error, parsed.http_code)
            models.append(model)
        key = ("drift", models[0].key, models[1].key)
        with self._graph_lock:
            cached = self._weights_cache.get(key)
        if cached is None:
            a = self.discovery.graph(models[0]).graph_def
            b = self.discovery.graph(models[1]).graph_def
            cached = graph_view.weight_drift(a, b)
            with self._graph_lock:
                self._weights_cache[key] = cached
                while len(self._weights_cache) > 256:
                    self._weights_cache.popitem(last=False)
        return {"model": models[0].id, "other": models[1].id, **cached}

    def static_impl(self, relpath: str) -> tuple[bytes, str]:
        """A built frontend file and its content type; 404 if it is not there (or not inside the folder)."""
        path = wz_security.safe_join(self._static_dir, relpath) if relpath else None
        if path is None or not os.path.isfile(path) or not security.is_within(path, self._static_dir):
            if relpath == "index.js":
                raise errors.NotFoundError(
                    "the Unfreeze frontend is not built: tb_unfreeze/plugin/static/index.js is missing; build it "
                    "from frontend/ (see its README)."
                )
            raise errors.NotFoundError(f"no static file {relpath[:100]!r}.")
        ext = os.path.splitext(path)[1].lower()
        content_type = _CONTENT_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            return f.read(), content_type

    # -- routes -----------------------------------------------------------------------------------------------

    def _static_response(self, request: wrappers.Request, relpath: str) -> wrappers.Response:
        """A frontend file with an ETag (its content's hash): a browser that has it revalidates and gets a 304."""
        content, content_type = self.static_impl(relpath)
        return _with_etag(request, _etag(content), content, content_type)

    @_route("GET")
    def index_js_route(self, request: wrappers.Request) -> wrappers.Response:
        return self._static_response(request, "index.js")

    @_route("GET")
    def static_route(self, request: wrappers.Request) -> wrappers.Response:
        marker = f"/{metadata.PLUGIN_NAME}/static/"
        relpath = request.path.split(marker, 1)[1] if marker in request.path else ""
        return self._static_response(request, relpath)

    @_route("GET")
    def models_route(self, request: wrappers.Request) -> wrappers.Response:
        return _json(request, {"models": self.models_impl()})

    @_route("GET")
    def candidates_route(self, request: wrappers.Request) -> wrappers.Response:
        return self._candidates_payload(self.discovery.get(validation.arg(request, "model"))).respond(request)

    @_route("POST")
    def convert_route(self, request: wrappers.Request) -> wrappers.Response:
        body = security.read_json_body(request)
        client = {"address": request.remote_addr, "user_agent": request.headers.get("User-Agent", "")[:300]}
        return _json(request, self.convert_impl(body, client))

    @_route("POST")
    def probe_route(self, request: wrappers.Request) -> wrappers.Response:
        model_id = validation.arg(request, "model")
        data = security.read_body(request, "application/octet-stream", metadata.MAX_PROBE_BYTES)
        return _json(request, self.probe_impl(model_id, data))

    @_route("GET")
    def jobs_route(self, request: wrappers.Request) -> wrappers.Response:
        return _json(request, self.jobs_impl(validation.arg(request, "id", required=False)))

    @_route("GET")
    def history_route(self, request: wrappers.Request) -> wrappers.Response:
        limit = validation.int_arg(request, "limit", default=200, low=1, high=10000)
        return _json(request, self.history_impl(validation.arg(request, "model", required=False), limit))

    @_route("GET")
    def graph_route(self, request: wrappers.Request) -> wrappers.Response:
        which = validation.arg(request, "which", required=False) or metadata.FROZEN_RUN
        return self.graph_impl(validation.arg(request, "model"), which).respond(request)

    @_route("GET")
    def manifest_route(self, request: wrappers.Request) -> wrappers.Response:
        model = self.discovery.get(validation.arg(request, "model"))
        payload = self._manifest_payload(model)
        if payload is None:
            return _json(request, self.manifest_impl(model.id))  # not converted: its 404 says so
        return payload.respond(request)

    @_route("GET")
    def conversions_route(self, request: wrappers.Request) -> wrappers.Response:
        return _json(request, self.conversions_impl(validation.arg(request, "model")))

    @_route("GET")
    def conversion_route(self, request: wrappers.Request) -> wrappers.Response:
        return _json(request, self.conversion_impl(validation.arg(request, "model"), validation.arg(request, "job")))

    @_route("GET")
    def drift_route(self, request: wrappers.Request) -> wrappers.Response:
        return _json(request, self.drift_impl(validation.arg(request, "model"), validation.arg(request, "other")))

    @_route("GET")
    def weights_route(self, request: wrappers.Request) -> wrappers.Response:
        return _json(request, self.weights_impl(validation.arg(request, "model"), validation.arg(request, "node")))


def _user_error(message: str, http_code: int) -> errors.PublicError:
    error = errors.PublicError(message)
    error.http_code = http_code if 400 <= http_code < 500 else 400
    return error
