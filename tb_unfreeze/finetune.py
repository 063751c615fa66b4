"""The fine-tuning story: a frozen model fails on a shifted task, is unfrozen, fine-tuned with Keras, and re-frozen.

Every step goes through the public API (`convert`, `tb_unfreeze.keras.UnfrozenLayer`, `refreeze`, `log_graphs`);
this module only supplies the data, the training loop settings and the scalars TensorBoard shows.
"""

from __future__ import annotations

import os
import time

import numpy as np

from tb_unfreeze import demo, errors
from tb_unfreeze.tensorflow_env import import_tensorflow

SHIFTS = ("invert", "rotate")
_SHIFTED = {"invert": "inverted", "rotate": "rotated"}
FINETUNE_RUNS = os.path.join("unfreeze", "finetune")  # scalars: <logdir>/unfreeze/finetune/{train,test}
WORK_DIR = "finetune"  # conversions: <logdir>/finetune/...
MODEL_ID = "digits_convnet"
FINETUNED_ID = "digits_convnet_finetuned"


def shift_images(x: np.ndarray, shift: str) -> np.ndarray:
    """The shifted task: `invert` (white digits on black become black on white) or `rotate` (a quarter turn)."""
    if shift == "invert":
        return (1.0 - x).astype(np.float32)
    if shift == "rotate":
        return np.ascontiguousarray(np.rot90(x, k=1, axes=(1, 2)), dtype=np.float32)
    raise errors.UserError(f"unknown shift '{shift}'; choose one of: {', '.join(SHIFTS)}.")


def frozen_metrics(frozen_pb: str, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Loss (cross-entropy) and accuracy of a frozen classifier graph (one data input, one probability output),
    run as-is in a TF1 Session."""
    from tb_unfreeze import inspect_model  # noqa: PLC0415
    from tb_unfreeze.verify import run_frozen  # noqa: PLC0415

    ins = inspect_model(frozen_pb)
    data = [i for i in ins.inputs if i.kind == "data"]
    if len(data) != 1 or len(ins.outputs) != 1:
        raise errors.UserError(f"{frozen_pb} is not a classifier with one input and one output; cannot score it.")
    defaults = {i.name: i.default for i in ins.inputs if i.default is not None and i.kind != "unused"}
    fetch = ins.outputs[0].tensor
    graph_def = _tf_graph_def(ins.graph.graph_def.SerializeToString())  # TensorFlow wants its own proto class
    probabilities = run_frozen(graph_def, {data[0].name: x}, [fetch], defaults)[fetch]
    picked = np.clip(probabilities[np.arange(len(y)), y], 1e-7, 1.0)
    return {"loss": float(-np.mean(np.log(picked))), "accuracy": float(np.mean(np.argmax(probabilities, -1) == y))}


def _single_output(result):
    # A signature returns a dict keyed by output; the digits model has exactly one.
    if isinstance(result, dict):
        if len(result) != 1:
            raise errors.UserError(f"the model has {len(result)} outputs; fine-tune it with your own Keras head.")
        return next(iter(result.values()))
    return result


def build_model(saved_model_dir: str, input_shape=(8, 8, 1), learning_rate: float = 1e-3, optimizer: str = "adam"):
    """A Keras model whose only layer is the converted SavedModel, compiled for sparse labels on probabilities.

    Call inside `strategy.scope()` to train it distributed: the layer's variables are then created by the strategy.
    """
    import keras  # noqa: PLC0415

    from tb_unfreeze.keras import UnfrozenLayer  # noqa: PLC0415

    layer = UnfrozenLayer(saved_model_dir)
    inputs = keras.Input(input_shape, name="image")
    model = keras.Model(inputs, _single_output(layer(inputs)), name="finetuned")
    opt = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}[optimizer](learning_rate)
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, layer


def finetune_model(
    saved_model_dir: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    optimizer: str = "adam",
    strategy=None,
    shuffle: bool = True,
    seed: int = demo.SEED,
    callbacks=(),
    validation_data=None,
):
    """Fine-tune a converted SavedModel with `model.fit`; returns (model, layer, history).

    With a `tf.distribute` strategy, the model is built in its scope, so the same code trains on several devices
    (MirroredStrategy) or several machines (MultiWorkerMirroredStrategy); `batch_size` is the global batch.
    """
    import contextlib  # noqa: PLC0415

    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        model, layer = build_model(saved_model_dir, x.shape[1:], learning_rate, optimizer)
    history = model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=shuffle,
        verbose=0,
        callbacks=list(callbacks),
        validation_data=validation_data,
    )
    return model, layer, history


def _scalar_callback(logdir: str, before: dict):
    """Write loss and accuracy per epoch with tf.summary: runs `train` and `test`; step 0 is the frozen model."""
    import keras  # noqa: PLC0415

    tf = import_tensorflow()

    root = os.path.join(logdir, FINETUNE_RUNS)

    class Scalars(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.writers = {run: tf.summary.create_file_writer(os.path.join(root, run)) for run in ("train", "test")}
            self._write(0, before)

        def _write(self, step: int, values: dict) -> None:
            for run, writer in self.writers.items():
                with writer.as_default():
                    for metric in ("loss", "accuracy"):
                        key = metric if run == "train" else f"val_{metric}"
                        if key in values:
                            tf.summary.scalar(metric, float(values[key]), step=step)
                writer.flush()

        def on_epoch_end(self, epoch, logs=None):
            self._write(epoch + 1, logs or {})

        def on_train_end(self, logs=None):
            for writer in self.writers.values():
                writer.close()

    return Scalars()


def _evaluate(model, x, y) -> tuple[float, float]:
    loss, accuracy = model.evaluate(x, y, batch_size=256, verbose=0)
    return float(loss), float(accuracy)


def _bn_statistics(frozen_pb: str) -> dict[str, bool]:
    from tb_unfreeze import inspect_model  # noqa: PLC0415

    roles = ("bn_moving_mean", "bn_moving_variance")
    return {c.name: True for c in inspect_model(frozen_pb).candidates if c.role in roles}


def run_finetune(
    logdir: str = "out",
    epochs: int = 5,
    shift: str = "invert",
    batch_norm_trainable: bool = False,
    *,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    train_size: int | None = None,
    seed: int = demo.SEED,
    log: bool = True,
    verbose: bool = True,
) -> dict:
    """Score the demo's frozen convnet on a shifted task (X), unfreeze and fine-tune it (Y), re-freeze it.

    Prepares the demo first when `logdir` lacks `digits_convnet.pb`. Writes into `logdir`: the conversion and the
    fine-tuned SavedModel under `finetune/`, the re-frozen `digits_convnet_finetuned.pb`, loss/accuracy scalars
    under `unfreeze/finetune/{train,test}` and (with `log`) the graphs for the Unfreeze tab. Batch-norm moving
    statistics stay constants-turned-non-trainable-variables unless `batch_norm_trainable` (then gradient descent
    moves them too; TensorFlow's inference-mode batch norm cannot recompute them). Returns a report dict with
    `accuracy_frozen` (X) and `accuracy_finetuned` (Y).
    """
    from tb_unfreeze import Selection, convert, log_graphs  # noqa: PLC0415
    from tb_unfreeze.refreeze import refreeze  # noqa: PLC0415

    if shift not in SHIFTS:
        raise errors.UserError(f"unknown shift '{shift}'; choose one of: {', '.join(SHIFTS)}.")
    if epochs < 1:
        raise errors.UserError(f"epochs must be at least 1 (got {epochs}).")
    started = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    frozen_pb = os.path.join(logdir, demo.CONVNET_FILE)
    if not os.path.isfile(frozen_pb):
        say(f"{frozen_pb} is missing: preparing the demo first")
        demo.prepare_demo(logdir)
    digits = demo.load_digits(seed)
    x_train, y_train = shift_images(digits.x_train, shift), digits.y_train
    x_test, y_test = shift_images(digits.x_test, shift), digits.y_test
    if train_size:
        x_train, y_train = x_train[:train_size], y_train[:train_size]

    train_before = frozen_metrics(frozen_pb, x_train, y_train)
    test_before = frozen_metrics(frozen_pb, x_test, y_test)
    accuracy_frozen = test_before["accuracy"]
    say(f"frozen model on {_SHIFTED[shift]} digits: accuracy X = {accuracy_frozen:.3f}")

    work = os.path.join(logdir, WORK_DIR)
    converted = os.path.join(work, MODEL_ID + "_unfrozen")
    selection = Selection(trainable=_bn_statistics(frozen_pb)) if batch_norm_trainable else None
    conversion = convert(frozen_pb, converted, selection=selection, replace=True)
    if log:
        log_graphs(logdir, demo.model_id_for(frozen_pb), frozen=frozen_pb, unfrozen=converted)

    before = {**train_before, **{f"val_{k}": v for k, v in test_before.items()}}
    model, layer, history = finetune_model(
        conversion.layout.saved_model,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        validation_data=(x_test, y_test),
        callbacks=[_scalar_callback(logdir, before)],
    )
    _, accuracy_finetuned = _evaluate(model, x_test, y_test)
    say(f"fine-tuned for {epochs} epochs: accuracy Y = {accuracy_finetuned:.3f}")

    finetuned = os.path.join(work, FINETUNED_ID)
    _save_finetuned(layer, finetuned)
    refrozen_pb = os.path.join(logdir, FINETUNED_ID + ".pb")
    refrozen = refreeze(finetuned, refrozen_pb)
    # The re-frozen graph must give what the fine-tuned Keras model gives, not only what its SavedModel gives.
    keras_out = np.asarray(model.predict(x_test, batch_size=256, verbose=0))
    from tb_unfreeze.verify import run_frozen, tolerance  # noqa: PLC0415

    frozen_out = run_frozen(_read_graph_def(refrozen_pb), {demo.CONVNET_INPUT: x_test}, conversion.outputs[:1], {})
    refrozen_vs_keras = float(np.max(np.abs(next(iter(frozen_out.values())) - keras_out)))
    if log:
        log_graphs(logdir, demo.model_id_for(refrozen_pb), frozen=refrozen_pb)
    say(f"re-frozen into {refrozen_pb} (max abs diff vs the fine-tuned model {refrozen_vs_keras:.2e})")
    return {
        "shift": shift,
        "epochs": epochs,
        "train_size": len(y_train),
        "test_size": len(y_test),
        "batch_norm_trainable": batch_norm_trainable,
        "accuracy_frozen": accuracy_frozen,
        "accuracy_finetuned": accuracy_finetuned,
        "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
        "frozen": frozen_pb,
        "converted": converted,
        "finetuned_saved_model": finetuned,
        "refrozen": refrozen_pb,
        "refreeze": refrozen,
        "refrozen_vs_keras_max_abs_diff": refrozen_vs_keras,
        "refrozen_vs_keras_tolerance": tolerance(keras_out),
        "scalars": os.path.join(logdir, FINETUNE_RUNS),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _tf_graph_def(data: bytes):
    tf = import_tensorflow()

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(data)
    return graph_def


def _read_graph_def(path: str):
    with open(path, "rb") as f:
        return _tf_graph_def(f.read())


def _save_finetuned(layer, out_dir: str) -> None:
    """The fine-tuned SavedModel plus the conversion's manifest, so `refreeze` finds the original names."""
    layer.save_weights_to_saved_model(out_dir, replace=True)


# -- fine-tuning a converted model on several workers (python -m tb_unfreeze.finetune) ---------------------------


def cluster_from_environment() -> dict:
    """`TF_CONFIG` as a dict (`{}` when unset): `cluster` (task type -> host:port list) and `task` (type, index)."""
    import json  # noqa: PLC0415

    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
        workers = sum(len(v) for k, v in config.get("cluster", {}).items() if k in ("chief", "worker"))
        task = config["task"]
        task["type"], task["index"] = str(task["type"]), int(task["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise errors.UserError(f"TF_CONFIG is not a valid cluster description ({e}); see docs/finetuning.md.") from None
    config["workers"] = workers
    return config


def is_chief(config: dict) -> bool:
    """The task that writes results: `chief`, else worker 0 of a cluster without a chief, else the only process."""
    task = config.get("task")
    if not task:
        return True
    if task["type"] == "chief":
        return True
    return task["type"] == "worker" and task["index"] == 0 and "chief" not in config.get("cluster", {})


def make_strategy(config: dict | None = None):
    """`MultiWorkerMirroredStrategy` when `TF_CONFIG` describes a cluster, None (plain Keras) otherwise.

    Call it before anything else runs TensorFlow ops: the strategy must configure the collective runtime first.
    """
    config = cluster_from_environment() if config is None else config
    if not config:
        return None
    tf = import_tensorflow()
    return tf.distribute.MultiWorkerMirroredStrategy()


def finetune_distributed(
    saved_model_dir: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    steps_per_epoch: int | None = None,
    learning_rate: float = 1e-3,
    optimizer: str = "sgd",
    strategy=None,
    seed: int = demo.SEED,
    out_dir: str | None = None,
    chief: bool = True,
):
    """Fine-tune with a training loop of `strategy.run` steps, the same code on one process or on every worker.

    `batch_size` is the global batch: each step takes the next `batch_size` examples (no shuffling; the last partial
    batch is dropped), split between the replicas; each replica's loss is its share of the global mean
    (`tf.nn.compute_average_loss`) and the optimizer sums the gradients over all replicas, so a step is the step
    one process would take on the whole batch. Only the `chief` writes the fine-tuned SavedModel to `out_dir`.
    Returns (model, layer, losses): the mean loss of each epoch.

    Why not `model.fit`: Keras 3 (3.15) cannot `fit` under MultiWorkerMirroredStrategy with more than one worker:
    it reduces the first batch with `strategy.reduce("MEAN", (x, y))` and the scalar logs with `axis=0`, which the
    collective strategy rejects (tensorflow/tensorflow#72388). `fit` works under MirroredStrategy
    (`finetune_model`).
    """
    import keras  # noqa: PLC0415

    tf = import_tensorflow()
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise errors.UserError(f"batch size {batch_size} is not a multiple of the {replicas} replicas in the cluster.")
    if len(x) < batch_size:
        raise errors.UserError(f"{len(x)} examples make no batch of {batch_size}.")
    keras.utils.set_random_seed(seed)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    if steps_per_epoch:
        dataset = dataset.take(steps_per_epoch)
    options = tf.data.Options()
    # Each global batch is split between the workers (shard by data): every example is seen once per epoch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    distributed = strategy.experimental_distribute_dataset(dataset.with_options(options))
    with strategy.scope():
        model, layer = build_model(saved_model_dir, x.shape[1:], learning_rate, optimizer)
        opt = model.optimizer
        weights = model.trainable_variables
        opt.build(weights)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(reduction=None)

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            per_example = loss_fn(yb, model(xb, training=True))
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=batch_size)
        opt.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    @tf.function
    def step(xb, yb):
        return strategy.reduce("SUM", strategy.run(replica_step, args=(xb, yb)), axis=None)

    losses = []
    for _ in range(epochs):
        total, steps = 0.0, 0
        for xb, yb in distributed:
            total += float(step(xb, yb))
            steps += 1
        losses.append(total / max(steps, 1))
    if out_dir and chief:
        _save_finetuned(layer, out_dir)
    return model, layer, losses


def layer_weights(layer) -> dict[str, np.ndarray]:
    """The layer's weights by name (names are unique: they are the converted variables' names)."""
    return {w.name: np.asarray(w.numpy()) for w in layer.weights}


def _training_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in getattr(data, "files", ())]
            if missing:
                raise errors.UserError(
                    f"--data {path} has no array '{missing[0]}'; save it with numpy.savez(path, x=inputs, y=labels)."
                )
            return data["x"].astype(np.float32), data["y"]
    except (OSError, ValueError, EOFError, AttributeError, TypeError) as e:  # TypeError: a bare .npy
        raise errors.UserError(f"--data {path}: cannot read it as an .npz ({str(e)[:200]}).") from None


def main(argv: list[str] | None = None, prog: str = "python -m tb_unfreeze.finetune") -> int:
    """Fine-tune a converted model on this machine, or as one worker of a cluster described by `TF_CONFIG`.

    python -m tb_unfreeze.finetune out/model --data train.npz --epochs 2 --batch-size 64 -o out/finetuned
    """
    import argparse  # noqa: PLC0415
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__.split("\n")[0])
    parser.add_argument("saved_model", help="a tb-unfreeze output directory (or its saved_model/)")
    parser.add_argument("--data", required=True, help=".npz with arrays x (inputs) and y (integer labels)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split across all workers")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("-o", "--output", help="fine-tuned SavedModel (written by the chief only)")
    parser.add_argument("--weights-out", help="write this worker's final weights to this .npz (for comparisons)")
    parser.add_argument("--no-cluster", action="store_true", help="ignore TF_CONFIG: train in this process alone")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config = {} if args.no_cluster else cluster_from_environment()
        strategy = make_strategy(config)  # first: before any TensorFlow op runs
        x, y = _training_data(args.data)
        started = time.perf_counter()
        model, layer, losses = finetune_distributed(
            args.saved_model,
            x,
            y,
            epochs=args.epochs,
            batch_size=args.batch_size,
            steps_per_epoch=args.steps_per_epoch,
            learning_rate=args.learning_rate,
            optimizer=args.optimizer,
            strategy=strategy,
            out_dir=args.output,
            chief=is_chief(config),
        )
    except errors.UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    weights = layer_weights(layer)
    if args.weights_out:
        np.savez(args.weights_out, **weights)
    report = {
        "task": config.get("task"),
        "chief": is_chief(config),
        "replicas": strategy.num_replicas_in_sync if strategy is not None else 1,
        "loss": losses,
        "trainable": sorted(w.name for w in layer.trainable_weights),
        "output": args.output if args.output and is_chief(config) else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
