"""Lowered TF1 control flow in a frozen graph: find its while loops, and rebuild what gradients need.

`import_graph_def` does not rebuild the `WhileContext` objects that TensorFlow's TF1 gradient code walks, so
`tf.compat.v1.gradients` through an imported loop fails ('NoneType' object has no attribute 'outer_context').
Every loop can be read back off the graph: its frame name is the `frame_name` of its `Enter` nodes, and its
pivot, loop variables, enters and exits follow from `LoopCond` / `Merge` / `Switch` / `NextIteration` / `Exit`.
This module finds them without TensorFlow (`find_loops`), restores what freezing pruned (`complete_loops`: the
`Exit` of a loop variable nobody read after the loop — without it the loop's weights silently get no gradient),
and, after import, rebuilds the contexts (`rebuild_contexts`) exactly as `import_meta_graph` would from a
`while_context` collection.
"""

from __future__ import annotations

import dataclasses

from tb_unfreeze.graph_index import split_input

ENTER_OPS = frozenset({"Enter", "RefEnter"})
EXIT_OPS = frozenset({"Exit", "RefExit"})
MERGE_OPS = frozenset({"Merge", "RefMerge"})
SWITCH_OPS = frozenset({"Switch", "RefSwitch"})
NEXT_ITERATION_OPS = frozenset({"NextIteration", "RefNextIteration"})


class ControlFlowError(ValueError):
    """A loop whose structure is not the one TensorFlow's lowering produces (named in the message)."""


@dataclasses.dataclass
class Loop:
    """One lowered while loop (a frame) of a GraphDef, by node names."""

    frame: str
    parent: str  # the enclosing frame, "" at top level
    nodes: list[str]  # every node that runs in this frame (Enter and Exit included), graph order
    loop_cond: str
    merges: list[str]  # loop variables' Merge(Enter, NextIteration), one per loop variable
    switches: list[str]  # Switch(merge, LoopCond), same order
    enters: list[str]  # the loop variables' (non-constant) Enter nodes, same order
    exits: dict[str, str]  # switch -> its Exit (missing when freezing pruned it)
    body_identities: dict[str, str]  # switch -> the Identity reading its true output
    constant_enters: list[str]  # loop invariants (Enter with is_constant)
    cond_switches: list[str]  # Switch nodes of a tf.cond inside the loop (need CondContexts)
    parallel_iterations: int = 10

    @property
    def name(self) -> str:
        return self.frame


def node_frames(graph_def) -> tuple[dict[str, str], dict[str, str]]:
    """The frame every node runs in ("" = top level) and each frame's parent, by TensorFlow's own rule: a node
    runs in the frame of its inputs; `Enter` opens its `frame_name`, `Exit` returns to the parent frame."""
    nodes = {n.name: n for n in graph_def.node}
    order: list[str] = []
    state: dict[str, int] = {}
    for root in nodes:
        if root in state:
            continue
        stack = [(root, 0)]
        while stack:
            name, i = stack.pop()
            if i == 0:
                if name in state:
                    continue
                state[name] = 1
            node = nodes[name]
            # NextIteration closes the loop's cycle: it takes its frame from its input afterwards.
            inputs = [] if node.op in NEXT_ITERATION_OPS else [split_input(x)[0] for x in node.input]
            if i < len(inputs):
                stack.append((name, i + 1))
                producer = inputs[i]
                if producer in nodes and producer not in state:
                    stack.append((producer, 0))
            else:
                state[name] = 2
                order.append(name)
    frame: dict[str, str] = {}
    parent: dict[str, str] = {}
    for name in order:
        node = nodes[name]
        data = [split_input(x)[0] for x in node.input if not x.startswith("^")]
        control = [split_input(x)[0] for x in node.input if x.startswith("^")]
        sources = [frame[p] for p in (data or control) if p in frame]
        here = max(sources, key=len) if sources else ""
        if node.op in ENTER_OPS:
            name_of_frame = node.attr["frame_name"].s.decode()
            parent.setdefault(name_of_frame, here)
            here = name_of_frame
        elif node.op in EXIT_OPS:
            here = parent.get(here, "")
        frame[name] = here
    for node in graph_def.node:
        if node.op in NEXT_ITERATION_OPS and node.input:
            frame[node.name] = frame.get(split_input(node.input[0])[0], "")
    return frame, parent


def find_loops(graph_def) -> list[Loop]:
    """Every lowered while loop of the graph (top-level graph only; functions are not lowered loops)."""
    frame, parent = node_frames(graph_def)
    nodes = {n.name: n for n in graph_def.node}
    consumers: dict[str, list[tuple[str, int]]] = {}
    for node in graph_def.node:
        for raw in node.input:
            producer, output, control = split_input(raw)
            if not control:
                consumers.setdefault(producer, []).append((node.name, output))
    by_frame: dict[str, list[str]] = {}
    for node in graph_def.node:
        f = frame.get(node.name, "")
        if node.op in EXIT_OPS and node.input:  # an Exit belongs to the loop it leaves
            f = frame.get(split_input(node.input[0])[0], f)
        if f:
            by_frame.setdefault(f, []).append(node.name)
    loops = []
    for name, members in by_frame.items():
        conds = [m for m in members if nodes[m].op == "LoopCond"]
        if len(conds) != 1:
            raise ControlFlowError(f"the while loop '{name}' has {len(conds)} LoopCond nodes (expected 1)")
        loop_cond = conds[0]
        switches = [
            m
            for m in members
            if nodes[m].op in SWITCH_OPS and len(nodes[m].input) > 1 and split_input(nodes[m].input[1])[0] == loop_cond
        ]
        merges, enters = [], []
        for s in switches:
            merge = nodes.get(split_input(nodes[s].input[0])[0])
            if merge is None or merge.op not in MERGE_OPS:
                raise ControlFlowError(f"the loop variable switch '{s}' of while loop '{name}' reads no Merge")
            enter = next(
                (
                    nodes[split_input(x)[0]]
                    for x in merge.input
                    if nodes.get(split_input(x)[0]) is not None and nodes[split_input(x)[0]].op in ENTER_OPS
                ),
                None,
            )
            if enter is None:
                raise ControlFlowError(f"the loop variable '{merge.name}' of while loop '{name}' has no Enter")
            merges.append(merge.name)
            enters.append(enter.name)
        exits, identities = {}, {}
        for s in switches:
            for user, output in consumers.get(s, []):
                if output == 0 and nodes[user].op in EXIT_OPS:
                    exits.setdefault(s, user)
                elif output == 1 and nodes[user].op == "Identity":
                    identities.setdefault(s, user)
        loop_switches = set(switches)
        constant_enters = [m for m in members if nodes[m].op in ENTER_OPS and nodes[m].attr["is_constant"].b]
        some_enter = nodes[enters[0]] if enters else None
        parallel = some_enter.attr["parallel_iterations"].i if some_enter is not None else 10
        loops.append(
            Loop(
                frame=name,
                parent=parent.get(name, ""),
                nodes=members,
                loop_cond=loop_cond,
                merges=merges,
                switches=switches,
                enters=enters,
                exits=exits,
                body_identities=identities,
                constant_enters=constant_enters,
                cond_switches=[m for m in members if nodes[m].op in SWITCH_OPS and m not in loop_switches],
                parallel_iterations=int(parallel or 10),
            )
        )
    return loops


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 0
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


def complete_loops(graph_def, loops: list[Loop]) -> list[str]:
    """Give every loop variable an `Exit` and a body `Identity` (freezing prunes those nobody read), in place.

    Returns the names of the nodes added. Without the Exit of, say, an LSTM's cell state, TensorFlow's gradient
    code never enters the loop for that variable and the loop's weights silently get no gradient."""
    nodes = {n.name: n for n in graph_def.node}
    taken = set(nodes)
    added = []
    for loop in loops:
        for switch in loop.switches:
            # a loop variable's Switch: output 0 leaves the loop (Exit), output 1 enters the body (Identity)
            for kind, op, output, found in (
                ("exit", "Exit", 0, loop.exits),
                ("identity", "Identity", 1, loop.body_identities),
            ):
                if switch in found:
                    continue
                node = graph_def.node.add()
                node.name = _unique(f"{switch}/tb_unfreeze_{kind}", taken)
                node.op = op
                node.input.append(f"{switch}:{output}")
                node.attr["T"].CopyFrom(nodes[switch].attr["T"])
                found[switch] = node.name
                loop.nodes.append(node.name)
                added.append(node.name)
    return added


def unsupported_loops(loops: list[Loop]) -> list[str]:
    """One sentence per loop that gradients cannot be rebuilt for (nested loops, conds inside loops)."""
    problems = []
    for loop in loops:
        if loop.parent:
            problems.append(f"the while loop '{loop.frame}' is nested in '{loop.parent}'")
        elif loop.cond_switches:
            problems.append(f"the while loop '{loop.frame}' contains a tf.cond ({loop.cond_switches[0]})")
    return problems


def supported(loops: list[Loop]) -> list[Loop]:
    """The loops whose contexts can be rebuilt faithfully."""
    return [lp for lp in loops if not unsupported_loops([lp])]


def rebuild_contexts(tf, graph, loops: list[Loop], prefix: str = "") -> list:
    """Rebuild and register (collection `while_context`) the WhileContext of every loop in `graph`, which holds
    the GraphDef's nodes imported under `prefix` ("" or "scope/"). A TF1 Builder then saves them with the
    SavedModel, and `tf.compat.v1.saved_model.load` restores them."""
    from tensorflow.core.protobuf import control_flow_pb2  # noqa: PLC0415
    from tensorflow.python.ops import control_flow_ops  # noqa: PLC0415

    contexts = []
    with graph.as_default():
        for loop in loops:
            definition = control_flow_pb2.WhileContextDef(
                context_name=loop.frame,  # import_graph_def keeps frame names unprefixed
                parallel_iterations=loop.parallel_iterations,
                back_prop=True,
                swap_memory=False,
                pivot_name=f"{prefix}{loop.loop_cond}:0",
                pivot_for_pred_name=f"{prefix}{loop.merges[0]}:0",
                pivot_for_body_name=f"{prefix}{loop.body_identities[loop.switches[0]]}:0",
                loop_exit_names=[f"{prefix}{loop.exits[s]}:0" for s in loop.switches],
                loop_enter_names=[f"{prefix}{e}:0" for e in loop.enters],
            )
            values: set[str] = set()
            for name in loop.nodes:
                op = graph.get_operation_by_name(prefix + name)
                values.update(t.name for t in op.outputs)
            for name in loop.constant_enters:
                op = graph.get_operation_by_name(prefix + name)
                outer = op.inputs[0].name
                values.add(outer)
                definition.values_def.external_values[outer] = op.outputs[0].name
            definition.values_def.values.extend(sorted(values))
            context = control_flow_ops.WhileContext(context_def=definition)
            graph.add_to_collection(tf.compat.v1.GraphKeys.WHILE_CONTEXT, context)
            contexts.append(context)
    return contexts
