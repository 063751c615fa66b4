"""Run `convert` in a child process, for callers that must survive whatever TensorFlow does.

A TensorFlow CHECK failure aborts the whole process and a conversion holds the model's weights in memory; the
TensorBoard plugin therefore converts in a child (`python -m tb_unfreeze.worker`), which also keeps TensorFlow
and its threads out of TensorBoard's process. The protocol is JSON lines: the request on stdin; `progress`
lines, then one `result` or `error` line on stdout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

from tb_unfreeze.errors import ConversionError, UserError


def _serve_one() -> int:
    request = json.loads(sys.stdin.readline())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def emit(record: dict) -> None:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
        sys.stdout.flush()

    from tb_unfreeze.conversion import convert  # noqa: PLC0415
    from tb_unfreeze.selection import Selection  # noqa: PLC0415

    selection = Selection(**request.pop("selection", {}) or {})
    try:
        manifest = convert(request.pop("source"), request.pop("out_dir"), selection=selection,
                           progress=lambda step, fraction: emit({"progress": [step, fraction]}), **request)
    except UserError as e:
        emit({"error": str(e), "type": type(e).__name__, "http_code": e.http_code})
        return 2
    emit({"result": manifest})
    return 0


def convert_in_subprocess(source: str, out_dir: str, *, selection=None, progress: Callable | None = None,
                          timeout: float | None = None, **kwargs) -> dict:
    """Like `convert`, in a child process. Raises the same UserError message on user errors and a
    ConversionError when the child dies (e.g. a TensorFlow crash), never leaving partial output."""
    request = {"source": os.fspath(source), "out_dir": os.fspath(out_dir),
               "selection": selection.to_dict() if selection is not None else None, **kwargs}
    child = subprocess.Popen(
        [sys.executable, "-m", "tb_unfreeze.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    child.stdin.write(json.dumps(request) + "\n")
    child.stdin.close()
    # A conversion stuck inside TensorFlow must not hold the caller's worker forever: kill it at the deadline.
    watchdog = threading.Timer(timeout, child.kill) if timeout else None
    if watchdog:
        watchdog.daemon = True
        watchdog.start()
    outcome: dict = {}
    for line in child.stdout:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "progress" in record and progress:
            progress(*record["progress"])
        elif "result" in record or "error" in record:
            outcome = record
    stderr = child.stderr.read()
    child.wait()
    timed_out = bool(watchdog) and not watchdog.is_alive() and child.returncode == -signal.SIGKILL
    if watchdog:
        watchdog.cancel()
    if timed_out and not outcome:
        raise ConversionError(
            f"the conversion of {source} took longer than {timeout:.0f} s and was stopped; nothing was written."
        )
    if "result" in outcome:
        return outcome["result"]
    if "error" in outcome:
        error = UserError(outcome["error"])
        error.http_code = outcome.get("http_code", 400)
        raise error
    tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or [f"exit code {child.returncode}"]
    raise ConversionError(f"the conversion of {source} crashed inside TensorFlow ({tail[0][:300]}); nothing was written.")


if __name__ == "__main__":
    sys.exit(_serve_one())
