"""End to end: the Unfreeze tab in a real TensorBoard, driven in headless Chromium.

A real `tensorboard` process serves a temporary logdir holding a real frozen graph. In the tab we pick the model,
leave one candidate out, convert, wait for the job, and check what a user would: the result panel, the side-by-side
view with converted nodes highlighted on both sides (and the left-out constant not highlighted), the history, the
selected model in the shareable URL, and the unfrozen run listed by the Graphs dashboard's own
`/data/plugin/graphs/info`.
A screenshot of the tab is saved to tests/artifacts/unfreeze_tab.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from conftest import installed_command

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODEL = "tf2onnx_fc_layers.pb"
# A second model, listed first, so that picking MODEL (by click or by URL) is something the test can see.
OTHER = ("tf2onnx_regression.pb", "a_regression.pb")
LEFT_OUT = "pred/bias"
REAL = "rranddom_doc_localisation_mnv2.pb"
BIG = "od_api_ssd_mobilenet_visionkit.pb"
READABLE_PX = 9
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")
CONVERT_TIMEOUT_S = 240

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright (python) is not installed: pip install playwright"
)
expect = sync_api.expect
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is missing (Debian package 'chromium'); Playwright's own browser cannot be downloaded here",
        allow_module_level=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def _serve(tmp_path, real_model, files: dict[str, str]):
    """A real TensorBoard on a fresh logdir holding real frozen graphs ({shared model: name in the logdir})."""
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    for source, name in files.items():
        shutil.copy(real_model(source), logdir / name)
    port = _free_port()
    cmd = [installed_command("tensorboard")]
    log = open(tmp_path / "tensorboard.log", "wb")
    proc = subprocess.Popen(
        cmd + ["--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"tensorboard exited with {proc.returncode}: " + (tmp_path / "tensorboard.log").read_text()[-2000:]
                )
            try:
                if _get_json(base + "/data/plugins_listing").get("unfreeze"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError(
                    "tensorboard did not list the unfreeze plugin within 90 s: "
                    + (tmp_path / "tensorboard.log").read_text()[-2000:]
                )
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
def tensorboard(tmp_path, real_model):
    """A real TensorBoard on a fresh logdir holding a small real frozen graph and another one listed first."""
    with _serve(tmp_path, real_model, {MODEL: MODEL, OTHER[0]: OTHER[1]}) as base:
        yield base


@pytest.fixture
def tensorboard_real(tmp_path, real_model):
    """A real TensorBoard on MobileNetV2 (1,083 nodes, 262 variables) and a 3,185-node detection graph."""
    with _serve(tmp_path, real_model, {REAL: REAL, BIG: BIG}) as base:
        yield base


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _plugin_frame(page):
    """The Unfreeze tab's iframe as a frame locator: every lookup through it is made again at each action, so a
    node the tab replaced meanwhile is never clicked (TensorBoard loads the plugin in a same-origin iframe)."""
    page.wait_for_selector('iframe[src*="plugin_entry.html?name=unfreeze"]', state="attached", timeout=30_000)
    return page.frame_locator('iframe[src*="plugin_entry.html?name=unfreeze"]')


def _texts(locator, attr: str = "") -> list[str]:
    js = f"els => els.map(e => e.getAttribute({attr!r}))" if attr else "els => els.map(e => e.textContent)"
    return locator.evaluate_all(js)


def _graphs_run_selected(page) -> str | None:
    """The run TensorBoard's Graphs dashboard shows (its run picker), or None before it has one."""
    return page.evaluate("""() => {
        const d = document.querySelector('tf-graph-dashboard');
        const c = d && (d.shadowRoot || d).querySelector('tf-graph-controls');
        return c && c.selection ? c.selection.run : null;
    }""")


def test_unfreeze_tab_converts_and_shows_both_graphs(tensorboard, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(tensorboard + "/#unfreeze")
    frame = _plugin_frame(page)

    # The model list shows the real model as frozen; pick it.
    item = frame.locator(f'li.model[data-model="{MODEL}"]')
    expect(item.locator('.chip[data-status="frozen"]')).to_be_visible(timeout=30_000)
    item.click()
    expect(item).to_have_class(re.compile(r"\bactive\b"))

    # The list is refreshed every few seconds; a refresh that changes nothing keeps the very same DOM nodes.
    item.evaluate("el => { el.dataset.probe = 'kept'; }")
    page.wait_for_timeout(4_600)
    expect(item).to_have_attribute("data-probe", "kept")

    # Candidate table: every recommended constant is ticked; leave one out.
    expect(frame.locator(f'.cand-table tr[data-name="{LEFT_OUT}"]')).to_be_visible(timeout=30_000)
    names = _texts(frame.locator(".cand-table tbody tr[data-name]"), "data-name")
    assert len(names) >= 4 and LEFT_OUT in names
    expect(frame.locator(".cand-table tbody input[aria-label^='Include']:checked")).to_have_count(len(names))
    frame.locator(f'.cand-table tr[data-name="{LEFT_OUT}"] input[aria-label^="Include"]').click()
    chosen = len(names) - 1
    expect(frame.locator('[data-total="variables"] b')).to_have_text(str(chosen))
    button = frame.locator(".convert-bar button.btn.primary")
    expect(button).to_have_text(re.compile(f"^convert {chosen} constants$", re.I))

    # The selected model is in the top window's URL (shareable) and in the iframe's own.
    assert f"unfreeze_model={MODEL}" in page.evaluate("location.hash")
    assert page.evaluate("location.hash").startswith("#unfreeze")

    # Convert; the progress bar follows the job, naming the sub-steps the conversion reports, until it is done.
    button.click()
    progress = frame.locator(".progress")
    expect(progress).to_be_visible(timeout=10_000)
    expect(progress).to_have_attribute("data-state", re.compile("^(done|failed)$"), timeout=CONVERT_TIMEOUT_S * 1000)
    assert progress.get_attribute("data-state") == "done", frame.locator(".convert-msg").inner_text()
    steps = _texts(frame.locator(".step-trail li"), "data-step")
    assert steps and all(s for s in steps), steps
    # Done is green only for a verified result: the state is an attribute, never a word searched in a sentence
    # ("not verified" contains "verified").
    expect(progress).to_have_attribute("data-verification", "verified")

    # Result panel: as many variables as we chose, verified, with the output location and both snippets.
    verdict = frame.locator(".result .verdict .chip.verification")
    expect(verdict).to_have_attribute("data-status", "verified", timeout=30_000)
    expect(frame.locator('.fact[data-fact="variables"] .fact-value')).to_have_text(str(chosen))
    assert frame.locator('.fact[data-fact="out-dir"] .fact-value').inner_text().endswith("saved_model")
    snippets = _texts(frame.locator("pre.snippet"))
    assert any("tf.saved_model.load(" in s and "GradientTape" in s for s in snippets)
    assert any("from tb_unfreeze.keras import UnfrozenLayer" in s for s in snippets)
    # The model list says the same.
    expect(item.locator(".chip")).to_have_attribute("data-verification", "verified", timeout=30_000)

    # Side by side: converted nodes highlighted on both sides, the left-out constant on neither.
    unfrozen_converted = frame.locator('.gv-svg[data-side="unfrozen"] .node.converted')
    expect(unfrozen_converted.first).to_be_attached(timeout=30_000)
    left = _texts(frame.locator('.gv-svg[data-side="frozen"] .node.converted'), "data-id")
    right = _texts(unfrozen_converted, "data-id")
    assert len(left) >= chosen and len(right) >= chosen, (left, right)
    # A constant is drawn as its own box, or (closed) as the box of the scope it shares its name with,
    # e.g. "pred/bias" with "pred/bias/read".
    left_out = {f"node:{LEFT_OUT}", f"scope:{LEFT_OUT}"}
    assert not left_out & set(left) and not left_out & set(right), (left, right)
    assert left_out & set(_texts(frame.locator('.gv-svg[data-side="frozen"] .node'), "data-id"))
    # Shared nodes sit at the same place on both sides.
    shared = sorted(set(left) & set(right))
    assert shared, (left, right)

    def pos(side, nid):
        return frame.locator(f'.gv-svg[data-side="{side}"] .node[data-id="{nid}"]').get_attribute("transform")

    assert pos("frozen", shared[0]) == pos("unfrozen", shared[0])

    # Counts agree with the manifest: one node per variable on the unfrozen side, one const per variable on the
    # frozen side.
    manifest = _get_json(tensorboard + "/data/plugin/unfreeze/manifest?model=" + urllib.parse.quote(MODEL, safe=""))
    assert manifest["totals"]["variables"] == chosen
    for side in ("frozen", "unfrozen"):
        expect(frame.locator(f'.gv-pane[data-side="{side}"] .gv-pane-stats')).to_have_attribute(
            "data-converted", str(chosen)
        )
    expect(frame.locator('.gv-pane[data-side="unfrozen"] .gv-pane-stats')).to_contain_text(f"{chosen} variables")
    assert not frame.locator('.gv-svg[data-side="unfrozen"] .node[data-id$="/Read/ReadVariableOp"]').count()

    # Readable as it opens: the labels of converted nodes in view render at 9 px or more on both sides.
    for side in ("frozen", "unfrozen"):
        sizes = _label_px(frame, side)
        assert sizes and min(sizes) >= READABLE_PX, (side, sizes)

    # Selecting a node selects it in both panes and shows its details, with the weight's numbers and histogram.
    frame.locator(f'.gv-svg[data-side="frozen"] .node[data-id="{shared[0]}"]').click()
    expect(frame.locator(".gv-svg .node.selected")).to_have_count(2)
    expect(frame.locator(".gv-details")).to_contain_text(shared[0].split(":", 1)[1])
    expect(frame.locator(".gv-details .gv-hist rect.bar").first).to_be_attached(timeout=15_000)
    expect(frame.locator(".gv-details .gv-w")).to_contain_text("mean ± std")

    # Each pane links to its run in the Graphs dashboard.
    links = _texts(frame.locator(".gv-run-link:not([hidden])"), "href")
    assert any(h.endswith("#graphs&run=" + urllib.parse.quote(f"unfreeze/{MODEL}/unfrozen", safe="")) for h in links), (
        links
    )

    # History lists this conversion.
    expect(frame.locator("table.history tbody tr").first).to_contain_text(f"{chosen} consts", timeout=30_000)

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
    frame.locator('[data-section="compare"]').evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(500)  # the graph is repainted sharp once pan/zoom settles
    page.screenshot(path=os.path.join(ARTIFACTS, "unfreeze_tab.png"))
    assert not errors, errors

    # "Open in Graphs" on the unfrozen pane shows the unfrozen run in the Graphs dashboard (not its first run).
    page.reload()  # the Graphs dashboard must list the new runs
    frame = _plugin_frame(page)
    frame.locator('.gv-pane[data-side="unfrozen"] .gv-run-link').click(timeout=60_000)
    page.wait_for_function(
        "run => { const d = document.querySelector('tf-graph-dashboard');"
        " const c = d && (d.shadowRoot || d).querySelector('tf-graph-controls');"
        " return !!(c && c.selection && c.selection.run === run); }",
        arg=run,
        timeout=30_000,
    )
    assert _graphs_run_selected(page) == run

    # A shared link opens the tab with the model selected and converted, the table showing the selection the
    # result was converted from; light and dark (following TensorBoard's theme), at 1280 and 1920 px.
    for scheme in ("light", "dark"):
        page2 = browser.new_page(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
        page2.goto(tensorboard + f"/#unfreeze&unfreeze_model={urllib.parse.quote(MODEL, safe='')}")
        frame2 = _plugin_frame(page2)
        expect(frame2.locator(f'li.model.active[data-model="{MODEL}"] .chip[data-status="converted"]')).to_be_visible(
            timeout=30_000
        )
        expect(frame2.locator('.gv-svg[data-side="unfrozen"] .node.converted').first).to_be_attached(timeout=30_000)
        assert _texts(frame2.locator("li.model.active"), "data-model") == [MODEL]
        expect(frame2.locator('[data-total="variables"] b')).to_have_text(str(chosen))
        expect(
            frame2.locator(f'.cand-table tr[data-name="{LEFT_OUT}"] input[aria-label^="Include"]')
        ).not_to_be_checked()
        host_dark = page2.evaluate("document.body.classList.contains('dark-mode')")
        assert frame2.locator("body").evaluate("b => b.classList.contains('dark')") == host_dark
        assert host_dark == (scheme == "dark")
        for width, height in ((1280, 800), (1920, 1080)):
            page2.set_viewport_size({"width": width, "height": height})
            frame2.locator('[data-section="compare"]').evaluate("e => e.scrollIntoView({block: 'start'})")
            page2.wait_for_timeout(400)
            page2.screenshot(path=os.path.join(ARTIFACTS, f"unfreeze_tab_{width}_{scheme}.png"))
        page2.close()

    # Conversions are kept: convert again with every candidate, then open the first conversion from the history:
    # its result, its graphs and its selection come back; "Show the latest" returns to the new one.
    page3 = browser.new_page(viewport={"width": 1280, "height": 900})
    page3.goto(tensorboard + f"/#unfreeze&unfreeze_model={urllib.parse.quote(MODEL, safe='')}")
    frame3 = _plugin_frame(page3)
    expect(frame3.locator('[data-total="variables"] b')).to_have_text(str(chosen), timeout=30_000)
    frame3.get_by_role("button", name="Select all").click()
    expect(frame3.locator('[data-total="variables"] b')).to_have_text(str(len(names)))
    frame3.locator(".convert-bar button.btn.primary").click()
    expect(frame3.locator(".progress")).to_have_attribute(
        "data-state", re.compile("^(done|failed)$"), timeout=CONVERT_TIMEOUT_S * 1000
    )
    assert frame3.locator(".progress").get_attribute("data-state") == "done", frame3.locator(
        ".convert-msg"
    ).inner_text()
    expect(frame3.locator('.fact[data-fact="variables"] .fact-value')).to_have_text(str(len(names)), timeout=30_000)
    expect(frame3.locator("table.history tbody tr")).to_have_count(2, timeout=30_000)
    frame3.locator("table.history button.open-conversion").first.click()
    expect(frame3.locator('[data-section="result"] .archived-note')).to_be_visible(timeout=30_000)
    expect(frame3.locator('.fact[data-fact="variables"] .fact-value')).to_have_text(str(chosen))
    expect(frame3.locator('[data-total="variables"] b')).to_have_text(str(chosen))
    expect(frame3.locator('.gv-pane[data-side="unfrozen"] .gv-pane-stats')).to_have_attribute(
        "data-converted", str(chosen)
    )
    expect(frame3.locator("table.history tr.shown")).to_have_count(1)
    frame3.get_by_role("button", name="Show the latest").click()
    expect(frame3.locator('.fact[data-fact="variables"] .fact-value')).to_have_text(str(len(names)), timeout=30_000)
    expect(frame3.locator('[data-total="variables"] b')).to_have_text(str(len(names)))
    expect(frame3.locator('.gv-pane[data-side="unfrozen"] .gv-pane-stats')).to_have_attribute(
        "data-converted", str(len(names))
    )


def _post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


# Labels in view: those whose box lies (at least partly) inside their pane. The view draws boxes only in and near
# the view (and none, on a canvas, when zoomed out too far to read), so an empty list means nothing readable is shown.
_IN_VIEW_JS = """(el) => {
    const pane = el.closest('.gv-pane-body').getBoundingClientRect();
    const r = el.getBoundingClientRect();
    return r.right > pane.left && r.left < pane.right && r.bottom > pane.top && r.top < pane.bottom;
}"""


VIEW = "window.__unfreezeGraphView"


def _label_px(frame, side: str, selector: str = ".node.converted text.label") -> list[float]:
    """Rendered size (px) of the labels in view matching `selector` on one side: font size times the zoom on screen
    (a label not displayed or hidden counts as 0 px)."""
    return frame.locator(f'.gv-svg[data-side="{side}"] {selector}').evaluate_all(
        f"els => els.filter({_IN_VIEW_JS}).map(t => getComputedStyle(t).display === 'none'"
        " || getComputedStyle(t).visibility !== 'visible' ? 0"
        " : parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a)"
    )


def _in_view(frame, side: str, selector: str) -> str:
    """data-id of the first box matching `selector` on one side that lies wholly inside its pane (so a click lands)."""
    ids = frame.locator(f'.gv-svg[data-side="{side}"] {selector}').evaluate_all(
        """els => els.filter((el) => {
            const pane = el.closest('.gv-pane-body').getBoundingClientRect();
            const r = el.getBoundingClientRect();
            return r.left >= pane.left && r.right <= pane.right && r.top >= pane.top && r.bottom <= pane.bottom;
        }).map((el) => el.getAttribute('data-id'))"""
    )
    assert ids, f"no {selector} in view on the {side} side"
    return ids[0]


def test_real_models_side_by_side_counts_weights_and_an_unverified_result(tensorboard_real, browser, tmp_path):
    """MobileNetV2 converted without verification (as a script or another client may do), then looked at in the tab;
    and a 3,185-node detection graph opened before any conversion."""
    api = tensorboard_real + "/data/plugin/unfreeze"
    job = _post_json(api + "/convert", {"model": REAL, "verify": False})["job"]
    deadline = time.time() + CONVERT_TIMEOUT_S
    while True:
        state = _get_json(api + f"/jobs?id={job['id']}")["job"]
        if state["state"] in ("done", "failed") or time.time() > deadline:
            break
        time.sleep(1)
    assert state["state"] == "done", state
    manifest = _get_json(api + "/manifest?model=" + urllib.parse.quote(REAL, safe=""))
    variables = manifest["totals"]["variables"]
    assert variables > 200

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(tensorboard_real + f"/#unfreeze&unfreeze_model={urllib.parse.quote(REAL, safe='')}")
    frame = _plugin_frame(page)

    # Not verified is said as such everywhere, never as plain success; the tab offers to verify.
    item = frame.locator(f'li.model[data-model="{REAL}"]')
    expect(item.locator(".chip")).to_have_attribute("data-verification", "not_verified", timeout=60_000)
    expect(frame.locator(".result .verdict .chip.verification")).to_have_attribute("data-status", "not_verified")
    expect(frame.locator(".result .verdict button.reverify")).to_be_visible()

    # 263 candidates: the table holds the first 200 rows and says so; scrolling to its end brings the rest.
    rows = frame.locator(".cand-table tbody tr[data-name]")
    expect(rows).to_have_count(200, timeout=30_000)
    expect(frame.locator(".cand-table tr.more")).to_contain_text("200 of 263 rows shown")
    frame.locator(".cands .table-wrap").evaluate("e => { e.scrollTop = e.scrollHeight; }")
    expect(rows).to_have_count(263, timeout=10_000)
    expect(frame.locator(".cand-table tr.more")).to_have_count(0)
    chip_bg = item.locator(".chip").evaluate("e => getComputedStyle(e).backgroundColor")
    assert chip_bg != "rgb(232, 245, 233)", "a not-verified result must not be green"

    # Counts in both panes equal the manifest's; one node per variable.
    for side in ("frozen", "unfrozen"):
        expect(frame.locator(f'.gv-pane[data-side="{side}"] .gv-pane-stats')).to_have_attribute(
            "data-converted", str(variables), timeout=60_000
        )
    assert not frame.locator('.gv-svg[data-side="unfrozen"] [data-id$="/Read/ReadVariableOp"]').count()

    # The default view is readable on both sides: converted boxes drawn with labels of 9 px or more.
    for side in ("frozen", "unfrozen"):
        sizes = _label_px(frame, side)
        assert sizes and min(sizes) >= READABLE_PX, (side, sizes[:5])
    page.wait_for_timeout(300)
    frame.locator('[data-section="compare"]').evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(400)
    os.makedirs(ARTIFACTS, exist_ok=True)
    page.screenshot(path=os.path.join(ARTIFACTS, "unfreeze_mnv2_1280.png"))

    # A converted node's panel shows its weight: numbers and a histogram.
    nid = _in_view(frame, "unfrozen", ".node.converted")
    frame.locator(f'.gv-svg[data-side="unfrozen"] .node[data-id="{nid}"]').click()
    expect(frame.locator(".gv-details .gv-hist rect.bar").first).to_be_attached(timeout=15_000)
    expect(frame.locator(".gv-details .gv-w")).to_contain_text("min / max")

    # The unfrozen "Open in Graphs" link names the unfrozen run.
    href = frame.locator('.gv-pane[data-side="unfrozen"] .gv-run-link').get_attribute("href")
    assert href.endswith("#graphs&run=" + urllib.parse.quote(f"unfreeze/{REAL}/unfrozen", safe=""))

    # Weight drift: a copy of the model with one kernel moved by 20% (as fine-tuning and re-freezing would) is
    # compared with it; that kernel is listed first and its box is marked as moved most.
    from tensorboard.compat.proto import graph_pb2
    from tensorboard.util import tensor_util

    g = graph_pb2.GraphDef()
    g.ParseFromString((tmp_path / "logdir" / REAL).read_bytes())
    kernel = "MobilenetV2/Conv/weights"
    node = next(n for n in g.node if n.name == kernel)
    node.attr["value"].tensor.CopyFrom(
        tensor_util.make_tensor_proto(tensor_util.make_ndarray(node.attr["value"].tensor) * 1.2)
    )
    (tmp_path / "logdir" / "tuned.pb").write_bytes(g.SerializeToString())
    expect(frame.locator('li.model[data-model="tuned.pb"]')).to_be_attached(timeout=30_000)
    frame.locator(".gv-drift-select").focus()
    frame.locator(".gv-drift-select").select_option("tuned.pb")
    expect(frame.locator(".gv-drift-head")).to_contain_text("1 of", timeout=30_000)
    expect(frame.locator(".gv-drift-list li").first).to_contain_text(kernel)
    expect(frame.locator(".gv-drift-list li").first).to_have_attribute("data-drift", "4")
    expect(frame.locator('.gv-svg[data-side="frozen"] .node[data-drift="4"]').first).to_be_attached()

    # A 3,185-node graph before conversion: laid out (in the worker) and readable as it opens, not a sliver.
    page.set_viewport_size({"width": 1920, "height": 1080})
    assert frame.locator("body").evaluate("() => window.scrollY") > 0  # scrolled down to the graphs
    frame.locator(f'li.model[data-model="{BIG}"]').click()
    # Another model starts at the top of the page, not where the previous one was scrolled to.
    assert frame.locator("body").evaluate("() => window.scrollY") == 0
    expect(frame.locator(".gv-status")).to_contain_text("3,185 nodes", timeout=60_000)
    expect(frame.locator(".gv-status")).to_contain_text("(worker)")
    sizes = _label_px(frame, "frozen", ".node text.label")
    assert sizes and min(sizes) >= READABLE_PX, sizes[:5]
    frame.locator('[data-section="compare"]').evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(400)
    page.screenshot(path=os.path.join(ARTIFACTS, "unfreeze_big_graph_1920.png"))

    # Zoomed out too far to read, boxes are painted (on the pane's canvas), not built as labelled SVG; zoomed back
    # in, the labelled boxes come back, readable.
    for _ in range(4):
        frame.get_by_role("button", name="−", exact=True).click()
    expect(frame.locator('.gv-svg[data-side="frozen"] .node')).to_have_count(0)
    inked = frame.locator('.gv-canvas[data-side="frozen"]').evaluate(
        "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"
    )
    assert inked > 1000, inked
    for _ in range(4):
        frame.get_by_role("button", name="+", exact=True).click()
    expect(frame.locator('.gv-svg[data-side="frozen"] .node').first).to_be_attached()
    sizes = _label_px(frame, "frozen", ".node text.label")
    assert sizes and min(sizes) >= READABLE_PX, sizes[:5]

    # While the view moves, the SVG layer is hidden: the selected node's edges are painted on the canvas instead.
    selected = _in_view(frame, "frozen", ".node")
    frame.locator(f'.gv-svg[data-side="frozen"] .node[data-id="{selected}"]').click()
    assert frame.locator("body").evaluate(f"() => {VIEW}.selectedEdges.frozen.length") > 0
    # (Highlight-blue pixels away from the selected box itself, whose outline is that blue too.)
    blue = frame.locator('.gv-pane[data-side="frozen"] .gv-pane-body').evaluate(
        """async (body, id) => {
            const r = body.getBoundingClientRect();
            body.dispatchEvent(new WheelEvent('wheel', {deltaY: -20, clientX: r.left + r.width / 2,
                clientY: r.top + r.height / 2, bubbles: true, cancelable: true}));
            await new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
            const svgHidden = getComputedStyle(body.querySelector('.gv-svg')).visibility === 'hidden';
            const v = window.__unfreezeGraphView, b = v.layout.boxes.get(id), t = v.t;
            const dpr = window.devicePixelRatio || 1, m = 8;
            const x0 = (b.x * t.k + t.x - m) * dpr, x1 = ((b.x + b.w) * t.k + t.x + m) * dpr;
            const y0 = (b.y * t.k + t.y - m) * dpr, y1 = ((b.y + b.h) * t.k + t.y + m) * dpr;
            const c = body.querySelector('.gv-canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
                const px = (i / 4) % c.width, py = Math.floor(i / 4 / c.width);
                if (px >= x0 && px <= x1 && py >= y0 && py <= y1) continue;
                if (d[i] === 0x15 && d[i + 1] === 0x65 && d[i + 2] === 0xc0) n++;
            }
            return {svgHidden, n};
        }""",
        selected,
    )
    assert blue["svgHidden"] and blue["n"] > 20, blue

    # Far out, the open scopes keep readable titles (painted on the canvas); a click on one closes that scope.
    frame.locator("body").evaluate(f"() => {VIEW}.expandAll()")
    expect(frame.locator(".gv-status")).to_contain_text("3,185 boxes", timeout=60_000)
    for _ in range(5):
        frame.get_by_role("button", name="−", exact=True).click()
    expect(frame.locator('.gv-svg[data-side="frozen"] .node')).to_have_count(0)
    titles = frame.locator("body").evaluate(f"() => {VIEW}.panes.frozen.farTitles")
    assert titles, "no scope title painted far out"
    title = titles[0]
    assert frame.locator("body").evaluate(f"() => {VIEW}.expanded.has({json.dumps(title['path'])})")
    body = frame.locator('.gv-pane[data-side="frozen"] .gv-pane-body').bounding_box()
    page.mouse.click(body["x"] + title["x"] + min(title["w"], 40) / 2, body["y"] + title["y"] + title["h"] / 2)
    page.wait_for_function(
        "([sel, path]) => !document.querySelector(sel).contentWindow.__unfreezeGraphView.expanded.has(path)",
        arg=['iframe[src*="plugin_entry.html?name=unfreeze"]', title["path"]],
        timeout=30_000,
    )

    # Layouts are kept in the browser: after a reload the view as it opens is not laid out again.
    page.reload()
    frame = _plugin_frame(page)
    expect(frame.locator(".gv-status")).to_contain_text("(stored)", timeout=60_000)
    assert not errors, errors
