"""Property-based tests of loading and inspection on hostile input: random bytes and mutated real graphs.

Whatever the file holds, `load_graph` / `inspect_model` either return (an Inspection whose JSON can be served)
or raise a `tb_unfreeze.errors` type with a one-line message; they never hang (each example runs under an alarm)
and never allocate what a graph merely declares (a 10^12-element shape costs nothing).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import tempfile
import tracemalloc
from datetime import timedelta

import mutations as M
import pytest
from conftest import MODELS_DIR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tb_unfreeze import errors
from tb_unfreeze.analysis import Inspection, inspect_model
from tb_unfreeze.loading import load_graph

SMALL = 1_500_000  # bytes: the real graphs mutated here (parsing stays in milliseconds)
ALARM_SECONDS = 20  # an example taking this long is a hang (the slowest real graph inspects in ~0.1 s)
BASE = settings(
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible by rerunning
)


def fuzz(examples: int) -> settings:
    return settings(BASE, max_examples=examples)


def _real_graphs() -> dict[str, bytes]:
    folder = os.path.join(MODELS_DIR, "real")
    if not os.path.isdir(folder):
        return {}
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith((".pb", ".pbtxt")) and os.path.getsize(path) <= SMALL:
            with open(path, "rb") as f:
                out[name] = f.read()
    return out


GRAPHS = _real_graphs()
BINARY = sorted(n for n in GRAPHS if n.endswith(".pb"))
TEXT = sorted(n for n in GRAPHS if n.endswith(".pbtxt"))
needs_models = pytest.mark.skipif(not GRAPHS, reason=f"shared models folder {MODELS_DIR}/real is absent")
WORK = tempfile.mkdtemp(prefix="tb_unfreeze-fuzz-")
STATS = {"inspected": 0, "refused": 0, "examples": 0}


class Hang(Exception):
    """Raised by the alarm: an example ran for ALARM_SECONDS."""


@contextlib.contextmanager
def alarm(seconds: int = ALARM_SECONDS):
    def ring(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check(data: bytes, suffix: str = ".pb", what: str = "") -> Inspection | None:
    """Write `data` to a file and inspect it: an Inspection (serializable) or a one-line tb_unfreeze error."""
    path = os.path.join(WORK, f"model{suffix}")
    with open(path, "wb") as f:
        f.write(data)
    STATS["examples"] += 1
    try:
        with alarm():
            try:
                inspection = inspect_model(path)
                served = json.dumps(inspection.to_dict())  # what /candidates and `inspect --json` send
            except errors.UnfreezeError as e:
                message = str(e)
                assert message and "\n" not in message, f"{what}: message not one line: {message!r}"
                assert isinstance(e, errors.UserError), f"{what}: {type(e).__name__} is not a UserError"
                STATS["refused"] += 1
                return None
    except Hang:
        pytest.fail(f"inspect_model hung on {what}")
    except Exception as e:  # the property under test: nothing else comes out
        raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
    assert json.loads(served)["schema"] == "tb_unfreeze.inspect/2"
    STATS["inspected"] += 1
    return inspection


@pytest.fixture(scope="module", autouse=True)
def report_and_bound_memory():
    """Print the counts (docs/reliability.md quotes them) and check the whole module's peak RSS growth."""
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024
    print(
        f"\nfuzz inspect: {STATS['examples']} inputs, {STATS['inspected']} inspected, "
        f"{STATS['refused']} refused; peak RSS grew {grown_mb:.0f} MB"
    )
    assert grown_mb < 500, f"peak RSS grew {grown_mb:.0f} MB while fuzzing (something allocated a declared shape?)"


# -- random bytes ----------------------------------------------------------------------------------------------


@fuzz(250)
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    check(data, what=f"{len(data)} random bytes")


@fuzz(120)
@given(
    st.sampled_from([b"node {", b"node { name: 'a' op: 'Const' ", b"\n# c\nversions {", b"library {"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=400),
)
def test_random_text_protos(head, tail):
    check(head + tail.encode("utf-8", "surrogatepass"), ".pbtxt", f"text {head!r}+{len(tail)} chars")


@fuzz(60)
@given(st.integers(1, 10_000))
def test_deeply_nested_text_proto(depth):
    check(b"node { name: 'a' op: 'Const' attr { key: 'value' value { " + b"list { " * depth, ".pbtxt", f"depth {depth}")


# -- mutated real graphs ---------------------------------------------------------------------------------------


@needs_models
@fuzz(80)
@given(st.sampled_from(BINARY or ["-"]), st.floats(0.0, 1.0))
def test_truncated_real_graphs(name, fraction):
    check(M.truncate(GRAPHS[name], fraction), what=f"{name} truncated to {fraction:.3f}")


@needs_models
@fuzz(120)
@given(st.sampled_from(BINARY or ["-"]), st.lists(st.integers(0, 2**40), min_size=1, max_size=24))
def test_bit_flipped_real_graphs(name, positions):
    check(M.flip_bits(GRAPHS[name], positions), what=f"{name} with {len(positions)} bit flips")


@needs_models
@fuzz(30)
@given(st.sampled_from(TEXT or ["-"]), st.floats(0.0, 1.0), st.lists(st.integers(0, 2**40), max_size=4))
def test_truncated_and_flipped_text_graphs(name, fraction, positions):
    data = M.truncate(GRAPHS[name], fraction)
    if data and positions:
        data = M.flip_bits(data, positions)
    check(data, ".pbtxt", f"{name} cut at {fraction:.3f}, {len(positions)} flips")


@needs_models
@fuzz(250)
@given(
    st.sampled_from(BINARY or ["-"]),
    st.lists(st.sampled_from(sorted(M.STRUCTURAL)), min_size=1, max_size=3),
    st.integers(0, 2**32),
)
def test_structurally_mutated_real_graphs(name, kinds, seed):
    data, what = M.mutate(GRAPHS[name], kinds, seed)
    check(data, what=f"{name}: {what}")


@needs_models
@pytest.mark.parametrize("kind", sorted(M.STRUCTURAL))
def test_every_mutation_on_every_small_graph(kind):
    """Each mutation once per graph (several seeds), so none is left to chance."""
    for name in BINARY:
        for seed in range(3):
            data, what = M.mutate(GRAPHS[name], [kind], seed)
            check(data, what=f"{name}: {what}")


def _candidates(data: bytes) -> dict:
    path = os.path.join(WORK, "benign.pb")
    with open(path, "wb") as f:
        f.write(data)
    return {c.name: (c.role, c.trainable, c.recommended) for c in inspect_model(path).candidates}


@needs_models
@pytest.mark.parametrize("kind", sorted(M.BENIGN))
def test_same_computation_in_another_shape_has_the_same_candidates(kind):
    """Shuffled nodes, an extra Identity before the real consumers, values stored as float_val: the graph computes
    the same thing, so detection finds the same constants with the same roles, trainability and recommendation."""
    for name in BINARY:
        expected = _candidates(GRAPHS[name])
        for seed in range(2):
            data, what = M.mutate(GRAPHS[name], [kind], seed)
            assert _candidates(data) == expected, f"{name}: {what}"


@needs_models
def test_identity_cycle_does_not_hang(real_model):
    """Regression: an Identity ring read by an input's consumer made `_shape_from_consumers` loop forever."""
    data, what = next(
        (d, w)
        for d, w in (M.mutate(GRAPHS["tf2onnx_lstm.pb"], ["cycle"], seed) for seed in range(50))
        if "identity_ring" in w
    )
    check(data, what=what)
    # the loop was reached through an undeclared placeholder feeding a MatMul/AddV2 whose other side is a ring
    g = M.parse(GRAPHS["tf2onnx_regression.pb"])
    ph = next(n for n in g.node if n.op == "Placeholder")
    del ph.attr["shape"]
    a, b, add = g.node.add(), g.node.add(), g.node.add()
    a.name, a.op, b.name, b.op, add.name, add.op = "ra", "Identity", "rb", "Identity", "x_plus_ring", "AddV2"
    a.input.append("rb")
    b.input.append("ra")
    add.input.extend([ph.name, "ra"])
    assert check(g.SerializeToString(), what="regression graph + Identity ring") is not None


# -- a declared shape allocates nothing ------------------------------------------------------------------------


@needs_models
@pytest.mark.parametrize("name", BINARY or ["-"])
def test_declared_huge_shapes_allocate_nothing(name):
    """Every Const and Placeholder declares 10^12 elements (4 TB): inspection reports it and allocates ~nothing."""
    g = M.parse(GRAPHS[name])
    for node in g.node:
        if node.op == "Const":
            tensor = node.attr["value"].tensor
            del tensor.tensor_shape.dim[:]
            tensor.tensor_shape.dim.add().size = M.HUGE
            tensor.ClearField("tensor_content")
        elif node.op == "Placeholder":
            shape = node.attr["shape"].shape
            del shape.dim[:]
            shape.dim.add().size = M.HUGE
    data = g.SerializeToString()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        inspection = check(data, what=f"{name} with 10^12-element shapes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    budget = 20 * len(data) + (64 << 20)  # the parsed graph and its index, not the declared weights
    assert peak < budget, f"{name}: Python allocated {peak / 2**20:.0f} MB"
    assert rss_grown < 200, f"{name}: peak RSS grew {rss_grown:.0f} MB"
    if inspection is not None and inspection.candidates:
        assert max(c.size for c in inspection.candidates) == M.HUGE  # reported, not materialized


def test_load_graph_refuses_every_byte_prefix_of_a_tiny_graph(real_model):
    """Every truncation of the 350-byte regression graph: parsed as a graph or refused, never anything else."""
    with open(real_model("tf2onnx_regression.pb"), "rb") as f:
        data = f.read()
    path = os.path.join(WORK, "prefix.pb")
    for cut in range(len(data) + 1):
        with open(path, "wb") as f:
            f.write(data[:cut])
        with alarm():
            try:
                load_graph(path)
            except errors.UserError as e:
                assert str(e) and "\n" not in str(e)
    STATS["examples"] += len(data) + 1
