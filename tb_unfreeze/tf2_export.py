"""A native TF2 SavedModel for graphs with lowered while loops: variables + signatures whose gradient is the TF1
gradient graph (see `loop_gradients`). Loads with `tf.saved_model.load`; GradientTape and Keras train it."""

from __future__ import annotations

import dataclasses

import numpy as np

from tb_unfreeze import loop_gradients as LG


@dataclasses.dataclass
class Tf2Variable:
    name: str
    value: np.ndarray
    trainable: bool
    read_tensor: str  # the tensor of the rewritten graph that reads it


@dataclasses.dataclass
class Tf2Input:
    tensor: str
    key: str
    dtype: str
    shape: list[int] | None
    default: object = None  # knobs: the value used by serving_default


def save_native(
    tf,
    graph_def,
    variables: list[Tf2Variable],
    inputs: list[Tf2Input],
    knobs: list[Tf2Input],
    outputs: list[tuple[str, str, bool]],
    path: str,
) -> None:
    """Write `path` as a TF2 SavedModel: `serving_default` (data inputs; knobs at their defaults), and `training`
    (knobs fed) when there are knobs. `outputs`: (tensor, signature key, trains)."""
    feeds = [i.tensor for i in inputs] + [k.tensor for k in knobs]
    gradient_graph = LG.build_gradient_graph(
        tf,
        graph_def,
        feeds,
        [(v.read_tensor, v.value.dtype, list(v.value.shape)) for v in variables],
        [t for t, _, _ in outputs],
        trains=[trains for _, _, trains in outputs],
    )
    call = LG.differentiable_function(tf, gradient_graph)
    root = tf.__internal__.tracking.AutoTrackable()
    held = [tf.Variable(v.value, name=v.name, trainable=v.trainable) for v in variables]
    # tracked lists: `tf.saved_model.load(path).variables` / `.trainable_variables`, as for a TF1 SavedModel
    root.variables = held
    root.trainable_variables = [v for v in held if v.trainable]
    keys = [k for _, k, _ in outputs]

    def run(data, knob_values):
        ys = call(*data, *knob_values, *[tf.convert_to_tensor(v) for v in held])
        return dict(zip(keys, ys))

    def spec(i: Tf2Input):
        shape = None if i.shape is None else [None if d < 0 else d for d in i.shape]
        return tf.TensorSpec(shape, tf.as_dtype(i.dtype), name=i.key)

    @tf.function(input_signature=[spec(i) for i in inputs])
    def serving_default(*data):
        return run(data, [tf.constant(k.default, dtype=tf.as_dtype(k.dtype)) for k in knobs])

    signatures = {"serving_default": serving_default.get_concrete_function()}
    if knobs:

        @tf.function(
            input_signature=[spec(i) for i in inputs]
            + [tf.TensorSpec([], tf.as_dtype(k.dtype), name=k.key) for k in knobs]
        )
        def training(*args):
            return run(args[: len(inputs)], args[len(inputs) :])

        signatures["training"] = training.get_concrete_function()
    root.serving_default = serving_default
    tf.saved_model.save(
        root, path, signatures=signatures, options=tf.saved_model.SaveOptions(experimental_custom_gradients=True)
    )


def save_native_for(
    tf,
    graph_def,
    variables: list[dict],
    values: dict,
    inputs: list[dict],
    signature: dict,
    defaults: dict,
    trainable_outputs: list[str] | None,
    path: str,
) -> None:
    """`save_native` from a conversion's records (the manifest's `variables`, `inputs`, `signature`,
    `input_defaults`, `trainable_outputs`) and the variables' current values by variable name."""
    from tb_unfreeze.rewrite import signature_keys  # noqa: PLC0415
    from tb_unfreeze.variable_nodes import read_tensor  # noqa: PLC0415

    by_name = {i["name"]: i for i in inputs}
    trained = set(trainable_outputs) if trainable_outputs is not None else set(signature["outputs"])
    save_native(
        tf,
        graph_def,
        [
            Tf2Variable(
                r["variable_name"],
                np.asarray(values[r["variable_name"]]),
                r["trainable"],
                read_tensor(r["variable_name"]),
            )
            for r in variables
        ],
        [Tf2Input(f"{n}:0", key, by_name[n]["dtype"], by_name[n]["shape"]) for n, key in signature["inputs"].items()],
        [
            Tf2Input(f"{n}:0", signature_keys([n])[n], "bool" if isinstance(v, bool) else "float32", [], v)
            for n, v in defaults.items()
        ],
        [(t, key, t in trained) for t, key in signature["outputs"].items()],
        path,
    )
