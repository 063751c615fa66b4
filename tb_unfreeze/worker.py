"""Run `convert` in a child process, for callers that must survive whatever TensorFlow does.

A TensorFlow CHECK failure aborts the whole process and a conversion holds the model's weights in memory; the
TensorBoard plugin therefore converts in a child (`python -m tb_unfreeze.worker`), which also keeps TensorFlow
and its threads out of TensorBoard's process.

The child is *warm*: it imports TensorFlow and the converter as soon as it starts, says so, then serves one conversion
after another, so a conversion pays for its own work, not for `import tensorflow` (seconds). `warm_up()` starts it
ahead of the first conversion (the plugin calls it when the tab is first opened). Isolation is kept: a worker that
crashes or is killed at its time-out is replaced by a fresh one, and a worker whose memory has grown after a
conversion (the allocator keeps freed weights) is retired and replaced, so an idle TensorBoard does not hold a big
model's memory. `TB_UNFREEZE_WARM_WORKER=0` turns this off: then every conversion starts its own child.

The protocol is JSON lines. Child to parent: `{"ready": {...}}` once TensorFlow is imported; per request, `progress`
lines, then one `result` or `error` line. Parent to child: one request per line; end of input stops the child.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from tb_unfreeze.contract import ConversionRequest, ConversionResult
from tb_unfreeze.errors import ConversionError, UserError
from tb_unfreeze.tensorflow_env import release_free_memory

# A worker whose resident memory after a conversion exceeds what it had when it became ready by this much is retired.
RETIRE_GROWTH_MB = float(os.environ.get("TB_UNFREEZE_WORKER_RETIRE_MB", "512"))
MAX_CONVERSIONS = 50  # and after this many conversions, whatever its memory (leaks in TensorFlow's registries)
_IDLE_KEEP = 1  # warm workers kept waiting


def _warm_enabled() -> bool:
    return os.environ.get("TB_UNFREEZE_WARM_WORKER", "1").strip().lower() not in ("0", "false", "no", "off")


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _exit_with_parent() -> None:
    """A worker must not outlive the process that started it (TensorBoard killed with SIGKILL: no end of input
    reaches a worker that is busy converting)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, name="unfreeze-parent-watch", daemon=True).start()


# -- the child ----------------------------------------------------------------------------------------------------


def _emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def _convert_one(message: dict) -> int:
    """`message`: {"source", "out_dir", "replace", "request": ConversionRequest JSON}."""
    from tb_unfreeze.contract import ConversionRequest  # noqa: PLC0415
    from tb_unfreeze.conversion import convert  # noqa: PLC0415

    try:
        request = ConversionRequest.from_json(message["request"])
        result = convert(
            message["source"],
            message["out_dir"],
            request,
            replace=bool(message.get("replace")),
            progress=lambda step, fraction: _emit({"progress": [step, fraction]}),
        )
    except UserError as e:
        _emit({"error": str(e), "type": type(e).__name__, "http_code": e.http_code})
        return 2
    _emit({"result": result.to_json()})
    return 0


def _serve_one() -> int:
    """One request, then exit (the cold path: `TB_UNFREEZE_WARM_WORKER=0`)."""
    request = json.loads(sys.stdin.readline())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return _convert_one(request)


def _serve_forever() -> int:
    """Import TensorFlow and the converter, say `ready`, then convert request after request until end of input."""
    _exit_with_parent()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    from tb_unfreeze.tensorflow_env import import_tensorflow  # noqa: PLC0415

    import_tensorflow(keras=False)  # the worker only converts (Keras, if ever needed, is imported on first use)
    import tb_unfreeze.conversion  # noqa: F401, PLC0415
    import tb_unfreeze.verify  # noqa: F401, PLC0415

    _emit(
        {
            "ready": {
                "pid": os.getpid(),
                "import_seconds": round(time.perf_counter() - started, 3),
                "rss_mb": round(_rss_mb(), 1),
            }
        }
    )
    served = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        code = _convert_one(json.loads(line))
        served += 1
        release_free_memory()
        _emit({"done": {"code": code, "conversions": served, "rss_mb": round(_rss_mb(), 1)}})
    return 0


# -- the parent ---------------------------------------------------------------------------------------------------


class _Worker:
    """One child process and the pipes to it."""

    def __init__(self, warm: bool) -> None:
        self.warm = warm
        self._stderr = tempfile.TemporaryFile(mode="w+b")  # a file, not a pipe: a chatty TensorFlow cannot block
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tb_unfreeze.worker", *(["--serve"] if warm else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        self.started = time.time()
        self.ready: dict | None = None
        self.conversions = 0
        self.rss_mb: float | None = None
        self._io = threading.Lock()  # one reader of the child's output at a time

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _records(self):
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record

    def wait_ready(self) -> dict | None:
        """Block until the child has imported TensorFlow (its `ready` line); None if it exited first."""
        with self._io:
            if self.ready is None and self.warm:
                for record in self._records():
                    if "ready" in record:
                        self.ready = record["ready"]
                        break
            return self.ready

    def run(self, request: dict, progress: Callable | None, timeout: float | None) -> dict:
        """Send one request and read until its `result` or `error`; {} when the child died first."""
        with self._io:
            return self._run(request, progress, timeout)

    def _run(self, request: dict, progress: Callable | None, timeout: float | None) -> dict:
        # A conversion stuck inside TensorFlow must not hold the caller forever: kill the child at the deadline.
        watchdog = threading.Timer(timeout, self.kill) if timeout else None
        if watchdog:
            watchdog.daemon = True
            watchdog.start()
        outcome: dict = {}
        if self.ready is None and progress:
            progress("import tensorflow", 0.01)  # a worker still starting: what the wait is for
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            if not self.warm:
                self.proc.stdin.close()
            records = self._records()
            for record in records:
                if "ready" in record:
                    self.ready = record["ready"]
                elif "progress" in record:
                    if progress:
                        progress(*record["progress"])
                elif "result" in record or "error" in record:
                    outcome = record
                    break
            if self.warm and outcome:
                done = next(records, None)
                if done and "done" in done:
                    self.conversions = done["done"]["conversions"]
                    self.rss_mb = done["done"]["rss_mb"]
        except (BrokenPipeError, OSError):
            pass  # the child is gone; said below
        finally:
            if watchdog:
                watchdog.cancel()
        if not self.warm or not outcome:
            self.proc.wait()
        return outcome

    killed = False

    def kill(self) -> None:
        self.killed = True
        try:
            self.proc.kill()
        except OSError:
            pass

    def healthy(self) -> bool:
        """Fit for another conversion: alive, not grown, not too old."""
        if not self.warm or not self.alive() or self.killed or self.conversions >= MAX_CONVERSIONS:
            return False
        base = (self.ready or {}).get("rss_mb")
        return not (base and self.rss_mb and self.rss_mb - base > RETIRE_GROWTH_MB)

    def stderr_tail(self) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 8192))
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return text

    def close(self) -> None:
        """Stop the child: end of input (it exits when idle), killed if it does not go within a few seconds."""
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self._stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass


class WorkerPool:
    """Warm workers: idle ones wait for the next conversion; a busy pool starts another child for a parallel
    caller; an unfit worker (crashed, killed, grown, old) is closed and, if none is left waiting, replaced."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: collections.deque[_Worker] = collections.deque()
        self._busy: set[_Worker] = set()
        self.started = 0  # children started, for tests and diagnostics
        self.last_pid: int | None = None

    def warm_up(self) -> None:
        """Start a warm worker now unless one is waiting or converting (returns at once)."""
        if not _warm_enabled():
            return
        with self._lock:
            self._idle = collections.deque(w for w in self._idle if w.alive() or w.close())
            if not self._idle and not self._busy:
                self._idle.append(self._start_locked())

    def _start_locked(self) -> _Worker:
        self.started += 1
        return _Worker(warm=True)

    def acquire(self) -> _Worker:
        if not _warm_enabled():
            self.started += 1
            return _Worker(warm=False)
        with self._lock:
            while self._idle:
                worker = self._idle.popleft()
                if worker.alive():
                    break
                worker.close()
            else:
                worker = self._start_locked()
            self._busy.add(worker)
            self.last_pid = worker.pid
            return worker

    def release(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = worker.healthy() and len(self._idle) < _IDLE_KEEP
            if keep:
                self._idle.append(worker)
        if not keep:
            worker.close()
            if worker.warm:
                self.warm_up()  # the next conversion finds a warm worker again

    def wait_ready(self) -> dict | None:
        """Block until the waiting worker has imported TensorFlow; its `ready` record (pid, import_seconds,
        rss_mb), or None when no worker is waiting (benchmarks and tests)."""
        with self._lock:
            worker = self._idle[0] if self._idle else None
        return worker.wait_ready() if worker is not None else None

    def stats(self) -> dict:
        with self._lock:
            return {"idle": [w.pid for w in self._idle], "busy": [w.pid for w in self._busy], "started": self.started}

    def shutdown(self) -> None:
        """Close the waiting workers (busy ones finish their conversion and are closed on release)."""
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for worker in idle:
            worker.close()


POOL = WorkerPool()


def warm_up() -> None:
    """Start the shared warm worker in the background, so the first conversion need not import TensorFlow."""
    POOL.warm_up()


def convert_in_subprocess(
    source: str,
    out_dir: str,
    request: ConversionRequest | None = None,
    *,
    replace: bool = False,
    progress: Callable | None = None,
    timeout: float | None = None,
) -> ConversionResult:
    """Like `convert`, in a child process (a warm one when available). Raises the same UserError message on user
    errors and a ConversionError when the child dies (e.g. a TensorFlow crash) or runs out of time, never leaving
    partial output; such a child is replaced."""
    request = {
        "source": os.fspath(source),
        "out_dir": os.fspath(out_dir),
        "replace": replace,
        "request": (request or ConversionRequest()).to_json(),
    }
    worker = POOL.acquire()
    try:
        outcome = worker.run(request, progress, timeout)
        timed_out = worker.killed and worker.proc.returncode == -signal.SIGKILL
        stderr = "" if outcome else worker.stderr_tail()
        code = worker.proc.returncode
    finally:
        POOL.release(worker)
    if timed_out and not outcome:
        raise ConversionError(
            f"the conversion of {source} took longer than {timeout:.0f} s and was stopped; nothing was written."
        )
    if "result" in outcome:
        return ConversionResult.from_json(outcome["result"], where=f"the worker's result for {source}")
    if "error" in outcome:
        error = UserError(outcome["error"])
        error.http_code = outcome.get("http_code", 400)
        raise error
    tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit code {code}"]
    raise ConversionError(
        f"the conversion of {source} crashed inside TensorFlow ({tail[0][:300]}); nothing was written."
    )


if __name__ == "__main__":
    sys.exit(_serve_forever() if "--serve" in sys.argv[1:] else _serve_one())
