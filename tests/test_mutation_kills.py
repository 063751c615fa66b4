"""Tests written to kill survivors of the mutation pass (docs/mutation.md; the mutants are in tests/mutation_pass.py).

Each names the mutant it kills; each asserts behaviour the rest of the suite relied on without checking:

- O6: the result folder holds what the conversion wrote and nothing of the staging (no owner-pid marker);
- V5: a gradient that is wrong in size fails the finite-difference check (checked here on a small smooth function,
  without the cost of a conversion);
- C1: a verification's summary (what the tab's model list, jobs and history show) says passed only when the status
  is verified or verified_with_warnings;
- R7: a variable never takes the name of a node the graph keeps (the conversion would fail on a duplicate node);
- D6: a bias added with Add/AddV2 after a MatMul or Conv2D, with no freezer's read op, is found as a bias.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest

from tb_unfreeze import contract as C
from tb_unfreeze import output_dir

# -- O6: the owner-pid marker stays out of the result --------------------------------------------------------------


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replaced"])
def test_the_result_folder_holds_only_what_was_written(tmp_path, existing):
    out = tmp_path / "out"
    if existing:  # the replace path (atomic exchange, or the move-aside fallback)
        out.mkdir()
        (out / "old.txt").write_text("previous result")
    with output_dir.staged_dir(str(out)) as staging:
        with open(os.path.join(staging, "unfreeze.json"), "w") as f:
            f.write("{}")
        os.mkdir(os.path.join(staging, "saved_model"))
    assert sorted(os.listdir(out)) == ["saved_model", "unfreeze.json"]
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary folder beside it either


# -- V5: a wrong gradient fails the finite-difference check ---------------------------------------------------------


@pytest.fixture(scope="module")
def smooth_model():
    """A small smooth function (no kinks) of one variable: y = tanh(x W), with its loss and true gradient."""
    import tensorflow as tf

    from tb_unfreeze import verify as V

    rng = np.random.RandomState(0)
    w = tf.Variable(rng.randn(3, 2).astype(np.float32))
    kwargs = {"x": tf.constant(rng.randn(4, 3).astype(np.float32))}

    def fn(x):
        return {"y": tf.tanh(tf.matmul(x, w))}

    def loss_now(result, absolute=False):
        return V.loss_of(tf, [result["y"]], absolute=absolute)

    with tf.GradientTape() as tape:
        loss = loss_now(fn(**kwargs))
    (grad,) = tape.gradient(loss, [w])
    return tf, V, fn, kwargs, loss_now, w, grad


def _finite_difference(tf, V, fn, kwargs, loss_now, w, grad):
    extra = []
    if "loss_scale" in inspect.signature(V._finite_difference).parameters:  # since d87727f: computed by the caller
        extra = [float(loss_now(fn(**kwargs), absolute=True).numpy())]
    return V._finite_difference(tf, fn, kwargs, loss_now, [w], [grad], *extra)


def test_finite_difference_passes_the_true_gradient_and_fails_a_wrong_one(smooth_model):
    tf, V, fn, kwargs, loss_now, w, grad = smooth_model
    before = w.numpy().copy()
    right = _finite_difference(tf, V, fn, kwargs, loss_now, w, grad)
    assert right["passed"] is True, right
    wrong = _finite_difference(tf, V, fn, kwargs, loss_now, w, grad * 1.5)
    assert wrong["passed"] is False, wrong  # a steady 1.5x disagreement, not an inconclusive one
    assert wrong["relative_error"] > V.FD_RTOL
    assert 1.3 < wrong["analytic"] / wrong["numeric"] < 1.7
    np.testing.assert_array_equal(w.numpy(), before)  # the variable is restored


# -- C1: the verification summary's `passed` follows the status ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "passed"),
    [("verified", True), ("verified_with_warnings", True), ("not_verified", False), ("failed", False)],
)
def test_the_verification_summary_passes_only_a_verified_status(status, passed):
    record = {"status": status, "passed": passed, "performed": status != "not_verified", "requested": True}
    verification = C.Verification.from_json(record)
    summary = verification.summary_json()
    assert summary["passed"] is passed and summary["status"] == status


# -- R7: a variable never takes the name of a node the graph keeps -------------------------------------------------


def test_a_variable_named_like_a_kept_node_gets_another_name(tmp_path):
    """A weight const with a generic name (`Const`) is named from its consumer's scope (`dense/kernel`); when the
    graph already has a node of that name (here the output), the variable gets another (`dense/kernel_1`)."""
    import tensorflow as tf

    from tb_unfreeze import convert, inspect_model

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 4), name="x")
        w = tf.constant(np.random.RandomState(1).randn(4, 3).astype(np.float32), name="Const")
        tf.identity(tf.matmul(x, w, name="dense/MatMul"), name="dense/kernel")
    path = tmp_path / "named_like_its_weight.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    (candidate,) = inspect_model(str(path)).candidates
    assert (candidate.name, candidate.variable_name, candidate.recommended) == ("Const", "dense/kernel", True)
    result = convert(str(path), tmp_path / "out")
    assert result.verification.status == "verified", result.verification.problems
    assert [v.variable_name for v in result.variables] == ["dense/kernel_1"]
    model = tf.saved_model.load(str(tmp_path / "out" / C.SAVED_MODEL))
    assert sorted(v.name for v in model.variables) == ["dense/kernel_1:0"]


# -- D6: an Add after a MatMul/Conv2D is a bias --------------------------------------------------------------------


def test_a_bias_added_with_add_after_matmul_and_conv_is_a_recommended_bias(tmp_path):
    """`x @ W + b` and `conv(x, W) + b` written with Add/AddV2 (not BiasAdd) and no freezer's read op (as tf2onnx or
    a hand-built graph has them): the only evidence that `b` is a weight is its place after the linear op."""
    import tensorflow as tf

    from tb_unfreeze import inspect_model

    rng = np.random.RandomState(2)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 6, 6, 2), name="x")
        k = tf.constant(rng.randn(3, 3, 2, 4).astype(np.float32), name="conv_kernel")
        c = tf.add(
            tf.nn.conv2d(x, k, strides=1, padding="SAME", name="conv"),
            tf.constant(rng.randn(4).astype(np.float32), name="conv_bias"),
            name="conv_add",
        )
        flat = tf.reshape(c, (-1, 6 * 6 * 4))
        w = tf.constant(rng.randn(6 * 6 * 4, 3).astype(np.float32), name="dense_kernel")
        y = tf.raw_ops.AddV2(
            x=tf.matmul(flat, w, name="dense"),
            y=tf.constant(rng.randn(3).astype(np.float32), name="dense_bias"),
            name="dense_add",
        )
        tf.identity(y, name="y")
    path = tmp_path / "add_biases.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    found = {c.name: c for c in inspect_model(str(path)).candidates}
    for name in ("conv_bias", "dense_bias"):
        assert name in found, sorted(found)
        assert (found[name].role, found[name].recommended, found[name].trainable) == ("bias", True, True), found[name]


def test_every_mutant_of_the_pass_still_applies_to_the_code():
    """tests/mutation_pass.py's mutants are exact texts: a refactor or `ruff format` that moves one makes the pass
    unable to apply it; this says which, before a 2-hour run finds out."""
    import mutation_pass

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stale = []
    for mutant in mutation_pass.MUTANTS:
        with open(os.path.join(root, mutant.file), encoding="utf-8") as f:
            count = f.read().count(mutant.old)
        if count != 1:
            stale.append(f"{mutant.id} ({mutant.file}): its text occurs {count} times")
    assert not stale, "; ".join(stale)
