"""Mutation pass on the core: break one thing at a time in a scratch copy and see whether the tests notice.

Not a test module (pytest does not collect it). Usage, from a scratch copy of the repository (never the working
tree others edit):

    git archive <commit> | tar -x -C /tmp/mutpass
    python tests/mutation_pass.py --copy /tmp/mutpass [--only ID ...] [--baseline] [--runs NAME ...]

Each mutant is a text replacement that must match its file exactly once; it is applied in the copy, the tests
listed for it run (pytest -x, cheapest file first, with the copy first on PYTHONPATH so the console scripts and
child processes import the mutated code), and the file is restored. A mutant is killed when a test that passes on
the unmutated copy fails; tests already failing there (`--baseline` records them) are deselected. Results go to
`<copy>/mutation_results.json`; docs/mutation.md summarizes a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

# The test runs a mutant may get, as (name, pytest arguments). test_convert_real.py converts every real graph
# (tens of minutes on 2 CPUs): the pass runs it on eight graphs that cover the roles (dense, conv + fused and
# unfused batch norm, depthwise, LSTM loops, dropout inputs, quantized, FakeQuant) plus its non-parametrized tests.
REAL_SUBSET = (
    "tf2onnx_regression or hollance_voice or tf2onnx_lstm or cms_deepcore or mobilenet_v1_025 or "
    "har_keras_frozen or qat_fakequant or stylize_quantized or not (manifest_records or saved_model_loads)"
)
INSPECT = ("inspect", ["test_inspect_real.py"])
BAD_INPUT = ("bad_input", ["test_bad_input.py"])
BUILT = ("built", ["test_convert_built.py"])
FUZZ = ("fuzz", ["test_fuzz_convert.py"])
REAL = ("real", ["test_convert_real.py", "-k", REAL_SUBSET])
CRASH = ("crash", ["test_crash_safety.py"])
INPUTS = ("inputs", ["test_inputs_as_meant.py"])  # built graphs with keep_prob, learning phase, bn without scale
CONTRACT_TESTS = ("contract", ["test_contract.py"])
PLUGIN_HTTP = ("plugin_http", ["test_plugin_http.py"])
KILLS = ("kills", ["test_mutation_kills.py"])  # tests written to kill survivors of earlier passes
ALL_RUNS = [INSPECT, BAD_INPUT, BUILT, FUZZ, REAL, CRASH, INPUTS, CONTRACT_TESTS, PLUGIN_HTTP, KILLS]
# Each mutant runs these in order and stops at the first failure. (The runs `inputs` and `kills` were added on
# 30 Nov, after the survivors of the first pass: see docs/mutation.md.)
DETECTION = [INSPECT, BUILT, REAL, FUZZ, INPUTS, KILLS]
CONVERSION = [BUILT, REAL, FUZZ, INPUTS, KILLS]
OUTPUT = [BAD_INPUT, REAL, FUZZ, CRASH, KILLS]
CONTRACT = [CONTRACT_TESTS, PLUGIN_HTTP, KILLS]


@dataclasses.dataclass
class Mutant:
    id: str
    area: str
    file: str
    old: str
    new: str
    what: str
    tests: list[tuple[str, list[str]]]


MUTANTS = [
    # --- detection: candidates.py and its tables in roles.py ---
    Mutant(
        "D1",
        "detection",
        "tb_unfreeze/roles.py",
        '"MatMul": {0: "kernel", 1: "kernel"},',
        '"MatMul": {0: "kernel"},',
        "MatMul's weight slot (1) no longer makes a kernel",
        DETECTION,
    ),
    Mutant(
        "D2",
        "detection",
        "tb_unfreeze/roles.py",
        'Role("bn_moving_mean", False, "moving_mean"),',
        'Role("bn_moving_mean", True, "moving_mean"),',
        "batch-norm moving means trainable",
        DETECTION,
    ),
    Mutant(
        "D3",
        "detection",
        "tb_unfreeze/roles.py",
        '    "Identity": frozenset({0}),\n',
        "",
        "the walk stops at Identity (no pass-through)",
        DETECTION,
    ),
    Mutant(
        "D4",
        "detection",
        "tb_unfreeze/candidates.py",
        '        if use.node.name == node.name + "/read" or _READ_VARIABLE.search(use.node.name):',
        "        if False:",
        "a freezer's read op is never taken as evidence",
        DETECTION,
    ),
    Mutant(
        "D5",
        "detection",
        "tb_unfreeze/candidates.py",
        "            if role_name in R.RNN_ROLE and (reach.through_enter or linear_uses > 2):",
        "            if False:",
        "loop-fed kernels and biases not made RNN roles",
        DETECTION,
    ),
    Mutant(
        "D6",
        "detection",
        "tb_unfreeze/candidates.py",
        '    return "bias" if other is not None and other.op in R.LINEAR_OPS else ""',
        '    return ""',
        "an Add after MatMul/Conv no longer marks a bias",
        DETECTION,
    ),
    Mutant(
        "D7",
        "detection",
        "tb_unfreeze/candidates.py",
        "            roles = []  # a scalar is an epsilon or a scale unless a read op proves otherwise",
        "            pass",
        "scalars (epsilons, scales) get roles",
        DETECTION,
    ),
    Mutant(
        "D8",
        "detection",
        "tb_unfreeze/candidates.py",
        "        return _bias_add_role(index, use, shape)\n    return _bias_add_role(index, use, shape) or "
        "_unfused_bn_role(index, use)",
        "        return _bias_add_role(index, use, shape)\n    return _bias_add_role(index, use, shape)",
        "unfused batch norm (Rsqrt pattern) never recognized",
        DETECTION,
    ),
    Mutant(
        "D9",
        "detection",
        "tb_unfreeze/candidates.py",
        "        trainable = role.trainable or (",
        "        trainable = True or (",
        "every candidate trainable",
        DETECTION,
    ),
    Mutant(
        "D10",
        "detection",
        "tb_unfreeze/candidates.py",
        "            if constant_filled(node):",
        "            if False:",
        "constant-filled tensors (tf.ones copies) recommended",
        DETECTION,
    ),
    # --- rewiring: rewrite.py ---
    Mutant(
        "R1",
        "rewiring",
        "tb_unfreeze/rewrite.py",
        "            if key in replaced:",
        "            if key in replaced and j == 0:",
        "only input slot 0 is rewired to the variable",
        CONVERSION,
    ),
    Mutant(
        "R2",
        "rewiring",
        "tb_unfreeze/rewrite.py",
        '    mapped = {f"{MAPPED_PREFIX}{i}:0": c for i, c in enumerate(chosen)}',
        '    mapped = {f"{MAPPED_PREFIX}{i}:0": c for i, c in enumerate(chosen[1:] + chosen[:1])}',
        "variables bound to the wrong tensors (rotated by one)",
        CONVERSION,
    ),
    Mutant(
        "R3",
        "rewiring",
        "tb_unfreeze/rewrite.py",  # _remove_dangling's (_fold_freezer_reads has the same line)
        "    kept = [n for n in graph_def.node if n.name not in doomed]\n    del graph_def.node[:]\n"
        "    graph_def.node.extend(kept)\n    return sorted(doomed)",
        "    doomed = set()\n    kept = [n for n in graph_def.node if n.name not in doomed]\n"
        "    del graph_def.node[:]\n    graph_def.node.extend(kept)\n    return sorted(doomed)",
        "replaced constants left in the graph (nothing removed)",
        CONVERSION,
    ),
    Mutant(
        "R4",
        "rewiring",
        "tb_unfreeze/rewrite.py",
        '                    node.input[j] = ""  # control edge on a removed const: nothing to wait for',
        "                    pass",
        "control edges on removed constants kept",
        CONVERSION,
    ),
    Mutant(
        "R5",
        "rewiring",
        "tb_unfreeze/rewrite.py",
        "    _drop_custom_gradients(graph_def)\n",
        "",
        "custom-gradient markers kept",
        CONVERSION,
    ),
    Mutant(
        "R6",
        "rewiring",
        "tb_unfreeze/rewrite.py",
        "        tensor.float_val.append(float(inp.default))",
        "        tensor.float_val.append(0.0)",
        "keep_prob / learning-phase default written as 0",
        CONVERSION,
    ),
    # The exact-name check is now the "" suffix of _BUNDLE (a406085); the mutant keeps only the bundle's suffixes.
    Mutant(
        "R7",
        "rewiring",
        "tb_unfreeze/rewrite.py",
        'while name in taken or any(f"{name}{s}" in graph_names for s in _BUNDLE):',
        'while name in taken or any(f"{name}{s}" in graph_names for s in _BUNDLE[1:]):',
        "variable names may collide with graph nodes",
        CONVERSION,
    ),
    # --- verification: verify.py ---
    Mutant(
        "V1",
        "verification",
        "tb_unfreeze/verify.py",
        "    return RTOL * max(1.0, scale)",
        "    return 1.0",
        "output tolerance 1.0 instead of 3e-5 (relative; 1e-5 in the first pass)",
        CONVERSION,
    ),
    Mutant(
        "V2",
        "verification",
        "tb_unfreeze/verify.py",
        '"passed": diff <= tolerance(ref)}',
        '"passed": True}',
        "every output comparison passes",
        CONVERSION,
    ),
    Mutant(
        "V3",
        "verification",
        "tb_unfreeze/verify.py",
        "    return tf.add_n(terms) if terms else None",
        "    return None",
        "loss_of returns None: no gradient is checked",
        CONVERSION,
    ),
    Mutant(
        "V4",
        "verification",
        "tb_unfreeze/verify.py",
        '    report["missing"] = sorted(v.name.rsplit(":", 1)[0] for v, g in zip(trainable, grads) if g is None)',
        '    report["missing"] = []',
        "TF2 missing gradients never reported",
        CONVERSION,
    ),
    Mutant(
        "V5",
        "verification",
        "tb_unfreeze/verify.py",
        '"passed": best["relative_error"] <= FD_RTOL,',
        '"passed": True,',
        "finite-difference check always passes",
        CONVERSION,
    ),
    Mutant(
        "V6",
        "verification",
        "tb_unfreeze/verify.py",
        "    if outputs_ok and gradients_ok:",
        "    if True:",
        "status 'verified' whatever the checks found",
        CONVERSION,
    ),
    Mutant(
        "V7",
        "verification",
        "tb_unfreeze/verify.py",
        '    result["outputs"] = compare(frozen_out, tf1["outputs"])',
        '    result["outputs"] = compare(frozen_out, frozen_out)',
        "TF1 outputs compared with themselves",
        CONVERSION,
    ),
    # --- atomic output: output_dir.py ---
    Mutant(
        "O1",
        "atomic output",
        "tb_unfreeze/output_dir.py",
        "    tmp = None\n    try:\n        tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=parent)",
        "    tmp = None\n    if True:  # written in place\n        os.makedirs(out, exist_ok=True)\n"
        "        yield out\n        return\n    try:\n        tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=parent)",
        "the result written in place (no temporary folder, no rename)",
        OUTPUT,
    ),
    Mutant(
        "O2",
        "atomic output",
        "tb_unfreeze/output_dir.py",
        "    except BaseException as e:\n        shutil.rmtree(tmp, ignore_errors=True)\n",
        "    except BaseException as e:\n",
        "a failed conversion leaves its temporary folder",
        OUTPUT,
    ),
    Mutant(
        "O3",
        "atomic output",
        "tb_unfreeze/output_dir.py",
        '    """Remove temporary folders left by a killed conversion (their owner process is gone), and put back a\n'
        '    previous result that a kill left moved aside."""\n',
        '    """Remove temporary folders left by a killed conversion (their owner process is gone), and put back a\n'
        '    previous result that a kill left moved aside."""\n    return\n',
        "stale temporary folders never cleaned",
        OUTPUT,
    ),
    Mutant(
        "O4",
        "atomic output",
        "tb_unfreeze/output_dir.py",
        "        if os.listdir(out) and not replace:",
        "        if False:",
        "a non-empty output replaced without --replace",
        OUTPUT,
    ),
    Mutant(
        "O5",
        "atomic output",
        "tb_unfreeze/output_dir.py",
        "    if isinstance(error, OSError) and error.errno in NO_SPACE:\n        return True",
        "    return False",
        "a full disk not recognized (generic error)",
        OUTPUT,
    ),
    Mutant(
        "O6",
        "atomic output",
        "tb_unfreeze/output_dir.py",
        "    os.remove(os.path.join(tmp, OWNER))\n",
        "",
        "the owner-pid marker left in the result",
        OUTPUT,
    ),
    Mutant(
        "O7",
        "atomic output",
        "tb_unfreeze/output_dir.py",
        "    if os.path.exists(out) and _exchange(tmp, out):",
        "    if os.path.exists(out) and False:",
        "no atomic exchange: the move-aside fallback always",
        OUTPUT,
    ),
    # --- the conversion contract: contract.py ---
    Mutant(
        "C1",
        "contract",
        "tb_unfreeze/contract.py",
        '"passed": self.passed,\n            "note": self.note,',
        '"passed": True,\n            "note": self.note,',
        "Verification.summary_json says passed whatever the status",
        CONTRACT,
    ),
    Mutant(
        "C2",
        "contract",
        "tb_unfreeze/contract.py",
        "                    result = result.relocated(folder)\n",
        "                    pass\n",
        "ConversionResult.open keeps a moved folder's old paths",
        CONTRACT,
    ),
    Mutant(
        "C3",
        "contract",
        "tb_unfreeze/contract.py",
        "        if unknown:\n",
        "        if False:\n",
        "ConversionRequest.from_json ignores unknown fields",
        CONTRACT,
    ),
]


def _env(copy: str, models: str) -> dict:
    venv_bin = os.path.dirname(sys.executable)
    return {
        **os.environ,
        "PYTHONPATH": copy,
        "TB_UNFREEZE_MODELS": models,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
    }


def _failed_ids(xml_path: str) -> list[str]:
    if not os.path.exists(xml_path):
        return []
    ids = []
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            module = case.get("classname", "").rsplit(".", 1)[-1]
            ids.append(f"tests/{module}.py::{case.get('name')}")  # node ids are relative to the repository
    return ids


def _pytest(copy: str, models: str, args: list[str], extra: list[str], xml: str, timeout: int) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *extra, *args]
    try:
        r = subprocess.run(
            cmd,
            cwd=os.path.join(copy, "tests"),
            env=_env(copy, models),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    return r.returncode, (r.stdout.strip().splitlines() or [""])[-1]


def baseline(copy: str, models: str, timeout: int) -> dict[str, list[str]]:
    """Failing tests of the unmutated copy, per file."""
    failing = {}
    for name, args in ALL_RUNS:
        xml = os.path.join(copy, f"baseline-{name}.xml")
        start = time.monotonic()
        code, summary = _pytest(copy, models, args, [], xml, timeout)
        failing[name] = _failed_ids(xml)
        print(f"baseline {name}: exit {code}: {summary} ({time.monotonic() - start:.0f} s)", flush=True)
    return failing


def run_mutant(m: Mutant, copy: str, models: str, failing: dict[str, list[str]], timeout: int) -> dict:
    path = os.path.join(copy, m.file)
    with open(path) as f:
        original = f.read()
    if original.count(m.old) != 1:
        return {"id": m.id, "result": "not applied", "detail": f"pattern found {original.count(m.old)} times"}
    with open(path, "w") as f:
        f.write(original.replace(m.old, m.new))
    start = time.monotonic()
    try:
        for name, args in m.tests:
            deselect = [a for t in failing.get(name, []) for a in ("--deselect", t)]
            xml = os.path.join(copy, f"mutant-{m.id}.xml")
            code, summary = _pytest(copy, models, args, ["-x", *deselect], xml, timeout)
            if code not in (0, 5):  # 5: no test selected (e.g. the kills file has none for this area)
                first = (_failed_ids(xml) or [summary])[0]
                return {
                    "id": m.id,
                    "result": "killed",
                    "by": first,
                    "exit": code,
                    "summary": summary,
                    "seconds": round(time.monotonic() - start),
                }
        return {
            "id": m.id,
            "result": "survived",
            "ran": [name for name, _ in m.tests],
            "seconds": round(time.monotonic() - start),
        }
    finally:
        with open(path, "w") as f:
            f.write(original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copy", required=True, help="scratch copy of the repository (mutated in place)")
    parser.add_argument("--models", default=os.environ.get("TB_UNFREEZE_MODELS", "/work/shared/models"))
    parser.add_argument("--only", nargs="*", help="mutant ids, run in this order")
    parser.add_argument("--baseline", action="store_true", help="(re)record the tests failing on the copy")
    parser.add_argument(
        "--runs",
        nargs="*",
        help="only these test runs of each mutant (e.g. `kills` to re-run a "
        "survivor against the tests written for it; the others already passed)",
    )
    parser.add_argument("--timeout", type=int, default=1500, help="seconds per pytest run")
    args = parser.parse_args()
    copy = os.path.abspath(args.copy)
    base_file = os.path.join(copy, "mutation_baseline.json")
    if args.baseline or not os.path.exists(base_file):
        with open(base_file, "w") as f:
            json.dump(baseline(copy, args.models, args.timeout), f, indent=1)
    with open(base_file) as f:
        failing = json.load(f)
    results_file = os.path.join(copy, "mutation_results.json")
    results = {}
    if os.path.exists(results_file):
        with open(results_file) as f:
            results = json.load(f)
    by_id = {m.id: m for m in MUTANTS}
    for m in [by_id[i] for i in args.only] if args.only else MUTANTS:  # in the order given
        if args.runs is not None:
            m = dataclasses.replace(m, tests=[(n, a) for n, a in m.tests if n in args.runs])
        r = run_mutant(m, copy, args.models, failing, args.timeout)
        r.update(area=m.area, what=m.what, file=m.file)
        results[m.id] = r
        print(json.dumps(r), flush=True)
        with open(results_file, "w") as f:
            json.dump(results, f, indent=1)
    killed = sum(r["result"] == "killed" for r in results.values())
    print(f"{killed} of {len(results)} mutants killed", flush=True)


if __name__ == "__main__":
    main()
