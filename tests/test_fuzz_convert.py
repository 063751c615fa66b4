"""Mutated real graphs through `convert`, in a child process as the plugin and the CLI run it.

The property: `tb-unfreeze convert` exits 2 with one line naming the problem (a UserError, nothing written), or
exits 0 with a complete, verified result, or 3 with a complete result whose manifest says why it is not verified;
never an internal error, never partial output, never a leftover `.tb_unfreeze-tmp-*` folder. Which one is pinned
per case: corrupt graphs are refused; graphs with other finite weights (flipped bits) or the same computation in
another shape (shuffled nodes, extra Identity ops, values re-encoded) convert and verify, the latter with exactly
the source graph's candidates; NaN/Inf weights are written but not verified. The
mutations are those of `test_fuzz_inspect.py` (tests/mutations.py), a fixed sample so the run is reproducible and
stays within about two minutes on 2 CPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import mutations as M
import pytest

from tb_unfreeze import inspect_model
from tb_unfreeze.output_dir import TMP_PREFIX

TIMEOUT = 240  # seconds per conversion (a few on an idle machine); a hang fails the test instead of the suite

# What each case must do, as `tb-unfreeze convert`'s exit code: be refused (2: a corrupt graph), convert and verify
# (0: the same computation in another shape, or other finite weight values), or be written but reported not
# verified (3: NaN/Inf weights give NaN gradients). EITHER: a mutation TensorFlow may tolerate (0, 2 or 3). Pinned,
# so a suite where every mutant is refused (or every one converts) fails.
CONVERTED, REFUSED, UNVERIFIED = 0, 2, 3
EITHER = None

# (source, mutations, seed, expected): each mutation at least once, on a 2-weight and a 6-weight graph
CASES = [
    ("tf2onnx_regression.pb", ["duplicate_names"], 0, REFUSED),
    ("tf2onnx_regression.pb", ["missing_input"], 1, EITHER),  # 'b/read' reads '': TensorFlow ignores it
    ("tf2onnx_regression.pb", ["cycle"], 3, REFUSED),
    ("tf2onnx_regression.pb", ["huge_shape"], 0, REFUSED),
    ("tf2onnx_regression.pb", ["huge_shape"], 2, REFUSED),
    ("tf2onnx_regression.pb", ["content_mismatch"], 0, REFUSED),
    ("tf2onnx_regression.pb", ["nan_inf_weights"], 0, UNVERIFIED),
    ("tf2onnx_regression.pb", ["wrong_dtypes"], 0, REFUSED),
    ("tf2onnx_regression.pb", ["negative_dims"], 0, REFUSED),
    ("tf2onnx_regression.pb", ["garbage_attrs"], 5, EITHER),  # a list 'shape' attr on an Identity: unused
    ("tf2onnx_regression.pb", ["shuffle_nodes"], 0, CONVERTED),
    ("tf2onnx_regression.pb", ["insert_identity"], 0, CONVERTED),
    ("tf2onnx_fc_layers.pb", ["content_mismatch"], 1, REFUSED),
    ("tf2onnx_fc_layers.pb", ["wrong_dtypes"], 3, REFUSED),
    ("tf2onnx_fc_layers.pb", ["huge_shape"], 1, REFUSED),
    ("tf2onnx_fc_layers.pb", ["nan_inf_weights"], 2, UNVERIFIED),
    ("tf2onnx_fc_layers.pb", ["cycle", "duplicate_names"], 4, REFUSED),
    ("tf2onnx_fc_layers.pb", ["bitflip"], 7, CONVERTED),
    ("tf2onnx_fc_layers.pb", ["truncate"], 0, REFUSED),
    ("tf2onnx_fc_layers.pb", ["shuffle_nodes", "insert_identity"], 1, CONVERTED),
    ("tf2onnx_fc_layers.pb", ["repack_values"], 2, CONVERTED),
    ("tf2onnx_fc_layers.pb", ["repack_values", "shuffle_nodes"], 3, CONVERTED),
]
# the mutations that keep the computation: the result has exactly the source graph's candidates as variables
SAME_COMPUTATION = set(M.BENIGN)


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
        [sys.executable, "-m", "tb_unfreeze", "convert", src, "-o", out, "--json"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def _leftovers(folder: str) -> list[str]:
    return [os.path.join(d, n) for d, dirs, files in os.walk(folder) for n in dirs + files if n.startswith(TMP_PREFIX)]


@pytest.fixture(scope="module")
def outcomes(real_model, tmp_path_factory):
    """Run every case, two at a time: {case id: (what, CompletedProcess, out_dir, parent)}."""
    root = tmp_path_factory.mktemp("fuzz_convert")
    jobs = {}
    for i, (source, kinds, seed, _) in enumerate(CASES):
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


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{s.split('.')[0]}-{'+'.join(k)}-{n}" for s, k, n, _ in CASES])
def test_mutated_graph_is_refused_cleanly_or_converted_correctly(outcomes, real_model, i):
    what, result, out, case = outcomes[i]
    source, kinds, _, expected = CASES[i]
    stderr = [ln for ln in result.stderr.splitlines() if ln.startswith("tb-unfreeze:")]
    assert result.returncode in (CONVERTED, REFUSED, UNVERIFIED), f"{what}: exit {result.returncode}: {result.stderr}"
    if expected is not EITHER:
        assert result.returncode == expected, f"{what}: expected exit {expected}: {result.stderr[-1000:]}"
    assert not _leftovers(case), f"{what}: temporary folders left: {_leftovers(case)}"
    if result.returncode == REFUSED:
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
    if result.returncode == CONVERTED:  # verified: outputs match and every trainable variable gets a gradient
        assert verification["performed"] and verification["passed"], f"{what}: not verified: {verification}"
        assert verification["gradients"]["missing"] == [], (what, verification["gradients"])
    else:  # written but not verified: the manifest says why
        assert not verification["passed"], (what, verification)
        assert verification.get("note") or verification.get("problems"), (what, verification)
    if set(kinds) <= SAME_COMPUTATION:
        expected_vars = {
            c.name: (c.role, c.trainable) for c in inspect_model(real_model(source)).candidates if c.recommended
        }
        assert {v["source"]: (v["role"], v["trainable"]) for v in manifest["variables"]} == expected_vars, what


def test_every_mutation_is_exercised():
    assert {k for _, kinds, _, _ in CASES for k in kinds} >= set(M.STRUCTURAL) | set(M.BENIGN)


def test_a_good_share_of_mutants_converts_and_verifies(outcomes):
    """Refusing everything is not robustness: at least 30% of the cases must come out converted and verified."""
    verified = [
        i
        for i, (_, r, _, _) in outcomes.items()
        if r.returncode == CONVERTED and json.loads(r.stdout)["verification"]["passed"]
    ]
    assert len(verified) >= 0.3 * len(CASES), [outcomes[i][0] for i in verified]
