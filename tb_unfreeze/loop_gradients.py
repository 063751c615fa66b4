"""Gradients through a graph with lowered while loops, for TensorFlow 2 (GradientTape, Keras).

TensorFlow 2 differentiates a function by walking its ops, and an imported lowered loop has no WhileContext, so
that walk fails. TF1's gradient code works once the contexts are rebuilt (`control_flow.rebuild_contexts`). So
the gradient is built once, in TF1 graph mode, as a graph of its own (it recomputes the forward loop and keeps
what the backward loop needs on TensorFlow's stacks), and TF2 gets a function whose gradient is that graph
(`tf.custom_gradient`): forward = the frozen graph, backward = the TF1 gradient graph, both plain graphs that
run without any Python context.
"""

from __future__ import annotations

import contextlib
import dataclasses

from tb_unfreeze import control_flow as CF


@contextlib.contextmanager
def v1_control_flow():
    """TF1 control flow while gradients are built: TensorArrayV3 gradients take the v2 path otherwise and fail.
    Process-wide in TensorFlow, so restored afterwards."""
    from tensorflow.python.ops import control_flow_util  # noqa: PLC0415

    before = control_flow_util.ENABLE_CONTROL_FLOW_V2
    control_flow_util.ENABLE_CONTROL_FLOW_V2 = False
    try:
        yield
    finally:
        control_flow_util.ENABLE_CONTROL_FLOW_V2 = before


@dataclasses.dataclass
class GradientGraph:
    """A GraphDef computing the outputs and, given upstream gradients, the gradients of inputs and weights."""

    graph_def: object
    inputs: list[str]  # tensor names fed: the model's inputs, then one placeholder per weight
    outputs: list[str]  # the model's outputs
    upstream: list[str | None]  # per output: the placeholder of its upstream gradient (None: not float)
    gradients: list[str | None]  # per input: the gradient tensor (None: not float, no gradient)


def build_gradient_graph(
    tf,
    graph_def,
    inputs: list[str],
    weights: list[tuple[str, object, list[int]]],
    outputs: list[str],
    trains: list[bool] | None = None,
) -> GradientGraph:
    """`weights`: (tensor name in graph_def that a weight replaces, dtype, shape). The returned graph feeds the
    model's `inputs` by their tensor names and each weight through a placeholder of its own. Outputs whose
    `trains` flag is False (computed through a loop whose gradient cannot be rebuilt) take no upstream gradient.
    Only the loops that `control_flow.unsupported_loops` accepts get their contexts rebuilt."""
    trains = trains if trains is not None else [True] * len(outputs)
    work = tf.compat.v1.GraphDef()
    work.CopyFrom(graph_def)
    loops = CF.find_loops(work)
    CF.complete_loops(work, loops)
    graph = tf.Graph()
    prefix = "model/"
    with graph.as_default():
        holders = [
            tf.compat.v1.placeholder(tf.as_dtype(dtype), shape, name=f"tb_unfreeze_weight_{i}")
            for i, (_, dtype, shape) in enumerate(weights)
        ]
        tf.import_graph_def(
            work, input_map={name: h for (name, _, _), h in zip(weights, holders)}, name=prefix.rstrip("/")
        )
        CF.rebuild_contexts(tf, graph, CF.supported(loops), prefix=prefix)
        xs = [graph.get_tensor_by_name(prefix + n) for n in inputs] + holders
        ys = [graph.get_tensor_by_name(prefix + n) for n in outputs]
        upstream = [
            tf.compat.v1.placeholder(y.dtype, y.shape, name=f"tb_unfreeze_upstream_{i}")
            if y.dtype.is_floating and t
            else None
            for i, (y, t) in enumerate(zip(ys, trains))
        ]
        float_ys = [y for y, u in zip(ys, upstream) if u is not None]
        float_xs = [x for x in xs if x.dtype.is_floating]
        with v1_control_flow():
            grads = (
                tf.compat.v1.gradients(float_ys, float_xs, grad_ys=[u for u in upstream if u is not None])
                if float_ys
                else [None] * len(float_xs)
            )
        named = {}
        for x, g in zip(float_xs, grads):
            if g is None:
                g = tf.zeros_like(x)
            elif isinstance(g, tf.IndexedSlices):
                g = tf.convert_to_tensor(g)
            named[x.name] = tf.identity(g, name=f"tb_unfreeze_gradient_{len(named)}").name
    return GradientGraph(
        graph_def=graph.as_graph_def(),
        inputs=[x.name for x in xs],
        outputs=[y.name for y in ys],
        upstream=[u.name if u is not None else None for u in upstream],
        gradients=[named.get(x.name) for x in xs],
    )


def differentiable_function(tf, gradient_graph: GradientGraph):
    """f(*inputs, *weights) -> list of outputs, differentiable in TF2 through the TF1 gradient graph."""
    gg = gradient_graph

    def load():
        tf.compat.v1.import_graph_def(gg.graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(load, [])
    graph = wrapped.graph
    feeds = [graph.get_tensor_by_name(n) for n in gg.inputs]
    forward = wrapped.prune(feeds, [graph.get_tensor_by_name(n) for n in gg.outputs])
    upstream_feeds = [graph.get_tensor_by_name(n) for n in gg.upstream if n is not None]
    fetches = [graph.get_tensor_by_name(n) for n in gg.gradients if n is not None]
    backward = wrapped.prune(feeds + upstream_feeds, fetches) if fetches else None
    float_out = [n is not None for n in gg.upstream]
    has_grad = [n is not None for n in gg.gradients]

    from tensorflow.python.eager import record  # noqa: PLC0415

    @tf.custom_gradient
    def call(*args):
        with record.stop_recording():  # the tape must not differentiate the forward graph itself (it cannot)
            ys = forward(*args)

        def grad(*dys):
            if backward is None:
                return [None] * len(args)
            ups = [
                dy if dy is not None else tf.zeros_like(y) for y, dy, is_float in zip(ys, dys, float_out) if is_float
            ]
            ups = [tf.cast(u, y.dtype) for u, y in zip(ups, [y for y, f in zip(ys, float_out) if f])]
            with record.stop_recording():
                got = iter(backward(*args, *ups))
            return [next(got) if h else None for h in has_grad]

        return ys, grad

    call.forward = forward
    return call
