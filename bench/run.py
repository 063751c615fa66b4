"""The benchmark: `python -m bench.run [--quick]` (see bench/README.md).

Builds (and caches in bench/.cache/) frozen graphs of real architectures, then measures, in the same run and each
step in its own fresh process: TensorFlow's freeze, a bare protobuf parse, `inspect_model`, the `tb-unfreeze
inspect` command, `convert` with and without verification, the published recipe, the I/O floor, `import
tensorflow`, the plugin's /candidates route and (when it exists) the side-by-side view in headless Chromium.
Prints a table of medians and ratios and writes it to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import models as M
from bench import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(M.CACHE, "out")
RECIPE_MODELS = ("MobileNetV2", "ResNet50")
PLUGIN_MODEL = "ResNet50"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_child(cmd: list[str], timeout: float = 3600, ok: tuple[int, ...] = (0,)) -> dict:
    """Run `cmd` in a fresh process; its wall time, its own peak RSS (wait4's ru_maxrss, KB) and exit code (one of
    `ok`, else RuntimeError with the end of its stderr)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=ENV, cwd=ROOT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in ok:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-12:]
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n" + "\n".join(tail))
    return {"wall": wall, "maxrss_kb": usage.ru_maxrss, "exit": proc.returncode}


def run_step(step: str, *args: str) -> dict:
    fd, result = tempfile.mkstemp(prefix="bench-", suffix=".json")
    os.close(fd)
    try:
        child = run_child([sys.executable, "-m", "bench.worker", step, result, *args])
        with open(result) as f:
            data = json.load(f)
    finally:
        os.remove(result)
    data.update(child)
    return data


def repeat(n: int, what: str, fn) -> list[dict]:
    runs = []
    for i in range(n):
        runs.append(fn())
        log(
            f"  {what} [{i + 1}/{n}] {runs[-1].get('seconds', runs[-1]['wall']):.3f} s, "
            f"peak {runs[-1]['maxrss_kb'] / 1024:.0f} MB"
        )
    return runs


def summary(runs: list[dict], key: str = "seconds") -> dict:
    values = [r[key] for r in runs]
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "rss_mb": statistics.median(r["maxrss_kb"] for r in runs) / 1024,
        "runs": runs,
    }


def cli_inspect(path: str) -> dict:
    exe = shutil.which("tb-unfreeze")
    cmd = [exe] if exe else [sys.executable, "-m", "tb_unfreeze"]
    r = run_child([*cmd, "inspect", path, "--json"])
    r["seconds"] = r["wall"]
    return r


def bench_model(spec: M.Spec, reps: int, results: dict) -> dict:
    big = spec.name == "VGG16"
    r: dict = {"name": spec.name, "freezer": M.FREEZER[spec.kind]}
    log(f"{spec.name}")
    n_freeze = 1 if big else reps
    freezes = []
    for i in range(n_freeze):
        write = "1" if not os.path.exists(spec.path) else "0"
        freezes.append(run_step("freeze", spec.name, write))
        log(
            f"  freeze [{i + 1}/{n_freeze}] {freezes[-1]['seconds']:.3f} s, "
            f"peak {freezes[-1]['maxrss_kb'] / 1024:.0f} MB"
        )
    r["freeze"] = summary(freezes)
    r["bytes"] = os.path.getsize(spec.path)
    r["parse"] = summary(repeat(reps, "parse", lambda: run_step("parse", spec.path)))
    r["parse_file"] = summary(r["parse"]["runs"], "read+parse")
    r["nodes"] = r["parse"]["runs"][0]["nodes"]
    r["inspect"] = summary(repeat(reps, "inspect", lambda: run_step("inspect", spec.path)))
    r["candidates"] = r["inspect"]["runs"][0]["recommended"]
    r["cli_inspect"] = summary(repeat(reps, "tb-unfreeze inspect --json (process)", lambda: cli_inspect(spec.path)))
    out = os.path.join(OUT, spec.name)
    r["convert"] = summary(
        repeat(2 if big else reps, "convert verify=False", lambda: run_step("convert", spec.path, out, "0"))
    )
    try:
        r["convert_verify"] = summary(
            repeat(1 if big else reps, "convert verify=True", lambda: run_step("convert", spec.path, out, "1"))
        )
        r["verified"] = r["convert_verify"]["runs"][0].get("verified")
        r["verify_note"] = r["convert_verify"]["runs"][0].get("verify_note")
    except RuntimeError as e:  # a crash of convert itself is a finding, not the end of the benchmark
        last = str(e).strip().splitlines()[-1][:300]
        log(f"  convert verify=True FAILED: {last}")
        r["convert_verify"] = {"error": last}
        r["verified"], r["verify_note"] = False, f"convert raised {last}"
    r["io_floor"] = summary(
        repeat(2 if big else reps, "I/O floor", lambda: run_step("io_floor", spec.path, out + "-floor"))
    )
    if spec.name in RECIPE_MODELS and not results.get("skip_recipe"):
        n = min(reps, 2) if spec.name == "ResNet50" else reps
        r["recipe"] = summary(repeat(n, "published recipe", lambda: run_step("recipe", spec.path, out + "-recipe")))
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out + "-floor", ignore_errors=True)
    shutil.rmtree(out + "-recipe", ignore_errors=True)
    return r


def bench_plugin(spec: M.Spec, reps: int) -> dict:
    if not os.path.exists(os.path.join(ROOT, "tb_unfreeze", "plugin", "plugin.py")):
        return {"skipped": "the plugin backend (tb_unfreeze/plugin/) does not exist yet"}
    logdir = os.path.join(M.CACHE, "plugin_logdir")
    runs = repeat(
        reps, f"plugin /candidates on {spec.name} (cold + 9 warm)", lambda: run_step("plugin", spec.path, logdir, "9")
    )
    shutil.rmtree(logdir, ignore_errors=True)
    return {"model": spec.name, "cold": summary(runs, "cold"), "warm": summary(runs, "warm")}


def bench_frontend(spec: M.Spec, reps: int) -> dict:
    from bench import frontend  # noqa: PLC0415

    reason = frontend.unavailable()
    if reason:
        return {"skipped": reason}
    logdir = os.path.join(M.CACHE, "frontend", "logdir")
    runs = repeat(
        1,
        f"side-by-side view of {spec.name} in headless Chromium (one TensorBoard, {reps + 2} page loads)",
        lambda: run_step("frontend", spec.path, logdir, str(reps + 2)),
    )
    shutil.rmtree(os.path.dirname(logdir), ignore_errors=True)
    return {
        "model": spec.name,
        "drawn": summary(runs),
        "first": runs[0]["first"],
        "later": runs[0]["later"],
        "shell": runs[0]["shell"],
        "loads": len(runs[0]["all"]),
    }


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "tb_unfreeze", "bench"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return head + (" (+ uncommitted changes in tb_unfreeze/ or bench/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_gb = int(f.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError):
        mem_gb = 0
    import importlib.metadata as md  # noqa: PLC0415

    def v(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GB RAM, Linux {platform.release()}, Python "
        f"{platform.python_version()}, tensorflow-cpu {v('tensorflow-cpu')}, keras {v('keras')}, "
        f"tensorboard {v('tensorboard')}, protobuf {v('protobuf')}"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="MobileNetV2, the two LSTMs and the TF1 graph only (minutes)")
    p.add_argument("--models", help="comma-separated subset of: " + ", ".join(m.name for m in M.MODELS))
    p.add_argument("--reps", type=int, default=3, help="runs per step (medians are reported; VGG16 uses fewer)")
    p.add_argument("--no-recipe", action="store_true", help="skip the published-recipe baseline")
    p.add_argument(
        "--output",
        default=os.path.join(ROOT, "docs", "benchmarks.md"),
        help="markdown file to write ('-' to only print)",
    )
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--render", metavar="RESULTS.json", help="only re-render the table from a --json file")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            text = report.render(json.load(f))
        print(text)
        if args.output != "-":
            with open(args.output, "w") as f:
                f.write(text)
        return 0
    names = args.models.split(",") if args.models else (M.QUICK if args.quick else [m.name for m in M.MODELS])
    unknown = [n for n in names if n not in M.BY_NAME]
    if unknown:
        p.error(f"unknown model(s) {unknown}")
    started = time.time()
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commit": git_commit(),
        "reps": args.reps,
        "quick": args.quick,
        "command": "python -m bench.run"
        + (" --quick" if args.quick else "")
        + (f" --models {args.models}" if args.models else "")
        + (f" --reps {args.reps}" if args.reps != 3 else ""),
        "skip_recipe": args.no_recipe,
        "models": {},
    }
    log("import tensorflow alone (reference)")
    results["import_tf"] = summary(repeat(args.reps, "import tensorflow", lambda: run_step("import_tf")))
    for name in names:
        results["models"][name] = bench_model(M.BY_NAME[name], args.reps, results)
    plugin_model = PLUGIN_MODEL if PLUGIN_MODEL in names else names[0]
    results["plugin"] = bench_plugin(M.BY_NAME[plugin_model], args.reps)
    results["frontend"] = bench_frontend(M.BY_NAME[plugin_model], args.reps)
    results["elapsed"] = time.time() - started
    text = report.render(results)
    print(text)
    if args.output != "-":
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text)
        log(f"wrote {args.output}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
