"""End to end: an unverified conversion, verified from the tab on probe inputs the user uploads.

A real `tensorboard` process and headless Chromium. The model is converted without verification (as a script may
do); the tab says "not verified" and offers its remedy; a wrong .npz is refused in the panel with the server's
sentence and starts nothing; the right one is uploaded, the model converted again, and the tab then says
"verified" — on exactly the uploaded inputs (the manifest's probe shapes).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from test_e2e_tab import CHROMIUM, CHROMIUM_ARGS, _plugin_frame, _serve

MODEL = "tf2onnx_regression.pb"  # input X: float32 [-1]
TIMEOUT_S = 240

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
expect = sync_api.expect


def _request(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-XSRF-Protected": "1", "Content-Type": "application/json"} if body is not None else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as r:
        return json.loads(r.read())


def _wait_job(api: str, job_id: str) -> dict:
    deadline = time.time() + TIMEOUT_S
    while True:
        job = _request(f"{api}/jobs?id={job_id}")["job"]
        if job["state"] in ("done", "failed") or time.time() > deadline:
            return job
        time.sleep(0.5)


def test_an_unverified_conversion_is_verified_on_an_uploaded_probe(tmp_path, real_model):
    with _serve(tmp_path, real_model, {MODEL: MODEL}) as base, sync_api.sync_playwright() as p:
        api = base + "/data/plugin/unfreeze"
        model_q = urllib.parse.quote(MODEL, safe="")
        job = _request(api + "/convert", {"model": MODEL, "verify": False})["job"]
        assert _wait_job(api, job["id"])["state"] == "done"
        conversions = len(_request(f"{api}/history?model={model_q}")["history"])

        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + f"/#unfreeze&unfreeze_model={model_q}")
            frame = _plugin_frame(page)
            verdict = frame.locator(".result .verdict .chip.verification")
            expect(verdict).to_have_attribute("data-status", "not_verified", timeout=60_000)
            probe_in = frame.locator(".result .remedy input.probe-in")
            expect(probe_in).to_be_attached()

            # A file whose array names no input: the server's sentence in the panel, no conversion started.
            wrong = tmp_path / "wrong.npz"
            np.savez(wrong, nope=np.zeros(3, np.float32))
            probe_in.set_input_files(str(wrong))
            frame.locator(".result .remedy button.reverify").click()
            expect(frame.locator(".result .remedy .probe-msg .err")).to_contain_text("'nope'", timeout=30_000)
            assert len(_request(f"{api}/history?model={model_q}")["history"]) == conversions

            # The right file: converted again, verified on it.
            right = tmp_path / "probe.npz"
            np.savez(right, X=np.linspace(-2, 2, 5, dtype=np.float32))
            probe_in.set_input_files(str(right))
            frame.locator(".result .remedy button.reverify").click()
            expect(verdict).to_have_attribute("data-status", "verified", timeout=TIMEOUT_S * 1000)
            item = frame.locator(f'li.model[data-model="{MODEL}"] .chip')
            expect(item).to_have_attribute("data-verification", "verified", timeout=30_000)
            assert not errors, errors
        finally:
            browser.close()
        manifest = _request(f"{api}/manifest?model={model_q}")
        assert manifest["verification"]["status"] == "verified"
        assert manifest["verification"]["probe_shapes"] == {"X": [5]}  # the uploaded inputs, not searched ones
        assert manifest["request"]["probe"].endswith(".npz") and manifest["request"]["verify"] is True
