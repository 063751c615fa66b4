"""Prove the converted model is the frozen one: same outputs on probe inputs, gradients to every variable."""

from __future__ import annotations

import os

import numpy as np

from tb_unfreeze.errors import UserError, first_line
from tb_unfreeze.tensorflow_env import release_free_memory


class ProbeError(UserError):
    """No probe input can be made for an input (string input, unknown shape): the user must supply one."""


# Outputs must agree within RTOL x max(1, |output|): float32 results of the same graph differ by the order in which
# TensorFlow's TF1 and TF2 runtimes fuse and reduce (seen: 2e-5 relative after 18 convolutions at 0-255 scale).
RTOL = 3e-5


def tolerance(reference: np.ndarray) -> float:
    scale = float(np.max(np.abs(reference))) if reference.size and np.issubdtype(reference.dtype, np.number) else 0.0
    return RTOL * max(1.0, scale)


def compare(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> dict:
    """Max absolute difference per output, and whether each is within RTOL × max(1, |output|)."""
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


def lean_session_config(tf):
    """Session options for running an untouched frozen graph once: Grappler's meta-optimizer off. On a graph whose
    weights are all constants, Grappler copies and hashes every weight in each of its passes (VGG16, 528 MB:
    83 s and 7.2 GB peak for the first run with the defaults, 10 s and 3.8 GB without; constant folding off alone
    still took 66 s), for a graph that is then run once or twice. The converted model cannot fold its weights
    (they are variables), so the unoptimised frozen graph is, if anything, closer to what it computes."""
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return config


class grappler_off:
    """Eager functions instantiated inside run without Grappler's meta-optimizer (the process-wide setting is put
    back on exit). Verification checks what the converted graph computes, as the frozen reference run does
    (`lean_session_config`); Grappler's rewrites preserve that by design and cost more than the check itself on a
    graph run once (MobileNetV2: ~1.5 s of the TF2 check's ~5.5 s). When a lean check does not pass, the caller
    repeats it with TensorFlow's defaults, so a graph that needs a rewrite to run is still checked."""

    def __init__(self, tf):
        self.tf = tf

    def __enter__(self):
        self.before = self.tf.config.optimizer.get_experimental_options()
        self.tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
        return self

    def __exit__(self, *exc):
        self.tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": bool(self.before.get("disable_meta_optimizer", False))}
        )
        return False


def non_finite(values) -> bool:
    """Any float output with NaN/Inf (or an empty output: nothing to compare)."""
    for value in values:
        value = np.asarray(value)
        if value.size == 0 or np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return True
    return False


class FrozenRunner:
    """The frozen graph imported once under a prefix and run in a TF1 Session, lean (no Grappler) first.

    Grappler may compute some graphs differently (issue 12: OpenCV's face detector once gave NaN with Grappler
    off; on TensorFlow 2.21 its NaN comes from a `Dequantize` of a [0, FLT_MIN] range and is the same either way).
    So when a lean run gives NaN/Inf, the same values are run once with the default options: if that run is clean,
    the runner keeps the defaults, otherwise it does not ask them again. A lean run that fails is retried with the
    defaults once per runner (most failures are the probe's, which the defaults would repeat)."""

    def __init__(self, tf, graph_def, feed_names: list[str], fetches: list[str]):
        self.tf = tf
        self.graph = tf.Graph()
        light, weights = lift_weights(tf, graph_def)
        with self.graph.as_default():
            elements = tf.import_graph_def(
                light,
                return_elements=[f"{n}:0" for n in feed_names] + fetches + [f"{n}:0" for n in weights],
                name="frozen",
            )
        del light
        self.feeds = dict(zip(feed_names, elements[: len(feed_names)]))
        self.fetches = elements[len(feed_names) : len(feed_names) + len(fetches)]
        self.weights = dict(zip(elements[len(feed_names) + len(fetches) :], weights.values()))
        self.sess = tf.compat.v1.Session(graph=self.graph, config=lean_session_config(tf))
        self.grappler: bool | None = None  # None: undecided; True: the defaults are in use; False: they did not help
        self._error_retried = False

    def run(self, values: dict, timeout_s: float | None = None):
        tf = self.tf
        options = tf.compat.v1.RunOptions(timeout_in_ms=max(1000, int(timeout_s * 1000))) if timeout_s else None
        feed = {**self.weights, **{self.feeds[k]: v for k, v in values.items()}}
        try:
            outputs = self.sess.run(self.fetches, feed, options=options)
        except tf.errors.OpError:
            if self.grappler is not None or self._error_retried:
                raise
            self._error_retried = True
            retried = self._with_defaults(feed, options)
            if retried is None:
                raise
            return retried
        if self.grappler is None and non_finite(outputs):
            retried = self._with_defaults(feed, options)
            if retried is not None:
                return retried
            self.grappler = False
        return outputs

    def _with_defaults(self, feed, options):
        """The same run with Grappler's defaults: when its outputs are clean, they are returned and its Session
        becomes the runner's; else None."""
        session = self.tf.compat.v1.Session(graph=self.graph)
        try:
            outputs = session.run(self.fetches, feed, options=options)
        except (self.tf.errors.OpError, ValueError, TypeError):
            outputs = None
        if outputs is None or non_finite(outputs):
            session.close()
            return None
        self.sess.close()
        self.sess, self.grappler = session, True
        return outputs

    def close(self):
        self.sess.close()
        self.weights = {}


# Float constants at least this large are fed to the reference run instead of being graph nodes.
LIFT_BYTES = 1 << 20
_LIFT_DTYPES = {1: np.float32, 2: np.float64, 19: np.float16}  # DT_FLOAT, DT_DOUBLE, DT_HALF


def lift_weights(tf, graph_def):
    """A copy of `graph_def` whose large float constants (the weights, >= LIFT_BYTES, no control inputs) are
    placeholders of the same name, dtype and shape, and their values (64-byte aligned: TensorFlow feeds an
    aligned array without copying it).

    A Session copies its graph several times while setting up (the graph, the optimised and the partitioned
    graphs, then the constant kernels): with the weights inside, VGG16's 528 MB gave 3.3 GB above `import
    tensorflow` for one run. Fed, the weights exist once more, as these arrays. Constants with control inputs
    (those placed inside a while loop's frame) stay constants."""
    light = tf.compat.v1.GraphDef()
    light.versions.CopyFrom(graph_def.versions)
    light.library.CopyFrom(graph_def.library)
    weights = {}
    for node in graph_def.node:
        tensor = node.attr["value"].tensor if node.op == "Const" else None
        dtype = _LIFT_DTYPES.get(tensor.dtype) if tensor is not None and not node.input else None
        content = tensor.tensor_content if dtype is not None else b""
        if len(content) < LIFT_BYTES:
            light.node.add().CopyFrom(node)
            continue
        shape = [d.size for d in tensor.tensor_shape.dim]
        if len(content) != int(np.prod(shape)) * np.dtype(dtype).itemsize:
            light.node.add().CopyFrom(node)
            continue
        weights[node.name] = _aligned_copy(content, dtype, shape)
        del content
        placeholder = light.node.add()
        placeholder.name, placeholder.op, placeholder.device = node.name, "Placeholder", node.device
        placeholder.attr["dtype"].type = tensor.dtype
        placeholder.attr["shape"].shape.CopyFrom(tensor.tensor_shape)
    return light, weights


def _aligned_copy(content: bytes, dtype, shape: list[int]) -> np.ndarray:
    raw = np.empty(len(content) + 64, np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start : start + len(content)]
    out[:] = np.frombuffer(content, np.uint8)
    return out.view(dtype).reshape(shape)


def run_frozen(graph_def, feeds: dict[str, np.ndarray], fetches: list[str], defaults: dict) -> dict:
    """Outputs of the untouched frozen graph (TF1 Session, imported under a prefix; see `FrozenRunner`)."""
    import tensorflow as tf  # noqa: PLC0415

    names = list(feeds) + list(defaults)
    runner = FrozenRunner(tf, graph_def, names, fetches)
    try:
        values = runner.run(dict(zip(names, list(feeds.values()) + list(defaults.values()))))
    finally:
        runner.close()
    return dict(zip(fetches, values))


def loss_of(tf, outputs: list, seed: int = 1, absolute: bool = False):
    """A scalar that depends on every element of every float output (a random projection, so that a softmax
    output, whose sum is constant, still gives gradients). Outputs given as None are left out."""
    terms = []
    for i, out in enumerate(outputs):
        if out is None or not out.dtype.is_floating:
            continue
        out = tf.cast(out, tf.float64)
        proj = tf.random.stateless_normal(tf.shape(out), seed=[seed, i], dtype=tf.float64)
        terms.append(tf.reduce_sum(tf.abs(out * proj) if absolute else out * proj))
    return tf.add_n(terms) if terms else None


STATUSES = ("verified", "verified_with_warnings", "not_verified", "failed")
# Relative agreement asked of a central finite difference and the gradient along the same direction.
FD_RTOL = 2e-2


def not_performed(note: str, requested: bool = True) -> dict:
    """The verification record of a conversion that could not be (or was asked not to be) verified."""
    return {"performed": False, "passed": False, "status": "not_verified", "requested": requested, "note": note}


def _trained_outputs(signature: dict, trains: dict | None) -> list[str]:
    return [t for t in signature["outputs"] if (trains or {}).get(t, True)]


def run_saved_model_tf2(
    saved_model: str,
    signature: dict,
    feeds: dict[str, np.ndarray],
    gradients: bool,
    trains: dict | None = None,
    finite_difference: bool = False,
) -> dict:
    """Outputs through `tf.saved_model.load` (the TF2 user path); with `gradients`, which trainable variables get
    none, and a finite-difference check of the gradient's value along a random direction."""
    import tensorflow as tf  # noqa: PLC0415

    loaded = tf.saved_model.load(saved_model)
    fn = loaded.signatures["serving_default"]
    kwargs = {signature["inputs"][name]: tf.constant(value) for name, value in feeds.items()}
    trainable = [v for v in loaded.variables if v.trainable]
    trained_keys = [signature["outputs"][t] for t in _trained_outputs(signature, trains)]

    def loss_now(result, absolute=False):
        return loss_of(tf, [result[k] if k in trained_keys else None for k in sorted(result)], absolute=absolute)

    report: dict = {"checked": len(trainable)}
    with tf.GradientTape() as tape:
        result = fn(**kwargs)
        loss = loss_now(result) if gradients else None
    report["outputs"] = {tensor: result[key].numpy() for tensor, key in signature["outputs"].items()}
    if not gradients:
        return report
    release_free_memory()  # what the forward pass freed, before the backward pass allocates the gradients
    try:
        grads = tape.gradient(loss, trainable) if loss is not None else [None] * len(trainable)
    except (LookupError, ValueError, TypeError, AttributeError) as e:
        report["error"] = first_line(e)
        grads = [None] * len(trainable)
    del tape
    release_free_memory()
    grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
    report["missing"] = sorted(v.name.rsplit(":", 1)[0] for v, g in zip(trainable, grads) if g is None)
    report["finite"] = all(
        bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads if g is not None and g.dtype.is_floating
    )
    if finite_difference and loss is not None and any(g is not None for g in grads):
        # The loss's own rounding, from the outputs already computed at the unmoved variables.
        scale = float(loss_now(result, absolute=True).numpy())
        del result
        report["finite_difference"] = _finite_difference(
            tf, fn, kwargs, loss_now, trainable, grads, scale, saved=SavedValues(tf, saved_model)
        )
    return report


VACUOUS = (
    "vacuous: the loss hardly changes along the direction (outputs saturated on the probe inputs; the change is "
    "below float32 resolution); pass --probe FILE.npz with realistic inputs to check gradient values"
)
# Step sizes of the finite difference. The check passes when any resolvable one agrees with the gradient, and
# fails or is inconclusive from all of them, so the order only decides how soon a pass is found: see _fd_order.
FD_STEPS = (1e-3, 3e-4, 1e-4, 3e-5, 3e-3, 1e-5, 1e-2)
# A step is tried first when its expected change is at least this many times the loss's rounding bound: round-off
# then costs at most 1/FD_FIRST_MARGIN of the estimate (1%, half of FD_RTOL), and the smallest such step has the least
# curvature and kink error. (It was 1000: VGG16 started at 3e-4, whose estimate is 17% off by its ReLU kinks, and
# passed at 3e-5 on the third try; ResNet50 and VGG16 both pass on the first try at 100.)
FD_FIRST_MARGIN = 100


# Variables this big or bigger are moved by the finite difference in one compiled call, smaller ones eagerly.
MOVE_COMPILED_BYTES = 16 << 20


def _fd_order(steps: list[float], margin) -> list[float]:
    """The resolvable steps in the order tried: the smallest with a round-off margin of FD_FIRST_MARGIN, then the
    smaller ones downwards, then the larger ones upwards. When the first step misses, it is curvature or a kink
    (ReLU) that a smaller step reduces, not round-off (that margin bounds it): VGG16's estimates reached the
    gradient only at 3e-5, after three larger steps in an older order (6 tries, 12 forward passes; now 1)."""
    steps = sorted(steps)
    if not steps:
        return []
    first = next((i for i, eps in enumerate(steps) if margin(eps) >= FD_FIRST_MARGIN), len(steps) - 1)
    return [steps[first]] + steps[:first][::-1] + steps[first + 1 :]


class SavedValues:
    """The values a loaded SavedModel's variables were restored from, read back one variable at a time: the
    finite difference restores a big variable from here, exactly, instead of keeping a copy of it in memory."""

    def __init__(self, tf, saved_model: str):
        self.tf = tf
        self.prefix = os.path.join(saved_model, "variables", "variables")
        try:
            self.reader = tf.train.load_checkpoint(self.prefix)
        except (tf.errors.OpError, ValueError):
            self.reader = None

    @staticmethod
    def key(variable) -> str:
        return variable.name.rsplit(":", 1)[0]  # a TF1 SavedModel's checkpoint key is the variable's name

    def restore(self, variable) -> None:
        """`RestoreV2` straight into a tensor, then assigned (a NumPy value would be one more copy of it)."""
        tf = self.tf
        (value,) = tf.raw_ops.RestoreV2(
            prefix=self.prefix, tensor_names=[self.key(variable)], shape_and_slices=[""], dtypes=[variable.dtype]
        )
        variable.assign(value)
        del value
        release_free_memory()


def _finite_difference(
    tf, fn, kwargs, loss_now, variables, grads: list, loss_scale: float, saved: SavedValues | None = None
) -> dict:
    """Central differences of the loss along the gradient's own direction, against the gradient's dot product
    with that direction. Each variable moves along its gradient, scaled to the variable's own norm, so every layer
    moves by about the same relative amount and no term cancels another (a random direction's derivative is a sum
    of cancelling terms, which kinks and float32 round-off then swamp). A gradient that is wrong in size or
    direction for a layer changes that layer's share of the result. Several step sizes are tried (float32
    round-off against curvature) and the best agreement is kept. Variables are restored afterwards.

    `loss_scale` is the loss of absolute values at the unmoved variables: the loss can only be resolved to about
    8 float32 roundings of it. A step whose expected change is below ten times that is not resolvable and is not
    evaluated (its estimate could not count either way); when no step is, nothing is evaluated and the check is
    vacuous (`tries` 0, no estimate: it would be round-off). The loss is evaluated under a tape, which runs the
    forward function the gradient already built (a plain call would build and optimise an inference function
    first).

    Memory: `grads` is emptied at once; a gradient lives on only as a direction (or is dropped once its bfloat16
    direction is made).
    - A variable of MOVE_COMPILED_BYTES or more whose value `saved` holds (the SavedModel's checkpoint) moves in
      place, by `ResourceApplyGradientDescent` from where it is to where it goes along its own gradient (the
      direction's scale folded into the step: no direction is made, no copy of the variable is kept, the move
      makes no temporaries), and is restored from `saved`, exactly, at the end. For VGG16 that is its 411 MB and
      67 MB kernels: their directions, copies and the temporaries of their moves were most of the check's peak.
    - The others keep their unmoved values once (they share the variables' buffers until the first move) and
      their direction in bfloat16 (half of a float32 copy; the check is of the derivative along the direction
      actually taken, so `analytic` is the gradient's dot product with that same rounded direction); the big ones
      among them move in one compiled call, the small ones eagerly (see `move` below)."""
    pairs = [(v, g) for v, g in zip(variables, grads) if g is not None and v.dtype.is_floating]
    grads.clear()  # the caller's list: its gradients live on in `pairs` only until the directions are made
    # A variable that is exactly zero (a fresh bias or beta) is not moved: shifting it shifts every unit it feeds
    # off exact zeros, the kinks of ReLU, where the gradient takes one side and a central difference the average.
    # The directions are made (and each gradient released) before the unmoved values are copied, so that the
    # gradients and the copies are never held together.
    reader = saved.reader if saved is not None else None
    shapes = reader.get_variable_to_shape_map() if reader is not None else {}
    dtypes = reader.get_variable_to_dtype_map() if reader is not None else {}
    in_place_ids = {
        id(v)
        for v, _ in pairs
        if v.shape.num_elements() * v.dtype.size >= MOVE_COMPILED_BYTES
        and shapes.get(SavedValues.key(v)) == v.shape.as_list()
        and dtypes.get(SavedValues.key(v)) == v.dtype
    }

    def in_place(v) -> bool:
        return id(v) in in_place_ids

    directions, analytic, zero = [], 0.0, 0

    def norm(x) -> float:  # a dot product of the flat tensor with itself: tf.norm would square it into a temporary
        flat = tf.reshape(x, [-1])
        return float(tf.sqrt(tf.tensordot(flat, flat, 1)))

    for i, (v, g) in enumerate(pairs):
        norm_w, norm_g = norm(v.read_value()), norm(g)
        pairs[i] = (v, None)
        if norm_g > 0 and norm_w > 0:
            scale = norm_w / norm_g
            if in_place(v):
                # The direction is the gradient itself, its scale folded into each move's step: nothing is made.
                analytic += scale * norm_g**2
                directions.append((v, g, scale))
            else:
                d = tf.cast(g * tf.cast(scale, g.dtype), tf.bfloat16)
                analytic += float(tf.reduce_sum(g * tf.cast(d, g.dtype)))
                directions.append((v, d, 1.0))
        else:
            zero += 1
        del g
    noise = 8 * 2.0**-24 * loss_scale

    def margin(eps):
        return abs(analytic) * eps / noise if noise > 0 else float("inf")

    def resolvable(eps):
        return abs(analytic) * eps > 10 * noise

    steps = _fd_order([eps for eps in FD_STEPS if resolvable(eps)], margin)
    if not steps:
        # Nothing moves the loss beyond its rounding (outputs saturated on the probe, e.g. a softmax at exactly
        # 0/1): any estimate would be round-off, so none is computed (two forward passes saved).
        return {
            "direction": "gradient, per variable scaled to its norm",
            "analytic": analytic,
            "numeric": None,
            "step": None,
            "relative_error": None,
            "tolerance": FD_RTOL,
            "passed": None,
            "variables": len(pairs),
            "zero_variables_not_moved": zero,
            "tries": 0,
            "estimates": [],
            "note": VACUOUS,
        }
    # Big variables with a saved value move in place (`ResourceApplyGradientDescent`: no copy, no temporaries) and
    # are restored from the SavedModel's checkpoint. The others keep their unmoved values, to restore them exactly.
    placed = [(v, g, scale) for v, g, scale in directions if in_place(v)]
    moved = [(v, tf.identity(v.read_value()), d) for v, d, _ in directions if not in_place(v)]
    at = [0.0]  # where the in-place variables are: unmoved + at[0] x direction

    # Copied variables of MOVE_COMPILED_BYTES or more move in one compiled call (for VGG16's 411 MB kernel it is
    # faster and holds fewer float32 temporaries than eager ops); the others eagerly, one after the other
    # (compiling the moves of ResNet50's 214 small variables cost more to trace, ~0.6 s, than the moves).
    big = [m for m in moved if m[1].shape.num_elements() * m[1].dtype.size >= MOVE_COMPILED_BYTES]
    small = [m for m in moved if m[1].shape.num_elements() * m[1].dtype.size < MOVE_COMPILED_BYTES]

    @tf.function(autograph=False)
    def move_big(step):
        for v, x, d in big:
            v.assign(x + tf.cast(step, x.dtype) * tf.cast(d, x.dtype))

    def move(step):
        if big:
            move_big(step)
        for v, x, d in small:
            v.assign(x + tf.cast(step, x.dtype) * tf.cast(d, x.dtype))
        for v, g, scale in placed:  # v -= alpha x g: from where it is (at) to unmoved + step x scale x g
            alpha = tf.cast((at[0] - step) * scale, v.dtype)
            tf.raw_ops.ResourceApplyGradientDescent(var=v.handle, alpha=alpha, delta=g)
        at[0] = float(step)

    def shifted_loss(step):
        move(tf.constant(step, tf.float64))
        with tf.GradientTape():
            loss = float(loss_now(fn(**kwargs)))
        release_free_memory()  # each forward pass's activations, or the process grows by them (see there)
        return loss

    tried = []
    try:
        for eps in steps:
            sides = [shifted_loss(sign * eps) for sign in (1.0, -1.0)]
            numeric = (sides[0] - sides[1]) / (2 * eps)
            error = abs(numeric - analytic) / max(abs(numeric), abs(analytic), 1e-12)
            tried.append({"step": eps, "numeric": numeric, "relative_error": error, "resolvable": resolvable(eps)})
            if error <= FD_RTOL and tried[-1]["resolvable"]:
                break
        else:
            tried.sort(key=lambda t: t["step"])
    finally:
        for v, x, _ in moved:
            v.assign(x)
        restore = [v for v, _, _ in placed]
        placed.clear()  # the directions are freed before the saved values are read back
        directions.clear()
        for v in restore:
            saved.restore(v)
    resolvable_tried = [t for t in tried if t["resolvable"]]
    best = min(resolvable_tried or tried, key=lambda t: t["relative_error"])
    report = {
        "direction": "gradient, per variable scaled to its norm",
        "analytic": analytic,
        "numeric": best["numeric"],
        "step": best["step"],
        "relative_error": best["relative_error"],
        "tolerance": FD_RTOL,
        "passed": best["relative_error"] <= FD_RTOL,
        "variables": len(pairs),
        "zero_variables_not_moved": zero,
        "tries": len(tried),
        "estimates": [[t["step"], t["numeric"]] for t in tried],
    }
    if not report["passed"] and resolvable_tried:
        # A wrong gradient gives finite differences that agree with one another (a plateau over neighbouring
        # steps) and not with it; kinks (ReLU) and round-off give estimates that wander with the step. Only a
        # plateau away from the gradient fails; wandering estimates make the check inconclusive.
        steady = [
            a
            for a, b in zip(resolvable_tried, resolvable_tried[1:])
            if abs(a["numeric"] - b["numeric"]) <= FD_RTOL * max(abs(a["numeric"]), abs(b["numeric"]), 1e-12)
        ]
        if not steady:
            report.update(
                passed=None,
                note="inconclusive: the finite differences change with the step size "
                "(kinks such as ReLU, or round-off, near the probe inputs) and agree neither with one "
                "another nor with the gradient",
            )
    return report


def run_saved_model_tf1(
    saved_model: str,
    signature: dict,
    feeds: dict[str, np.ndarray],
    gradients: bool,
    trains: dict | None = None,
    control_flow_v1: bool = False,
    lean: bool = False,
) -> dict:
    """Outputs and gradient presence through `tf.compat.v1.saved_model.load` in a Session (the TF1 user path);
    `lean`: the Session without Grappler's meta-optimizer (`lean_session_config`)."""
    import tensorflow as tf  # noqa: PLC0415

    from tb_unfreeze.loop_gradients import v1_control_flow  # noqa: PLC0415

    report: dict = {}
    graph = tf.Graph()
    # The graph is loaded and its gradients built before any Session runs it (even the restore): a functional
    # While's gradient rewrites the forward op, which TensorFlow ignores (then fails on) once a Session has run.
    from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415

    loader = loader_impl.SavedModelLoader(saved_model)
    with graph.as_default():
        saver, _ = loader.load_graph(graph, ["serve"])
    meta = loader.get_meta_graph_def_from_tags(["serve"])
    with graph.as_default():
        sig = meta.signature_def["serving_default"]
        feed_tensors = {graph.get_tensor_by_name(sig.inputs[k].name): feeds[n] for n, k in signature["inputs"].items()}
        out_keys = list(signature["outputs"].items())
        fetches = [graph.get_tensor_by_name(sig.outputs[k].name) for _, k in out_keys]
        trainable = graph.get_collection(tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)
        report["checked"] = len(trainable)
        grads: list = []
        if gradients:
            # Built before anything runs: a functional While's gradient rewrites the forward op (accumulators),
            # which TensorFlow refuses once a Session has run it.
            trained = set(_trained_outputs(signature, trains))
            with graph.as_default():
                loss = loss_of(tf, [f if t in trained else None for (t, _), f in zip(out_keys, fetches)])
                try:
                    with v1_control_flow() if control_flow_v1 else _nothing():
                        grads = tf.compat.v1.gradients(loss, trainable) if loss is not None else [None] * len(trainable)
                except (LookupError, ValueError, TypeError, AttributeError) as e:
                    report["error"] = first_line(e)
                    grads = [None] * len(trainable)
            report["missing"] = sorted(v.op.name for v, g in zip(trainable, grads) if g is None)
        # Finiteness is computed in the graph: one boolean per gradient is fetched, not every gradient's values.
        present = [
            tf.reduce_all(tf.math.is_finite(g.values if isinstance(g, tf.IndexedSlices) else g))
            for g in grads
            if g is not None
        ]
    with tf.compat.v1.Session(graph=graph, config=lean_session_config(tf) if lean else None) as sess:
        loader.restore_variables(sess, saver)
        loader.run_init_ops(sess, ["serve"])
        values = sess.run([fetches, present], feed_tensors)
    report["outputs"] = {tensor: v for (tensor, _), v in zip(out_keys, values[0])}
    if present:
        report["finite"] = all(bool(x) for x in values[1])
    return report


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


NOT_IN_TF1_SESSION = "the converted model does not run in a TF1 Session"


def clean(report: dict, frozen_out: dict) -> bool:
    """A check's report without an error, with finite gradients and the frozen graph's outputs."""
    return (
        "error" not in report
        and report.get("finite", True)
        and all(o["passed"] for o in compare(frozen_out, report["outputs"]).values())
    )


def lean_then_defaults(tf, check, frozen_out: dict):
    """`check(lean)` without Grappler, repeated with TensorFlow's defaults when that is not clean (an error, a
    mismatch, a non-finite gradient): (report, whether Grappler ran)."""
    try:
        report = check(True)
        if clean(report, frozen_out):
            return report, False
    except tf.errors.OpError:
        pass
    return check(False), True


def tf1_checked(
    saved_model: str,
    signature: dict,
    probes: dict,
    frozen_out: dict,
    trains: dict | None,
    control_flow_v1: bool,
):
    """The TF1 Session check as verification runs it, here or in a second process (`side_check`): lean first,
    then with the defaults when that is not clean. Returns (report, whether Grappler ran); raises TensorFlow's
    error when the model does not run even with the defaults."""
    import tensorflow as tf  # noqa: PLC0415

    def check(lean):
        return run_saved_model_tf1(
            saved_model, signature, probes, gradients=True, trains=trains, control_flow_v1=control_flow_v1, lean=lean
        )

    return lean_then_defaults(tf, check, frozen_out)


def verify_conversion(
    layout,
    signature: dict,
    probes: dict,
    frozen_out: dict,
    *,
    trains: dict | None = None,
    tf1_control_flow_v1: bool = False,
    fake_quant: bool = False,
    progress=None,
    side=None,
) -> dict:
    """What "verified" means, in one place: the converted model, loaded as a TF1 user and as a TF2 user would,
    computes the frozen graph's outputs on the probes (within `tolerance`); every trainable variable gets a
    finite gradient from the trainable outputs on both paths; and the TF2 gradient agrees with a central finite
    difference of the loss. `status` sums it up: verified, verified_with_warnings (e.g. a variable that no output
    depends on), or failed.

    `side`: a `side_check.SideCheck` process; the TF1 Session check then runs there while the TF2 check runs
    here (the two are independent: on two cores the TF1 check's time is hidden). When that process cannot give
    its result (it crashed, or it was not ready in time), the TF1 check runs here after all, and the record says
    so (`tf1_session.process`, `tf1_session.process_note`)."""
    import tensorflow as tf  # noqa: PLC0415

    from tb_unfreeze.errors import ConversionError  # noqa: PLC0415

    result: dict = {
        "performed": True,
        "requested": True,
        "probe_shapes": {k: list(np.shape(v)) for k, v in probes.items()},
    }
    tf1_args = (layout.saved_model_tf1, signature, probes, frozen_out, trains, tf1_control_flow_v1)

    def tf1_here():
        try:
            return tf1_checked(*tf1_args)
        except (tf.errors.OpError, ValueError, KeyError) as e:
            raise ConversionError(f"{NOT_IN_TF1_SESSION}: {first_line(e)}") from None

    def tf2_check(lean):
        with grappler_off(tf) if lean else _nothing():
            return run_saved_model_tf2(
                layout.saved_model, signature, probes, gradients=True, trains=trains, finite_difference=True
            )

    submitted = side is not None and side.submit(tf1_args)
    process = {"process": "second process" if submitted else "this process"}
    if not submitted:
        tf1, grappler1 = tf1_here()
        release_free_memory()  # the TF1 graph and Session, before the TF2 check loads the model again
    if progress:
        progress("verify TF2 gradients (TF1 Session in a second process)" if submitted else "verify TF2 gradients")
    try:
        tf2, grappler2 = lean_then_defaults(tf, tf2_check, frozen_out)
        cmp2 = compare(frozen_out, tf2["outputs"])
        tf2_record = {
            "outputs_match": all(o["passed"] for o in cmp2.values()),
            "missing_gradients": tf2.get("missing", []),
            "gradients_finite": tf2.get("finite", True),
            "grappler": grappler2,
            "outputs": cmp2,
            **({"error": tf2["error"]} if "error" in tf2 else {}),
        }
        fd = tf2.get("finite_difference")
    except (tf.errors.OpError, ValueError, TypeError, AttributeError, KeyError) as e:
        tf2_record = {"outputs_match": False, "error": first_line(e), "missing_gradients": []}
        tf2, fd = {"checked": 0}, None
    if submitted:
        if progress:
            progress("verify TF1 Session (second process)")
        reply = side.result()
        if "error" in reply:
            raise ConversionError(f"{NOT_IN_TF1_SESSION}: {reply['error']}")  # the same sentence as here
        if "report" in reply:
            tf1, grappler1 = reply["report"], reply["grappler"]
            if reply.get("peak_mb") is not None:
                process["process_peak_mb"] = reply["peak_mb"]
        else:  # the process could not answer: the check runs here
            tf1, grappler1 = tf1_here()
            process = {"process": "this process", "process_note": reply["unavailable"]}
    result["outputs"] = compare(frozen_out, tf1["outputs"])
    result["tf1_session"] = {
        "outputs_match": all(o["passed"] for o in result["outputs"].values()),
        "missing_gradients": tf1.get("missing", []),
        "gradients_finite": tf1.get("finite", True),
        "grappler": grappler1,
        **process,
        **({"error": tf1["error"]} if "error" in tf1 else {}),
    }
    result["tf2"] = tf2_record
    checked = tf2.get("checked", tf1.get("checked", 0))
    missing = sorted(set(result["tf2"].get("missing_gradients", [])) | set(tf1.get("missing", [])))
    if fd is not None and fake_quant:
        # FakeQuant ops have straight-through gradients: by design not the derivative of the quantized forward
        # pass, so a finite difference cannot agree. Reported, not counted.
        fd = dict(fd, passed=None, note="not comparable: FakeQuant ops use straight-through gradients by design")
    result["gradients"] = {
        "checked": checked,
        "missing": missing,
        "finite": bool(result["tf1_session"]["gradients_finite"] and result["tf2"].get("gradients_finite", True)),
        "path": "tf2_gradient_tape and tf1_session",
        "finite_difference": fd,
        "errors": sorted({e for e in (result["tf1_session"].get("error"), result["tf2"].get("error")) if e}),
        "note": ""
        if not missing
        else "these trainable variables get no gradient from the trainable outputs (they feed only non-differentiable "
        "ops or unused outputs); mark them non-trainable or choose other outputs",
    }
    result["max_abs_diff"] = max(
        (o["max_abs_diff"] for o in result["outputs"].values() if o["max_abs_diff"] is not None), default=0.0
    )
    outputs_ok = result["tf1_session"]["outputs_match"] and result["tf2"].get("outputs_match", False)
    gradients_ok = (
        not missing
        and result["gradients"]["finite"]
        and not result["gradients"]["errors"]
        and (fd is None and checked == 0 or fd is not None and fd.get("passed") is not False)
    )
    # Equal outputs prove nothing when the frozen graph itself gives NaN/Inf on the probes.
    floats = [np.asarray(v) for v in frozen_out.values() if np.issubdtype(np.asarray(v).dtype, np.floating)]
    non_finite = [v for v in floats if v.size and not np.all(np.isfinite(v))]
    all_non_finite = bool(floats) and all(v.size and not np.any(np.isfinite(v)) for v in floats)
    result["outputs_finite"] = not non_finite
    outputs_ok = outputs_ok and not all_non_finite
    result["status"], result["problems"] = summarize(result, outputs_ok, gradients_ok, checked, fd)
    if non_finite:
        result["problems"].insert(
            0,
            "the frozen graph's outputs are NaN or Inf on the probe inputs"
            + (
                " everywhere: nothing could be compared; pass --probe FILE.npz with inputs it computes on"
                if all_non_finite
                else " in places: those elements are compared only as NaN/Inf"
            ),
        )
    result["passed"] = result["status"] in ("verified", "verified_with_warnings")
    return result


def summarize(result: dict, outputs_ok: bool, gradients_ok: bool, checked: int, fd) -> tuple[str, list[str]]:
    """The status and one sentence per problem."""
    problems = []
    if not result["tf1_session"]["outputs_match"]:
        problems.append("the TF1 SavedModel's outputs differ from the frozen graph's")
    if not result["tf2"].get("outputs_match", False):
        problems.append(
            "the TF2 SavedModel's outputs differ from the frozen graph's"
            + (f" ({result['tf2']['error']})" if result["tf2"].get("error") else "")
        )
    if result["gradients"]["missing"]:
        problems.append(f"{len(result['gradients']['missing'])} of {checked} trainable variables get no gradient")
    if not result["gradients"]["finite"]:
        problems.append("some gradients are not finite (NaN or Inf)")
    for error in result["gradients"]["errors"]:
        problems.append(f"building gradients failed: {error}")
    if fd is not None and fd.get("passed") is None and fd.get("note"):
        problems.append(f"finite-difference check {fd['note']}")
    if fd is not None and fd.get("passed") is False:
        problems.append(
            f"the gradient disagrees with a finite difference of the loss (relative error "
            f"{fd['relative_error']:.2g} > {fd['tolerance']})"
        )
    if outputs_ok and gradients_ok:
        return ("verified_with_warnings" if fd is not None and fd.get("passed") is None else "verified"), problems
    return "failed", problems


def saved_model_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


# A dequantized graph computes in float what the quantized one computed on 8-bit activations: they differ by the
# activations' rounding. Accepted: a mean difference within 3% of the output's range and a correlation >= 0.99
# (measured on TensorFlow's quantized style-transfer graph: 2.1% on random probes, whose negative values the
# quantized input clamps and the float graph does not; 0.5-1% on 0-255 images).
QUANTIZED_MEAN_TOLERANCE = 0.03
QUANTIZED_MIN_CORRELATION = 0.99


def check_against_quantized(verification: dict, quantized_out: dict, float_out: dict) -> None:
    """Add the comparison of the dequantized (float) graph with the quantized original to `verification`."""
    report = {}
    for name, ref in quantized_out.items():
        ref64, got = np.asarray(ref, np.float64).ravel(), np.asarray(float_out[name], np.float64).ravel()
        if ref64.shape != got.shape or not ref64.size:
            report[name] = {"passed": False, "note": "shape differs"}
            continue
        span = float(np.ptp(ref64)) or 1.0
        mean = float(np.mean(np.abs(ref64 - got)))
        corr = float(np.corrcoef(ref64, got)[0, 1]) if np.std(ref64) > 0 and np.std(got) > 0 else 1.0
        report[name] = {
            "mean_abs_diff": mean,
            "max_abs_diff": float(np.max(np.abs(ref64 - got))),
            "range": span,
            "correlation": corr,
            "passed": mean <= QUANTIZED_MEAN_TOLERANCE * span and corr >= QUANTIZED_MIN_CORRELATION,
        }
    verification["quantized_reference"] = {
        "outputs": report,
        "tolerance": {
            "mean_abs_diff_per_range": QUANTIZED_MEAN_TOLERANCE,
            "min_correlation": QUANTIZED_MIN_CORRELATION,
        },
        "passed": all(r["passed"] for r in report.values()),
    }
    if not verification["quantized_reference"]["passed"]:
        verification.setdefault("problems", []).append(
            "the dequantized model differs from the quantized original beyond quantization tolerance"
        )
        verification["status"], verification["passed"] = "failed", False
