"""End to end: the Unfreeze tab in a real TensorBoard, driven in headless Chromium.

A real `tensorboard` process serves a temporary logdir holding a real frozen graph. In the tab we pick the model,
leave one candidate out, convert, wait for the job, and check what a user would: the result panel, the side-by-side
view with converted nodes highlighted on both sides (and the left-out constant not highlighted), the history, the
selected model in the shareable URL, and the unfrozen run listed by the Graphs dashboard's own `/data/plugin/graphs/info`.
A screenshot of the tab is saved to tests/artifacts/unfreeze_tab.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest
from conftest import installed_command

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
MODEL = "tf2onnx_fc_layers.pb"
# A second model, listed first, so that picking MODEL (by click or by URL) is something the test can see.
OTHER = ("tf2onnx_regression.pb", "a_regression.pb")
LEFT_OUT = "pred/bias"
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")
CONVERT_TIMEOUT_S = 240

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed: pip install playwright")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'); Playwright's own browser cannot be downloaded here",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def tensorboard(tmp_path, real_model):
    """A real TensorBoard on a fresh logdir holding one real frozen graph; yields its base URL."""
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    shutil.copy(real_model(MODEL), logdir / MODEL)
    shutil.copy(real_model(OTHER[0]), logdir / OTHER[1])
    port = _free_port()
    cmd = [installed_command("tensorboard")]
    log = open(tmp_path / "tensorboard.log", "wb")
    proc = subprocess.Popen(
        cmd + ["--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"tensorboard exited with {proc.returncode}: "
                                     + (tmp_path / "tensorboard.log").read_text()[-2000:])
            try:
                if _get_json(base + "/data/plugins_listing").get("unfreeze"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError("tensorboard did not list the unfreeze plugin within 90 s: "
                                     + (tmp_path / "tensorboard.log").read_text()[-2000:])
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _plugin_frame(page):
    """The Unfreeze tab's iframe (TensorBoard loads the plugin's module in a same-origin iframe)."""
    handle = page.wait_for_selector('iframe[src*="plugin_entry.html?name=unfreeze"]', state="attached", timeout=30_000)
    frame = handle.content_frame()
    assert frame is not None
    return frame


def test_unfreeze_tab_converts_and_shows_both_graphs(tensorboard, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(tensorboard + "/#unfreeze")
    frame = _plugin_frame(page)

    # The model list shows the real model as frozen; pick it.
    item = frame.wait_for_selector(f'li.model[data-model="{MODEL}"]', timeout=30_000)
    assert item.query_selector('.chip[data-status="frozen"]') is not None
    item.click()

    # Candidate table: every recommended constant is ticked; leave one out.
    frame.wait_for_selector(f'.cand-table tr[data-name="{LEFT_OUT}"]', timeout=30_000)
    names = frame.eval_on_selector_all(".cand-table tbody tr[data-name]", "rows => rows.map(r => r.dataset.name)")
    assert len(names) >= 4 and LEFT_OUT in names
    assert frame.eval_on_selector_all(".cand-table tbody input[aria-label^='Include']:checked", "x => x.length") == len(names)
    frame.click(f'.cand-table tr[data-name="{LEFT_OUT}"] input[aria-label^="Include"]')
    chosen = len(names) - 1
    assert frame.inner_text('[data-total="variables"] b') == str(chosen)
    button = frame.wait_for_selector(".convert-bar button.btn.primary")
    assert button.inner_text().upper() == f"CONVERT {chosen} CONSTANTS"

    # The selected model is in the top window's URL (shareable) and in the iframe's own.
    assert f"unfreeze_model={MODEL}" in page.evaluate("location.hash")
    assert page.evaluate("location.hash").startswith("#unfreeze")

    # Convert; the progress bar follows the job until it is done.
    button.click()
    frame.wait_for_selector(".progress:not([hidden])", timeout=10_000)
    frame.wait_for_selector('.progress[data-state="done"], .progress[data-state="failed"]', timeout=CONVERT_TIMEOUT_S * 1000)
    assert frame.get_attribute(".progress", "data-state") == "done", frame.inner_text(".convert-msg")

    # Result panel: as many variables as we chose, verified, with the output location and both snippets.
    frame.wait_for_selector('.fact[data-fact="variables"]', timeout=30_000)
    assert frame.inner_text('.fact[data-fact="variables"] .fact-value').strip() == str(chosen)
    assert "verified" in frame.inner_text('.fact[data-fact="max-diff"]')
    assert frame.inner_text('.fact[data-fact="out-dir"] .fact-value').endswith("saved_model")
    snippets = frame.eval_on_selector_all("pre.snippet", "els => els.map(e => e.textContent)")
    assert any("tf.saved_model.load(" in s and "GradientTape" in s for s in snippets)
    assert any("from tb_unfreeze.keras import UnfrozenLayer" in s for s in snippets)

    # Side by side: converted nodes highlighted on both sides, the left-out constant on neither.
    frame.wait_for_selector('.gv-svg[data-side="unfrozen"] .node.converted', timeout=30_000)
    left = frame.eval_on_selector_all('.gv-svg[data-side="frozen"] .node.converted', "els => els.map(e => e.dataset.id)")
    right = frame.eval_on_selector_all('.gv-svg[data-side="unfrozen"] .node.converted', "els => els.map(e => e.dataset.id)")
    assert len(left) >= chosen and len(right) >= chosen, (left, right)
    # A constant is drawn as its own box, or (closed) as the box of the scope it shares its name with,
    # e.g. "pred/bias" with "pred/bias/read".
    left_out = {f"node:{LEFT_OUT}", f"scope:{LEFT_OUT}"}
    assert not left_out & set(left) and not left_out & set(right), (left, right)
    assert left_out & set(frame.eval_on_selector_all('.gv-svg[data-side="frozen"] .node', "els => els.map(e => e.dataset.id)"))
    # Shared nodes sit at the same place on both sides.
    shared = sorted(set(left) & set(right))
    assert shared, (left, right)
    pos = lambda side, nid: frame.get_attribute(f'.gv-svg[data-side="{side}"] .node[data-id="{nid}"]', "transform")
    assert pos("frozen", shared[0]) == pos("unfrozen", shared[0])

    # Selecting a node selects it in both panes and shows its details.
    frame.click(f'.gv-svg[data-side="frozen"] .node[data-id="{shared[0]}"]')
    assert frame.eval_on_selector_all(".gv-svg .node.selected", "els => els.length") == 2
    assert shared[0].split(":", 1)[1] in frame.inner_text(".gv-details")

    # Each pane links to its run in the Graphs dashboard.
    links = frame.eval_on_selector_all(".gv-run-link:not([hidden])", "els => els.map(e => e.getAttribute('href'))")
    assert any(h.endswith("#graphs&run=" + urllib.parse.quote(f"unfreeze/{MODEL}/unfrozen", safe="")) for h in links), links

    # History lists this conversion.
    frame.wait_for_selector("table.history tbody tr", timeout=30_000)
    assert f"{chosen} consts" in frame.inner_text("table.history tbody tr")

    # The Graphs dashboard lists the unfrozen run (TensorBoard picks new runs up within seconds).
    run = f"unfreeze/{MODEL}/unfrozen"
    deadline = time.time() + 60
    info = {}
    while time.time() < deadline:
        info = _get_json(tensorboard + "/data/plugin/graphs/info")
        if info.get(run, {}).get("run_graph"):
            break
        time.sleep(1)
    assert info.get(run, {}).get("run_graph") is True, sorted(info)

    os.makedirs(ARTIFACTS, exist_ok=True)
    frame.eval_on_selector('[data-section="compare"]', "e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(500)  # the graph is repainted sharp once pan/zoom settles
    page.screenshot(path=os.path.join(ARTIFACTS, "unfreeze_tab.png"))
    assert not errors, errors

    # A shared link opens the tab with the model selected and converted.
    page2 = browser.new_page(viewport={"width": 1280, "height": 900})
    page2.goto(tensorboard + f"/#unfreeze&unfreeze_model={urllib.parse.quote(MODEL, safe='')}")
    frame2 = _plugin_frame(page2)
    frame2.wait_for_selector(f'li.model.active[data-model="{MODEL}"] .chip[data-status="converted"]', timeout=30_000)
    frame2.wait_for_selector('.gv-svg[data-side="unfrozen"] .node.converted', timeout=30_000)
    assert frame2.eval_on_selector_all("li.model.active", "els => els.map(e => e.dataset.model)") == [MODEL]
