"""The output directory: checked before any work, built under a temporary name, renamed into place at the end.

A failure or a kill therefore leaves either the previous result or nothing, never half a model.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
import time

from tb_unfreeze.errors import OutputDirError

TMP_PREFIX = ".tb_unfreeze-tmp-"
OWNER = ".owner-pid"
# errnos meaning "the disk (or the user's quota, or a file size limit) is full"
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


def is_no_space(error: BaseException) -> bool:
    """True for an OSError, or a TensorFlow error (matched by its text), saying the disk is full."""
    if isinstance(error, OSError) and error.errno in NO_SPACE:
        return True
    from_tf = type(error).__module__.startswith("tensorflow")  # tf.errors.ResourceExhaustedError from SaveV2
    return from_tf and any(t in str(error) for t in _NO_SPACE_TEXT)


def no_space_error(out_dir: str) -> OutputDirError:
    return OutputDirError(
        f"no space left on the device holding {out_dir} while writing the result; nothing was written: free some "
        "space or choose another output directory."
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_dir(source: str, out_dir: str, replace: bool) -> str:
    """Validate `out_dir` against `source`; return its absolute real path. Writes nothing."""
    src = os.path.realpath(source)
    out = os.path.realpath(out_dir)
    if out == src:
        raise OutputDirError(f"output {out_dir} is the source model itself; choose another directory.")
    if src.startswith(out.rstrip(os.sep) + os.sep):
        raise OutputDirError(
            f"output {out_dir} contains the source model {source}; choose a directory outside it (replacing "
            "it would delete your model)."
        )
    if out.startswith(src.rstrip(os.sep) + os.sep):
        raise OutputDirError(f"output {out_dir} is inside the source {source}; choose another directory.")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise OutputDirError(f"output {out_dir} exists and is a file; choose a directory path.")
        if os.listdir(out) and not replace:
            raise OutputDirError(
                f"output {out_dir} already exists and is not empty; pass --replace (replace=True) to overwrite it."
            )
    # Nothing is created here (a later failure must leave nothing behind): the nearest existing ancestor must be
    # a writable directory; staged_dir creates the missing parents when the result is written.
    parent = os.path.dirname(out) or "."
    while not os.path.exists(parent) and os.path.dirname(parent) != parent:
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputDirError(f"cannot create {out_dir}: {parent} is a file; choose another output directory.")
    if not os.access(parent, os.W_OK):
        raise OutputDirError(f"cannot write in {parent}; choose a writable output directory.")
    return out


@contextlib.contextmanager
def staged_dir(out: str):
    """Yield a fresh temporary directory beside `out`; on success it replaces `out` atomically."""
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"cannot create the parent of {out} ({e.strerror}).") from None
    clean_stale(parent)
    tmp = None
    try:
        tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=parent)
        with open(os.path.join(tmp, OWNER), "w") as f:
            f.write(str(os.getpid()))
    except OSError as e:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in NO_SPACE:
            raise no_space_error(out) from None
        raise OutputDirError(f"cannot write in {parent} ({e.strerror}); choose a writable output directory.") from None
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_no_space(e):
            raise no_space_error(out) from None
        raise
    os.remove(os.path.join(tmp, OWNER))
    if os.path.exists(out) and _exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous result
        return
    old = None
    if os.path.exists(out):
        # No atomic exchange here: move the previous result aside under a name that says where it belongs, so a
        # kill between the two renames is repaired by the next run's clean_stale.
        old = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{os.path.basename(out)}-", dir=parent)
        os.rmdir(old)
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old:
            os.rename(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


GRACE_SECONDS = 60  # a folder this young may be one another process has just made and not yet claimed


def clean_stale(parent: str) -> None:
    """Remove temporary folders left by a killed conversion (their owner process is gone), and put back a
    previous result that a kill left moved aside."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            path = os.path.join(parent, name)
            if not name.startswith(TMP_PREFIX):
                continue
            if name.startswith(TMP_PREFIX + "old-"):
                target = os.path.join(parent, name[len(TMP_PREFIX + "old-") :].rpartition("-")[0])
                if target != parent and not os.path.exists(target):
                    with contextlib.suppress(OSError):
                        os.rename(path, target)
                        continue
                shutil.rmtree(path, ignore_errors=True)
                continue
            try:
                with open(os.path.join(path, OWNER)) as f:
                    owner = int(f.read().strip() or 0)
            except (OSError, ValueError):
                owner = 0
                with contextlib.suppress(OSError):
                    if time.time() - os.stat(path).st_mtime < GRACE_SECONDS:
                        continue
            if not owner or not _alive(owner):
                shutil.rmtree(path, ignore_errors=True)


def write_file_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".part", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
