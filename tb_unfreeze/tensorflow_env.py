"""Import TensorFlow once, quietly: its C++ start-up banner (oneDNN, CPU features, absl) would bury the one-line
messages users get from tb_unfreeze. Errors during the import are still shown."""

from __future__ import annotations

import contextlib
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


def import_tensorflow():
    """`import tensorflow`, without its start-up noise unless TB_UNFREEZE_DEBUG is set."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("TB_UNFREEZE_DEBUG"):
        import tensorflow as tf  # noqa: PLC0415
    else:
        try:
            with _stderr_silenced():
                import tensorflow as tf  # noqa: PLC0415
        except ImportError:
            import tensorflow as tf  # noqa: PLC0415, F401  (again, so the real error is visible)
    tf.get_logger().setLevel("ERROR")  # TF1-API deprecation notices are noise for our users
    return tf
