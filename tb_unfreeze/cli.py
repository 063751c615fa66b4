"""`tb-unfreeze`: the command-line face of the library.

argparse (standard library, stable) parses; rich (already a Keras dependency) draws tables and progress bars on a
terminal. Exit codes: 0 success, 2 user error (one line on stderr), 1 internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tb_unfreeze.errors import UserError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2
# convert wrote its output, but it is not verified (verification failed, or could not run): not a success
EXIT_NOT_VERIFIED = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tb-unfreeze", description="Make a frozen TensorFlow graph trainable again.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("inspect", help="list the constants that were variables (no TensorFlow needed)")
    s.add_argument("model", help="frozen graph (.pb or .pbtxt)")
    s.add_argument("--json", action="store_true", help="print JSON only (schema: docs/inspect_schema.md)")
    s.add_argument("--all", action="store_true", help="also list candidates not converted by default")

    s = sub.add_parser("convert", help="turn candidates into variables; write a verified SavedModel")
    s.add_argument("model")
    s.add_argument("-o", "--output", required=True, help="output directory (must not exist or be empty)")
    s.add_argument("--only", nargs="+", metavar="NAME", help="convert exactly these candidates")
    s.add_argument("--exclude", nargs="+", default=[], metavar="NAME", help="do not convert these")
    s.add_argument("--trainable", nargs="+", default=[], metavar="NAME", help="make these trainable")
    s.add_argument("--frozen", nargs="+", default=[], metavar="NAME", help="convert these as non-trainable")
    s.add_argument("--inputs", nargs="+", metavar="NAME", help="input placeholders (default: detected)")
    s.add_argument("--outputs", nargs="+", metavar="NAME", help="output nodes (default: detected sinks)")
    s.add_argument("--probe", metavar="FILE.npz", help="probe inputs for verification, keyed by input name")
    s.add_argument("--no-verify", action="store_true", help="skip output and gradient verification")
    s.add_argument("--replace", action="store_true", help="replace a non-empty output directory")
    s.add_argument(
        "--dequantize",
        action="store_true",
        help="fully quantized graphs: rewrite QuantizedConv2D/QuantizedMatMul on quint8 weights into float "
        "ops on float variables, verified against the quantized outputs",
    )
    s.add_argument("--logdir", help="also log the frozen and unfrozen graphs into this TensorBoard logdir")
    s.add_argument("--json", action="store_true", help="print the manifest as JSON only")

    s = sub.add_parser("log", help="put a frozen graph into TensorBoard's graph context")
    s.add_argument("model")
    s.add_argument("--logdir", required=True)
    s.add_argument("--id", help="model id (default: the file name)")
    s.add_argument("--unfrozen", help="a conversion output directory to log beside it")

    s = sub.add_parser("demo", help="prepare the demo models in a logdir and serve TensorBoard's Unfreeze tab")
    s.add_argument("--logdir", default="out")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=6006)
    s.add_argument("--no-serve", action="store_true", help="only prepare the logdir")

    s = sub.add_parser(
        "finetune",
        help="fine-tune a converted model: `finetune OUT_DIR --data train.npz` (on one "
        "machine, or as one worker of the cluster TF_CONFIG describes); without OUT_DIR, the "
        "fine-tuning story on the demo model (shifted digits)",
    )
    s.add_argument("--logdir", default="out")
    s.add_argument("--epochs", type=int, default=5)

    s = sub.add_parser("refreeze", help="turn a converted (fine-tuned) SavedModel back into a frozen graph")
    s.add_argument("saved_model", help="a conversion output directory or its saved_model/ folder")
    s.add_argument("-o", "--output", required=True, help="the .pb to write")
    s.add_argument("--no-verify", action="store_true")
    s.add_argument("--json", action="store_true")
    return p


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _cmd_inspect(args) -> int:
    from tb_unfreeze.analysis import inspect_model  # noqa: PLC0415

    result = inspect_model(args.model).to_dict()
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return EXIT_OK
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    m, t = result["model"], result["totals"]
    console.print(
        f"[bold]{m['path']}[/]  {m['format']} GraphDef, {m['nodes']} nodes, {_fmt_bytes(m['size'])}, "
        f"control flow: {result['control_flow']}"
    )
    for i in result["inputs"]:
        if i["kind"] != "unused":
            console.print(f"  input  {i['name']}  {i['dtype']} {i['shape']}  ({i['kind']})")
    unused = sum(i["unused"] for i in result["inputs"])
    if unused:
        console.print(f"  ({unused} unused placeholders)")
    for o in result["outputs"]:
        console.print(f"  output {o['name']}  ({o['op']})")
    table = Table(show_lines=False, header_style="bold")
    for col in ("", "variable name", "role", "train", "dtype", "shape", "size", "reason"):
        table.add_column(col, overflow="fold")
    shown = [c for c in result["candidates"] if c["recommended"] or args.all]
    for c in shown:
        table.add_row(
            "x" if c["recommended"] else " ",
            c["variable_name"],
            c["role"],
            "yes" if c["trainable"] else "no",
            c["dtype"],
            str(c["shape"]),
            _fmt_bytes(c["nbytes"]),
            c["reason"],
        )
    console.print(table)
    hidden = len(result["candidates"]) - len(shown)
    console.print(
        f"{t['recommended']} of {t['candidates']} candidates converted by default: {t['parameters']:,} "
        f"parameters ({t['trainable_parameters']:,} trainable), {_fmt_bytes(t['bytes'])}"
        + (f"; {hidden} more with --all" if hidden else "")
    )
    if result["training_paths"]["note"]:
        console.print(f"[yellow]note:[/] {result['training_paths']['note']}")
    return EXIT_OK


def _progress(enabled: bool):
    """A rich progress bar on a terminal (stderr); nothing when piped or with --json."""
    if not enabled or not sys.stderr.isatty():
        return None, None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    bar = Progress(TextColumn("{task.description:<18}"), BarColumn(), TimeElapsedColumn(), transient=True)
    task = bar.add_task("starting", total=1.0)
    return bar, lambda step, fraction: bar.update(task, description=step, completed=fraction)


_FD_WORDS = {True: "agrees", False: "DISAGREES", None: "not comparable"}
ALL_TRAINING_PATHS = "TF2 (GradientTape, Keras fit via tb_unfreeze.keras) and TF1 Session"


def _cmd_convert(args) -> int:
    from tb_unfreeze.contract import ConversionRequest  # noqa: PLC0415

    request = ConversionRequest(
        only=args.only,
        exclude=args.exclude or (),
        trainable={n: True for n in args.trainable} | {n: False for n in args.frozen},
        inputs=args.inputs,
        outputs=args.outputs,
        verify=not args.no_verify,
        probe=args.probe,
        dequantize=args.dequantize,
    )
    bar, callback = _progress(not args.json)
    from tb_unfreeze.conversion import convert  # noqa: PLC0415

    if bar:
        bar.start()
    try:
        result = convert(args.model, args.output, request, replace=args.replace, progress=callback)
    finally:
        if bar:
            bar.stop()
    if args.logdir:
        from tb_unfreeze.graph_runs import log_graphs  # noqa: PLC0415

        result.runs = log_graphs(args.logdir, os.path.basename(args.model), frozen=args.model, unfrozen=result.out_dir)
        result.write()
    v = result.verification
    code = EXIT_OK if v.passed or not v.requested else EXIT_NOT_VERIFIED
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return code
    t = result.totals
    print(
        f"wrote {result.layout.saved_model}: {t['variables']} variables ({t['trainable_variables']} trainable), "
        f"{t['trainable_parameters']:,} trainable parameters"
    )
    for note in result.notes:
        print(f"note: {note}")
    if v.performed:
        fd = v.details["gradients"].get("finite_difference") or {}
        fd_text = (
            f"; finite-difference check {_FD_WORDS[v.finite_difference]}"
            + (f" (relative error {fd['relative_error']:.2g})" if fd.get("relative_error") is not None else "")
            if fd
            else ""
        )
        print(
            f"{v.headline}: outputs max abs diff {v.max_abs_diff:.3g}; gradients reach "
            f"{v.gradients_checked - len(v.gradients_missing)} of {v.gradients_checked} trainable variables{fd_text}"
        )
        for problem in v.problems:
            print(f"  problem: {problem}", file=sys.stderr if code else sys.stdout)
    elif v.requested:
        print(f"NOT VERIFIED: {v.note}", file=sys.stderr)
    else:
        print(f"not verified: {v.note}")
    print(f"training: {result.training_paths.get('note') or ALL_TRAINING_PATHS}")
    if code:
        print(
            f"exit {code}: the conversion was written to {result.out_dir} but is not verified; see "
            "'problems' above (pass --probe FILE.npz when the inputs need real values, or --no-verify to skip).",
            file=sys.stderr,
        )
    return code


def _cmd_log(args) -> int:
    from tb_unfreeze.graph_runs import log_graphs  # noqa: PLC0415

    runs = log_graphs(args.logdir, args.id or os.path.basename(args.model), frozen=args.model, unfrozen=args.unfrozen)
    for which, run in runs.items():
        print(f"{which}: run '{run}' in {args.logdir}")
    return EXIT_OK


def _cmd_demo(args) -> int:
    from tb_unfreeze import demo  # noqa: PLC0415

    paths = demo.prepare_demo(args.logdir)
    for p in paths:
        print(f"prepared {p}")
    if args.no_serve:
        return EXIT_OK
    print(f"TensorBoard with the Unfreeze tab: http://{args.host}:{args.port}/#unfreeze  (Ctrl-C to stop)")
    demo.serve(args.logdir, host=args.host, port=args.port)
    return EXIT_OK


def _cmd_finetune(args) -> int:
    from tb_unfreeze.finetune import run_finetune  # noqa: PLC0415

    result = run_finetune(logdir=args.logdir, epochs=args.epochs)
    print(json.dumps(result, indent=1, default=str))
    return EXIT_OK


def _cmd_refreeze(args) -> int:
    from tb_unfreeze.refreeze import refreeze  # noqa: PLC0415

    result = refreeze(args.saved_model, args.output, verify=not args.no_verify)
    print(json.dumps(result, indent=1, default=str) if args.json else f"wrote {args.output}")
    return EXIT_OK


COMMANDS = {
    "inspect": _cmd_inspect,
    "convert": _cmd_convert,
    "log": _cmd_log,
    "demo": _cmd_demo,
    "finetune": _cmd_finetune,
    "refreeze": _cmd_refreeze,
}


NO_KERAS = ("inspect", "convert", "log", "refreeze")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) > 1 and argv[0] == "finetune" and not argv[1].startswith("-"):
        # `tb-unfreeze finetune OUT_DIR --data ...`: a converted model, one worker or many (docs/finetuning.md)
        from tb_unfreeze.finetune import main as finetune_main  # noqa: PLC0415

        return finetune_main(argv[1:], prog="tb-unfreeze finetune")
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ banner is noise on a CLI
    from tb_unfreeze import tensorflow_env  # noqa: PLC0415

    keras_before = tensorflow_env.KERAS_AT_IMPORT
    # These commands never use Keras: TensorFlow is imported without its eager Keras import (~1.6 s less).
    tensorflow_env.KERAS_AT_IMPORT = args.command not in NO_KERAS
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"tb-unfreeze: error: {e}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("tb-unfreeze: interrupted; nothing was written", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 (the one place internal errors become an exit code)
        if os.environ.get("TB_UNFREEZE_DEBUG"):
            raise
        print(
            f"tb-unfreeze: internal error: {type(e).__name__}: {e} (set TB_UNFREEZE_DEBUG=1 for a traceback; "
            "please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        tensorflow_env.KERAS_AT_IMPORT = keras_before


if __name__ == "__main__":
    sys.exit(main())
