"""Fully quantized graphs (issue 9, item 7): described in one line, and rewritten into a float graph (float Conv2D on
float Const weights holding the dequantized values) that computes what the quantized graph did.

On the real `tf_android_stylize_quantized.pb` (TensorFlow's Android style-transfer demo, eight-bit
`quantize_graph` output: 18 QuantizedConv2D on quint8 weights, QuantizeV2/Requantize/Dequantize around them).

Tolerances, and why:
- weights: equal to TensorFlow's own `Dequantize` (MIN_FIRST, the formula the quantized kernels use) within
  float32 rounding (TensorFlow computes in float32, the rewrite in float64: 4 float32 ulps of the range);
- each convolution on its own (the float conv fed the very tensor the quantized conv quantized): the quantized conv
  rounds its input to 8 bits (at most half a step `s_in/2` per element, so at most `s_in/2 * sum|w|` per output)
  and its output to 8 bits (one output step `s_out`, rounding and RequantizationRange's range); the difference
  must stay within that bound;
- the whole network (18 convolutions, instance norms, a sigmoid scaled to 0..255): the rewritten graph no longer
  rounds activations, so the difference is the 8-bit noise accumulated through the layers. The bound is the
  quantized graph's own sensitivity to that noise: its output moves by more when its input moves by less than
  half an 8-bit step (uniform noise in +-0.5/255) than the rewritten graph differs from it. Checked on the mean
  absolute difference (<= the self-noise) and the correlation of the outputs (>= 0.995).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tb_unfreeze import inspect_model  # noqa: E402
from tb_unfreeze.quantized import dequantize_graph, dequantized_values, describe_quantization  # noqa: E402
from tb_unfreeze.verify import run_frozen  # noqa: E402

MODEL = "tf_android_stylize_quantized.pb"
OUTPUT = "strided_slice:0"  # the float image (0..255) before the final Cast to uint8 (`output`)


@pytest.fixture(scope="module")
def graphs(real_models_dir):
    path = os.path.join(real_models_dir, "real", MODEL)
    if not os.path.isfile(path):
        pytest.skip(f"{MODEL} is not in {real_models_dir}/real")
    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    original = graph_def.SerializeToString()
    started = time.perf_counter()
    rewritten = dequantize_graph(graph_def)
    elapsed = time.perf_counter() - started
    assert graph_def.SerializeToString() == original  # the input is left alone
    return graph_def, rewritten, elapsed


def _feeds(size: int, style: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    style_num = np.zeros(26, np.float32)
    style_num[style] = 1.0
    return {"input": rng.uniform(0.0, 1.0, (1, size, size, 3)).astype(np.float32), "style_num": style_num}


def test_describe_says_what_is_quantized(graphs, real_model):
    graph_def, rewritten, _ = graphs
    line = describe_quantization(graph_def)
    assert line is not None and "\n" not in line
    assert line.startswith("fully quantized graph: 18 QuantizedConv2D (with 11 QuantizedRelu, 36 QuantizedReshape)")
    assert "18 quint8 weight tensor(s)" in line and "dequantize_graph" in line
    assert describe_quantization(rewritten) is None  # nothing quantized left
    # Weights stored as quint8 and Dequantized into float ops (OpenCV's face detector) are not "fully quantized".
    opencv = tf.compat.v1.GraphDef()
    with open(real_model("opencv_face_detector_uint8.pb"), "rb") as f:
        opencv.ParseFromString(f.read())
    assert describe_quantization(opencv) is None


def test_rewritten_graph_is_float_conv2d_on_float_consts(graphs, tmp_path):
    graph_def, rewritten, elapsed = graphs
    ops = {n.op for n in rewritten.node}
    assert not {
        o
        for o in ops
        if o.startswith("Quantized") or o in ("QuantizeV2", "Requantize", "Dequantize", "RequantizationRange")
    }
    nodes = {n.name: n for n in rewritten.node}
    convs = [n for n in rewritten.node if n.op == "Conv2D"]
    assert len(convs) == 18
    for conv in convs:
        weight = nodes[conv.input[1]]
        assert weight.op == "Const" and weight.attr["value"].tensor.dtype == tf.float32.as_datatype_enum
        assert conv.attr["T"].type == tf.float32.as_datatype_enum
    # Named as in the float model the quantizer started from: conv1/convolution reads conv1/weights.
    assert nodes["transformer/contract/conv1/convolution"].input[1] == "transformer/contract/conv1/weights"
    assert elapsed < 5.0
    # The candidates of the float graph are those weights, as float conv kernels.
    path = tmp_path / "float.pb"
    path.write_bytes(rewritten.SerializeToString())
    kernels = {c.name for c in inspect_model(str(path)).candidates if c.recommended}
    assert {n.input[1] for n in convs} <= kernels


def test_weights_equal_tensorflows_dequantize(graphs):
    graph_def, rewritten, _ = graphs
    nodes = {n.name: n for n in graph_def.node}
    float_nodes = {n.name: n for n in rewritten.node}
    checked = 0
    for node in graph_def.node:
        if node.op != "QuantizedConv2D":
            continue
        q = tf.make_ndarray(nodes[node.input[1]].attr["value"].tensor)
        low = float(tf.make_ndarray(nodes[node.input[4]].attr["value"].tensor))
        high = float(tf.make_ndarray(nodes[node.input[5]].attr["value"].tensor))
        expected = tf.quantization.dequantize(tf.constant(q, tf.quint8), low, high, mode="MIN_FIRST").numpy()
        name = node.input[1].replace("_quint8_const", "")
        got = tf.make_ndarray(float_nodes[name].attr["value"].tensor)
        # TensorFlow computes in float32, this rewrite in float64 then rounds: a few float32 ulps of the range.
        np.testing.assert_allclose(got, expected, rtol=0, atol=4 * np.finfo(np.float32).eps * max(abs(low), abs(high)))
        np.testing.assert_array_equal(got, dequantized_values(q, low, high))
        checked += 1
    assert checked == 18


def test_each_convolution_within_its_8bit_rounding_bound(graphs):
    graph_def, rewritten, _ = graphs
    feeds = _feeds(64, 3)
    convs = [n for n in rewritten.node if n.op == "Conv2D"]
    float_nodes = {n.name: n for n in rewritten.node}
    inputs = [f"{c.input[0]}:0" for c in convs]
    outputs = [f"{c.name}:0" for c in convs]
    quantized = run_frozen(graph_def, feeds, inputs + outputs, {})
    # The float graph, each conv fed the very tensor the quantized conv received (a Session feeds any tensor).
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(rewritten, name="f")
    with tf.compat.v1.Session(graph=graph) as sess:
        got = sess.run([f"f/{o}" for o in outputs], {f"f/{i}": quantized[i] for i in inputs})
    for conv, inp, out, value in zip(convs, inputs, outputs, got):
        x, ref = quantized[inp], quantized[out]
        w = tf.make_ndarray(float_nodes[conv.input[1]].attr["value"].tensor)
        in_range = max(float(x.max()) - min(float(x.min()), 0.0), 0.01 * max(1.0, float(np.abs(x).max())))
        s_in, s_out = in_range / 255.0, (float(ref.max()) - float(ref.min())) / 255.0
        bound = s_in / 2 * float(np.abs(w).sum(axis=(0, 1, 2)).max()) + s_out
        diff = float(np.abs(value - ref).max())
        assert diff <= bound, f"{conv.name}: {diff} > {bound}"


@pytest.mark.parametrize("size,style", [(64, 0), (96, 7)])
def test_outputs_match_within_quantization_noise(graphs, size, style):
    graph_def, rewritten, _ = graphs
    feeds = _feeds(size, style)
    quantized = run_frozen(graph_def, feeds, [OUTPUT, "output:0"], {})
    rewritten_out = run_frozen(rewritten, feeds, [OUTPUT, "output:0"], {})
    a, b = quantized[OUTPUT].astype(np.float64), rewritten_out[OUTPUT].astype(np.float64)
    assert a.shape == b.shape == (size, size, 3)
    assert rewritten_out["output:0"].dtype == quantized["output:0"].dtype == np.uint8
    noise = np.random.default_rng(1).uniform(-0.5 / 255, 0.5 / 255, feeds["input"].shape).astype(np.float32)
    jittered = run_frozen(graph_def, {**feeds, "input": feeds["input"] + noise}, [OUTPUT], {})[OUTPUT]
    self_noise = float(np.abs(a - jittered).mean())
    diff = float(np.abs(a - b).mean())
    assert diff <= self_noise, (diff, self_noise)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= 0.995


def test_built_quantized_matmul_and_bias_add_become_float(tmp_path):
    """QuantizedMatMul -> QuantizedBiasAdd -> Requantize -> QuantizedRelu -> Dequantize, built with raw ops the way
    quantize_graph lays them out, rewritten into MatMul -> BiasAdd -> Relu on float Consts."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (6, 4)).astype(np.float32)
    b = rng.normal(0, 0.2, (4,)).astype(np.float32)

    def quantize(value):
        low, high = float(min(value.min(), 0)), float(max(value.max(), 0))
        q, qlow, qhigh = tf.raw_ops.QuantizeV2(
            input=value, min_range=low, max_range=high, T=tf.quint8, mode="MIN_FIRST"
        )
        return q.numpy(), float(qlow), float(qhigh)

    qw, wlow, whigh = quantize(w)
    qb, blow, bhigh = quantize(b)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 6), name="x")
        flat = tf.reshape(x, [-1])
        qx = tf.raw_ops.QuantizeV2(
            input=x, min_range=tf.reduce_min(flat), max_range=tf.reduce_max(flat), T=tf.quint8, mode="MIN_FIRST"
        )
        wq = tf.constant(qw, tf.quint8, name="dense/weights_quint8_const")
        bq = tf.constant(qb, tf.quint8, name="dense/biases_quint8_const")
        mm = tf.raw_ops.QuantizedMatMul(
            a=qx.output,
            b=wq,
            min_a=qx.output_min,
            max_a=qx.output_max,
            min_b=wlow,
            max_b=whigh,
            Toutput=tf.qint32,
            name="dense/MatMul_eightbit",
        )
        rr = tf.raw_ops.RequantizationRange(input=mm.out, input_min=mm.min_out, input_max=mm.max_out)
        rq = tf.raw_ops.Requantize(
            input=mm.out,
            input_min=mm.min_out,
            input_max=mm.max_out,
            requested_output_min=rr.output_min,
            requested_output_max=rr.output_max,
            out_type=tf.quint8,
        )
        ba = tf.raw_ops.QuantizedBiasAdd(
            input=rq.output,
            bias=bq,
            min_input=rq.output_min,
            max_input=rq.output_max,
            min_bias=blow,
            max_bias=bhigh,
            out_type=tf.qint32,
        )
        rr2 = tf.raw_ops.RequantizationRange(input=ba.output, input_min=ba.min_out, input_max=ba.max_out)
        rq2 = tf.raw_ops.Requantize(
            input=ba.output,
            input_min=ba.min_out,
            input_max=ba.max_out,
            requested_output_min=rr2.output_min,
            requested_output_max=rr2.output_max,
            out_type=tf.quint8,
        )
        relu = tf.raw_ops.QuantizedRelu(
            features=rq2.output, min_features=rq2.output_min, max_features=rq2.output_max, out_type=tf.quint8
        )
        tf.raw_ops.Dequantize(
            input=relu.activations,
            min_range=relu.min_activations,
            max_range=relu.max_activations,
            mode="MIN_FIRST",
            name="dense/Relu",
        )
    graph_def = graph.as_graph_def()
    assert "QuantizedMatMul" in describe_quantization(graph_def)
    rewritten = dequantize_graph(graph_def)
    ops = [n.op for n in rewritten.node]
    assert {"MatMul", "BiasAdd", "Relu"} <= set(ops) and not [o for o in ops if "uantiz" in o]
    nodes = {n.name: n for n in rewritten.node}
    assert nodes["dense/Relu"].op == "Relu"  # the Dequantize's name now names the float op
    matmul = next(n for n in rewritten.node if n.op == "MatMul")
    assert nodes[matmul.input[1]].name == "dense/weights" and nodes[matmul.input[1]].op == "Const"
    np.testing.assert_allclose(
        tf.make_ndarray(nodes["dense/weights"].attr["value"].tensor), w, atol=(whigh - wlow) / 255
    )  # within one 8-bit step of the original float weights
    feeds = {"x": rng.normal(0, 1, (5, 6)).astype(np.float32)}
    a = run_frozen(graph_def, feeds, ["dense/Relu:0"], {})["dense/Relu:0"]
    b_out = run_frozen(rewritten, feeds, ["dense/Relu:0"], {})["dense/Relu:0"]
    exact = np.maximum(feeds["x"] @ w + b, 0)
    # Three 8-bit roundings (input, matmul output, bias-add output), each at most a step of its range.
    span = float(exact.max()) - float(min(exact.min(), 0))
    bound = 3 * span / 255 + np.abs(feeds["x"]).sum(1).max() * (whigh - wlow) / 255
    assert np.abs(a - b_out).max() <= bound
    w_float = tf.make_ndarray(nodes["dense/weights"].attr["value"].tensor)
    b_float = tf.make_ndarray(nodes["dense/biases"].attr["value"].tensor)
    # The float graph is plain float math on the float weights.
    np.testing.assert_allclose(b_out, np.maximum(feeds["x"] @ w_float + b_float, 0), rtol=1e-5, atol=1e-5)
