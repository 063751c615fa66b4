"""Convert a frozen graph into a trainable SavedModel: a short pipeline of typed stages.

    check (no TensorFlow) → import TensorFlow → reference run (probes) → rewrite → build and save → verify → write

The request and the result are `contract.ConversionRequest` and `contract.ConversionResult` (the manifest).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from tb_unfreeze import control_flow as CF
from tb_unfreeze import side_check as SC
from tb_unfreeze import verify as V
from tb_unfreeze.analysis import GraphInput, Inspection, inspect_graph, prepare_graph, unregistered_ops
from tb_unfreeze.contract import (
    SAVED_MODEL,
    SAVED_MODEL_TF1,
    UNFROZEN_GRAPH,
    ConversionRequest,
    ConversionResult,
    Layout,
    Source,
    Variable,
    Verification,
)
from tb_unfreeze.errors import ConversionError, SelectionError, UnsupportedOpsError, first_line
from tb_unfreeze.graph_index import const_problem, split_input, tensor_name
from tb_unfreeze.loading import FrozenGraph, load_graph_and_bytes, reparse
from tb_unfreeze.output_dir import check_output_dir, staged_dir
from tb_unfreeze.quantized import dequantize_graph, describe_quantization
from tb_unfreeze.rewrite import Rewritten, rewrite, signature_keys
from tb_unfreeze.selection import Chosen, Selection, choose
from tb_unfreeze.tensorflow_env import import_tensorflow, large_allocations_mapped, release_free_memory
from tb_unfreeze.variable_nodes import add_variable_nodes, attach_variable, read_tensor

Progress = Callable[[str, float], None]
# Models with this many bytes of weights to convert are converted with their large allocations mapped (see
# `tensorflow_env.large_allocations_mapped`): the verification's peak is then what is live, not what the heap kept.
MAPPED_FROM_BYTES = 256 << 20


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
                f"{graph.path} is corrupt: the node name '{node.name[:200]}' appears more than once; re-export the "
                "graph."
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
        missing = [n for n in outputs if split_input(n)[0] not in inspection.index.nodes]
        if missing:
            raise SelectionError(f"--outputs names '{missing[0]}', which is not a node of {inspection.graph.path}.")
        fetches = [tensor_name(n) for n in outputs]
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
    content = tensor.tensor_content  # read once: each read of a bytes field makes a new copy (VGG16: 0.7 s each)
    if content:
        # A read-only view of the bytes: tf.make_ndarray would copy every weight once more (VGG16: +528 MB).
        dtype = tf.as_dtype(tensor.dtype).as_numpy_dtype
        shape = [d.size for d in tensor.tensor_shape.dim]
        return np.frombuffer(content, dtype=dtype).reshape(shape)
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


@dataclasses.dataclass
class Checked:
    """Stage 1, before TensorFlow: the input, the request and the output folder checked; what to convert."""

    source: str
    out: str
    described: FrozenGraph  # the graph's facts; its GraphDef is parsed again by TensorFlow
    data: bytes | None
    sha256: str
    inspection: Inspection
    chosen: list[Chosen]
    feed_inputs: list[GraphInput]
    fetches: list[str]
    trains: dict[str, bool]

    @property
    def defaults(self) -> dict:
        return {i.name: i.default for i in self.inspection.inputs if i.default is not None and i.kind != "unused"}


@dataclasses.dataclass
class Reference:
    """Stage 3: probe inputs and the frozen graph's outputs on them (empty, with a note, when they cannot be had)."""

    probes: dict
    frozen_out: dict
    quantized_out: dict | None = None
    note: str = ""


@dataclasses.dataclass
class Rewrite:
    """Stage 4: the graph with variables in place of the chosen constants, their values and the signature."""

    rewritten: Rewritten
    values: dict
    signature: dict


def convert(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    request: ConversionRequest | None = None,
    *,
    replace: bool = False,
    progress: Progress | None = None,
    selection: Selection | None = None,
    **options,
) -> ConversionResult:
    """Turn the chosen constants of a frozen graph into variables and write a verified SavedModel.

    `request` says what to convert (or pass its fields as keywords: `selection=Selection(...)`, `inputs`,
    `outputs`, `verify`, `probe`, `dequantize`). Returns the result, also written to `out_dir/unfreeze.json`.
    Raises a UserError, writing nothing, when the input, the request or the output directory is wrong, or when
    TensorFlow cannot run the graph.
    """
    request = _request(request, selection, options)
    step, timings = _steps(progress)
    step("load", 0.0)
    checked = check(os.fspath(source), os.fspath(out_dir), request, replace)
    # The TF1 Session check's process starts now, so that its `import tensorflow` overlaps the stages below.
    weight_bytes = sum(c.candidate.nbytes for c in checked.chosen)
    side = SC.start(weight_bytes, sum(checked.inspection.op_counts.values())) if request.verify else None
    try:
        # A big model's conversion holds it several times over; its large temporaries go back when freed.
        with large_allocations_mapped() if weight_bytes >= MAPPED_FROM_BYTES else contextlib.nullcontext():
            return _convert_checked(checked, request, step, timings, side)
    finally:
        if side is not None:
            side.close()


def _convert_checked(checked: Checked, request: ConversionRequest, step, timings, side) -> ConversionResult:
    step("import tensorflow", 0.02)
    tf = import_tensorflow()  # only conversion pays for TensorFlow
    step("load", 0.05)
    graph_def, quantized_def = _tensorflow_graph(tf, checked, request)
    reference = Reference({}, {}, note="skipped (--no-verify)")
    if request.verify:
        step("run frozen graph", 0.1)
        reference = reference_run(tf, checked, graph_def, quantized_def, request.probe)
        release_free_memory()
    step("rewrite", 0.3)
    rewritten = rewrite_graph(tf, checked, graph_def)
    del graph_def
    loops = checked.inspection.loops
    layout = Layout(checked.out, loops=bool(loops))
    with staged_dir(checked.out) as tmp:
        staged = Layout(tmp, loops=bool(loops))
        step("build and save", 0.4)
        variables = build_and_save(tf, checked, rewritten, tmp)
        release_free_memory()
        verification = Verification.from_json(
            verify_stage(
                checked, reference, rewritten.signature, staged, request, lambda name: step(name, 0.8), side=side
            )
        )
        step("write manifest", 0.95)
        result = _result(tf, checked, request, layout, variables, verification, rewritten)
        step("done", 1.0)
        result.timings = timings
        result.write(tmp)
    return result


def _request(request: ConversionRequest | None, selection: Selection | None, options: dict) -> ConversionRequest:
    unknown = sorted(set(options) - set(ConversionRequest.FIELDS))
    if unknown:
        raise TypeError(f"convert() got unexpected keyword argument(s) {', '.join(unknown)}")
    if request is not None:
        if selection is not None or options:
            raise TypeError("convert(): pass a ConversionRequest or its fields as keywords, not both")
        return request
    selection = selection or Selection()
    return ConversionRequest(
        only=selection.only, exclude=tuple(selection.exclude), trainable=dict(selection.trainable), **options
    )


def check(source: str, out_dir: str, request: ConversionRequest, replace: bool) -> Checked:
    """Every check a user's input can fail, before TensorFlow is imported (seconds, and C++ log lines)."""
    out = check_output_dir(source, out_dir, replace)
    graph, data = load_graph_and_bytes(source)
    quantized = describe_quantization(graph.graph_def)
    if quantized and not request.dequantize:
        raise SelectionError(
            f"{source} is a fully quantized graph "
            f"({quantized.split(': ', 1)[-1].split(';')[0]}): integer ops have no gradient; pass --dequantize to "
            "rewrite them into float ops on float variables (verified against the quantized outputs within "
            "quantization tolerance)."
        )
    if request.dequantize:
        if not quantized:
            raise SelectionError(
                f"--dequantize: {source} has no quantized ops (QuantizedConv2D, QuantizedMatMul) "
                "to rewrite; convert it without --dequantize."
            )
        graph = dataclasses.replace(graph, graph_def=dequantize_graph(graph.graph_def))
    check_graph(graph)
    inspection = inspect_graph(graph)
    chosen = choose(inspection, request.selection())
    if not chosen:
        raise SelectionError(
            f"nothing to convert in {source}: none of its {len(inspection.candidates)} candidate(s) is selected "
            "(those not converted by default need --only NAME ...); see `tb-unfreeze inspect`."
        )
    feed_inputs, fetches, trains = _resolve_io(inspection, request.inputs, request.outputs)
    return Checked(
        source, out, graph, data, hashlib.sha256(data).hexdigest(), inspection, chosen, feed_inputs, fetches, trains
    )


def _tensorflow_graph(tf, checked: Checked, request: ConversionRequest):
    """TensorFlow's own parse of the same bytes (import_graph_def accepts no other class), the same cuts applied;
    with --dequantize also the quantized original, the reference to check against."""
    inspection = checked.inspection
    functions = {f.signature.name for f in checked.described.graph_def.library.function}
    missing_ops = unregistered_ops(set(inspection.op_counts) - functions)
    if missing_ops:
        raise UnsupportedOpsError(
            f"{checked.source} uses op(s) this TensorFlow {tf.__version__} does not register: "
            f"{', '.join(missing_ops)}; load the library that defines them (tf.load_op_library) or convert on a "
            "TensorFlow that has them."
        )
    # The TensorBoard-class copy used for the checks is dropped first, so only one parsed copy is ever alive.
    described = dataclasses.replace(checked.described, graph_def=None)
    checked.described = described
    inspection.graph = inspection.index = None
    parsed = reparse(described, checked.data, tf.compat.v1.GraphDef)
    checked.data = None
    inspection.graph = described
    graph_def, quantized_def = parsed.graph_def, None
    if request.dequantize:
        quantized_def, graph_def = graph_def, dequantize_graph(graph_def)
    prepare_graph(graph_def)  # the same cuts on TensorFlow's copy (input pipeline)
    return graph_def, quantized_def


def reference_run(tf, checked: Checked, graph_def, quantized_def, probe: str | None) -> Reference:
    """Probe inputs (the user's .npz, or searched for) and the frozen graph's outputs on them."""
    from tb_unfreeze import probes as P  # noqa: PLC0415 (imports TensorFlow)

    try:
        probes = P.make_probes(checked.feed_inputs, probe, quantized_def or graph_def, checked.fetches)
        quantized_out = (
            P.run_frozen(quantized_def, probes, checked.fetches, checked.defaults)
            if quantized_def is not None
            else None
        )
        frozen_out = P.run_frozen(graph_def, probes, checked.fetches, checked.defaults)
    except V.ProbeError as e:
        return Reference({}, {}, note=str(e))
    except (tf.errors.OpError, ValueError) as e:
        return Reference(
            {}, {}, note=f"the frozen graph does not run on probe inputs: {first_line(e)}; pass --probe FILE.npz"
        )
    return Reference(probes, frozen_out, quantized_out)


def rewrite_graph(tf, checked: Checked, graph_def) -> Rewrite:
    node_by_name = {n.name: n for n in graph_def.node}
    quantized = _quantized_values(tf, graph_def, checked.chosen)
    values = {c.candidate.name: _const_value(tf, c, node_by_name, quantized) for c in checked.chosen}
    rewritten = rewrite(graph_def, checked.chosen, checked.inspection.inputs)
    rewritten.graph_def = _without_source(tf, rewritten.graph_def)
    # The source graph's protobuf arena holds every weight once more: the caller drops its last reference.
    del node_by_name, quantized
    del graph_def.node[:]
    feed_inputs, fetches = checked.feed_inputs, checked.fetches
    in_keys = signature_keys([i.name for i in feed_inputs])
    out_keys = signature_keys([f.split(":")[0] if f.endswith(":0") else f.replace(":", "_") for f in fetches])
    signature = {
        "inputs": {i.name: in_keys[i.name] for i in feed_inputs},
        "outputs": dict(zip(fetches, out_keys.values())),
    }
    optional = [i.name for i in checked.inspection.inputs if i.kind == "optional" and i.name not in signature["inputs"]]
    if optional:
        keys = signature_keys([i.name for i in feed_inputs] + optional)
        signature["optional_inputs"] = {n: keys[n] for n in optional}
    return Rewrite(rewritten, values, signature)


def verify_stage(
    checked: Checked,
    reference: Reference,
    signature: dict,
    staged: Layout,
    request: ConversionRequest,
    progress,
    side: SC.SideCheck | None = None,
) -> dict:
    """The verification record (policy: `verify.verify_conversion`)."""
    if not request.verify:
        return V.not_performed("skipped (--no-verify)", requested=False)
    if reference.note:
        return V.not_performed(reference.note)
    progress("verify outputs and gradients")
    ops = checked.inspection.op_counts
    verification = V.verify_conversion(
        staged,
        signature,
        reference.probes,
        reference.frozen_out,
        trains=checked.trains,
        tf1_control_flow_v1=staged.loops,
        fake_quant="FakeQuantWithMinMaxVars" in ops or "FakeQuantWithMinMaxArgs" in ops,
        progress=progress,
        side=side,
    )
    if reference.quantized_out is not None:
        V.check_against_quantized(verification, reference.quantized_out, reference.frozen_out)
    return verification


def _result(
    tf,
    checked: Checked,
    request: ConversionRequest,
    layout: Layout,
    variables: list[Variable],
    verification: Verification,
    rewritten: Rewrite,
) -> ConversionResult:
    inspection, trains = checked.inspection, checked.trains
    graph = checked.described
    return ConversionResult(
        source=Source(os.path.abspath(checked.source), checked.sha256, graph.size, graph.format),
        layout=layout,
        request=request,
        variables=variables,
        verification=verification,
        signature=rewritten.signature,
        inputs=[i.to_dict() for i in checked.feed_inputs],
        input_defaults=checked.defaults,
        outputs=list(checked.fetches),
        trainable_outputs=[f for f in checked.fetches if trains[f]],
        output_notes={o.tensor: o.note for o in inspection.outputs if o.note and o.tensor in trains},
        optional_inputs=[i.name for i in inspection.inputs if i.kind == "optional"],
        removed_nodes=rewritten.rewritten.removed,
        notes=inspection.notes,
        control_flow=inspection.control_flow,
        loops=[
            {
                "frame": lp.frame,
                "loop_variables": len(lp.switches),
                "gradient": "rebuilt" if not CF.unsupported_loops([lp]) else CF.unsupported_loops([lp])[0],
            }
            for lp in inspection.loops
        ],
        training_paths=inspection.training_paths,
        dequantized=request.dequantize,
        versions={"tb_unfreeze": _version(), "tensorflow": tf.__version__, "python": platform.python_version()},
    )


def _version() -> str:
    from importlib import metadata  # noqa: PLC0415

    try:
        return metadata.version("tb_unfreeze")
    except metadata.PackageNotFoundError:
        return "dev"


FEED_CHUNK = 128 << 20


def _without_source(tf, graph_def):
    """A fresh GraphDef holding the rewritten graph's nodes (small: the weights are no longer in it)."""
    slim = tf.compat.v1.GraphDef()
    slim.versions.CopyFrom(graph_def.versions)
    slim.library.CopyFrom(graph_def.library)
    slim.node.extend(graph_def.node)
    return slim


def build_and_save(tf, checked: Checked, rewrite_: Rewrite, tmp: str) -> list[Variable]:
    """Write the TF1 SavedModel (and, for graphs with lowered loops, the native TF2 one); returns the variables.

    Without loops one SavedModel serves TF1 and TF2. With loops, `saved_model/` is native TF2 (its gradient is
    the TF1 gradient graph) and `saved_model_tf1/` holds the TF1 graph with the loops' contexts rebuilt."""
    rewritten, values, signature = rewrite_.rewritten, rewrite_.values, rewrite_.signature
    chosen, feed_inputs, defaults = checked.chosen, checked.feed_inputs, checked.defaults
    fetches, trains, loops = checked.fetches, checked.trains, checked.inspection.loops
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
        records.append(
            {
                "variable_name": name,
                "source": c.candidate.name,
                "role": c.candidate.role,
                "trainable": c.trainable,
                "dtype": value.dtype.name,
                "shape": list(value.shape),
                "size": int(value.size),
                "checkpoint_key": name,
            }
        )
    for node in graph_def.node:  # point the consumers at the variables' reads
        for i, raw in enumerate(node.input):
            if raw in read_of:
                node.input[i] = read_of[raw]
    with graph.as_default():
        names = [f"{i.name}:0" for i in feed_inputs] + list(fetches)
        try:
            imported = tf.import_graph_def(graph_def, return_elements=names, name="")
        except (ValueError, tf.errors.OpError) as e:
            raise ConversionError(f"TensorFlow refused the rewritten graph: {first_line(e)}") from None
        for c, record in zip(rewritten.mapped.values(), records):
            var_list[record["variable_name"]] = attach_variable(tf, graph, record["variable_name"], c.trainable)
        CF.rebuild_contexts(tf, graph, CF.supported(loops))  # saved in the `while_context` collection
        in_tensors, out_tensors = imported[: len(feed_inputs)], imported[len(feed_inputs) :]
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
        # Without Grappler: this Session only assigns the values and saves them (Grappler optimised the whole graph
        # for that: ~0.4 s of MobileNetV2's 1.3 s build).
        with tf.compat.v1.Session(graph=graph, config=V.lean_session_config(tf)) as sess:
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
                sess,
                [tf.compat.v1.saved_model.tag_constants.SERVING],
                signature_def_map=signatures,
                saver=saver,
                strip_default_attrs=True,
            )
            builder.save()
        with open(os.path.join(tmp, UNFROZEN_GRAPH), "wb") as f:
            f.write(display_graph.SerializeToString())
    if loops:
        from tb_unfreeze import tf2_export as T2  # noqa: PLC0415

        T2.save_native_for(
            tf,
            graph_def,
            records,
            final_values,
            [i.to_dict() for i in feed_inputs],
            signature,
            defaults,
            [t for t in fetches if trains[t]],
            os.path.join(tmp, SAVED_MODEL),
        )
    return [Variable.from_json(r) for r in records]
