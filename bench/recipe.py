"""The published recipe for un-freezing a graph, reimplemented as a baseline (not used by tb_unfreeze).

It is what the usual answers to "how do I make a frozen graph trainable again" do:
1. import the frozen graph and run one `tf.compat.v1.Session.run` per candidate constant to read its value;
2. make a variable from each value (the value becomes the variable's initial value, a Const in the new graph);
3. `import_graph_def` the frozen graph again with `input_map` pointing each constant at its variable;
4. initialise and write a `Saver` checkpoint.

The candidates are the same constants tb_unfreeze converts (its recommended candidates), so both do the same job.
"""

from __future__ import annotations

import os
import time


def run_recipe(pb_path: str, out_dir: str, const_names: list[str]) -> dict:
    import tensorflow as tf  # noqa: PLC0415

    v1 = tf.compat.v1
    timings = {}
    t0 = time.perf_counter()
    graph_def = v1.GraphDef()
    with open(pb_path, "rb") as f:
        graph_def.ParseFromString(f.read())
    frozen = tf.Graph()
    with frozen.as_default():
        tf.import_graph_def(graph_def, name="")
    t1 = time.perf_counter()
    timings["parse+import"] = t1 - t0
    values = {}
    with v1.Session(graph=frozen) as sess:
        for name in const_names:  # one Session.run per candidate
            values[name] = sess.run(f"{name}:0")
    t2 = time.perf_counter()
    timings["session_runs"] = t2 - t1
    graph = tf.Graph()
    with graph.as_default():
        input_map = {}
        for i, name in enumerate(const_names):
            var = v1.Variable(values[name], name=f"unfrozen/v{i}", use_resource=False)
            input_map[f"{name}:0"] = var.value()
        tf.import_graph_def(graph_def, input_map=input_map, name="")
        saver = v1.train.Saver()
        t3 = time.perf_counter()
        timings["variables+import"] = t3 - t2
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            os.makedirs(out_dir, exist_ok=True)
            saver.save(sess, os.path.join(out_dir, "model.ckpt"))
    timings["init+save"] = time.perf_counter() - t3
    return timings
