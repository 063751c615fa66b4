"""Verification at the cost of its work (issue 12): the frozen reference run without Grappler and with its large
weights fed, falling back on Grappler's defaults only when they give a clean run; the finite-difference check
evaluating only the steps it can resolve, restoring the variables exactly, and still failing a wrong gradient."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tb_unfreeze import convert  # noqa: E402
from tb_unfreeze import verify as V  # noqa: E402

BIG = 800  # an 800 x 800 float32 weight: 2.4 MB, above verify.LIFT_BYTES


def _frozen_mlp(path: str, big: int = BIG) -> None:
    """x[?, 8] -> Dense(big, tanh) -> Dense(big, tanh) -> Dense(3): TF1 ref variables, frozen."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    rng = np.random.default_rng(0)
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, 8], name="x")
        h = x
        for i, (n_in, n_out) in enumerate([(8, big), (big, big), (big, 3)]):
            w = v1.Variable((rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32), name=f"w{i}")
            b = v1.Variable((rng.standard_normal(n_out) * 0.1).astype(np.float32), name=f"b{i}")
            h = tf.matmul(h, w) + b
            h = tf.tanh(h) if i < 2 else tf.identity(h, name="y")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(sess, graph.as_graph_def(), ["y"])
    with open(path, "wb") as f:
        f.write(frozen.SerializeToString())


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlp")
    path = str(d / "mlp.pb")
    _frozen_mlp(path)
    out = d / "out"
    convert(path, out)
    with open(out / "unfreeze.json") as f:
        manifest = json.load(f)
    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
        graph_def.ParseFromString(f.read())
    return {
        "path": path,
        "graph_def": graph_def,
        "saved_model": str(out / "saved_model"),
        "signature": manifest["signature"],
        "verification": manifest["verification"],
    }


def _default_session_outputs(graph_def, feeds: dict, fetches: list[str]) -> list:
    graph = tf.Graph()
    with graph.as_default():
        tensors = tf.import_graph_def(graph_def, return_elements=[f"{n}:0" for n in feeds] + fetches, name="ref")
    with tf.compat.v1.Session(graph=graph) as sess:
        return sess.run(tensors[len(feeds) :], dict(zip(tensors, feeds.values())))


def test_reference_run_feeds_the_large_weights_and_computes_what_grappler_does(mlp):
    light, weights = V.lift_weights(tf, mlp["graph_def"])
    assert set(weights) == {"w1"}, "only the float constant above LIFT_BYTES is fed"
    assert {n.name: n.op for n in light.node}["w1"] == "Placeholder"
    assert weights["w1"].ctypes.data % 64 == 0, "aligned, so that the feed needs no copy"
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    got = V.run_frozen(mlp["graph_def"], {"x": x}, ["y:0"], {})["y:0"]
    (expected,) = _default_session_outputs(mlp["graph_def"], {"x": x}, ["y:0"])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert mlp["verification"]["status"] == "verified", mlp["verification"]


def test_frozen_runner_takes_grapplers_defaults_only_when_they_give_a_clean_run(mlp, monkeypatch):
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    runner = V.FrozenRunner(tf, mlp["graph_def"], ["x"], ["y:0"])
    lean = runner.sess
    try:
        # The lean Session computes NaN (as a graph that needs a Grappler rewrite would): the defaults are asked,
        # their clean result is returned and kept.
        monkeypatch.setattr(lean, "run", lambda fetches, *a, **k: [np.full((4, 3), np.nan, np.float32)])
        (out,) = runner.run({"x": x})
        assert np.isfinite(out).all() and runner.grappler is True and runner.sess is not lean
        np.testing.assert_allclose(
            out, _default_session_outputs(mlp["graph_def"], {"x": x}, ["y:0"])[0], rtol=1e-6, atol=1e-6
        )
    finally:
        runner.close()
    # When the defaults are no better, the lean Session stays and they are not asked again.
    runner = V.FrozenRunner(tf, mlp["graph_def"], ["x"], ["y:0"])
    lean = runner.sess
    try:
        monkeypatch.setattr(lean, "run", lambda fetches, *a, **k: [np.full((4, 3), np.nan, np.float32)])
        monkeypatch.setattr(V, "non_finite", lambda values: True)
        runner.run({"x": x})
        assert runner.grappler is False and runner.sess is lean
        asked = []
        monkeypatch.setattr(runner, "_with_defaults", lambda *a: asked.append(a))
        runner.run({"x": x})
        assert not asked
    finally:
        runner.close()


def _tf2_parts(mlp, probe: np.ndarray, scale: float = 1.0):
    loaded = tf.saved_model.load(mlp["saved_model"])
    fn = loaded.signatures["serving_default"]
    kwargs = {mlp["signature"]["inputs"]["x"]: tf.constant(probe)}
    trainable = [v for v in loaded.variables if v.trainable]

    def loss_now(result, absolute=False):
        return V.loss_of(tf, [result[k] for k in sorted(result)], absolute=absolute)

    with tf.GradientTape() as tape:
        result = fn(**kwargs)
        loss = loss_now(result)
    grads = [g * scale for g in tape.gradient(loss, trainable)]
    return loaded, fn, kwargs, trainable, grads, loss_now, float(loss_now(result, absolute=True))


MOVES = pytest.mark.parametrize(
    "compiled_from, in_place",
    [(0, True), (0, False), (1 << 40, False)],
    ids=["in_place_moves", "compiled_moves", "eager_moves"],
)


def _counting_in_place_moves(monkeypatch) -> list:
    calls = []
    apply = tf.raw_ops.ResourceApplyGradientDescent

    def counted(**k):
        calls.append(k["var"])
        return apply(**k)

    monkeypatch.setattr(tf.raw_ops, "ResourceApplyGradientDescent", counted)
    return calls


@MOVES
def test_finite_difference_passes_a_right_gradient_and_restores_the_variables(
    mlp, monkeypatch, compiled_from, in_place
):
    """Every variable moved by one path: in place and restored from the SavedModel's checkpoint, or copied and
    moved in one compiled call, or copied and moved eagerly."""
    monkeypatch.setattr(V, "MOVE_COMPILED_BYTES", compiled_from)
    calls = _counting_in_place_moves(monkeypatch)
    saved = V.SavedValues(tf, mlp["saved_model"]) if in_place else None
    probe = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    loaded, fn, kwargs, trainable, grads, loss_now, scale = _tf2_parts(mlp, probe)
    before = [v.numpy().copy() for v in trainable]
    fd = V._finite_difference(tf, fn, kwargs, loss_now, trainable, grads, scale, saved=saved)
    assert fd["passed"] is True, fd
    assert fd["tries"] <= len(V.FD_STEPS) and fd["variables"] == len(trainable)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, trainable)), "variables restored bit for bit"
    moved_in_place = {id(h) for h in calls}
    assert len(moved_in_place) == (len(trainable) if in_place else 0), "in place: each variable, else none"


@MOVES
def test_finite_difference_fails_a_gradient_one_and_a_half_times_too_large_whatever_the_moves(
    mlp, monkeypatch, compiled_from, in_place
):
    monkeypatch.setattr(V, "MOVE_COMPILED_BYTES", compiled_from)
    saved = V.SavedValues(tf, mlp["saved_model"]) if in_place else None
    probe = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    loaded, fn, kwargs, trainable, grads, loss_now, scale = _tf2_parts(mlp, probe, scale=1.5)
    fd = V._finite_difference(tf, fn, kwargs, loss_now, trainable, grads, scale, saved=saved)
    assert fd["passed"] is False, fd
    assert 1.3 < fd["analytic"] / fd["numeric"] < 1.7, fd


def test_finite_difference_evaluates_nothing_when_no_step_is_resolvable(mlp):
    probe = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    loaded, fn, kwargs, trainable, grads, loss_now, scale = _tf2_parts(mlp, probe)
    # a loss scale so large that no step's change could be told from round-off
    fd = V._finite_difference(tf, fn, kwargs, loss_now, trainable, grads, scale * 1e12)
    assert fd["passed"] is None and fd["note"].startswith("vacuous"), fd
    assert fd["tries"] == 0 and fd["estimates"] == [] and fd["relative_error"] is None, "round-off is not evaluated"


def test_finite_difference_order_starts_clear_of_round_off_then_goes_smaller_then_larger_each_once():
    steps = list(V.FD_STEPS)
    order = V._fd_order(steps, lambda eps: eps * 1e4 * V.FD_FIRST_MARGIN)  # the first margin reached at 1e-4
    assert order[0] == 1e-4 and sorted(order) == sorted(steps)
    assert order == [1e-4, 3e-5, 1e-5, 3e-4, 1e-3, 3e-3, 1e-2], "then smaller (curvature, kinks), then larger"
    assert V._fd_order([3e-3, 1e-2], lambda eps: 20 * eps) == [1e-2, 3e-3], "no step clear: the largest first"


def _grappler_off_now() -> bool:
    return bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False))


def test_both_user_paths_are_checked_without_grappler_and_the_setting_is_put_back(mlp, tmp_path, monkeypatch):
    seen = {}
    tf1, tf2 = V.run_saved_model_tf1, V.run_saved_model_tf2

    def spy_tf1(*a, **k):
        seen.setdefault("tf1", []).append(k.get("lean"))
        return tf1(*a, **k)

    def spy_tf2(*a, **k):
        seen.setdefault("tf2", []).append(_grappler_off_now())
        return tf2(*a, **k)

    monkeypatch.setattr(V, "run_saved_model_tf1", spy_tf1)
    monkeypatch.setattr(V, "run_saved_model_tf2", spy_tf2)
    before = _grappler_off_now()
    ver = convert(mlp["path"], tmp_path / "out").verification.details
    assert seen == {"tf1": [True], "tf2": [True]}, "one lean check per path, none repeated"
    assert ver["tf1_session"]["grappler"] is False and ver["tf2"]["grappler"] is False
    assert ver["status"] == "verified" and _grappler_off_now() == before


def test_a_lean_check_that_is_not_clean_is_repeated_with_grapplers_defaults(mlp, tmp_path, monkeypatch):
    """A graph that needs a Grappler rewrite to run (or to compute) is still checked: the lean TF1 check gives
    wrong outputs and the lean TF2 check fails to run here; both are repeated with the defaults, which pass."""
    tf1, tf2 = V.run_saved_model_tf1, V.run_saved_model_tf2
    calls = []

    def wrong_when_lean(*a, **k):
        calls.append(("tf1", k.get("lean")))
        report = tf1(*a, **k)
        if k.get("lean"):
            report["outputs"] = {t: v + 1.0 for t, v in report["outputs"].items()}
        return report

    def fails_when_lean(*a, **k):
        calls.append(("tf2", _grappler_off_now()))
        if _grappler_off_now():
            raise tf.errors.InternalError(None, None, "needs a rewrite")
        return tf2(*a, **k)

    monkeypatch.setattr(V, "run_saved_model_tf1", wrong_when_lean)
    monkeypatch.setattr(V, "run_saved_model_tf2", fails_when_lean)
    ver = convert(mlp["path"], tmp_path / "out").verification.details
    assert calls == [("tf1", True), ("tf1", False), ("tf2", True), ("tf2", False)]
    assert ver["tf1_session"]["grappler"] is True and ver["tf2"]["grappler"] is True
    assert ver["status"] == "verified", ver["problems"]


_MAPPED_PROBE = """
import ctypes
import numpy as np
from tb_unfreeze.tensorflow_env import large_allocations_mapped

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mapped(nbytes):
    before = libc.mallinfo2().hblkhd
    block = np.ones(nbytes, np.uint8)
    return libc.mallinfo2().hblkhd - before >= nbytes

x = np.ones(30 << 20, np.uint8)
del x  # glibc raises its mmap threshold to this block's size when it is freed
print(mapped(2 << 20))
with large_allocations_mapped():
    print(mapped(2 << 20))
print(mapped(2 << 20), mapped(40 << 20))
"""


def test_large_allocations_are_mapped_and_returned_within_and_as_the_allocator_would_after():
    """glibc keeps freed blocks below its (self-raised) mmap threshold in its heaps; within the context a 2 MB block
    is a mapping of its own (returned when freed); after it, the threshold is the 32 MB glibc would reach itself."""
    out = subprocess.run([sys.executable, "-c", _MAPPED_PROBE], capture_output=True, text=True, timeout=120)
    assert out.stdout.split("\n")[:3] == ["False", "True", "False True"], out.stdout + out.stderr


def test_a_big_models_conversion_maps_its_large_allocations(mlp, tmp_path, monkeypatch):
    from tb_unfreeze import conversion as C  # noqa: PLC0415

    entered = []

    class Spy(C.large_allocations_mapped):
        def __enter__(self):
            entered.append(self.threshold)
            return super().__enter__()

    monkeypatch.setattr(C, "large_allocations_mapped", Spy)
    convert(mlp["path"], tmp_path / "small")
    assert entered == [], "below MAPPED_FROM_BYTES: the allocator is left alone"
    monkeypatch.setattr(C, "MAPPED_FROM_BYTES", 1)
    assert convert(mlp["path"], tmp_path / "big").verification.status == "verified"
    assert entered == [1 << 20]
