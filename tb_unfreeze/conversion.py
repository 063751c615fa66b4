"""Convert a frozen graph into a trainable SavedModel: load → choose → rewrite → export → verify → manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from tb_unfreeze import control_flow as CF
from tb_unfreeze import verify as V
from tb_unfreeze.analysis import Inspection, inspect_graph, prepare_graph, unregistered_ops
from tb_unfreeze.errors import ConversionError, SelectionError, UnsupportedOpsError, UserError
from tb_unfreeze.graph_index import const_problem
from tb_unfreeze.loading import FrozenGraph, load_graph_and_bytes, reparse
from tb_unfreeze.output_dir import check_output_dir, staged_dir
from tb_unfreeze.quantized import dequantize_graph, describe_quantization
from tb_unfreeze.rewrite import rewrite, signature_keys
from tb_unfreeze.selection import Chosen, Selection, choose
from tb_unfreeze.tensorflow_env import import_tensorflow
from tb_unfreeze.variable_nodes import add_variable_nodes, attach_variable, read_tensor

from tb_unfreeze.convert_paths import MANIFEST, SAVED_MODEL, SAVED_MODEL_TF1, UNFROZEN_GRAPH  # noqa: F401
MANIFEST_SCHEMA = "tb_unfreeze.manifest/1"
Progress = Callable[[str, float], None]


def _steps(progress: Progress | None):
    started = time.perf_counter()
    timings: dict[str, float] = {}
    last = [started, None]

    def step(name: str, fraction: float) -> None:
        now = time.perf_counter()
        if last[1] is not None:
            timings[last[1]] = round(now - last[0], 4)
        last[0], last[1] = now, name
        if progress:
            progress(name, fraction)

    return step, timings


def check_graph(graph: FrozenGraph) -> None:
    """Refuse, before TensorFlow is imported, a graph TensorFlow would choke on: duplicate node names, or a Const
    whose value is corrupt or declares a huge shape (numpy/TensorFlow would try to allocate it)."""
    seen: set[str] = set()
    for node in graph.graph_def.node:
        if node.name in seen:
            raise ConversionError(
                f"{graph.path} is corrupt: the node name '{node.name[:200]}' appears more than once; re-export the graph."
            )
        seen.add(node.name)
    nodes = list(graph.graph_def.node)
    for function in graph.graph_def.library.function:
        nodes.extend(function.node_def)
    for node in nodes:
        if node.op != "Const":
            continue
        problem = const_problem(node)
        if problem:
            raise ConversionError(
                f"{graph.path} is corrupt: the constant '{node.name[:200]}' cannot be loaded ({problem}); "
                "re-export the graph."
            )


def _resolve_io(inspection: Inspection, inputs, outputs):
    by_name = {i.name: i for i in inspection.inputs}
    chosen_inputs = [i for i in inspection.inputs if i.kind == "data"]
    if inputs:
        unknown = [n for n in inputs if n not in by_name]
        if unknown:
            raise SelectionError(
                f"--inputs names '{unknown[0]}', which is not a placeholder of {inspection.graph.path}; "
                f"inputs are: {', '.join(by_name) or 'none'}."
            )
        chosen_inputs = [by_name[n] for n in inputs]
    if outputs:
        missing = [n for n in outputs if n.split(":")[0] not in inspection.index.nodes]
        if missing:
            raise SelectionError(f"--outputs names '{missing[0]}', which is not a node of {inspection.graph.path}.")
        fetches = [n if ":" in n else f"{n}:0" for n in outputs]
    else:
        fetches = [o.tensor for o in inspection.outputs]
    if not fetches:
        raise SelectionError(f"{inspection.graph.path} has no output that depends on an input; pass --outputs.")
    trains = {o.tensor: o.trains for o in inspection.outputs}
    return chosen_inputs, fetches, {f: trains.get(f, True) for f in fetches}


def _const_value(tf, chosen: Chosen, node_by_name, frozen_values):
    if chosen.candidate.role == "quantized_weight":
        return frozen_values[chosen.candidate.tensor]
    tensor = node_by_name[chosen.candidate.name].attr["value"].tensor
    if tensor.tensor_content:
        # A read-only view of the bytes: tf.make_ndarray would copy every weight once more (VGG16: +528 MB).
        dtype = tf.as_dtype(tensor.dtype).as_numpy_dtype
        shape = [d.size for d in tensor.tensor_shape.dim]
        return np.frombuffer(tensor.tensor_content, dtype=dtype).reshape(shape)
    return tf.make_ndarray(tensor)


def _quantized_values(tf, graph_def, chosen: list[Chosen]) -> dict:
    tensors = [c.candidate.tensor for c in chosen if c.candidate.role == "quantized_weight"]
    if not tensors:
        return {}
    graph = tf.Graph()
    with graph.as_default():
        fetched = tf.import_graph_def(graph_def, return_elements=tensors, name="frozen")
    with tf.compat.v1.Session(graph=graph) as sess:
        return dict(zip(tensors, sess.run(fetched)))


def convert(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    selection: Selection | None = None,
    inputs: list[str] | None = None,
    outputs: list[str] | None = None,
    verify: bool = True,
    replace: bool = False,
    probe: str | None = None,
    progress: Progress | None = None,
    dequantize: bool = False,
) -> dict:
    """Turn the chosen constants of a frozen graph into variables and write a verified SavedModel.

    Returns the manifest (also written to `out_dir/unfreeze.json`). Raises a UserError, writing nothing, when the
    input, the selection or the output directory is wrong, or when TensorFlow cannot run the graph.
    """
    source, out_dir = os.fspath(source), os.fspath(out_dir)
    step, timings = _steps(progress)
    step("load", 0.0)
    out = check_output_dir(source, out_dir, replace)
    # Every check a user's input can fail runs before TensorFlow is imported (seconds, and C++ log lines).
    graph, data = load_graph_and_bytes(source)
    quantized = describe_quantization(graph.graph_def)
    if quantized and not dequantize:
        raise SelectionError(
            f"{source} is a fully quantized graph "
            f"({quantized.split(': ', 1)[-1].split(';')[0]}): integer ops have no gradient; pass --dequantize to "
            "rewrite them into float ops on float variables (verified against the quantized outputs within "
            "quantization tolerance)."
        )
    if dequantize:
        if not quantized:
            raise SelectionError(f"--dequantize: {source} has no quantized ops (QuantizedConv2D, QuantizedMatMul) "
                                 "to rewrite; convert it without --dequantize.")
        graph = dataclasses.replace(graph, graph_def=dequantize_graph(graph.graph_def))
    check_graph(graph)
    inspection = inspect_graph(graph)
    chosen = choose(inspection, selection)
    if not chosen:
        raise SelectionError(
            f"nothing to convert in {source}: none of its {len(inspection.candidates)} candidate(s) is selected "
            "(those not converted by default need --only NAME ...); see `tb-unfreeze inspect`."
        )
    feed_inputs, fetches, trains = _resolve_io(inspection, inputs, outputs)
    sha256 = hashlib.sha256(data).hexdigest()
    step("import tensorflow", 0.02)
    tf = import_tensorflow()  # only conversion pays for TensorFlow

    missing_ops = unregistered_ops(set(inspection.op_counts) - {f.signature.name for f in graph.graph_def.library.function})
    if missing_ops:
        raise UnsupportedOpsError(
            f"{source} uses op(s) this TensorFlow {tf.__version__} does not register: {', '.join(missing_ops)}; "
            "load the library that defines them (tf.load_op_library) or convert on a TensorFlow that has them."
        )
    step("load", 0.05)
    # The same bytes again, into TensorFlow's GraphDef class (import_graph_def accepts no other); the
    # TensorBoard-class copy used for the checks is dropped first, so only one parsed copy is ever alive.
    described = dataclasses.replace(graph, graph_def=None)
    graph = inspection.graph = inspection.index = None
    graph = inspection.graph = reparse(described, data, tf.compat.v1.GraphDef)
    quantized_def = None
    if dequantize:  # the same rewrite on TensorFlow's copy; the quantized original is the reference to check
        quantized_def = graph.graph_def
        graph.graph_def = dequantize_graph(quantized_def)
    prepare_graph(graph.graph_def)  # the same cuts on TensorFlow's copy (input pipeline)
    del data
    defaults = {i.name: i.default for i in inspection.inputs if i.default is not None and i.kind != "unused"}
    probes, frozen_out, verify_note, quantized_out = {}, {}, "", None
    if verify:
        step("run frozen graph", 0.1)
        try:
            from tb_unfreeze import probes as P  # noqa: PLC0415 (imports TensorFlow)

            probes = P.make_probes(feed_inputs, probe, quantized_def or graph.graph_def, fetches)
            quantized_out = P.run_frozen(quantized_def, probes, fetches, defaults) if quantized_def else None
            frozen_out = P.run_frozen(graph.graph_def, probes, fetches, defaults)
        except V.ProbeError as e:
            verify_note = str(e)
        except (tf.errors.OpError, ValueError) as e:
            verify_note = f"the frozen graph does not run on probe inputs: {_first_line(e)}; pass --probe FILE.npz"
    step("rewrite", 0.3)
    node_by_name = {n.name: n for n in graph.graph_def.node}
    quantized = _quantized_values(tf, graph.graph_def, chosen)
    values = {c.candidate.name: _const_value(tf, c, node_by_name, quantized) for c in chosen}
    rewritten = rewrite(graph.graph_def, chosen, inspection.inputs)
    rewritten.graph_def = _without_source(tf, rewritten.graph_def)
    # Release the source graph: its protobuf arena holds every weight once more until the message is gone.
    del node_by_name, quantized
    graph.graph_def = None
    in_keys = signature_keys([i.name for i in feed_inputs])
    out_keys = signature_keys([f.split(":")[0] if f.endswith(":0") else f.replace(":", "_") for f in fetches])
    signature = {
        "inputs": {i.name: in_keys[i.name] for i in feed_inputs},
        "outputs": dict(zip(fetches, out_keys.values())),
    }
    optional = [i.name for i in inspection.inputs if i.kind == "optional" and i.name not in signature["inputs"]]
    if optional:
        keys = signature_keys([i.name for i in feed_inputs] + optional)
        signature["optional_inputs"] = {n: keys[n] for n in optional}
    loops = inspection.loops
    with staged_dir(out) as tmp:
        step("build and save", 0.4)
        variables = _build_and_save(tf, rewritten, chosen, values, feed_inputs, defaults, fetches, signature, tmp,
                                    loops=loops, trains=trains)
        if not verify:
            verification = V.not_performed("skipped (--no-verify)", requested=False)
        elif verify_note:
            verification = V.not_performed(verify_note)
        else:
            step("verify outputs and gradients", 0.7)
            layout = {"saved_model": os.path.join(tmp, SAVED_MODEL),
                      "saved_model_tf1": os.path.join(tmp, SAVED_MODEL_TF1 if loops else SAVED_MODEL)}
            verification = V.verify_conversion(
                layout, signature, probes, frozen_out, trains=trains, tf1_control_flow_v1=bool(loops),
                fake_quant="FakeQuantWithMinMaxVars" in inspection.op_counts
                or "FakeQuantWithMinMaxArgs" in inspection.op_counts,
                progress=lambda name: step(name, 0.8),
            )
            if quantized_out is not None:
                V.check_against_quantized(verification, quantized_out, frozen_out)
        step("write manifest", 0.95)
        manifest = {
            "schema": MANIFEST_SCHEMA,
            "source": {"path": os.path.abspath(source), "sha256": sha256, "size": graph.size, "format": graph.format},
            "out_dir": out,
            "saved_model": os.path.join(out, SAVED_MODEL),
            "saved_model_tf1": os.path.join(out, SAVED_MODEL_TF1 if loops else SAVED_MODEL),
            "unfrozen_graph": os.path.join(out, UNFROZEN_GRAPH),
            "selection": (selection or Selection()).to_dict(),
            "dequantized": bool(dequantize),
            "variables": variables,
            "totals": {
                "variables": len(variables),
                "trainable_variables": sum(v["trainable"] for v in variables),
                "parameters": sum(v["size"] for v in variables),
                "trainable_parameters": sum(v["size"] for v in variables if v["trainable"]),
            },
            "removed_nodes": rewritten.removed,
            "inputs": [i.to_dict() for i in feed_inputs],
            "input_defaults": defaults,
            "outputs": fetches,
            "trainable_outputs": [f for f in fetches if trains[f]],
            "output_notes": {o.tensor: o.note for o in inspection.outputs if o.note and o.tensor in trains},
            "optional_inputs": [i.name for i in inspection.inputs if i.kind == "optional"],
            "notes": inspection.notes,
            "signature": signature,
            "control_flow": inspection.control_flow,
            "loops": [{"frame": lp.frame, "loop_variables": len(lp.switches),
                       "gradient": "rebuilt" if not CF.unsupported_loops([lp]) else CF.unsupported_loops([lp])[0]}
                      for lp in loops],
            "training_paths": inspection.training_paths,
            "verification": verification,
            "versions": {
                "tb_unfreeze": _version(),
                "tensorflow": tf.__version__,
                "python": platform.python_version(),
            },
            "timings": timings,
        }
        step("done", 1.0)
        manifest["timings"] = timings
        with open(os.path.join(tmp, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=1, default=_json_default)
    return manifest


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("tb_unfreeze")
    except metadata.PackageNotFoundError:
        return "dev"


def _first_line(error: Exception) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__


FEED_CHUNK = 128 << 20


def _without_source(tf, graph_def):
    """A fresh GraphDef holding the rewritten graph's nodes (small: the weights are no longer in it)."""
    slim = tf.compat.v1.GraphDef()
    slim.versions.CopyFrom(graph_def.versions)
    slim.library.CopyFrom(graph_def.library)
    slim.node.extend(graph_def.node)
    return slim


def _build_and_save(tf, rewritten, chosen, values, feed_inputs, defaults, fetches, signature, tmp, *,
                    loops=(), trains=None) -> list[dict]:
    """Write the TF1 SavedModel (and, for graphs with lowered loops, the native TF2 one); returns the variables.

    Without loops one SavedModel serves TF1 and TF2. With loops, `saved_model/` is native TF2 (its gradient is
    the TF1 gradient graph) and `saved_model_tf1/` holds the TF1 graph with the loops' contexts rebuilt."""
    graph = tf.Graph()
    records, var_list, read_of = [], {}, {}
    graph_def = rewritten.graph_def
    loops = list(loops)
    if loops:
        loops = CF.find_loops(graph_def)  # names as in the rewritten graph
        CF.complete_loops(graph_def, loops)
    tf1_dir = os.path.join(tmp, SAVED_MODEL_TF1 if loops else SAVED_MODEL)
    for reserved, c in rewritten.mapped.items():
        name = rewritten.variable_names[c.candidate.name]
        value = values[c.candidate.name]
        add_variable_nodes(tf, graph_def, name, value.dtype, value.shape)
        read_of[reserved] = read_tensor(name)
        records.append({
            "variable_name": name, "source": c.candidate.name, "role": c.candidate.role,
            "trainable": c.trainable, "dtype": value.dtype.name, "shape": list(value.shape),
            "size": int(value.size), "checkpoint_key": name,
        })
    for node in graph_def.node:  # point the consumers at the variables' reads
        for i, raw in enumerate(node.input):
            if raw in read_of:
                node.input[i] = read_of[raw]
    with graph.as_default():
        names = [f"{i.name}:0" for i in feed_inputs] + list(fetches)
        try:
            imported = tf.import_graph_def(graph_def, return_elements=names, name="")
        except (ValueError, tf.errors.OpError) as e:
            raise ConversionError(f"TensorFlow refused the rewritten graph: {_first_line(e)}") from None
        for c, record in zip(rewritten.mapped.values(), records):
            var_list[record["variable_name"]] = attach_variable(tf, graph, record["variable_name"], c.trainable)
        CF.rebuild_contexts(tf, graph, CF.supported(loops))  # saved in the `while_context` collection
        in_tensors, out_tensors = imported[: len(feed_inputs)], imported[len(feed_inputs):]
        info = tf.compat.v1.saved_model.utils.build_tensor_info
        sig_in = {signature["inputs"][i.name]: info(t) for i, t in zip(feed_inputs, in_tensors)}
        sig_out = {key: info(t) for key, t in zip(signature["outputs"].values(), out_tensors)}
        method = tf.compat.v1.saved_model.signature_constants.PREDICT_METHOD_NAME
        signatures = {"serving_default": tf.compat.v1.saved_model.build_signature_def(sig_in, sig_out, method)}
        if defaults:
            extra = {signature_keys([n])[n]: info(graph.get_tensor_by_name(f"{n}:0")) for n in defaults}
            signatures["training"] = tf.compat.v1.saved_model.build_signature_def({**sig_in, **extra}, sig_out, method)
        optional = signature.get("optional_inputs") or {}
        if optional:
            extra = {key: info(graph.get_tensor_by_name(f"{n}:0")) for n, key in optional.items()}
            signatures["overrides"] = tf.compat.v1.saved_model.build_signature_def({**sig_in, **extra}, sig_out, method)
        display_graph = graph.as_graph_def()  # before the Saver adds its save/restore ops, which nobody needs to see
        saver = tf.compat.v1.train.Saver(var_list=var_list, sharded=True, allow_empty=True)
        with tf.compat.v1.Session(graph=graph) as sess:
            # Every variable's value in ONE Session.run (what Variable.load does per variable): each distinct
            # run signature makes TensorFlow prune and plan the whole graph again, so one run per variable
            # cost O(variables × graph size) (~17 s for MobileNetV2's 262 variables).
            # Runs of about FEED_CHUNK bytes, each value dropped once fed, so the weights are not all held twice.
            initializers, feed, pending = [], {}, 0
            for c in chosen:
                variable = var_list[rewritten.variable_names[c.candidate.name]]
                value = values.pop(c.candidate.name)
                initializers.append(variable.initializer)
                feed[variable.initializer.inputs[1]] = value
                pending += value.nbytes
                if pending >= FEED_CHUNK:
                    sess.run(initializers, feed)
                    initializers, feed, pending = [], {}, 0
            if initializers:
                sess.run(initializers, feed)
            del feed
            final_values = sess.run({n: v.value() for n, v in var_list.items()}) if loops else None
            builder = tf.compat.v1.saved_model.Builder(tf1_dir)
            builder.add_meta_graph_and_variables(
                sess, [tf.compat.v1.saved_model.tag_constants.SERVING], signature_def_map=signatures,
                saver=saver, strip_default_attrs=True,
            )
            builder.save()
        with open(os.path.join(tmp, UNFROZEN_GRAPH), "wb") as f:
            f.write(display_graph.SerializeToString())
    if loops:
        from tb_unfreeze import tf2_export as T2  # noqa: PLC0415

        T2.save_native_for(
            tf, graph_def, records, final_values, [i.to_dict() for i in feed_inputs], signature, defaults,
            [t for t in fetches if (trains or {}).get(t, True)], os.path.join(tmp, SAVED_MODEL),
        )
    return records
