"""A Keras 3 layer over a converted model: its weights are the SavedModel's own variables.

Keras's `TFSMLayer(trainable=True)` copies the variables into new Keras variables that the graph never reads, so
`fit` changes nothing the model uses (or fails on ':0' scope names; PITFALLS §5). Here each Keras variable wraps
the very `tf.Variable` the loaded graph reads, so optimizers update the model itself.

    from tb_unfreeze.keras import UnfrozenLayer
    layer = UnfrozenLayer("out/model/saved_model")
    model = keras.Sequential([keras.Input((28, 28, 1)), layer])
    model.compile("adam", "sparse_categorical_crossentropy"); model.fit(x, y)
    layer.save_weights_to_saved_model("out/finetuned")   # a SavedModel with the trained weights
"""

from __future__ import annotations

import json
import os
import re
import shutil

import keras
import tensorflow as tf

from tb_unfreeze.convert_paths import MANIFEST, SAVED_MODEL
from tb_unfreeze.errors import NotFoundError, OutputDirError, UserError

_CLEAN = re.compile(r"[^A-Za-z0-9_.\-/]")


def _saved_model_dir(path: str) -> str:
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, SAVED_MODEL, "saved_model.pb")):
        return os.path.join(path, SAVED_MODEL)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    raise NotFoundError(f"{path} holds no SavedModel; pass a tb-unfreeze output directory or its saved_model/.")


def _manifest_for(saved_model: str) -> dict | None:
    path = os.path.join(os.path.dirname(os.path.abspath(saved_model)), MANIFEST)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


class UnfrozenLayer(keras.layers.Layer):
    """Calls a converted model's signature; trainable and non-trainable weights are the model's variables.

    Inputs: one tensor when the signature has one input, else a dict keyed by signature input name.
    Outputs: one tensor when the signature has one output, else a dict.
    """

    def __init__(self, saved_model: str, signature: str = "serving_default", trainable: bool = True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.saved_model = _saved_model_dir(saved_model)
        self.signature_name = signature
        self.manifest = _manifest_for(self.saved_model)
        paths = (self.manifest or {}).get("training_paths", {})
        if paths and not paths.get("keras", True):
            raise UserError(f"{self.saved_model} cannot be trained with Keras: {paths.get('note')}")
        self._loaded = tf.saved_model.load(self.saved_model)
        if signature not in self._loaded.signatures:
            raise NotFoundError(
                f"{self.saved_model} has no signature '{signature}'; it has {sorted(self._loaded.signatures)}."
            )
        self._fn = self._loaded.signatures[signature]
        _, spec = self._fn.structured_input_signature
        self.input_names = sorted(spec)
        self.output_names = sorted(self._fn.structured_outputs)
        self._wrapped = []
        for variable in self._loaded.variables:
            name = _CLEAN.sub("_", variable.name.rsplit(":", 1)[0])
            # A Keras variable initialised with a tf.Variable wraps it instead of copying it.
            wrapped = keras.Variable(variable, trainable=variable.trainable, name=name.replace("/", "_"))
            self._track_variable(wrapped)
            self._wrapped.append(wrapped)
        self.built = True

    def call(self, inputs):
        if not isinstance(inputs, dict):
            if len(self.input_names) != 1:
                raise UserError(f"this model takes {len(self.input_names)} inputs {self.input_names}; pass a dict.")
            inputs = {self.input_names[0]: inputs}
        result = self._fn(**{k: tf.convert_to_tensor(v) for k, v in inputs.items()})
        if len(self.output_names) == 1:
            return result[self.output_names[0]]
        return dict(result)

    def compute_output_spec(self, inputs):
        _, spec = self._fn.structured_input_signature
        outs = self._fn.structured_outputs
        make = lambda t: keras.KerasTensor(t.shape, dtype=t.dtype.name)  # noqa: E731
        if len(self.output_names) == 1:
            return make(outs[self.output_names[0]])
        return {k: make(v) for k, v in outs.items()}

    def save_weights_to_saved_model(self, out_dir: str, replace: bool = False) -> str:
        """Write a copy of the SavedModel (and its manifest) whose checkpoint holds the current weights."""
        out_dir = os.path.abspath(out_dir)
        if os.path.exists(out_dir) and os.listdir(out_dir) and not replace:
            raise OutputDirError(f"{out_dir} exists and is not empty; pass replace=True to overwrite it.")
        if os.path.realpath(out_dir) == os.path.realpath(os.path.dirname(self.saved_model)):
            raise OutputDirError(f"{out_dir} is the model being trained; choose another directory.")
        tmp = out_dir + ".tmp-save"
        shutil.rmtree(tmp, ignore_errors=True)
        target = os.path.join(tmp, SAVED_MODEL)
        shutil.copytree(self.saved_model, target, ignore=shutil.ignore_patterns("variables"))
        os.makedirs(os.path.join(target, "variables"))
        keys = self._checkpoint_keys()
        names = list(keys)
        tf.raw_ops.SaveV2(
            prefix=os.path.join(target, "variables", "variables"), tensor_names=names,
            shape_and_slices=[""] * len(names), tensors=[keys[n] for n in names],
        )
        if self.manifest is not None:
            manifest = dict(self.manifest, out_dir=out_dir, saved_model=os.path.join(out_dir, SAVED_MODEL),
                            fine_tuned_from=self.manifest.get("out_dir"))
            with open(os.path.join(tmp, MANIFEST), "w") as f:
                json.dump(manifest, f, indent=1)
        src_graph = os.path.join(os.path.dirname(self.saved_model), "unfrozen_graph.pb")
        if os.path.isfile(src_graph):
            shutil.copy(src_graph, tmp)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
        return out_dir

    def _checkpoint_keys(self) -> dict:
        """Checkpoint key -> current value, keyed as the converter's Saver wrote them."""
        by_op = {v.name.rsplit(":", 1)[0]: v for v in self._loaded.variables}
        if self.manifest:
            return {r["checkpoint_key"]: by_op[r["variable_name"]].read_value() for r in self.manifest["variables"]}
        return {name: v.read_value() for name, v in by_op.items()}
