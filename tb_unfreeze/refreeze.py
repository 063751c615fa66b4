"""Re-freeze: a converted (and usually fine-tuned) SavedModel back into a frozen GraphDef, for deployment.

The converted SavedModel's graph is the frozen graph with its constants swapped for variables, under the original
node names (see rewrite.py), so freezing it again in a TF1 Session gives back a graph with the ORIGINAL input and
output names: whatever loaded the old `.pb` loads the new one unchanged. The result is checked against the
SavedModel on probe inputs (max abs diff <= 3e-5 x max(1, |output|) (verify.RTOL)) before it is moved into place.
"""

from __future__ import annotations

import os
import time

from tb_unfreeze import verify as V
from tb_unfreeze.analysis import GraphInput, inspect_model
from tb_unfreeze.contract import MANIFEST, ConversionResult
from tb_unfreeze.errors import ConversionError, NotFoundError, OutputDirError, UserError
from tb_unfreeze.graph_index import node_name
from tb_unfreeze.output_dir import write_file_atomic
from tb_unfreeze.tensorflow_env import import_tensorflow

SIGNATURE = "serving_default"


class VerificationError(UserError):
    """The re-frozen graph does not reproduce the SavedModel it came from."""


def locate(saved_model_dir: str) -> tuple[str, ConversionResult]:
    """(SavedModel directory to freeze, the conversion) for a conversion directory or its `saved_model/`."""
    path = os.fspath(saved_model_dir)
    if not os.path.exists(path):
        raise NotFoundError(f"{path} does not exist; pass the directory `tb-unfreeze convert` wrote.")
    if not os.path.isdir(path):
        raise UserError(f"{path} is a file; pass the conversion directory (the one holding {MANIFEST}).")
    for folder in (path, os.path.dirname(os.path.abspath(path))):
        if not os.path.isfile(os.path.join(folder, MANIFEST)):
            continue
        conversion = ConversionResult.open(folder)
        # graphs with lowered loops: the TF1 graph is the one to freeze
        sm_dir = conversion.layout.saved_model_tf1
        if os.path.isfile(os.path.join(sm_dir, "saved_model.pb")):
            return sm_dir, conversion
    raise NotFoundError(
        f"{path} holds no SavedModel with a {MANIFEST} beside it; pass a directory written by `tb-unfreeze convert` "
        "(or by UnfrozenLayer.save_weights_to_saved_model)."
    )


def _check_output(output_pb: str, sm_dir: str, conversion: ConversionResult) -> str:
    out = os.path.realpath(output_pb)
    source = conversion.source.path
    if source and os.path.exists(source) and os.path.realpath(source) == out:
        raise OutputDirError(
            f"{output_pb} is the frozen graph this model was converted from; write the re-frozen graph elsewhere."
        )
    for protected in (sm_dir, conversion.out_dir):
        root = os.path.realpath(protected)
        if out == root or out.startswith(root.rstrip(os.sep) + os.sep):
            raise OutputDirError(f"{output_pb} is inside the conversion {protected}; write it outside that directory.")
    if os.path.isdir(out):
        raise OutputDirError(f"{output_pb} is a directory; pass a file path such as model_finetuned.pb.")
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise NotFoundError(f"the directory of {output_pb} does not exist; create it first.")
    if not os.access(parent, os.W_OK):
        raise OutputDirError(f"cannot write in {parent}; choose a writable path for the re-frozen graph.")
    return out


def _graph_inputs(conversion: ConversionResult) -> list[GraphInput]:
    fields = ("name", "dtype", "shape", "kind", "default")
    return [GraphInput(**{k: i.get(k) for k in fields}) for i in conversion.inputs]


def _freeze(tf, sm_dir: str, conversion: ConversionResult):
    """Load the SavedModel in a TF1 Session and freeze its variables under the original node names."""
    signature = conversion.signature
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        try:
            meta = tf.compat.v1.saved_model.load(sess, ["serve"], sm_dir)
        except (OSError, ValueError, RuntimeError, tf.errors.OpError) as e:
            raise ConversionError(f"{sm_dir} does not load as a TF1 SavedModel: {str(e).splitlines()[0]}") from None
        if SIGNATURE not in meta.signature_def:
            raise ConversionError(f"{sm_dir} has no '{SIGNATURE}' signature to re-freeze.")
        sig = meta.signature_def[SIGNATURE]
        # The signature must still point at the original tensors; if it does not, the names cannot be restored.
        for name, key in signature["inputs"].items():
            if key not in sig.inputs or sig.inputs[key].name != f"{name}:0":
                raise ConversionError(f"the '{SIGNATURE}' input '{key}' of {sm_dir} is not the original node '{name}'.")
        for tensor, key in signature["outputs"].items():
            if key not in sig.outputs or sig.outputs[key].name != tensor:
                raise ConversionError(f"the '{SIGNATURE}' output '{key}' of {sm_dir} is not the original '{tensor}'.")
        output_nodes = sorted({node_name(t) for t in signature["outputs"]})
        # Keep the inputs even when no output needs them (an unused placeholder is part of the interface).
        keep = output_nodes + [i["name"] for i in conversion.inputs]
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), keep)
    for node in frozen.node:
        node.device = ""  # the converter's placement is not the deployment's
    return frozen, output_nodes


def refreeze(saved_model_dir: str, output_pb: str, verify: bool = True) -> dict:
    """Freeze a converted SavedModel into `output_pb`, keeping the original input and output node names.

    `saved_model_dir` is a conversion directory (holding `saved_model/` and `unfreeze.json`) or its `saved_model/`.
    With `verify`, the new graph's outputs on probe inputs must equal the SavedModel's within
    3e-5 x max(1, |output|) (verify.RTOL), or nothing is written. The write is atomic, and the source frozen graph
    is never overwritten. Returns a report: paths, inputs, outputs, the verification and a summary of the new graph's
    inspection.
    """
    started = time.perf_counter()
    sm_dir, conversion = locate(saved_model_dir)
    out = _check_output(os.fspath(output_pb), sm_dir, conversion)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = import_tensorflow()

    frozen, output_nodes = _freeze(tf, sm_dir, conversion)
    fetches = list(conversion.signature["outputs"])
    verification: dict = {"performed": False}
    if verify:
        inputs = _graph_inputs(conversion)
        from tb_unfreeze import probes as P  # noqa: PLC0415

        probes = P.make_probes(inputs, None, frozen, fetches)
        reference = V.run_saved_model_tf1(sm_dir, conversion.signature, probes, gradients=False)["outputs"]
        actual = V.run_frozen(frozen, probes, fetches, {})
        outputs = V.compare(reference, actual)
        verification = {
            "performed": True,
            "outputs": outputs,
            "max_abs_diff": max((o["max_abs_diff"] or 0.0 for o in outputs.values()), default=0.0),
            "passed": all(o["passed"] for o in outputs.values()),
        }
        if not verification["passed"]:
            worst = max(outputs, key=lambda k: outputs[k]["max_abs_diff"] or float("inf"))
            raise VerificationError(
                f"the re-frozen graph differs from {sm_dir} on output '{worst}' "
                f"(max abs diff {outputs[worst]['max_abs_diff']}); nothing was written."
            )
    write_file_atomic(out, frozen.SerializeToString(deterministic=True))
    inspection = inspect_model(out)
    return {
        "saved_model": sm_dir,
        "manifest": conversion.layout.manifest,
        "output": out,
        "size": os.path.getsize(out),
        "inputs": [i.name for i in inspection.inputs],
        "outputs": output_nodes,
        "verification": verification,
        "inspection": {
            "candidates": len(inspection.candidates),
            "parameters": sum(c.size for c in inspection.candidates),
            "control_flow": inspection.control_flow,
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
