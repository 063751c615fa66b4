"""The plugin's output tree and the conversion a job runs.

    <logdir>/unfreeze/<model id>/model/          the `convert` out_dir (SavedModel, unfrozen_graph.pb, unfreeze.json)
    <logdir>/unfreeze/<model id>/frozen/         TensorBoard run with the frozen graph
    <logdir>/unfreeze/<model id>/unfrozen/       TensorBoard run with the unfrozen graph
    <logdir>/unfreeze/<model id>/history.jsonl   one line per conversion, from every TensorBoard on this logdir
    <logdir>/unfreeze/<model id>/conversions/<job>/  earlier conversions, kept when a newer one replaces `model/`
                                                 (hard links: no copy of the weights), the newest KEEP_CONVERSIONS

Everything here goes through the core library (`convert`, `log_graphs`, imported from their modules); TensorFlow is
imported only in the child process `Outputs.convert` starts (tb_unfreeze.worker).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator

from tensorboard import errors

from tb_unfreeze.contract import ConversionRequest, ConversionResult, Layout, read_result
from tb_unfreeze.errors import BusyError, UserError
from tb_unfreeze.output_dir import write_file_atomic
from tb_unfreeze.plugin import metadata
from tb_unfreeze.plugin.discovery import ModelFile
from tb_unfreeze.plugin.history import History
from tb_unfreeze.plugin.security import check_model_id, is_within

logger = logging.getLogger(__name__)

CONVERSIONS_SUBDIR = "conversions"
CONVERTING, LOGGING = "convert", "log"  # why the model's lock is held (written into the lock file)
LOGGING_PATIENCE_S = 120.0  # how long a conversion waits for the frozen graph run being logged
PROBES_SUBDIR = "probes"
_PROBE = re.compile(r"[0-9a-f]{16}")
MAX_PROBE_INFLATED = 1 << 30
KEEP_CONVERSIONS = 8
_JOB = re.compile(r"[0-9a-f]{6,64}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summarize(result: ConversionResult, model_id: str) -> dict:
    """The few facts a listing or a history line shows about a finished conversion (the tab's `JobResult`)."""
    return {
        **result.summary_json(),
        "runs": {w: metadata.run_name(model_id, w) for w in (metadata.FROZEN_RUN, metadata.UNFROZEN_RUN)},
    }


class Outputs:
    """Paths and writes under `<logdir>/unfreeze/` for one logdir."""

    def __init__(self, logdir: str) -> None:
        self.logdir = os.path.realpath(logdir)
        self.root = os.path.join(self.logdir, metadata.OUTPUT_DIR)
        self.history = History(self.root)

    def model_dir(self, model_id: str) -> str:
        """`<logdir>/unfreeze/<id>`, refused if anything on the way is a symlink leading elsewhere."""
        path = os.path.join(self.root, *check_model_id(model_id).split("/"))
        if not is_within(path, self.root) or not is_within(self.root, self.logdir):
            raise errors.PermissionDeniedError(f"the output folder of {model_id!r} resolves outside the logdir.")
        return path

    def out_dir(self, model_id: str) -> str:
        return os.path.join(self.model_dir(model_id), metadata.MODEL_SUBDIR)

    def result(self, model_id: str) -> ConversionResult | None:
        """The latest successful conversion, or None."""
        return read_result(self.out_dir(model_id))

    def unfrozen_graph_path(self, model_id: str) -> str:
        return Layout(self.out_dir(model_id)).unfrozen_graph

    # -- probe inputs uploaded from the tab ------------------------------------------------------------------------

    def probe_path(self, model_id: str, probe_id: str) -> str:
        """The stored .npz of an uploaded probe (POST /probe), or a 404 naming what to do."""
        path = os.path.join(self.model_dir(model_id), PROBES_SUBDIR, f"{probe_id}.npz")
        if not _PROBE.fullmatch(probe_id) or not os.path.isfile(path):
            raise errors.NotFoundError(f"no uploaded probe {probe_id[:40]!r} for {model_id}; upload the .npz again.")
        return path

    def store_probe(self, model_id: str, data: bytes, inputs: list[dict]) -> dict:
        """Check an uploaded .npz of probe inputs against the model's inputs and keep it under
        `<model>/probes/<id>.npz` (id: the first 16 hex digits of its SHA-256). 400 naming the array when it fits
        no input; nothing is written then."""
        import numpy as np  # noqa: PLC0415 (a TensorBoard dependency; only this route needs it)

        not_npz = "the uploaded file is not an .npz of arrays ({}); save one with numpy.savez(path, input_name=array)."
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:  # sizes first: a small zip can inflate to gigabytes
                inflated = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise errors.InvalidArgumentError(not_npz.format(str(e)[:200])) from None
        if inflated > MAX_PROBE_INFLATED:
            raise errors.InvalidArgumentError(
                f"the uploaded .npz holds {inflated:,} bytes of arrays; the limit is {MAX_PROBE_INFLATED:,}."
            )
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise errors.InvalidArgumentError(not_npz.format(str(e)[:200])) from None
        fed = {i["name"]: i for i in inputs if i.get("kind") == "data"}
        aliases = {name.replace("/", "_"): name for name in fed}
        if not arrays:
            raise errors.InvalidArgumentError("the uploaded .npz holds no array; key one array per input node.")
        described = {}
        for key, value in arrays.items():
            name = key if key in fed else aliases.get(key)
            if name is None:
                raise errors.InvalidArgumentError(
                    f"the uploaded .npz has an array {key[:200]!r} that matches no input of {model_id}; inputs: "
                    f"{', '.join(sorted(fed))[:500] or 'none'}."
                )
            if value.dtype.kind not in "biufcSU":
                raise errors.InvalidArgumentError(
                    f"array {key[:200]!r} has dtype {value.dtype}; pass numbers, booleans or bytes."
                )
            shape = fed[name].get("shape")
            if shape is not None and (
                len(shape) != value.ndim or any(d not in (None, -1) and d != n for d, n in zip(shape, value.shape))
            ):
                raise errors.InvalidArgumentError(
                    f"array {key[:200]!r} has shape {list(value.shape)} but input {name!r} takes {shape} "
                    "(-1: any size)."
                )
            described[name] = {"shape": list(value.shape), "dtype": value.dtype.name}
        probe_id = hashlib.sha256(data).hexdigest()[:16]
        folder = os.path.join(self.model_dir(model_id), PROBES_SUBDIR)
        os.makedirs(folder, exist_ok=True)
        write_file_atomic(os.path.join(folder, f"{probe_id}.npz"), data)
        return {
            "probe": probe_id,
            "inputs": described,
            "missing": sorted(set(fed) - set(described)),
        }  # searched for at conversion, as without a probe

    # -- earlier conversions --------------------------------------------------------------------------------------

    def conversions_dir(self, model_id: str) -> str:
        return os.path.join(self.model_dir(model_id), CONVERSIONS_SUBDIR)

    def conversion_dir(self, model_id: str, job: str) -> str | None:
        """The folder holding conversion `job`'s output: `model/` for the latest, its archive for an earlier one."""
        if not _JOB.fullmatch(job or ""):
            return None
        latest = self._latest_ok(model_id)
        if latest is not None and latest.get("job") == job and self.result(model_id) is not None:
            return self.out_dir(model_id)
        path = os.path.join(self.conversions_dir(model_id), job)
        if os.path.isfile(Layout(path).manifest) and is_within(path, self.root):
            return path
        return None

    def kept(self, model_id: str) -> dict[str, str]:
        """{job: "current" | "archived"} for every conversion whose output is still on disk."""
        out: dict[str, str] = {}
        try:
            names = os.listdir(self.conversions_dir(model_id))
        except OSError:
            names = []
        root = self.conversions_dir(model_id)
        for name in names:
            if _JOB.fullmatch(name) and os.path.isfile(Layout(os.path.join(root, name)).manifest):
                out[name] = "archived"
        latest = self._latest_ok(model_id)
        if latest is not None and latest.get("job") and self.result(model_id) is not None:
            out[str(latest["job"])] = "current"
        return out

    def kept_result(self, model_id: str, job: str) -> ConversionResult | None:
        path = self.conversion_dir(model_id, job)
        return read_result(path) if path is not None else None

    def _latest_ok(self, model_id: str) -> dict | None:
        for record in reversed(self.history.for_model(model_id)):
            if record.get("ok"):
                return record
        return None

    def archive_current(self, model_id: str) -> str | None:
        """Keep the current `model/` as `conversions/<its job>/` before a new conversion replaces it.

        Every file is hard-linked (the conversion replaces `model/` with a new folder and never writes into the old
        one, so the links keep the old files alive at no cost); the manifest is written anew with the archive's
        paths. Only the newest KEEP_CONVERSIONS archives stay. Returns the archive, or None (nothing to keep)."""
        current = self.out_dir(model_id)
        latest = self._latest_ok(model_id)
        job = str((latest or {}).get("job") or "")
        if not _JOB.fullmatch(job) or not os.path.isfile(Layout(current).manifest):
            return None
        root = self.conversions_dir(model_id)
        final = os.path.join(root, job)
        if os.path.isdir(final):
            return final
        tmp = os.path.join(root, f".tmp-{job}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(root, exist_ok=True)

        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(current, tmp, copy_function=link, symlinks=True)
        try:
            # A new file renamed over the link (never a write through it into the current manifest).
            ConversionResult.open(tmp).relocated(final, archived={"job": job, "from": current}).write(tmp)
        except (OSError, UserError) as e:
            logger.warning("unfreeze: archiving %s: cannot rewrite its manifest: %s", model_id, e)
        os.rename(tmp, final)
        self._prune(root)
        return final

    def _prune(self, root: str) -> None:
        try:
            entries = [os.path.join(root, n) for n in os.listdir(root) if _JOB.fullmatch(n)]
        except OSError:
            return
        entries.sort(key=lambda p: os.path.getmtime(p), reverse=True)
        for old in entries[KEEP_CONVERSIONS:]:
            shutil.rmtree(old, ignore_errors=True)
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if name.startswith(".tmp-") and time.time() - os.path.getmtime(path) > 3600:
                shutil.rmtree(path, ignore_errors=True)

    def has_run(self, model_id: str, which: str, newer_than: float = 0.0) -> bool:
        """Whether the run holds an event file written after `newer_than` (a timestamp)."""
        run = os.path.join(self.model_dir(model_id), which)
        try:
            names = os.listdir(run)
        except OSError:
            return False
        return any(
            metadata.EVENT_FILE_MARKER in n and os.path.getmtime(os.path.join(run, n)) >= newer_than for n in names
        )

    def ensure_frozen_run(self, model: ModelFile, graph: object) -> None:
        """Log the frozen graph run unless one at least as new as the model file is already there."""
        if self.has_run(model.id, metadata.FROZEN_RUN, newer_than=model.mtime):
            return
        try:
            with self.lock(model.id, wait=False, purpose=LOGGING):
                _log_graphs(self.logdir, model.id, frozen=graph)
        except BusyError:
            pass  # another TensorBoard converts it and logs both runs
        except OSError as e:
            logger.warning("unfreeze: cannot log the frozen graph of %s: %s", model.id, e)

    @contextlib.contextmanager
    def lock(
        self, model_id: str, wait: bool, purpose: str = CONVERTING, on_wait: Callable[[], None] | None = None
    ) -> Iterator[None]:
        """An exclusive lock on the model's output folder, shared by every TensorBoard on this logdir.

        The holder writes its purpose into the lock file. Without `wait`, a lock held for a conversion is a
        BusyError at once, but one held to log the frozen graph run (seconds, done by whichever TensorBoard
        lists the model first) is waited for, up to LOGGING_PATIENCE_S (`on_wait` is called once then)."""
        model_dir = self.model_dir(model_id)
        os.makedirs(model_dir, exist_ok=True)
        fd = os.open(os.path.join(model_dir, metadata.LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd, model_id, wait, on_wait)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, purpose.encode(), 0)
                yield
            finally:
                os.ftruncate(fd, 0)  # released: nobody's purpose
        finally:
            os.close(fd)

    @staticmethod
    def _acquire(fd: int, model_id: str, wait: bool, on_wait: Callable[[], None] | None) -> None:
        if wait:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return
        deadline, told = time.monotonic() + LOGGING_PATIENCE_S, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace")
            # An empty file: the holder has just taken the lock and not yet said why; ask again shortly.
            if holder not in (LOGGING, "") or time.monotonic() > deadline:
                raise BusyError(
                    f"{model_id} is being converted by another TensorBoard on this logdir; wait for it to finish."
                ) from None
            if on_wait is not None and not told:
                on_wait()
                told = True
            time.sleep(0.2)

    def convert(
        self, model: ModelFile, request: ConversionRequest, client: dict, progress: Callable[[str, float], None]
    ) -> dict:
        """Run `tb_unfreeze.convert` into `model/` (replacing the last result), log both runs, append history."""
        started = time.time()
        record = {
            "time": _now(),
            "model": model.id,
            "client": client.get("address"),
            "user_agent": client.get("user_agent"),
            "job": client.get("job"),
            "request": request.to_json(),
            "source": {"size": model.size, "mtime": model.mtime},
        }
        from tb_unfreeze.worker import convert_in_subprocess  # noqa: PLC0415

        waiting = lambda: progress("waiting for the frozen graph run to be logged", 0.0)  # noqa: E731
        with self.lock(model.id, wait=False, on_wait=waiting):  # a refusal (BusyError) is no conversion: no history
            try:
                self.archive_current(model.id)  # the conversion about to replace it stays openable from the history
            except OSError as e:
                logger.warning("unfreeze: cannot keep the previous conversion of %s: %s", model.id, e)
            try:
                # A child process: a TensorFlow crash or its memory cannot touch TensorBoard, and TensorFlow's
                # threads do not compete with TensorBoard's for the GIL.
                conversion = convert_in_subprocess(
                    model.path,
                    self.out_dir(model.id),
                    request,
                    replace=True,
                    progress=progress,
                    timeout=metadata.CONVERT_TIMEOUT_SECONDS,
                )
            except Exception as e:
                record.update(ok=False, error=_public_message(e, model.id), seconds=round(time.time() - started, 3))
                self._record(model.id, record)
                raise
            result = summarize(conversion, model.id)
            progress("log graphs", 1.0)
            try:  # the model is converted even if the runs cannot be written: say so, do not fail the job
                fresh = self.has_run(model.id, metadata.FROZEN_RUN, newer_than=model.mtime)
                frozen = None if fresh else model.path
                _log_graphs(self.logdir, model.id, frozen=frozen, unfrozen=self.out_dir(model.id))
            except Exception as e:
                logger.exception("unfreeze: logging the graph runs of %s failed", model.id)
                result["warnings"] = [f"the graph runs were not written: {_public_message(e, model.id)}"]
        record.update(ok=True, result=result, error=None, seconds=round(time.time() - started, 3))
        self._record(model.id, record)
        return result

    def _record(self, model_id: str, record: dict) -> None:
        try:
            self.history.append(model_id, record)
        except OSError as e:
            logger.warning("unfreeze: cannot write the history of %s: %s", model_id, e)


def _log_graphs(logdir: str, model_id: str, **graphs) -> None:
    from tb_unfreeze.graph_runs import log_graphs  # noqa: PLC0415 (no TensorFlow)

    log_graphs(logdir, model_id, **graphs)


def _public_message(error: Exception, model_id: str) -> str:
    if isinstance(error, (UserError, errors.PublicError)):
        return str(error)
    return f"internal error while converting {model_id}; the TensorBoard log has the details."
