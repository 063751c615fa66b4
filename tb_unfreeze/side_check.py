"""The TF1 Session check in a second process, beside the TF2 check (issue 12: the user's path at the cost of its work).

Verification loads the converted model twice, as a TF1 user (a Session) and as a TF2 user (`tf.saved_model.load`,
GradientTape, a finite difference). The two checks are independent, and each is mostly TensorFlow building graphs
in Python, one core at a time; a thread gains nothing (the GIL), a second process does: ResNet50's TF1 check
(~3.3 s) is then hidden behind its TF2 check (~8.6 s). The process is started when a conversion begins, so that
its `import tensorflow` overlaps the conversion's own first stages; it imports TensorFlow without Keras (nothing
here uses Keras: ~1.6 s and ~80 MB less), says it is ready with one byte, checks one model and exits.

Used only where it pays (`wanted`): a model big enough that its check takes longer than starting a process, and
small enough that two loads at once do not double a big peak of memory (VGG16, 528 MB, is checked in one process).
`TB_UNFREEZE_SIDE_CHECK=0` turns it off. When the process is not ready by the time the TF2 check is done, or
crashes, or answers nothing, the caller runs the TF1 check itself and the record says so.

The protocol (our two processes, the same code): the parent writes one pickled request to stdin; the child writes
b"R" once TensorFlow is imported, then one pickled reply: {"report", "grappler", "peak_mb"} or {"error"}.
"""

from __future__ import annotations

import os
import pickle
import resource
import select
import subprocess
import sys
import tempfile
import threading
import time

# Weights below this are checked faster in the same process than a second one can import TensorFlow, unless the
# graph has SIDE_MIN_NODES nodes or more (building a big graph's gradients is what takes the time).
SIDE_MIN_BYTES = 4 << 20
SIDE_MIN_NODES = 1500
# Weights above this are checked in one process: two loads at once would add the TF1 check's memory (for VGG16's
# 528 MB, ~1.3 GB) to the TF2 check's peak.
SIDE_MAX_BYTES = 256 << 20
READY = b"R"


def enabled() -> bool:
    return os.environ.get("TB_UNFREEZE_SIDE_CHECK", "1").strip().lower() not in ("0", "false", "no", "off")


def wanted(weight_bytes: int, nodes: int) -> bool:
    """Whether a model of this size is checked with a second process (see the module's docstring)."""
    if not enabled() or (os.cpu_count() or 1) < 2:
        return False
    return weight_bytes <= SIDE_MAX_BYTES and (weight_bytes >= SIDE_MIN_BYTES or nodes >= SIDE_MIN_NODES)


class SideCheck:
    """One child process that runs one TF1 Session check (`verify.tf1_checked`)."""

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile(mode="w+b")  # a file, not a pipe: a chatty TensorFlow cannot block
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tb_unfreeze.side_check"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        self.started = time.perf_counter()
        self._ready = False
        self._writer: threading.Thread | None = None

    def submit(self, args: tuple) -> bool:
        """Send the check's arguments (those of `verify.tf1_checked`); False when the process is gone. The write
        happens in a thread: the child reads only once TensorFlow is imported, and the probes and outputs are
        bigger than a pipe's buffer."""
        if self.proc.poll() is not None:
            return False
        try:
            data = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            return False

        def write() -> None:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.close()
            except (OSError, ValueError):  # the child is gone: result() says so
                pass

        self._writer = threading.Thread(target=write, name="unfreeze-side-check-submit", daemon=True)
        self._writer.start()
        return True

    def wait_ready(self, timeout: float) -> bool:
        """Whether TensorFlow is imported in the child, waiting up to `timeout` seconds for it."""
        return self._ready_now(timeout)

    def _ready_now(self, timeout: float) -> bool:
        if not self._ready:
            readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
            self._ready = bool(readable) and self.proc.stdout.read(1) == READY
        return self._ready

    def result(self) -> dict:
        """The child's reply, or {"unavailable": why} when it cannot give one: it was not ready (TensorFlow still
        importing) when asked, after the caller's own check (running the check here is then sooner), or it
        crashed. Waits for a child that is ready and checking."""
        try:
            if not self._ready_now(0.0):
                if self.proc.poll() is not None:
                    return {"unavailable": self._died("before it was ready")}
                return {
                    "unavailable": "the second process was still starting TensorFlow "
                    f"({time.perf_counter() - self.started:.1f} s) when this one had finished its check"
                }
            reply = pickle.load(self.proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self.proc.wait()  # the pipe closed: the process has ended, its exit code says how
            return {"unavailable": self._died("during the check")}
        finally:
            self.close()
        return reply

    def _died(self, when: str) -> str:
        code = self.proc.poll()
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return f"the second process ended {when} ({how})"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self._writer is not None:
            self._writer.join(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self._stderr.close()


def start(weight_bytes: int, nodes: int) -> SideCheck | None:
    """A side process for a model of this size, or None when it would not pay (`wanted`) or cannot start."""
    if not wanted(weight_bytes, nodes):
        return None
    try:
        return SideCheck()
    except OSError:
        return None


def _serve() -> int:
    from tb_unfreeze.worker import _exit_with_parent  # noqa: PLC0415

    _exit_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything TensorFlow or a library prints goes to stderr, not into the replies
    from tb_unfreeze.tensorflow_env import import_tensorflow  # noqa: PLC0415

    tf = import_tensorflow(keras=False)  # nothing here uses Keras
    from tb_unfreeze import verify as V  # noqa: PLC0415
    from tb_unfreeze.errors import first_line  # noqa: PLC0415

    out.write(READY)
    out.flush()
    try:
        args = pickle.load(sys.stdin.buffer)
    except EOFError:  # the parent no longer needs the check
        return 0
    try:
        report, grappler = V.tf1_checked(*args)
        reply = {"report": report, "grappler": grappler}
    except (tf.errors.OpError, ValueError, KeyError) as e:
        reply = {"error": first_line(e)}
    reply["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    pickle.dump(reply, out, protocol=pickle.HIGHEST_PROTOCOL)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_serve())
