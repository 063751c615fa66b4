"""A Keras 3 layer over a converted model, trainable with `fit`, under `tf.distribute` too.

Keras's `TFSMLayer(trainable=True)` copies the variables into new Keras variables that the graph never reads, so
`fit` changes nothing the model uses (or fails on ':0' scope names; PITFALLS §5). Here the graph itself reads the
layer's Keras weights: each variable read in the SavedModel becomes an input of a wrapped function.

    from tb_unfreeze.keras import UnfrozenLayer
    layer = UnfrozenLayer("out/model/saved_model")
    model = keras.Sequential([keras.Input((28, 28, 1)), layer])
    model.compile("adam", "sparse_categorical_crossentropy"); model.fit(x, y)
    layer.save_weights_to_saved_model("out/finetuned")   # a SavedModel with the trained weights
"""

from __future__ import annotations

import os
import re
import shutil
import uuid

from tb_unfreeze.contract import SAVED_MODEL, SAVED_MODEL_TF1, UNFROZEN_GRAPH, ConversionResult, read_result
from tb_unfreeze.errors import NotFoundError, OutputDirError, UserError
from tb_unfreeze.graph_index import node_name, split_input
from tb_unfreeze.output_dir import check_output_dir, staged_dir
from tb_unfreeze.tensorflow_env import import_tensorflow

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow, quietly imported)

_CLEAN = re.compile(r"[^A-Za-z0-9_.\-/]")


def _saved_model_dir(path: str) -> str:
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, SAVED_MODEL_TF1, "saved_model.pb")):
        return os.path.join(path, SAVED_MODEL_TF1)  # lowered loops: the TF1 graph, differentiated below
    if os.path.isfile(os.path.join(path, SAVED_MODEL, "saved_model.pb")):
        return os.path.join(path, SAVED_MODEL)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    raise NotFoundError(f"{path} holds no SavedModel; pass a tb-unfreeze output directory or its saved_model/.")


def _conversion_for(saved_model: str) -> ConversionResult | None:
    """The conversion that wrote this SavedModel (None for a SavedModel tb_unfreeze did not write)."""
    return read_result(os.path.dirname(os.path.abspath(saved_model)))


def _serving_meta_graph(saved_model: str):
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    for meta in proto.meta_graphs:
        if "serve" in meta.meta_info_def.tags:
            return meta
    raise NotFoundError(f"{saved_model} has no meta graph tagged 'serve'.")


def _needed_for(graph_def, outputs: set[str]):
    """The nodes `outputs` depend on (data and control inputs), in their original order."""
    by_name = {n.name: n for n in graph_def.node}
    needed, frontier = set(outputs), list(outputs)
    while frontier:
        node = by_name.get(frontier.pop())
        for raw in node.input if node is not None else ():
            name = node_name(raw)
            if name not in needed:
                needed.add(name)
                frontier.append(name)
    pruned = tf.compat.v1.GraphDef()
    pruned.versions.CopyFrom(graph_def.versions)
    pruned.library.CopyFrom(graph_def.library)
    pruned.node.extend(n for n in graph_def.node if n.name in needed)
    return pruned


def _rename_functions(graph_def, suffix: str) -> None:
    """Give the graph's library functions names of their own: the process may already hold a different
    function of the same name (e.g. the freezer's own `while_body`), and TensorFlow refuses duplicates."""
    names = {f.signature.name: f"{f.signature.name}{suffix}" for f in graph_def.library.function}
    if not names:
        return

    def fix_attrs(attrs) -> None:
        for value in attrs.values():
            if value.HasField("func") and value.func.name in names:
                value.func.name = names[value.func.name]
            for func in value.list.func:
                if func.name in names:
                    func.name = names[func.name]

    def fix_nodes(nodes) -> None:
        for node in nodes:
            if node.op in names:
                node.op = names[node.op]
            fix_attrs(node.attr)

    fix_nodes(graph_def.node)
    for function in graph_def.library.function:
        function.signature.name = names[function.signature.name]
        fix_nodes(function.node_def)
        fix_attrs(function.attr)
    for gradient in graph_def.library.gradient:
        gradient.function_name = names.get(gradient.function_name, gradient.function_name)
        gradient.gradient_func = names.get(gradient.gradient_func, gradient.gradient_func)


def _loop_function(graph_def, in_tensors: list[str], out_tensors: list[str], reads: list[list[str]]):
    """For graphs with lowered while loops: f(*inputs, *weights) whose TF2 gradient is the TF1 gradient graph
    (see tb_unfreeze.loop_gradients). Each weight is fed through its first read; the other reads are pointed at it."""
    from tb_unfreeze import loop_gradients as LG  # noqa: PLC0415

    present = {n.name for n in graph_def.node}
    first, alias = [], {}
    for names in reads:
        names = [n for n in names if n in present]
        first.append(names[0] if names else None)
        alias.update({n: names[0] for n in names[1:]})
    for node in graph_def.node:
        for i, raw in enumerate(node.input):
            name, index, control = split_input(raw)
            if name in alias:
                node.input[i] = ("^" if control else "") + alias[name] + (f":{index}" if index > 0 else "")
    fed = [f"{n}:0" for n in first if n is not None]
    call = LG.differentiable_function(tf, LG.build_gradient_graph(tf, graph_def, in_tensors + fed, [], out_tensors))
    n_in = len(in_tensors)

    def fn(*args):
        weights = [w for w, f in zip(args[n_in:], first) if f is not None]
        return call(*args[:n_in], *weights)

    fn.forward = call.forward
    return fn


class _ValueInitializer(keras.initializers.Initializer):
    """Start a weight from the converted model's value."""

    def __init__(self, value):
        self.value = value

    def __call__(self, shape, dtype=None):
        return tf.cast(tf.constant(self.value), dtype or self.value.dtype)


class UnfrozenLayer(keras.layers.Layer):
    """Calls a converted model's signature with this layer's own Keras weights.

    The SavedModel's graph is made stateless: every read of a variable becomes an input fed with the matching
    Keras weight (created with `add_weight`, starting from the model's value, with the model's `trainable` flag).
    So the weights are ordinary Keras weights: optimizers, `fit`, `save_weights` and `tf.distribute` strategies
    (MirroredStrategy creates mirrored copies when the layer is built in its scope) all work. Write them back to a
    SavedModel with `save_weights_to_saved_model`.

    Inputs: one tensor when the signature has one input, else a dict keyed by signature input name.
    Outputs: one tensor when the signature has one output, else a dict.
    """

    def __init__(self, saved_model: str, signature: str = "serving_default", trainable: bool = True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.saved_model = _saved_model_dir(saved_model)
        self.signature_name = signature
        self.conversion = _conversion_for(self.saved_model)
        paths = self.conversion.training_paths if self.conversion else {}
        if paths and not paths.get("keras", True):
            raise UserError(f"{self.saved_model} cannot be trained with Keras: {paths.get('note')}")
        meta = _serving_meta_graph(self.saved_model)
        if signature not in meta.signature_def:
            raise NotFoundError(
                f"{self.saved_model} has no signature '{signature}'; it has {sorted(meta.signature_def)}."
            )
        sig = meta.signature_def[signature]
        self.input_names, self.output_names = sorted(sig.inputs), sorted(sig.outputs)
        loaded = tf.saved_model.load(self.saved_model)  # for values, flags and shapes only
        graph_def = tf.compat.v1.GraphDef()
        graph_def.CopyFrom(meta.graph_def)
        self._variable_ops: list[str] = []
        self._weights_in_order = []
        reads: list[list[str]] = []
        for variable in sorted(loaded.variables, key=lambda v: v.name):  # by name: load order varies (PITFALLS)
            op = variable.name.rsplit(":", 1)[0]
            users = [n for n in graph_def.node if n.op == "ReadVariableOp" and n.input and n.input[0] == op]
            for node in users:  # each read becomes a placeholder of the variable's dtype and shape
                node.op = "Placeholder"
                del node.input[:]
                node.attr["shape"].shape.CopyFrom(variable.shape.as_proto())
                node.attr["dtype"].type = variable.dtype.as_datatype_enum
            reads.append([n.name for n in users])
            self._variable_ops.append(op)
            self._weights_in_order.append(
                self.add_weight(
                    shape=tuple(variable.shape),
                    dtype=variable.dtype.name,
                    trainable=variable.trainable,
                    name=_CLEAN.sub("_", op).replace("/", "__"),
                    initializer=_ValueInitializer(variable.numpy()),
                )
            )
        del loaded
        out_tensors = [sig.outputs[k].name for k in self.output_names]
        in_tensors = [sig.inputs[k].name for k in self.input_names]
        graph_def = _needed_for(graph_def, {node_name(t) for t in out_tensors})
        _rename_functions(graph_def, f"_tbu{uuid.uuid4().hex[:8]}")
        present = {n.name for n in graph_def.node}
        reads = [[r for r in rs if r in present] for rs in reads]
        in_specs = [
            tf.TensorSpec(tf.TensorShape(sig.inputs[k].tensor_shape), tf.as_dtype(sig.inputs[k].dtype))
            for k in self.input_names
        ]
        weight_specs = [tf.TensorSpec(w.shape, w.dtype) for w in self._weights_in_order]

        def graph_fn(*args):
            inputs, weights = args[: len(in_specs)], args[len(in_specs) :]
            input_map = dict(zip(in_tensors, inputs))
            for weight, names in zip(weights, reads):
                input_map.update({f"{name}:0": weight for name in names})
            return tf.import_graph_def(graph_def, input_map=input_map, return_elements=out_tensors, name="model")

        if self.conversion is not None and self.conversion.loops:
            self._fn = _loop_function(graph_def, in_tensors, out_tensors, reads)
        else:
            self._fn = tf.compat.v1.wrap_function(graph_fn, in_specs + weight_specs)
        self.built = True

    def call(self, inputs):
        if not isinstance(inputs, dict):
            if len(self.input_names) != 1:
                raise UserError(f"this model takes {len(self.input_names)} inputs {self.input_names}; pass a dict.")
            inputs = {self.input_names[0]: inputs}
        outputs = self._fn(
            *[tf.convert_to_tensor(inputs[k]) for k in self.input_names],
            *[tf.convert_to_tensor(w) for w in self._weights_in_order],
        )
        if len(self.output_names) == 1:
            return outputs[0]
        return dict(zip(self.output_names, outputs))

    def compute_output_spec(self, inputs):
        outs = getattr(self._fn, "structured_outputs", None) or self._fn.forward.structured_outputs
        specs = [keras.KerasTensor(t.shape, dtype=t.dtype.name) for t in outs]
        return specs[0] if len(specs) == 1 else dict(zip(self.output_names, specs))

    def save_weights_to_saved_model(self, out_dir: str, replace: bool = False) -> str:
        """Write a copy of the SavedModel (and its manifest) whose checkpoint holds the current weights."""
        out_dir = os.path.abspath(out_dir)
        source = os.path.dirname(self.saved_model)
        if os.path.realpath(out_dir) == os.path.realpath(source):
            raise OutputDirError(f"{out_dir} is the model being trained; choose another directory.")
        out_dir = check_output_dir(source, out_dir, replace)
        with staged_dir(out_dir) as tmp:  # the previous folder, or the new one whole: never half of each
            self._write_saved_model(tmp, out_dir)
        return out_dir

    def _write_saved_model(self, tmp: str, out_dir: str) -> None:
        conversion = self.conversion
        loops = bool(conversion is not None and conversion.loops)
        target = os.path.join(tmp, SAVED_MODEL_TF1 if loops else SAVED_MODEL)
        shutil.copytree(self.saved_model, target, ignore=shutil.ignore_patterns("variables"))
        os.makedirs(os.path.join(target, "variables"))
        keys = self._checkpoint_keys()
        names = list(keys)
        tf.raw_ops.SaveV2(
            prefix=os.path.join(target, "variables", "variables"),
            tensor_names=names,
            shape_and_slices=[""] * len(names),
            tensors=[keys[n] for n in names],
        )
        src_graph = (
            conversion.layout.unfrozen_graph
            if conversion is not None
            else os.path.join(os.path.dirname(self.saved_model), UNFROZEN_GRAPH)
        )
        if loops:  # the native TF2 SavedModel again, around the trained values (see tb_unfreeze.tf2_export)
            from tb_unfreeze import tf2_export  # noqa: PLC0415

            graph_def = tf.compat.v1.GraphDef()
            with open(src_graph, "rb") as f:
                graph_def.ParseFromString(f.read())
            values = {op: tf.convert_to_tensor(w).numpy() for op, w in zip(self._variable_ops, self._weights_in_order)}
            tf2_export.save_native_for(
                tf,
                graph_def,
                [v.to_json() for v in conversion.variables],
                values,
                conversion.inputs,
                conversion.signature,
                conversion.input_defaults,
                conversion.trainable_outputs,
                os.path.join(tmp, SAVED_MODEL),
            )
        if conversion is not None:
            conversion.relocated(out_dir, fine_tuned_from=conversion.out_dir).write(tmp)
        if os.path.isfile(src_graph):
            shutil.copy(src_graph, tmp)

    def _checkpoint_keys(self) -> dict:
        """Checkpoint key -> current value, keyed as the converter's Saver wrote them."""
        by_op = {op: tf.convert_to_tensor(w) for op, w in zip(self._variable_ops, self._weights_in_order)}
        if self.conversion is not None:
            return {v.checkpoint_key: by_op[v.variable_name] for v in self.conversion.variables}
        return by_op
