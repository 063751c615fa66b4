"""Import TensorFlow once, quietly: its C++ start-up banner (oneDNN, CPU features, absl) would bury the one-line
messages users get from tb_unfreeze. Errors during the import are still shown."""

from __future__ import annotations

import contextlib
import functools
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded hosts): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# The default of import_tensorflow(keras=...): the CLI's commands that only convert, inspect or refreeze set it False.
KERAS_AT_IMPORT = True


def import_tensorflow(keras: bool | None = None):
    """`import tensorflow`, without its start-up noise unless TB_UNFREEZE_DEBUG is set.

    `keras=False`: without the Keras import that `import tensorflow` makes eagerly (its optimizers are imported at
    once; with scikit-learn installed, Keras's scikit-learn wrappers and scikit-learn too): ~1.6 s of a ~5.5 s
    import here, and ~80 MB. For the processes that only convert (the CLI's `convert`, the tab's worker, the second
    process of the TF1 check). Keras is not blocked afterwards: `tf.keras` imports it on first use."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    blocked = not (KERAS_AT_IMPORT if keras is None else keras) and "keras" not in sys.modules
    if blocked:
        sys.modules["keras"] = None  # TensorFlow's eager `import keras.src.optimizers` fails, and it carries on
    try:
        if os.environ.get("TB_UNFREEZE_DEBUG"):
            import tensorflow as tf  # noqa: PLC0415
        else:
            try:
                with _stderr_silenced():
                    import tensorflow as tf  # noqa: PLC0415
            except ImportError:
                import tensorflow as tf  # noqa: PLC0415, F401  (again, so the real error is visible)
    finally:
        if blocked and "keras" in sys.modules and sys.modules["keras"] is None:
            del sys.modules["keras"]
    tf.get_logger().setLevel("ERROR")  # TF1-API deprecation notices are noise for our users
    return tf


@functools.cache
def _glibc():
    """glibc, or None where there is none (its malloc_trim and mallopt are then not called)."""
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Give the allocator's free pages back to the system. glibc keeps memory freed in the middle of its heaps (and
    TensorFlow's tensors of up to 32 MB come from there once it has raised its mmap threshold), so without this a
    process's resident memory only grows: VGG16's finite difference crept up by ~50 MB per forward pass. A no-op
    where there is no glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


# glibc's mallopt parameter, and the threshold the allocator grows to by itself (DEFAULT_MMAP_THRESHOLD_MAX, 64-bit).
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_GROWN = 32 << 20


class large_allocations_mapped:
    """Within: every allocation of 1 MB or more is its own memory mapping, returned to the system when freed.

    glibc serves allocations below its mmap threshold from its heaps, and raises that threshold (up to 32 MB) each
    time a mapped block is freed; TensorFlow's activations and gradient temporaries then come from heaps that keep
    what is freed until a trim. For a model of hundreds of MB that is ~130 MB more at the backward pass's peak
    (VGG16: 1613 -> 1484 MB above `import tensorflow`, no slower). On exit the threshold is left at 32 MB, the value
    the allocator reaches by itself after the first large block is freed (a fixed threshold cannot be made dynamic
    again). A no-op without glibc."""

    def __init__(self, threshold: int = 1 << 20):
        self.threshold = threshold

    def __enter__(self):
        release_free_memory()
        self._set(self.threshold)
        return self

    def __exit__(self, *exc):
        self._set(_MMAP_THRESHOLD_GROWN)
        release_free_memory()
        return False

    @staticmethod
    def _set(value: int) -> None:
        libc = _glibc()
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, value)
