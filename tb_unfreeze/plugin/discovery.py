"""Find frozen graphs under the logdir and the extra model folders, and remember what parsing them told us.

Scanning is a cheap walk (names and `stat` only) that may run often, so a model dropped in while TensorBoard
runs appears on the next scan. Parsing is the expensive part: its result is cached by (real path, size, mtime),
so an unchanged file is parsed once however often it is listed.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable

from tensorboard import errors

from tb_unfreeze.errors import UserError
from tb_unfreeze.plugin import metadata
from tb_unfreeze.plugin.security import check_model_id, is_within, resolve_inside

logger = logging.getLogger(__name__)

Key = tuple[str, int, int]  # (real path, size, mtime_ns)


@dataclasses.dataclass(frozen=True)
class ModelFile:
    """One frozen-graph file found under a root."""

    id: str  # path relative to its root, '/'-separated
    root: str  # real path of the root it was found under
    path: str  # path of the file (root joined with the id)
    realpath: str
    size: int
    mtime_ns: int

    @property
    def key(self) -> Key:
        return (self.realpath, self.size, self.mtime_ns)

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9


@dataclasses.dataclass(frozen=True)
class Parsed:
    """What parsing a model gave: the inspection dict, or the user error it raised."""

    inspection: dict | None
    error: str | None = None
    http_code: int = 400


def _is_saved_model_dir(filenames: Iterable[str]) -> bool:
    return any(name in metadata.SAVED_MODEL_FILES for name in filenames)


def _is_model_name(name: str) -> bool:
    return name.endswith(metadata.MODEL_SUFFIXES) and metadata.EVENT_FILE_MARKER not in name and name[0] != "."


class Discovery:
    """The models under a list of roots; the first root holding an id wins.

    `skip` lists folders never entered (the plugin's own output tree). `on_parsed(model, inspection)` is called
    once per newly parsed valid model, with the `Inspection` (e.g. to log its frozen graph run).
    """

    def __init__(
        self,
        roots: Iterable[str],
        skip: Iterable[str] = (),
        min_interval: float = 2.0,
        max_models: int = 5000,
        on_parsed: Callable[[ModelFile, object], None] | None = None,
    ) -> None:
        self.roots: list[str] = []
        for root in roots:
            real = os.path.realpath(root)
            if real not in self.roots:
                self.roots.append(real)
        self._skip = {os.path.realpath(s) for s in skip}
        self._min_interval = min_interval
        self._max_models = max_models
        self._on_parsed = on_parsed
        self._lock = threading.Lock()
        self._parse_lock = threading.Lock()
        self._models: dict[str, ModelFile] = {}
        self._scanned_at: float | None = None
        self._parsed: dict[Key, Parsed] = {}
        self._graphs: collections.OrderedDict[Key, object] = collections.OrderedDict()  # a few FrozenGraphs

    # -- scanning ---------------------------------------------------------------------------------------------

    def scan(self, force: bool = False) -> dict[str, ModelFile]:
        """Walk the roots (at most once per `min_interval` unless forced); return id -> model."""
        with self._lock:
            fresh = self._scanned_at is not None and time.monotonic() - self._scanned_at < self._min_interval
            if fresh and not force:
                return dict(self._models)
        found: dict[str, ModelFile] = {}
        for root in self.roots:
            for model in self._walk(root):
                found.setdefault(model.id, model)
                if len(found) >= self._max_models:
                    logger.warning("unfreeze: more than %d models; listing the first ones", self._max_models)
                    break
        with self._lock:
            self._models, self._scanned_at = found, time.monotonic()
            live = {m.key for m in found.values()}
            self._parsed = {k: v for k, v in self._parsed.items() if k in live}
        return dict(found)

    def _walk(self, root: str) -> Iterable[ModelFile]:
        for dirpath, dirnames, filenames in os.walk(root):
            if _is_saved_model_dir(filenames):
                dirnames[:] = []
                continue
            dirnames[:] = sorted(
                d for d in dirnames if d[0] != "." and os.path.realpath(os.path.join(dirpath, d)) not in self._skip
            )
            for name in sorted(filter(_is_model_name, filenames)):
                path = os.path.join(dirpath, name)
                model_id = os.path.relpath(path, root).replace(os.sep, "/")
                try:
                    check_model_id(model_id)
                    st = os.stat(path)
                except (errors.PublicError, OSError):
                    continue  # odd names and dangling links are not models we can address
                if stat.S_ISREG(st.st_mode) and is_within(path, root):
                    yield ModelFile(model_id, root, path, os.path.realpath(path), st.st_size, st.st_mtime_ns)

    def models(self) -> list[ModelFile]:
        """The models of a recent scan, sorted by id."""
        return [m for _, m in sorted(self.scan().items())]

    def known(self) -> bool:
        """Cheap: whether the last scan found any model (walks only if there was no scan yet)."""
        with self._lock:
            scanned, found = self._scanned_at is not None, bool(self._models)
        return found if scanned else bool(self.scan())

    def get(self, model_id: str) -> ModelFile:
        """The model with this id; rescans once before answering 404."""
        check_model_id(model_id)
        model = self.scan().get(model_id) or self.scan(force=True).get(model_id)
        if model is None:
            raise errors.NotFoundError(f"no frozen graph {model_id!r} under the logdir or the model folders.")
        if resolve_inside(model.root, model_id) != model.realpath:  # 403 if it now leads out of its folder
            return self.get_changed(model_id)
        return model

    def get_changed(self, model_id: str) -> ModelFile:
        """The model after a forced rescan (its file was replaced since the last scan)."""
        model = self.scan(force=True).get(model_id)
        if model is None:
            raise errors.NotFoundError(f"no frozen graph {model_id!r} under the logdir or the model folders.")
        return model

    # -- parsing ----------------------------------------------------------------------------------------------

    def parsed(self, model: ModelFile) -> Parsed:
        """The cached parse result of this exact file version, parsing it on first use."""
        with self._lock:
            hit = self._parsed.get(model.key)
        if hit is not None:
            return hit
        with self._parse_lock:  # one parse per file version even with concurrent requests
            with self._lock:
                hit = self._parsed.get(model.key)
            if hit is not None:
                return hit
            from tb_unfreeze.analysis import inspect_model  # noqa: PLC0415 (no TensorFlow)

            inspection = None
            try:
                inspection = inspect_model(model.path)
                result = Parsed(inspection.to_dict())
            except UserError as e:
                result = Parsed(None, str(e), getattr(e, "http_code", 400))
            with self._lock:
                self._parsed[model.key] = result
                if inspection is not None:
                    self._graphs[model.key] = inspection.graph
                    while len(self._graphs) > 3:
                        self._graphs.popitem(last=False)
        if inspection is not None and self._on_parsed is not None:
            try:
                self._on_parsed(model, inspection)
            except Exception:  # a failed side job must not hide the model
                logger.exception("unfreeze: after parsing %s", model.path)
        return result

    def cached(self, model: ModelFile) -> Parsed | None:
        """The parse result if already known, without parsing."""
        with self._lock:
            return self._parsed.get(model.key)

    def graph(self, model: ModelFile):
        """The model's FrozenGraph (kept for the last few models; parsed again after that)."""
        with self._lock:
            graph = self._graphs.get(model.key)
            if graph is not None:
                self._graphs.move_to_end(model.key)
                return graph
        from tb_unfreeze.loading import load_graph  # noqa: PLC0415 (no TensorFlow)

        graph = load_graph(model.path)
        with self._lock:
            self._graphs[model.key] = graph
            while len(self._graphs) > 3:
                self._graphs.popitem(last=False)
        return graph

    def index_all(self) -> None:
        """Parse every model not parsed yet (the background indexer calls this)."""
        for model in self.models():
            self.parsed(model)
