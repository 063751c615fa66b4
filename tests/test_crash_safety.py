"""Crash safety: a conversion killed with SIGKILL midway, and a conversion into a full disk.

A killed conversion leaves no partial output under the output name (only a hidden `.tb_unfreeze-tmp-*` folder,
which the next conversion removes); with `--replace`, the previous result stays whole. A full disk (a 512 KB
tmpfs) gives one clear line and exit code 2, and nothing half-written. The source models are read straight
from the shared folder: conftest.py checks their sha256 after the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tb_unfreeze.errors import UserError
from tb_unfreeze.output_dir import TMP_PREFIX
from tb_unfreeze.worker import convert_in_subprocess

MODEL = "cms_deepjet_v03.pb"  # 1.3 MB, LSTM + dense weights: 1-4 s inside the staged folder (build, save, verify)
SMALL = "tf2onnx_regression.pb"
TIMEOUT = 240
STATS = {"kills": 0, "midway": 0}
# Exit codes of a conversion that wrote its result: verified (0) or written but not verified (3). What is under test
# here is that a result is whole or absent, not whether it verifies (test_convert_real.py checks that).
WRITTEN = (0, 3)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    """How many kills landed while writing, printed (with -s) after the module's tests, whatever ran."""
    yield
    print(f"\ncrash safety: {STATS['kills']} conversions killed with SIGKILL, {STATS['midway']} while writing")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tb_unfreeze", "convert", *args]


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _tmp_dirs(parent: str) -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith(TMP_PREFIX)) if os.path.isdir(parent) else []


def _complete(out: str) -> dict:
    """The manifest of a complete result (every part present), or an assertion error."""
    for part in (
        "unfreeze.json",
        "unfrozen_graph.pb",
        "saved_model/saved_model.pb",
        "saved_model/variables/variables.index",
    ):
        assert os.path.isfile(os.path.join(out, part)), f"{part} missing from {out}"
    with open(os.path.join(out, "unfreeze.json")) as f:
        return json.load(f)


def _kill_inside_staged_folder(source: str, out: str, delay: float, replace: bool = False) -> bool:
    """Start a conversion, SIGKILL it `delay` s after its temporary folder appears. True if the kill landed
    while the result was being written (the folder was still there: a finished write renames it away)."""
    parent = os.path.dirname(out)
    before = set(_tmp_dirs(parent))
    proc = subprocess.Popen(
        _cli(source, "-o", out, *(["--replace"] if replace else [])),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None and not set(_tmp_dirs(parent)) - before:
            time.sleep(0.005)
        assert proc.poll() is None, f"the conversion ended (exit {proc.returncode}) before it could be killed"
        staged = set(_tmp_dirs(parent)) - before
        assert staged, "no temporary folder appeared"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        STATS["kills"] += 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    midway = bool(staged & set(_tmp_dirs(parent)))
    STATS["midway"] += midway
    return midway


@pytest.mark.parametrize("delay", [0.0, 0.4, 1.2])
def test_sigkill_midway_leaves_no_partial_output_and_the_next_run_cleans_up(tmp_path, real_model, delay):
    source = real_model(MODEL)
    out = str(tmp_path / "outputs" / "model")
    midway = _kill_inside_staged_folder(source, out, delay)
    if midway:
        assert not os.path.exists(out), "a conversion killed while writing left something under the output name"
        assert _tmp_dirs(str(tmp_path / "outputs")), "expected the killed run's hidden temporary folder"
    else:  # the write had finished (renamed into place) before the kill: then the result is whole
        _complete(out)
    assert delay > 0 or midway, "a kill right after the folder appeared must land while writing"

    done = subprocess.run(
        _cli(source, "-o", out, "--json", "--replace"), capture_output=True, text=True, timeout=TIMEOUT, env=_env()
    )
    assert done.returncode in WRITTEN, done.stderr[-2000:]
    assert _complete(out)["source"]["sha256"] == json.loads(done.stdout)["source"]["sha256"]
    assert _tmp_dirs(str(tmp_path / "outputs")) == [], "the stale temporary folder was not removed"


def test_sigkill_during_replace_keeps_the_previous_result(tmp_path, real_model):
    out = str(tmp_path / "model")
    first = subprocess.run(
        _cli(real_model(SMALL), "-o", out), capture_output=True, text=True, timeout=TIMEOUT, env=_env()
    )
    assert first.returncode in WRITTEN, first.stderr[-2000:]
    previous = _complete(out)
    for delay in (0.0, 0.5):
        midway = _kill_inside_staged_folder(real_model(MODEL), out, delay, replace=True)
        kept = _complete(out)  # a whole result, never a mix: the previous one if the kill landed while writing
        if midway:
            assert kept["source"]["sha256"] == previous["source"]["sha256"]
            names = [v["variable_name"] for v in kept["variables"]]
            assert names == [v["variable_name"] for v in previous["variables"]]
        assert delay > 0 or midway


# -- a full disk --------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KB tmpfs (needs root); skipped with the reason when it cannot be mounted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no mount command")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up ({r.stderr.strip() or 'not root?'})")
    try:
        yield str(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_full_disk_is_one_clear_line_exit_2_and_nothing_written(tiny_disk, real_model):
    out = os.path.join(tiny_disk, "out")
    r = subprocess.run(_cli(real_model(MODEL), "-o", out), capture_output=True, text=True, timeout=TIMEOUT, env=_env())
    ours = [ln for ln in r.stderr.splitlines() if ln.startswith("tb-unfreeze:")]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(ours) == 1 and "no space left" in ours[0] and out in ours[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert os.listdir(tiny_disk) == [], f"left behind: {os.listdir(tiny_disk)}"


def test_full_disk_during_replace_keeps_the_previous_result(tiny_disk, real_model):
    out = os.path.join(tiny_disk, "out")
    first = subprocess.run(
        _cli(real_model(SMALL), "-o", out), capture_output=True, text=True, timeout=TIMEOUT, env=_env()
    )
    assert first.returncode in WRITTEN, first.stderr[-2000:]
    previous = _complete(out)
    with pytest.raises(UserError, match="no space left") as caught:  # the plugin's path: the worker process
        convert_in_subprocess(real_model(MODEL), out, replace=True, timeout=TIMEOUT)
    assert caught.value.http_code == 400 and "\n" not in str(caught.value)
    assert _complete(out)["source"]["sha256"] == previous["source"]["sha256"]
    assert os.listdir(tiny_disk) == ["out"]
