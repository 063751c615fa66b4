"""Mutated real graphs through `convert`, in a child process as the plugin and the CLI run it.

The property: `tb-unfreeze convert` either exits 2 with one line naming the problem (a UserError, nothing
written) or exits 0 with a complete, verified result; never an internal error, never partial output, never a
leftover `.tb_unfreeze-tmp-*` folder. The mutations are those of `test_fuzz_inspect.py` (tests/mutations.py),
a fixed sample so the run is reproducible and stays within about a minute and a half on 2 CPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

import mutations as M
from tb_unfreeze.output_dir import TMP_PREFIX

TIMEOUT = 240  # seconds per conversion (a few on an idle machine); a hang fails the test instead of the suite

# (source, mutations, seed): each structural mutation at least once, on a 2-weight and a 6-weight graph
CASES = [
    ("tf2onnx_regression.pb", ["duplicate_names"], 0),
    ("tf2onnx_regression.pb", ["missing_input"], 1),
    ("tf2onnx_regression.pb", ["cycle"], 3),
    ("tf2onnx_regression.pb", ["huge_shape"], 0),
    ("tf2onnx_regression.pb", ["huge_shape"], 2),
    ("tf2onnx_regression.pb", ["content_mismatch"], 0),
    ("tf2onnx_regression.pb", ["nan_inf_weights"], 0),
    ("tf2onnx_regression.pb", ["wrong_dtypes"], 0),
    ("tf2onnx_regression.pb", ["negative_dims"], 0),
    ("tf2onnx_regression.pb", ["garbage_attrs"], 5),
    ("tf2onnx_fc_layers.pb", ["content_mismatch"], 1),
    ("tf2onnx_fc_layers.pb", ["wrong_dtypes"], 3),
    ("tf2onnx_fc_layers.pb", ["huge_shape"], 1),
    ("tf2onnx_fc_layers.pb", ["nan_inf_weights"], 2),
    ("tf2onnx_fc_layers.pb", ["cycle", "duplicate_names"], 4),
    ("tf2onnx_fc_layers.pb", ["bitflip"], 7),
    ("tf2onnx_fc_layers.pb", ["truncate"], 0),
]


def _mutated(real_model, source: str, kinds: list[str], seed: int) -> tuple[bytes, str]:
    with open(real_model(source), "rb") as f:
        data = f.read()
    if kinds == ["bitflip"]:  # flips inside the largest weight's bytes: the graph still parses, values change
        content = max((n.attr["value"].tensor.tensor_content for n in M.parse(data).node if n.op == "Const"), key=len)
        start = data.find(content)
        assert start > 0 and len(content) > 4096
        return M.flip_bits(data, [(start + 64 + i * 251) * 8 + seed for i in range(16)]), "16 bit flips in weights"
    if kinds == ["truncate"]:
        return M.truncate(data, 0.6), "truncated to 60%"
    return M.mutate(data, kinds, seed)


def _convert(src: str, out: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tb_unfreeze", "convert", src, "-o", out, "--json"], capture_output=True, text=True,
        timeout=TIMEOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def _leftovers(folder: str) -> list[str]:
    return [os.path.join(d, n) for d, dirs, files in os.walk(folder) for n in dirs + files if n.startswith(TMP_PREFIX)]


@pytest.fixture(scope="module")
def outcomes(real_model, tmp_path_factory):
    """Run every case, two at a time: {case id: (what, CompletedProcess, out_dir, parent)}."""
    root = tmp_path_factory.mktemp("fuzz_convert")
    jobs = {}
    for i, (source, kinds, seed) in enumerate(CASES):
        data, what = _mutated(real_model, source, kinds, seed)
        case = root / f"case{i}"
        case.mkdir()
        (case / "model.pb").write_bytes(data)
        jobs[i] = (what, str(case / "model.pb"), str(case / "out" / "result"), str(case))
    with ThreadPoolExecutor(2) as pool:
        futures = {i: pool.submit(_convert, src, out) for i, (_, src, out, _) in jobs.items()}
        results = {i: (jobs[i][0], f.result(), jobs[i][2], jobs[i][3]) for i, f in futures.items()}
    refused = sum(r.returncode == 2 for _, r, _, _ in results.values())
    print(f"\nfuzz convert: {len(results)} mutated graphs, {refused} refused, {len(results) - refused} converted")
    for what, r, _, _ in results.values():
        line = (r.stderr.strip().splitlines() or [""])[-1] if r.returncode else "converted"
        print(f"  {what[:70]:70} -> exit {r.returncode}: {line[:160]}")
    return results


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{s.split('.')[0]}-{'+'.join(k)}-{n}" for s, k, n in CASES])
def test_mutated_graph_is_refused_cleanly_or_converted_correctly(outcomes, i):
    what, result, out, case = outcomes[i]
    stderr = [ln for ln in result.stderr.splitlines() if ln.startswith("tb-unfreeze:")]
    assert result.returncode in (0, 2), f"{what}: exit {result.returncode}: {result.stderr[-2000:]}"
    assert not _leftovers(case), f"{what}: temporary folders left: {_leftovers(case)}"
    if result.returncode == 2:
        assert len(stderr) == 1 and stderr[0].startswith("tb-unfreeze: error: "), (what, result.stderr[-1000:])
        assert "internal error" not in stderr[0] and "crashed" not in stderr[0], (what, stderr[0])
        assert not os.path.exists(out), f"{what}: refused but {out} exists"
        return
    manifest = json.loads(result.stdout)
    with open(os.path.join(out, "unfreeze.json")) as f:
        assert json.load(f)["source"]["sha256"] == manifest["source"]["sha256"]
    for part in ("saved_model/saved_model.pb", "saved_model/variables/variables.index", "unfrozen_graph.pb"):
        assert os.path.isfile(os.path.join(out, part)), f"{what}: {part} missing"
    verification = manifest["verification"]
    if verification["performed"]:
        assert verification["passed"], f"{what}: converted but not verified: {verification}"
    else:  # only when the mutated frozen graph itself cannot run on probe inputs: say so
        assert verification["note"], what


def test_every_structural_mutation_is_exercised():
    assert {k for _, kinds, _ in CASES for k in kinds} >= set(M.STRUCTURAL)
