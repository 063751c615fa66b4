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


RANDOM_OPS = frozenset({"RandomUniform", "RandomStandardNormal"})
_COMPARE = frozenset({"GreaterEqual", "Greater", "Less", "LessEqual"})
KNOB_ATTR = "_tb_unfreeze_knob"


def _scalar_float_const(node) -> bool:
    if node is None or node.op != "Const":
        return False
    tensor = node.attr["value"].tensor
    return tensor.dtype in (1, 2) and not [d for d in tensor.tensor_shape.dim if d.size != 1]


def expose_constant_dropout(graph_def) -> list[str]:
    """Dropout frozen in training mode with a constant rate makes the graph random: the same input gives other
    outputs on every run, so nothing can be verified and inference is noisy. Each such rate (a scalar Const that
    a RandomUniform draw is compared with) becomes a PlaceholderWithDefault of the same name, defaulting to 0
    (no dropout, deterministic) and marked as a `dropout_rate` knob: the `training` signature feeds the rate."""
    by_name = {n.name: n for n in graph_def.node}
    consumers: dict[str, list] = {}
    for node in graph_def.node:
        for raw in node.input:
            consumers.setdefault(split_input(raw)[0], []).append(node)
    notes = []
    for node in list(graph_def.node):
        if node.op not in RANDOM_OPS:
            continue
        frontier, depth = [node], 0
        while frontier and depth < 4:
            following = []
            for current in frontier:
                for user in consumers.get(current.name, []):
                    if user.op in _COMPARE:
                        for raw in user.input:
                            other = by_name.get(split_input(raw)[0])
                            if _scalar_float_const(other) and KNOB_ATTR not in other.attr:
                                rate = other.attr["value"].tensor
                                value = (list(rate.float_val) or list(rate.double_val) or [None])[0]
                                default = graph_def.node.add()
                                default.name = f"{other.name}/tb_unfreeze_default"
                                default.op = "Const"
                                default.attr["dtype"].type = rate.dtype
                                default.attr["value"].tensor.dtype = rate.dtype
                                default.attr["value"].tensor.tensor_shape.CopyFrom(rate.tensor_shape)
                                if rate.dtype == 2:
                                    default.attr["value"].tensor.double_val.append(0.0)
                                else:
                                    default.attr["value"].tensor.float_val.append(0.0)
                                original = other.attr["value"].tensor.SerializeToString()
                                other.op = "PlaceholderWithDefault"
                                other.ClearField("attr")
                                other.attr["dtype"].type = rate.dtype
                                other.attr["shape"].shape.CopyFrom(rate.tensor_shape)
                                other.attr[KNOB_ATTR].s = b"dropout_rate"
                                del other.input[:]
                                other.input.append(default.name)
                                del original
                                notes.append(
                                    f"dropout frozen in training mode: its rate '{other.name}' ({value}) is now an "
                                    "input defaulting to 0 (no dropout; the frozen graph was random); feed the rate "
                                    "through the 'training' signature to train with dropout"
                                )
                    elif user.op in ("Mul", "Add", "AddV2", "Identity", "Cast"):
                        following.append(user)
            frontier, depth = following, depth + 1
    return notes
