"""The fine-tuning story at a small size: frozen accuracy X, fine-tuned accuracy Y, and the way back to a `.pb`."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the demo's data ships with scikit-learn (pip install scikit-learn)")

from tb_unfreeze import errors, inspect_model  # noqa: E402
from tb_unfreeze.demo import CONVNET_FILE  # noqa: E402
from tb_unfreeze.finetune import run_finetune, shift_images  # noqa: E402
from tb_unfreeze.refreeze import refreeze  # noqa: E402

EPOCHS = 3


@pytest.fixture(scope="module")
def story(tmp_path_factory) -> dict:
    logdir = str(tmp_path_factory.mktemp("finetune") / "out")
    return run_finetune(logdir=logdir, epochs=EPOCHS, shift="invert", verbose=False)


def _consts(path: str) -> dict[str, np.ndarray]:
    """Former-variable values of a frozen graph, keyed by role and order of appearance."""
    import tensorflow as tf

    ins = inspect_model(path)
    nodes = {n.name: n for n in ins.graph.graph_def.node}
    values, seen = {}, {}
    for c in ins.candidates:
        k = seen[c.role] = seen.get(c.role, -1) + 1
        values[f"{c.role}/{k}"] = tf.make_ndarray(nodes[c.name].attr["value"].tensor)
    return values


def test_fine_tuning_beats_the_frozen_model_by_a_clear_margin(story):
    x, y = story["accuracy_frozen"], story["accuracy_finetuned"]
    print(f"X = {x:.3f}, Y = {y:.3f}")
    assert y - x >= 0.25
    assert y >= 0.8
    assert len(story["history"]["loss"]) == EPOCHS
    assert story["history"]["loss"][-1] < story["history"]["loss"][0]


def test_refrozen_graph_reproduces_the_fine_tuned_model(story):
    check = story["refreeze"]["verification"]
    assert check["performed"] and check["passed"]
    for output in check["outputs"].values():
        assert output["max_abs_diff"] <= output["tolerance"]  # 1e-5 x max(1, |output|)
    # And the Keras model that was trained, on the real test images, not only the SavedModel on probes.
    assert story["refrozen_vs_keras_max_abs_diff"] <= story["refrozen_vs_keras_tolerance"]


def test_refrozen_graph_keeps_the_original_interface_and_inspects_cleanly(story):
    original = inspect_model(story["frozen"]).to_dict()
    refrozen = inspect_model(story["refrozen"]).to_dict()
    assert refrozen["inputs"] == original["inputs"]
    assert refrozen["outputs"] == original["outputs"]
    assert sorted(c["role"] for c in refrozen["candidates"]) == sorted(c["role"] for c in original["candidates"])
    assert refrozen["unregistered_ops"] in (None, [])
    # Former variables come back as constants named after the variables, which reads better than `.../resource`.
    assert all(not c["name"].endswith("/resource") for c in refrozen["candidates"])


def test_training_moved_the_weights_but_not_the_batch_norm_statistics(story):
    before, after = _consts(story["frozen"]), _consts(story["refrozen"])
    assert before.keys() == after.keys()
    for key in before:
        if key.startswith(("bn_moving_mean", "bn_moving_variance")):
            np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    assert any(not np.allclose(before[k], after[k]) for k in before if k.startswith("kernel"))


def test_loss_and_accuracy_scalars_sit_beside_the_graphs(story):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    root = story["scalars"]
    assert root.endswith(os.path.join("unfreeze", "finetune"))
    curves = {}
    for run in ("train", "test"):
        acc = EventAccumulator(os.path.join(root, run), size_guidance={"tensors": 0})
        acc.Reload()
        for tag in ("loss", "accuracy"):
            events = acc.Tensors(tag)
            assert [e.step for e in events] == list(range(EPOCHS + 1)), (run, tag)
            curves[run, tag] = [float(make_ndarray(e.tensor_proto)) for e in events]
    # Step 0 is the frozen model; the last step is the fine-tuned one.
    assert curves["test", "accuracy"][0] == pytest.approx(story["accuracy_frozen"], abs=1e-6)
    assert curves["test", "accuracy"][-1] == pytest.approx(story["accuracy_finetuned"], abs=1e-6)


def test_refreeze_refuses_to_overwrite_the_source_or_write_inside_the_conversion(story):
    with pytest.raises(errors.OutputDirError, match="converted from"):
        refreeze(story["converted"], story["frozen"])
    with pytest.raises(errors.OutputDirError, match="inside the conversion"):
        refreeze(story["converted"], os.path.join(story["converted"], "x.pb"))
    assert os.path.basename(story["frozen"]) == CONVNET_FILE and os.path.getsize(story["frozen"]) > 0


def test_refreeze_accepts_the_saved_model_folder_itself(story, tmp_path):
    out = tmp_path / "again.pb"
    report = refreeze(os.path.join(story["finetuned_saved_model"], "saved_model"), str(out))
    assert report["verification"]["passed"]
    with open(out, "rb") as a, open(story["refrozen"], "rb") as b:
        assert a.read() == b.read()


def test_refreeze_of_something_else_is_a_user_error(tmp_path):
    with pytest.raises(errors.NotFoundError, match="does not exist"):
        refreeze(str(tmp_path / "missing"), str(tmp_path / "x.pb"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(errors.NotFoundError, match="holds no SavedModel"):
        refreeze(str(tmp_path / "empty"), str(tmp_path / "x.pb"))


def test_bad_story_arguments_are_user_errors(tmp_path):
    with pytest.raises(errors.UserError, match="unknown shift"):
        run_finetune(logdir=str(tmp_path), shift="blur")
    with pytest.raises(errors.UserError, match="epochs"):
        run_finetune(logdir=str(tmp_path), epochs=0)
    assert not os.listdir(tmp_path)


def test_shifts_are_real_distribution_shifts():
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(shift_images(x, "invert"), 1.0 - x)
    np.testing.assert_array_equal(shift_images(shift_images(x, "rotate"), "rotate"), x[:, ::-1, ::-1, :])


def test_batch_norm_statistics_train_only_when_asked(story, tmp_path):
    import json
    import shutil

    logdir = tmp_path / "out"
    logdir.mkdir()
    shutil.copy(story["frozen"], logdir / CONVNET_FILE)  # reuse the demo model instead of training another
    report = run_finetune(
        logdir=str(logdir), epochs=1, train_size=256, batch_norm_trainable=True, log=False, verbose=False
    )
    with open(os.path.join(report["converted"], "unfreeze.json")) as f:
        flags = {v["role"]: v["trainable"] for v in json.load(f)["variables"]}
    assert flags["bn_moving_mean"] and flags["bn_moving_variance"]
    before, after = _consts(story["frozen"]), _consts(report["refrozen"])
    assert not np.array_equal(before["bn_moving_mean/0"], after["bn_moving_mean/0"])
