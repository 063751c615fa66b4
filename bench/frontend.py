"""The side-by-side view in headless Chromium: measured only when the frontend, playwright and Chromium exist.

`measure(model, logdir, loads)` (run by `bench.worker frontend`) starts a real `tensorboard` on a logdir holding
the model, converts it once through the plugin's own `POST /convert` (verify=False; not timed), then opens
`/#unfreeze&unfreeze_model=ID` in a fresh page `loads` times and times navigation → the unfrozen pane of the
side-by-side view has drawn its converted nodes (both panes share one layout and are drawn together).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATIC = os.path.join(ROOT, "tb_unfreeze", "plugin", "static")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
DRAWN = '.gv-svg[data-side="unfrozen"] .node.converted'


def unavailable() -> str:
    """Why the view cannot be measured here, or '' when it can."""
    built = os.path.isdir(STATIC) and any(name.endswith(".js") for name in os.listdir(STATIC))
    if not built:
        return ("the frontend is not built (no JavaScript in tb_unfreeze/plugin/static/), so there is no "
                "side-by-side view to draw")
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed"
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} does not exist"
    return ""


def _get_json(url: str, data: bytes | None = None):
    headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"} if data is not None else {}
    req = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(path: str, logdir: str, loads: int = 5) -> dict:
    from playwright import sync_api  # noqa: PLC0415

    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    model_id = os.path.basename(path)
    try:
        os.link(path, os.path.join(logdir, model_id))
    except OSError:
        shutil.copyfile(path, os.path.join(logdir, model_id))
    port = _free_port()
    exe = shutil.which("tensorboard")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    log = open(os.path.join(os.path.dirname(logdir), "tensorboard.log"), "wb")
    proc = subprocess.Popen(cmd + ["--logdir", logdir, "--host", "127.0.0.1", "--port", str(port),
                                   "--reload_interval", "1"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {proc.returncode}")
            try:
                if _get_json(base + "/data/plugins_listing").get("unfreeze"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("tensorboard did not list the unfreeze plugin within 120 s")
            time.sleep(0.5)
        api = base + "/data/plugin/unfreeze"
        job = _get_json(api + "/convert", json.dumps({"model": model_id, "verify": False}).encode())["job"]
        deadline = time.time() + 600
        while job.get("state") in ("queued", "running"):
            if time.time() > deadline:
                raise RuntimeError("the conversion did not finish within 600 s")
            time.sleep(1)
            job = _get_json(api + "/jobs?id=" + urllib.parse.quote(job["id"]))["job"]
        if job.get("state") != "done":
            raise RuntimeError(f"conversion through the plugin failed: {job}")
        url = base + "/#unfreeze&unfreeze_model=" + urllib.parse.quote(model_id, safe="")
        times, shell = [], []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for _ in range(loads):
                    page = browser.new_page(viewport={"width": 1280, "height": 1000})
                    t0 = time.perf_counter()
                    page.goto(url)
                    handle = page.wait_for_selector('iframe[src*="plugin_entry.html?name=unfreeze"]',
                                                    state="attached", timeout=60_000)
                    frame = handle.content_frame()
                    frame.wait_for_load_state("domcontentloaded")
                    shell.append(time.perf_counter() - t0)
                    frame.wait_for_selector(DRAWN, timeout=120_000)
                    times.append(time.perf_counter() - t0)
                    page.close()
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    rest = sorted(times[1:]) or times
    return {"seconds": sorted(times)[len(times) // 2], "first": times[0], "later": rest[len(rest) // 2],
            "all": times, "shell": sorted(shell)[len(shell) // 2]}


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _wait_worker_idle(tensorboard_pid: int, timeout: float = 300) -> dict:
    """Wait until TensorBoard's warm conversion worker exists and has stopped using CPU (TensorFlow imported, waiting
    for a request): what a user reading the candidate table gives it. Returns its pid and how long that took."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        for child in _children_of(tensorboard_pid):
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
                if b"tb_unfreeze.worker" not in cmd or b"--serve" not in cmd:
                    continue
                before = _cpu_ticks(child)
                time.sleep(1.0)
                if _cpu_ticks(child) == before:
                    return {"pid": child, "seconds": time.perf_counter() - t0}
            except OSError:
                continue
        time.sleep(0.5)
    raise RuntimeError(f"no idle conversion worker under TensorBoard {tensorboard_pid} within {timeout:.0f} s")


def click_to_done(path: str, logdir: str, clicks: int = 2) -> dict:
    """Click-to-Done in the tab: a real `tensorboard`, headless Chromium on `/#unfreeze&unfreeze_model=ID`; once the
    warm worker is idle, click Convert (all recommended constants, verification on, as a user would) and time the
    click → the progress panel's `data-state` is `done`. `clicks` page loads, one click each."""
    from playwright import sync_api  # noqa: PLC0415

    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    model_id = os.path.basename(path)
    try:
        os.link(path, os.path.join(logdir, model_id))
    except OSError:
        shutil.copyfile(path, os.path.join(logdir, model_id))
    port = _free_port()
    exe = shutil.which("tensorboard")
    cmd = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    log = open(os.path.join(os.path.dirname(logdir), "tensorboard-click.log"), "wb")
    proc = subprocess.Popen(cmd + ["--logdir", logdir, "--host", "127.0.0.1", "--port", str(port),
                                   "--reload_interval", "1"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    runs = []
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {proc.returncode}")
            try:
                if _get_json(base + "/data/plugins_listing").get("unfreeze"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("tensorboard did not list the unfreeze plugin within 120 s")
            time.sleep(0.5)
        url = base + "/#unfreeze&unfreeze_model=" + urllib.parse.quote(model_id, safe="")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for _ in range(clicks):
                    page = browser.new_page(viewport={"width": 1280, "height": 1000})
                    page.goto(url)
                    handle = page.wait_for_selector('iframe[src*="plugin_entry.html?name=unfreeze"]',
                                                    state="attached", timeout=60_000)
                    frame = handle.content_frame()
                    button = frame.wait_for_selector(".convert-bar button.btn.primary:not([disabled])",
                                                      timeout=120_000)
                    worker = _wait_worker_idle(proc.pid)
                    # A state no job has: a `done` seen after the click is this click's job, not an earlier one.
                    frame.evaluate("() => { const p = document.querySelector('.progress'); "
                                   "if (p) p.dataset.state = 'before-click'; }")
                    t0 = time.perf_counter()
                    button.click()
                    frame.wait_for_selector('.progress[data-state="done"], .progress[data-state="failed"]',
                                            timeout=1_800_000)
                    seconds = time.perf_counter() - t0
                    state = frame.eval_on_selector(".progress", "el => el.dataset.state")
                    if state != "done":
                        raise RuntimeError(f"the conversion failed in the tab: {state}")
                    runs.append({"seconds": seconds, "worker": worker})
                    page.close()
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return {"seconds": runs[0]["seconds"], "runs": runs}
