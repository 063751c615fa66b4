"""Names shared by the plugin's modules: one place for them."""

from __future__ import annotations

PLUGIN_NAME = "unfreeze"
TAB_NAME = "Unfreeze"

# The plugin's own output tree under the logdir: <logdir>/unfreeze/<model id>/...
OUTPUT_DIR = "unfreeze"
MODEL_SUBDIR = "model"  # the `convert` out_dir
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".convert.lock"
FROZEN_RUN = "frozen"
UNFROZEN_RUN = "unfrozen"

MODEL_SUFFIXES = (".pb", ".pbtxt")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
EVENT_FILE_MARKER = "tfevents"

XSRF_HEADER = "X-XSRF-Protected"
MAX_BODY_BYTES = 64 * 1024
MAX_PROBE_BYTES = 256 << 20  # an uploaded .npz of probe inputs (POST /probe)
CONVERT_TIMEOUT_SECONDS = 4 * 3600  # a conversion stuck in TensorFlow is killed, freeing the worker
MAX_ID_CHARS = 1024


def run_name(model_id: str, which: str) -> str:
    """The TensorBoard run holding a model's frozen or unfrozen graph."""
    return f"{OUTPUT_DIR}/{model_id}/{which}"
