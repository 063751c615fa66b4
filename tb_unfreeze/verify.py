"""Prove the converted model is the frozen one: same outputs on probe inputs, gradients to every variable."""

from __future__ import annotations

import os

import numpy as np

from tb_unfreeze.analysis import GraphInput
from tb_unfreeze.errors import UserError

UNKNOWN_DIM = 2  # size used for unknown dimensions in probe inputs


# Messages of ops with no registered gradient met during the last checks (read and cleared by the caller).
GRADIENT_ERRORS: list[str] = []


class ProbeError(UserError):
    """No probe input can be made for an input (string input, unknown shape): the user must supply one."""


def make_probes(inputs: list[GraphInput], npz: str | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Probe values for the inputs that must be fed, keyed by node name."""
    supplied = {}
    if npz:
        try:
            with np.load(npz, allow_pickle=False) as data:
                supplied = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"{npz}: cannot read probe inputs ({e}); pass an .npz keyed by input name.") from None
    rng = np.random.default_rng(seed)
    probes = {}
    for inp in inputs:
        if inp.default is not None:
            probes[inp.name] = np.asarray(inp.default, dtype=bool if inp.dtype == "bool" else np.float32)
            continue
        if inp.kind != "data":
            continue
        key = inp.name if inp.name in supplied else inp.name.replace("/", "_")
        if key in supplied:
            probes[inp.name] = supplied[key]
            continue
        if inp.shape is None:
            raise ProbeError(
                f"input '{inp.name}' declares no shape, so no probe value can be made safely; pass --probe "
                f"FILE.npz with an array named '{inp.name}', or --no-verify."
            )
        shape = [UNKNOWN_DIM if d < 0 else d for d in inp.shape]
        if inp.dtype in ("float", "half", "double", "bfloat16"):
            dtype = {"float": np.float32, "half": np.float16, "double": np.float64}.get(inp.dtype, np.float32)
            probes[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif inp.dtype in ("int32", "int64", "int8", "int16", "uint8"):
            probes[inp.name] = rng.integers(0, 2, size=shape).astype(inp.dtype)
        elif inp.dtype == "bool":
            probes[inp.name] = np.zeros(shape, dtype=bool)
        else:
            raise ProbeError(
                f"cannot make a probe value for input '{inp.name}' of type {inp.dtype}; pass --probe FILE.npz "
                f"with an array named '{inp.name}', or --no-verify."
            )
    missing = [k for k in supplied if k not in probes and k.replace("_", "/") not in probes]
    if npz and missing:
        raise UserError(f"{npz}: arrays {missing} match no input of the graph; name them after the input nodes.")
    return probes


def tolerance(reference: np.ndarray) -> float:
    scale = float(np.max(np.abs(reference))) if reference.size and np.issubdtype(reference.dtype, np.number) else 0.0
    return 1e-5 * max(1.0, scale)


def compare(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> dict:
    """Max absolute difference per output, and whether each is within 1e-5 × max(1, |output|)."""
    result = {}
    for name, ref in reference.items():
        got = np.asarray(actual[name])
        if ref.shape != got.shape:
            result[name] = {"max_abs_diff": None, "passed": False, "note": f"shape {got.shape} != {ref.shape}"}
            continue
        if not np.issubdtype(ref.dtype, np.number) and ref.dtype != bool:
            same = bool(np.all(ref == got))
            result[name] = {"max_abs_diff": 0.0 if same else None, "passed": same}
            continue
        diff = float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0
        if np.isnan(diff):
            both_nan = np.array_equal(np.isnan(ref), np.isnan(got))
            diff = 0.0 if both_nan else float("inf")
        result[name] = {"max_abs_diff": diff, "tolerance": tolerance(ref), "passed": diff <= tolerance(ref)}
    return result


def run_frozen(graph_def, feeds: dict[str, np.ndarray], fetches: list[str], defaults: dict) -> dict:
    """Outputs of the untouched frozen graph (TF1 Session, imported under a prefix)."""
    import tensorflow as tf  # noqa: PLC0415

    graph = tf.Graph()
    with graph.as_default():
        names = [f"{n}:0" for n in feeds] + [f"{n}:0" for n in defaults] + fetches
        tensors = tf.import_graph_def(graph_def, return_elements=names, name="frozen")
    feed_dict = {t: v for t, v in zip(tensors, list(feeds.values()) + list(defaults.values()))}
    # Default session options on purpose: with Grappler off, some frozen graphs compute something else (OpenCV's
    # face detector gave NaN), and the converted model runs with Grappler on. Grappler costs time on graphs with
    # huge weights (VGG16: ~35 s), only when verifying.
    with tf.compat.v1.Session(graph=graph) as sess:
        values = sess.run(tensors[len(feed_dict):], feed_dict)
    return dict(zip(fetches, values))


def loss_of(tf, outputs: list, seed: int = 1):
    """A scalar that depends on every element of every float output (a random projection, so that a softmax
    output, whose sum is constant, still gives gradients)."""
    terms = []
    for i, out in enumerate(outputs):
        if not out.dtype.is_floating:
            continue
        out = tf.cast(out, tf.float32)
        proj = tf.random.stateless_normal(tf.shape(out), seed=[seed, i])
        terms.append(tf.reduce_sum(out * proj))
    return tf.add_n(terms) if terms else None


def run_saved_model_tf2(saved_model: str, signature: dict, feeds: dict[str, np.ndarray], gradients: bool) -> tuple:
    """Outputs through `tf.saved_model.load` (the TF2 user path) and the trainable variables with no gradient."""
    import tensorflow as tf  # noqa: PLC0415

    loaded = tf.saved_model.load(saved_model)
    fn = loaded.signatures["serving_default"]
    kwargs = {signature["inputs"][name]: tf.constant(value) for name, value in feeds.items()}
    trainable = [v for v in loaded.variables if v.trainable]
    with tf.GradientTape() as tape:
        result = fn(**kwargs)
        loss = loss_of(tf, [result[k] for k in sorted(result)]) if gradients else None
    outputs = {tensor: result[key].numpy() for tensor, key in signature["outputs"].items()}
    missing = None
    if gradients:
        try:
            grads = tape.gradient(loss, trainable) if loss is not None else [None] * len(trainable)
        except LookupError as e:
            GRADIENT_ERRORS.append(str(e).splitlines()[0])
            grads = [None] * len(trainable)
        missing = sorted(v.name.rsplit(":", 1)[0] for v, g in zip(trainable, grads) if g is None)
    return outputs, missing, len(trainable)


def run_saved_model_tf1(saved_model: str, signature: dict, feeds: dict[str, np.ndarray], gradients: bool) -> tuple:
    """Outputs and gradient check through `tf.compat.v1.saved_model.load` in a Session (the TF1 user path)."""
    import tensorflow as tf  # noqa: PLC0415

    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], saved_model)
        sig = meta.signature_def["serving_default"]
        feed = {graph.get_tensor_by_name(sig.inputs[k].name): feeds[n] for n, k in signature["inputs"].items()}
        out_keys = list(signature["outputs"].items())
        fetches = [graph.get_tensor_by_name(sig.outputs[k].name) for _, k in out_keys]
        values = sess.run(fetches, feed)
        missing = None
        trainable = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
        if gradients:
            with graph.as_default():
                loss = loss_of(tf, fetches)
                try:
                    grads = tf.compat.v1.gradients(loss, trainable) if loss is not None else [None] * len(trainable)
                except LookupError as e:  # an op with no registered gradient: nothing trains through it
                    GRADIENT_ERRORS.append(str(e).splitlines()[0])
                    grads = [None] * len(trainable)
            missing = sorted(v.op.name for v, g in zip(trainable, grads) if g is None)
    return {tensor: v for (tensor, _), v in zip(out_keys, values)}, missing, len(trainable)


def saved_model_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
