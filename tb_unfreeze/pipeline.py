"""Graphs frozen together with their `tf.data` input pipeline: cut it at `IteratorGetNext`.

Such a graph has no Placeholder: the network reads `IteratorGetNext:k`, produced from a dataset that reads files
which are not there any more. The cut replaces each `IteratorGetNext` by one Placeholder per component (dtype and
shape from the op's `output_types` / `output_shapes`), joined by an `IdentityN` of the same name so every
consumer still reads `IteratorGetNext:k`, and drops the dataset and iterator nodes that fed only the cut.
Pure protobuf: works on TensorBoard's and TensorFlow's GraphDef classes alike.
"""

from __future__ import annotations

from tb_unfreeze.graph_index import split_input

GET_NEXT_OPS = frozenset({"IteratorGetNext", "IteratorGetNextSync", "IteratorGetNextAsOptional"})


def cut_input_pipeline(graph_def) -> list[str]:
    """Cut every iterator of `graph_def` in place; returns one note per cut (empty when nothing was cut)."""
    cuts = [n for n in graph_def.node if n.op in GET_NEXT_OPS and n.op != "IteratorGetNextAsOptional"]
    if not cuts:
        return []
    notes = []
    by_name = {n.name: n for n in graph_def.node}
    pipeline: set[str] = set()
    for node in cuts:
        frontier = [split_input(x)[0] for x in node.input]
        while frontier:
            name = frontier.pop()
            if name in pipeline or name not in by_name:
                continue
            pipeline.add(name)
            frontier.extend(split_input(x)[0] for x in by_name[name].input)
    names = {n.name for n in graph_def.node}
    for node in cuts:
        types = list(node.attr["output_types"].list.type)
        shapes = list(node.attr["output_shapes"].list.shape)
        placeholders = []
        for k, dtype in enumerate(types):
            ph = graph_def.node.add()
            base = f"{node.name}/component_{k}"
            name, i = base, 0
            while name in names:
                i += 1
                name = f"{base}_{i}"
            names.add(name)
            ph.name, ph.op = name, "Placeholder"
            ph.attr["dtype"].type = dtype
            if k < len(shapes):
                ph.attr["shape"].shape.CopyFrom(shapes[k])
            placeholders.append(name)
        iterator = split_input(node.input[0])[0] if node.input else "?"
        device = node.device
        node.op = "IdentityN"
        del node.input[:]
        node.input.extend(placeholders)
        node.ClearField("attr")
        node.attr["T"].list.type.extend(types)
        node.device = device
        notes.append(
            f"the input pipeline feeding '{node.name}' (iterator '{iterator}') was cut: its {len(types)} "
            f"component(s) are now the placeholders {', '.join(placeholders)}"
        )
    # Drop the dataset/iterator nodes nobody outside the pipeline reads any more (MakeIterator sinks included).
    changed = True
    removed = set(pipeline)
    while changed:
        changed = False
        for n in graph_def.node:
            if n.name in removed:
                continue
            inputs = [split_input(x)[0] for x in n.input]
            if inputs and all(i in removed for i in inputs):
                removed.add(n.name)
                changed = True
    # keep a pipeline node (and what it reads) if something that stays reads it
    by_name = {n.name: n for n in graph_def.node}
    frontier = [n.name for n in graph_def.node if n.name not in removed]
    while frontier:
        for x in by_name[frontier.pop()].input:
            producer = split_input(x)[0]
            if producer in removed:
                removed.discard(producer)
                frontier.append(producer)
    kept = [n for n in graph_def.node if n.name not in removed]
    del graph_def.node[:]
    graph_def.node.extend(kept)
    return notes
