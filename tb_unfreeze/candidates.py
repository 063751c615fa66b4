"""Find the constants that used to be variables, by graph structure (names are only hints).

For every float (or quantized) `Const`, walk forward through pass-through ops to the ops that really use the
value, then ask the role tables in `roles.py` what that use means. No TensorFlow, no weight bytes decoded.
"""

from __future__ import annotations

import dataclasses
import re

from tensorboard.compat.proto import node_def_pb2

from tb_unfreeze import roles as R
from tb_unfreeze.graph_index import (
    FLOAT_DTYPES,
    QUANTIZED_DTYPES,
    GraphIndex,
    Use,
    const_shape,
    const_tensor,
    dtype_name,
    item_size,
    num_elements,
    parent_scope,
)

_READ_VARIABLE = re.compile(r"(^|/)ReadVariableOp(_\d+)?$")
_GENERIC_NAME = re.compile(r"^(Const|unnamed)(_\d+)?$|^\d+$")
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-/>]")


@dataclasses.dataclass
class Candidate:
    """A constant that can become a variable."""

    name: str  # the Const node
    tensor: str  # the tensor the variable replaces (the Const's output, or its Dequantize for quantized weights)
    role: str
    trainable: bool
    recommended: bool
    dtype: str
    shape: list[int]
    nbytes: int
    variable_name: str
    reason: str
    recommendation: str  # why it is (not) converted by default
    consumers: list[str]  # the ops that really use it
    evidence: str  # "read" (a freezer's read op proves it was a variable), "structure", or "none"

    @property
    def size(self) -> int:
        return num_elements(self.shape)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size"] = self.size
        return d


@dataclasses.dataclass
class _Reach:
    """Where a constant's value really goes."""

    uses: list[Use]
    through_enter: bool = False
    through_dequantize: node_def_pb2.NodeDef | None = None


def _walk(index: GraphIndex, start: str) -> _Reach:
    reach = _Reach(uses=[])
    seen = {start}
    frontier = [start]
    while frontier:
        name = frontier.pop()
        for use in index.consumers(name):
            slots = R.PASS_THROUGH.get(use.node.op, frozenset())
            if slots is None or use.slot in slots:
                if use.node.name in seen:
                    continue
                seen.add(use.node.name)
                if use.node.op == "Enter":
                    reach.through_enter = True
                if use.node.op == "Dequantize" and reach.through_dequantize is None:
                    reach.through_dequantize = use.node
                frontier.append(use.node.name)
            else:
                reach.uses.append(use)
    return reach


def _has_read_evidence(index: GraphIndex, node: node_def_pb2.NodeDef) -> str:
    """The name of the freezer's read op that proves `node` was a variable, or ''."""
    for use in index.consumers(node.name):
        if use.node.op != "Identity":
            continue
        if use.node.name == node.name + "/read" or _READ_VARIABLE.search(use.node.name):
            return use.node.name
    if node.name.endswith("/resource") and _READ_VARIABLE.search(parent_scope(node.name)):
        return parent_scope(node.name)
    return ""


def _source_op(index: GraphIndex, node: node_def_pb2.NodeDef | None, depth: int = 6):
    """Walk backwards through pass-through ops from `node` to the op that computed the value."""
    while node is not None and depth > 0 and node.op in R.PASS_THROUGH:
        node = index.producer(node, 0)
        depth -= 1
    return node


def _other_input(index: GraphIndex, use: Use):
    return _source_op(index, index.producer(use.node, 1 - use.slot)) if use.slot in (0, 1) else None


def _feeds(index: GraphIndex, node: node_def_pb2.NodeDef, ops: frozenset[str], slot: int | None = None) -> bool:
    reach = _walk(index, node.name)
    return any(u.node.op in ops and (slot is None or u.slot == slot) for u in reach.uses)


def _is_scalar_const(node) -> bool:
    return node is not None and node.op == "Const" and num_elements(const_shape(node)) <= 1


def _unfused_bn_role(index: GraphIndex, use: Use) -> str:
    """Keras (TF1 and Keras 3) batch norm that the freezer did not fuse: variance -> Add(eps) -> Rsqrt;
    gamma -> Mul(rsqrt); mean -> Mul -> Sub (slot 1); beta -> Sub (slot 0)."""
    op = use.node.op
    if op in R.ADD_OPS and _is_scalar_const(_other_input(index, use)) and _feeds(index, use.node, R.RSQRT_OPS):
        return "bn_moving_variance"
    if op == "Mul":
        other = _other_input(index, use)
        if other is not None and other.op in R.RSQRT_OPS and _is_bn_rsqrt(index, other):
            # gamma multiplies the rsqrt directly; mean multiplies rsqrt (no gamma) and then feeds a Sub.
            if _feeds(index, use.node, frozenset({"Sub"}), slot=1) and not _feeds(index, use.node, frozenset({"Mul"})):
                return "bn_moving_mean"
            return "bn_gamma"
        if (
            other is not None
            and other.op == "Mul"
            and any(
                _source_op(index, index.producer(other, s)) is not None
                and _source_op(index, index.producer(other, s)).op in R.RSQRT_OPS
                for s in (0, 1)
            )
            and _feeds(index, use.node, frozenset({"Sub"}), slot=1)
        ):
            return "bn_moving_mean"
    if op == "Sub" and use.slot == 0:
        other = _other_input(index, use)
        if (
            other is not None
            and other.op == "Mul"
            and any(_feeds_rsqrt_chain(index, _source_op(index, index.producer(other, s))) for s in (0, 1))
        ):
            return "bn_beta"
    return ""


def _is_bn_rsqrt(index: GraphIndex, node) -> bool:
    """Rsqrt(variance + epsilon): what batch norm divides by (an anchor generator's Sqrt(aspect ratio) is not)."""
    source = _source_op(index, index.producer(node, 0))
    if source is None or source.op not in R.ADD_OPS:
        return False
    return any(_is_scalar_const(_source_op(index, index.producer(source, s))) for s in (0, 1))


def _feeds_rsqrt_chain(index: GraphIndex, node) -> bool:
    if node is None:
        return False
    if node.op in R.RSQRT_OPS:
        return True
    if node.op == "Mul":
        return any(
            (p := _source_op(index, index.producer(node, s))) is not None and p.op in R.RSQRT_OPS for s in (0, 1)
        )
    return False


def _bias_add_role(index: GraphIndex, use: Use, shape: list[int]) -> str:
    if use.node.op not in R.ADD_OPS or len(shape) > 1:
        return ""
    other = _other_input(index, use)
    return "bias" if other is not None and other.op in R.LINEAR_OPS else ""


def _role_of_use(index: GraphIndex, use: Use, shape: list[int]) -> str:
    table = R.ROLE_BY_CONSUMER.get(use.node.op)
    if table is not None:
        return table.get(use.slot, "")
    if not index.op_types & R.RSQRT_OPS:  # no unfused batch norm without an Rsqrt/Sqrt in the graph
        return _bias_add_role(index, use, shape)
    return _bias_add_role(index, use, shape) or _unfused_bn_role(index, use)


def _readable_name(node: node_def_pb2.NodeDef, read_op: str, role: R.Role, uses: list[Use]) -> str:
    """A name a Keras or TF1 user recognises, instead of '.../ReadVariableOp/resource' or 'Const_17'."""
    name = node.name
    if read_op and read_op == name + "/read":
        return name  # TF1 freezer: the const keeps the variable's own name
    last = name.rpartition("/")[2]
    if read_op and not name.endswith("/resource") and not _GENERIC_NAME.match(last):
        return (
            name  # TF1 freezer, resource variables: the const keeps the variable's name, read by '<op>/ReadVariableOp'
        )
    if read_op:
        reading = re.sub(r"/ReadVariableOp(_\d+)?$", "", read_op)
        scope = parent_scope(reading) or reading
        return f"{scope}/{role.suffix}"
    last = name.rpartition("/")[2]
    if _GENERIC_NAME.match(last) and uses:
        scope = parent_scope(uses[0].node.name) or uses[0].node.name
        return f"{scope}/{role.suffix}"
    return name


def _sanitize(name: str) -> str:
    name = _BAD_NAME_CHARS.sub("_", name).strip("/")
    if not name or not re.match(r"[A-Za-z0-9.]", name[0]):
        name = "v_" + name
    return name


def constant_filled(node: node_def_pb2.NodeDef) -> bool:
    """True when every element of a Const holds the same value (a freezer's copy of `tf.ones`/`tf.zeros`, e.g.
    slim's batch_norm(scale=False) gamma): decided on the stored bytes, nothing decoded."""
    tensor = node.attr["value"].tensor
    size = num_elements(const_shape(node))
    if size < 2:
        return False
    content = tensor.tensor_content
    if content:
        step = item_size(tensor.dtype)
        return step > 0 and len(content) == step * size and content == content[:step] * size
    for field in ("float_val", "double_val", "half_val"):
        values = getattr(tensor, field)
        if values:
            return len(set(values)) == 1
    return False


def find_candidates(index: GraphIndex, input_dependent: set[str] | None = None) -> list[Candidate]:
    """Every constant that could become a variable, with its role, default trainability and evidence.

    `input_dependent`: the nodes whose value depends on a graph input. Without a freezer's read op, a constant
    that only ever combines with other constants (an anchor table, pre-computed grids) is not recommended.
    """
    found: list[Candidate] = []
    for node in index.graph_def.node:
        if node.op != "Const":
            continue
        tensor = const_tensor(node)
        if tensor is None:
            continue
        dtype = tensor.dtype
        if dtype not in FLOAT_DTYPES and dtype not in QUANTIZED_DTYPES:
            continue
        shape = const_shape(node)
        if 0 in shape:
            continue  # empty tensors (training-mode batch norm's placeholder mean) hold nothing to train
        read_op = _has_read_evidence(index, node)
        reach = _walk(index, node.name)
        if not reach.uses and not read_op:
            continue
        roles = [r for r in (_role_of_use(index, u, shape) for u in reach.uses) if r]
        if not read_op and not shape and dtype not in QUANTIZED_DTYPES:
            roles = []  # a scalar is an epsilon or a scale unless a read op proves otherwise
        role_name = roles[0] if roles else ""
        underlying = ""  # for a quantized weight: the role of the float value it stands for
        evidence = "read" if read_op else ("structure" if role_name else "none")
        if dtype in QUANTIZED_DTYPES:
            if reach.through_dequantize is None or (not shape and not read_op):
                continue  # a quantized scalar is an epsilon or a scale (l2_normalize's Maximum/y), not a weight
            what = f" feeding a {role_name.replace('_', ' ')}" if role_name else ""
            reason = f"{dtype_name(dtype)} const dequantized by {reach.through_dequantize.name}{what}"
            underlying = role_name
            role_name = "quantized_weight"
        elif role_name:
            linear_uses = sum(1 for u in reach.uses if u.node.op in R.LINEAR_OPS | {"BiasAdd"})
            if role_name in R.RNN_ROLE and (reach.through_enter or linear_uses > 2):
                role_name = R.RNN_ROLE[role_name]
            use = next(u for u in reach.uses if _role_of_use(index, u, shape))
            reason = f"input {use.slot} of {use.node.op} '{use.node.name}'"
            if reach.through_enter:
                reason += " inside a while loop"
            if linear_uses > 2:
                reason += f" (shared by {linear_uses} ops)"
        elif read_op:
            role_name = "weight"
            reason = (
                f"read through '{read_op}'; used by {', '.join(sorted({u.node.op for u in reach.uses})) or 'nothing'}"
            )
        else:
            if len(shape) == 0 or num_elements(shape) < 2:
                continue  # epsilons, scales and other scalars
            role_name = "other"
            reason = f"float tensor used by {', '.join(sorted({u.node.op for u in reach.uses}))}"
        if read_op and evidence == "read" and not reason.startswith("read"):
            reason = f"read through '{read_op}'; " + reason
        role = R.ROLES[role_name]
        recommended = role.recommended or (evidence == "read" and role_name != "quantized_weight")
        recommendation = "converted by default" if recommended else f"not converted by default: {role.why_not}"
        if recommended and evidence != "read":
            if constant_filled(node):
                recommended = False
                recommendation = (
                    "not converted by default: every element holds the same value, what a freezer "
                    "makes of a tf.ones/tf.zeros constant (e.g. batch norm without a learned scale), "
                    "not of a trained variable"
                )
            elif (
                input_dependent is not None
                and reach.uses
                and not any(u.node.name in input_dependent for u in reach.uses)
            ):
                recommended = False
                recommendation = (
                    "not converted by default: it only combines with other constants (a pre-computed "
                    "table such as anchors), not with anything computed from the inputs"
                )
        trainable = role.trainable or (role_name == "other" and evidence == "read")
        if underlying in ("bn_moving_mean", "bn_moving_variance"):
            trainable = False  # a quantized batch-norm statistic is still a statistic
        found.append(
            Candidate(
                name=node.name,
                tensor=(reach.through_dequantize.name if role_name == "quantized_weight" else node.name) + ":0",
                role=role_name,
                trainable=trainable,
                recommended=recommended,
                dtype="float32" if role_name == "quantized_weight" else dtype_name(dtype),
                shape=shape,
                nbytes=num_elements(shape) * item_size(dtype),
                # a quantized weight's float value is its Dequantize op, named like the original variable
                variable_name=_sanitize(
                    reach.through_dequantize.name
                    if role_name == "quantized_weight"
                    else _readable_name(node, read_op, role, reach.uses)
                ),
                reason=reason,
                recommendation=recommendation,
                consumers=sorted({u.node.name for u in reach.uses})[:8],
                evidence=evidence,
            )
        )
    _dedupe_names(found)
    return found


def _dedupe_names(candidates: list[Candidate]) -> None:
    taken: dict[str, int] = {}
    for c in candidates:
        base = c.variable_name
        if base in taken:
            taken[base] += 1
            while f"{base}_{taken[base]}" in taken:
                taken[base] += 1
            c.variable_name = f"{base}_{taken[base]}"
        taken.setdefault(c.variable_name, 0)
