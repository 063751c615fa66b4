"""The plugin's warm conversion worker: TensorFlow imported once, ahead of the first conversion, still isolated.

A fresh `WorkerPool` per test (the shared one stays untouched); the models are small real graphs.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tb_unfreeze import worker as W
from tb_unfreeze.errors import ConversionError, UserError
from tb_unfreeze.plugin.jobs import JobRunner

MODEL = "tf2onnx_regression.pb"
OTHER = "tf2onnx_fc_layers.pb"
TIMEOUT = 240


@pytest.fixture
def pool(monkeypatch):
    pool = W.WorkerPool()
    monkeypatch.setattr(W, "POOL", pool)
    monkeypatch.setenv("TB_UNFREEZE_WARM_WORKER", "1")
    yield pool
    pool.shutdown()


def _wait_ready(pool: W.WorkerPool) -> W._Worker:
    """The waiting worker, once it has said `ready`."""
    worker = pool._idle[0]
    assert pool.wait_ready() is not None, worker.stderr_tail()
    assert worker.ready["pid"] == worker.pid
    return worker


def test_second_conversion_reuses_the_worker_and_imports_nothing(pool, real_model, tmp_path):
    pool.warm_up()  # what the tab's first /models request does
    assert pool.stats()["started"] == 1
    ready = _wait_ready(pool)
    assert ready.ready["import_seconds"] > 0.2  # it did import TensorFlow, before any conversion
    steps: list[list] = []
    runs = []
    for i, name in enumerate((MODEL, OTHER, MODEL)):
        steps.append([])
        started = time.perf_counter()
        manifest = W.convert_in_subprocess(
            real_model(name), str(tmp_path / f"out{i}"), timeout=TIMEOUT, progress=lambda s, f, i=i: steps[i].append(s)
        ).to_json()
        runs.append((time.perf_counter() - started, manifest))
        assert pool.last_pid == ready.pid  # the same process every time
    assert pool.stats() == {"idle": [ready.pid], "busy": [], "started": 1}
    for _seconds, manifest in runs:
        assert manifest["timings"]["import tensorflow"] < 0.05, manifest["timings"]
        assert manifest["verification"]["performed"]
    for seen in steps:  # the real sub-steps of convert(), in order, relayed as they happen
        assert [s for s in ("load", "rewrite", "build and save") if s in seen] == ["load", "rewrite", "build and save"]
        assert any(s.startswith("verify") for s in seen[seen.index("build and save") :]), seen
    print(
        f"warm worker: import {ready.ready['import_seconds']:.2f} s once; conversions "
        + ", ".join(f"{s:.2f} s" for s, _ in runs)
    )


def test_user_errors_keep_the_worker(pool, real_model, tmp_path):
    with pytest.raises(UserError):
        W.convert_in_subprocess(str(tmp_path / "missing.pb"), str(tmp_path / "out"), timeout=TIMEOUT)
    first = pool.last_pid
    W.convert_in_subprocess(real_model(MODEL), str(tmp_path / "out"), timeout=TIMEOUT)
    assert pool.last_pid == first and pool.stats()["started"] == 1


def test_a_killed_worker_is_replaced_and_the_conversion_fails_cleanly(pool, real_model, tmp_path):
    pool.warm_up()
    victim = _wait_ready(pool)

    def kill_mid_conversion(step, fraction):
        if step == "rewrite":
            os.kill(victim.pid, signal.SIGKILL)

    out = tmp_path / "out"
    with pytest.raises(ConversionError, match="crashed"):
        W.convert_in_subprocess(real_model(OTHER), str(out), timeout=TIMEOUT, progress=kill_mid_conversion)
    assert not out.exists()
    stats = pool.stats()
    assert stats["started"] == 2 and stats["idle"] and stats["idle"][0] != victim.pid  # a fresh one is waiting
    manifest = W.convert_in_subprocess(real_model(OTHER), str(out), timeout=TIMEOUT).to_json()
    assert manifest["verification"]["performed"] and pool.last_pid == stats["idle"][0]


def test_a_timed_out_worker_is_replaced(pool, real_model, tmp_path):
    pool.warm_up()
    slow = _wait_ready(pool)
    with pytest.raises(ConversionError, match="took longer than"):
        # 10 ms: an idle warm worker converts this small graph in about half a second
        W.convert_in_subprocess(real_model(OTHER), str(tmp_path / "out"), timeout=0.01)
    assert not slow.alive()
    assert pool.stats()["idle"] and pool.stats()["idle"][0] != slow.pid


def test_a_grown_worker_is_retired(pool, real_model, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "RETIRE_GROWTH_MB", -1.0)  # any growth at all retires it
    W.convert_in_subprocess(real_model(MODEL), str(tmp_path / "out"), timeout=TIMEOUT)
    first = pool.last_pid
    stats = pool.stats()
    assert stats["started"] == 2 and stats["idle"] and stats["idle"][0] != first


def test_the_job_runner_starts_the_worker_when_the_tab_first_asks(pool):
    runner = JobRunner(lambda job, progress: {})
    assert pool.stats()["started"] == 0  # not at construction (TensorBoard start-up)
    runner.active("some.pb")  # the first /models request
    runner.list()
    assert pool.stats()["started"] == 1 and len(pool.stats()["idle"]) == 1


def test_cold_mode_starts_a_process_per_conversion(pool, real_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TB_UNFREEZE_WARM_WORKER", "0")
    pool.warm_up()
    assert pool.stats()["started"] == 0
    manifest = W.convert_in_subprocess(real_model(MODEL), str(tmp_path / "out"), timeout=TIMEOUT).to_json()
    assert manifest["timings"]["import tensorflow"] > 0.2
    assert pool.stats() == {"idle": [], "busy": [], "started": 1}
