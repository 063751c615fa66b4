"""What each op does with a weight, as data (one table per question, like TensorFlow's own freezer).

Adding support for a new layer type means adding a row here, not a branch elsewhere.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Role:
    """A kind of former variable."""

    name: str
    trainable: bool  # the default when converted
    suffix: str  # the Keras-style last component of a rebuilt variable name
    recommended: bool = True
    why_not: str = ""


ROLES = {
    role.name: role
    for role in [
        Role("kernel", True, "kernel"),
        Role("depthwise_kernel", True, "depthwise_kernel"),
        Role("bias", True, "bias"),
        Role("bn_gamma", True, "gamma"),
        Role("bn_beta", True, "beta"),
        Role("bn_moving_mean", False, "moving_mean"),
        Role("bn_moving_variance", False, "moving_variance"),
        Role("embedding", True, "embeddings"),
        Role("rnn_kernel", True, "kernel"),
        Role("rnn_bias", True, "bias"),
        Role("weight", True, "weight"),
        # stored quantized (quint8 + Dequantize) to save space: trained as float, converted to a float variable holding
        # the dequantized values (what the graph computed with), named after its Dequantize
        Role("quantized_weight", True, "kernel"),
        Role(
            "other",
            False,
            "constant",
            recommended=False,
            why_not="a float tensor with no proof it was a variable; include it if you want to train it",
        ),
    ]
}

# Consumer op -> {input slot: role}. Slots not listed (shapes, strides, output shapes) are never weights.
ROLE_BY_CONSUMER: dict[str, dict[int, str]] = {
    "Conv2D": {1: "kernel"},
    "Conv3D": {1: "kernel"},
    "Conv2DBackpropInput": {1: "kernel"},
    "Conv3DBackpropInputV2": {1: "kernel"},
    "DepthwiseConv2dNative": {1: "depthwise_kernel"},
    "MatMul": {0: "kernel", 1: "kernel"},
    "BatchMatMul": {0: "kernel", 1: "kernel"},
    "BatchMatMulV2": {0: "kernel", 1: "kernel"},
    "BatchMatMulV3": {0: "kernel", 1: "kernel"},
    "Einsum": {0: "kernel", 1: "kernel"},
    "BiasAdd": {1: "bias"},
    "BiasAddV1": {1: "bias"},
    "FusedBatchNorm": {1: "bn_gamma", 2: "bn_beta", 3: "bn_moving_mean", 4: "bn_moving_variance"},
    "FusedBatchNormV2": {1: "bn_gamma", 2: "bn_beta", 3: "bn_moving_mean", 4: "bn_moving_variance"},
    "FusedBatchNormV3": {1: "bn_gamma", 2: "bn_beta", 3: "bn_moving_mean", 4: "bn_moving_variance"},
    "BatchNormWithGlobalNormalization": {1: "bn_moving_mean", 2: "bn_moving_variance", 3: "bn_beta", 4: "bn_gamma"},
    "GatherV2": {0: "embedding"},
    "Gather": {0: "embedding"},
    "SparseSegmentSum": {0: "embedding"},
    "SparseSegmentMean": {0: "embedding"},
    "SparseSegmentSqrtN": {0: "embedding"},
}

# Roles that, reached through a loop's `Enter` or shared by several cells, become RNN roles.
RNN_ROLE = {"kernel": "rnn_kernel", "bias": "rnn_bias"}

# Ops that pass a weight through unchanged (for classification): op -> data slots that pass through.
# None means every slot passes to the matching output (IdentityN).
PASS_THROUGH: dict[str, frozenset[int] | None] = {
    "Identity": frozenset({0}),
    "IdentityN": None,
    "Snapshot": frozenset({0}),
    "Cast": frozenset({0}),
    "Reshape": frozenset({0}),
    "Squeeze": frozenset({0}),
    "ExpandDims": frozenset({0}),
    "Transpose": frozenset({0}),
    "Enter": frozenset({0}),
    "Switch": frozenset({0}),
    "RefSwitch": frozenset({0}),
    "Dequantize": frozenset({0}),
    "Merge": None,  # loop variables of lowered while loops: Enter -> Merge -> Switch -> Identity
    "StridedSlice": frozenset({0}),  # TF1 Keras LSTM slices one kernel into its gates
    "Split": frozenset({1}),
    "SplitV": frozenset({0}),
    "Unpack": frozenset({0}),
}

# The ops a conv/matmul output comes from, for telling a bias `Add` from any other `Add`.
LINEAR_OPS = frozenset(
    op for op, slots in ROLE_BY_CONSUMER.items() if set(slots.values()) <= {"kernel", "depthwise_kernel"}
)
ADD_OPS = frozenset({"Add", "AddV2"})
RSQRT_OPS = frozenset({"Rsqrt", "Sqrt"})

# Names the freezers give to the op that read a variable.
READ_SUFFIXES = ("/read",)
CONTROL_FLOW_V1 = frozenset({"Enter", "Exit", "NextIteration", "LoopCond"})
CONTROL_FLOW_COND_V1 = frozenset({"Switch", "Merge", "RefSwitch"})
FUNCTIONAL_OPS = frozenset(
    {"While", "StatelessWhile", "If", "StatelessIf", "PartitionedCall", "StatefulPartitionedCall", "Case"}
)
INPUT_OPS = frozenset({"Placeholder", "PlaceholderWithDefault", "PlaceholderV2"})
# Ops that are never model outputs even when nothing consumes them.
NOT_OUTPUTS = frozenset(
    {"Const", "NoOp", "Assert", "Print", "PrintV2", "SaveV2", "RestoreV2", "Placeholder", "PlaceholderWithDefault"}
    | CONTROL_FLOW_V1
)
