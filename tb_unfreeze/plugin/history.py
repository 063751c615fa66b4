"""The conversion history: one JSON line per conversion in `<logdir>/unfreeze/<model id>/history.jsonl`.

Several TensorBoards may serve the same logdir, so writers take an exclusive `fcntl` lock and append a whole
line in one write; readers take a shared lock. Lines that fail to parse (e.g. a disk that filled up) are skipped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading

from tb_unfreeze.plugin import metadata

logger = logging.getLogger(__name__)


def append(path: str, record: dict) -> None:
    """Append one record as a JSON line, under an exclusive lock, flushed to disk."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read(path: str) -> list[dict]:
    """All records of one history file, oldest first; [] if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return []
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    finally:
        os.close(fd)  # closing releases the lock
    records = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class History:
    """The histories of all models under one output root (`<logdir>/unfreeze`)."""

    def __init__(self, output_root: str) -> None:
        self.output_root = output_root
        self._latest: dict[str, tuple[tuple[int, int], dict | None]] = {}
        self._lock = threading.Lock()

    def path(self, model_id: str) -> str:
        return os.path.join(self.output_root, *model_id.split("/"), metadata.HISTORY_FILE)

    def append(self, model_id: str, record: dict) -> None:
        append(self.path(model_id), record)

    def for_model(self, model_id: str) -> list[dict]:
        return read(self.path(model_id))

    def latest(self, model_id: str) -> dict | None:
        """The newest record of a model; cached by the file's size and mtime so listing stays cheap."""
        path = self.path(model_id)
        try:
            st = os.stat(path)
        except OSError:
            return None
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._latest.get(model_id)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        records = read(path)
        latest = records[-1] if records else None
        with self._lock:
            self._latest[model_id] = (stamp, latest)
        return latest

    def all(self) -> list[dict]:
        """Every record under the output root, each with its `model`, newest first."""
        records: list[dict] = []
        for dirpath, dirnames, filenames in os.walk(self.output_root):
            if metadata.HISTORY_FILE in filenames:
                dirnames[:] = []  # below a model's folder are only its outputs
                model_id = os.path.relpath(dirpath, self.output_root).replace(os.sep, "/")
                for record in read(os.path.join(dirpath, metadata.HISTORY_FILE)):
                    record.setdefault("model", model_id)
                    records.append(record)
        records.sort(key=lambda r: str(r.get("time", "")), reverse=True)
        return records
