"""Everything that is not a frozen graph: exit 2, one line on stderr naming the file, no traceback, nothing written.

Covers every entry of the shared `not_frozen/` folder (files and directories, parametrized over its listing) and
garbage made here: empty, random bytes, a truncated real graph (small and > 1 MB), text, a directory, a missing
path, a dangling symlink and a FIFO (root can read any file, so a FIFO stands in for "unreadable").
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from conftest import MODELS_DIR, model_entries

NOT_FROZEN = model_entries("not_frozen")


def _sha256_tree(path: str) -> dict[str, str]:
    if not os.path.exists(path) or os.path.islink(path) and not os.path.exists(os.path.realpath(path)):
        return {}
    files = [path] if not os.path.isdir(path) else sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    out = {}
    for f in files:
        if os.path.isfile(f):
            with open(f, "rb") as fh:
                out[f] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tb_unfreeze", *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


def _check_refused(path: str, tmp_path, expect_words: tuple[str, ...] = ()) -> None:
    before = _sha256_tree(path)
    listing_before = sorted(os.listdir(os.path.dirname(path) or "."))
    out = tmp_path / "out" / "converted"
    for args in (["inspect", path, "--json"], ["convert", path, "-o", str(out), "--json"]):
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr[-1500:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, f"stderr should be one line, got: {proc.stderr[-1500:]}"
        assert "Traceback" not in proc.stderr
        assert lines[0].startswith("tb-unfreeze: error: ")
        assert path in lines[0], "the message names the file"
        for word in expect_words:
            assert word.lower() in lines[0].lower(), (word, lines[0])
        assert proc.stdout == "", "nothing on stdout (not even JSON) on a user error"
        assert not (tmp_path / "out").exists(), "the output directory (or its parent) was created"
    assert _sha256_tree(path) == before, "the source was modified"
    assert sorted(os.listdir(os.path.dirname(path) or ".")) == listing_before, "something was written beside it"


# What each shared not-frozen entry must be called; a new entry only has to be refused (empty tuple).
EXPECTED = {
    "hypatchia_generator_saved_model_684f466.pb": ("SavedModel proto",),
    "hypatchia_generator_savedmodel_novars": ("SavedModel directory",),
    "mobilenet_v1_1.0_224_eval.pbtxt": ("not frozen", "variable"),
    "tf2onnx_regression": ("SavedModel directory",),
    "tf2onnx_regression_ckpt_model.meta": ("MetaGraphDef",),
    "tf2onnx_saved_model_with_redundant_inputs": ("SavedModel directory",),
}


@pytest.mark.parametrize("path", NOT_FROZEN)
def test_not_frozen_entry_is_refused_with_specific_message(path, tmp_path):
    _check_refused(path, tmp_path, EXPECTED.get(os.path.basename(path), ()))


def test_saved_model_pb_inside_directory_is_refused(tmp_path):
    """The saved_model.pb file itself (not only its directory) is named as a SavedModel."""
    path = os.path.join(MODELS_DIR, "not_frozen", "tf2onnx_saved_model_with_redundant_inputs", "saved_model.pb")
    if not os.path.isfile(path):
        pytest.skip(f"{path} is absent")
    _check_refused(path, tmp_path, ("SavedModel",))


def _real_graph(name: str) -> bytes:
    path = os.path.join(MODELS_DIR, "real", name)
    if not os.path.isfile(path):
        pytest.skip(f"{path} is absent; set TB_UNFREEZE_MODELS")
    with open(path, "rb") as f:
        return f.read()


def _garbage(kind: str, folder) -> str:
    folder.mkdir()
    p = folder / "model.pb"
    if kind == "empty":
        p.write_bytes(b"")
        words = ("empty",)
    elif kind == "random":
        p.write_bytes(os.urandom(4096))
        words = ("not a TensorFlow GraphDef",)
    elif kind == "truncated_small":
        p.write_bytes(_real_graph("tf2onnx_fc_layers.pb")[:5000])
        words = ("truncated",)
    elif kind == "truncated_large":  # > 1 MB: must still fail before TensorFlow is imported (stderr stays clean)
        p.write_bytes(_real_graph("agent007_conv_206f896.pb")[:1_500_000])
        words = ("truncated",)
    elif kind == "text":
        p = folder / "notes.pbtxt"
        p.write_text("This is a README, not a graph.\nIt has two lines.\n")
        words = ()
    elif kind == "text_proto_not_graph":
        p = folder / "model.pbtxt"
        p.write_text('node { name: "a" op: "Const" attr { key: "value" nonsense: 3 } }\n')
        words = ("not a valid GraphDef",)
    elif kind == "directory":
        p = folder / "adir.pb"
        p.mkdir()
        (p / "something.txt").write_text("x")
        words = ("directory",)
    elif kind == "missing":
        p = folder / "missing.pb"
        words = ("no such file",)
    elif kind == "dangling_symlink":
        p = folder / "link.pb"
        p.symlink_to(folder / "nowhere.pb")
        words = ("cannot be read",)
    elif kind == "fifo":
        p = folder / "pipe.pb"
        os.mkfifo(p)
        words = ("not a regular file",)
    elif kind == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("running as root: every file is readable (the FIFO case covers an unopenable path)")
        p.write_bytes(_real_graph("tf2onnx_regression.pb"))
        p.chmod(0)
        words = ("cannot be read",)
    else:
        raise AssertionError(kind)
    return str(p), words


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "random",
        "truncated_small",
        "truncated_large",
        "text",
        "text_proto_not_graph",
        "directory",
        "missing",
        "dangling_symlink",
        "fifo",
        "unreadable",
    ],
)
def test_garbage_is_refused(kind, tmp_path):
    path, words = _garbage(kind, tmp_path / "src")
    _check_refused(path, tmp_path, words)


def test_library_raises_user_errors_with_http_codes(tmp_path):
    from tb_unfreeze import errors, inspect_model

    with pytest.raises(errors.NotFoundError) as e:
        inspect_model(tmp_path / "nothing.pb")
    assert e.value.http_code == 404
    empty = tmp_path / "e.pb"
    empty.write_bytes(b"")
    with pytest.raises(errors.NotAGraphError):
        inspect_model(empty)
    nf = os.path.join(MODELS_DIR, "not_frozen", "mobilenet_v1_1.0_224_eval.pbtxt")
    if os.path.isfile(nf):
        with pytest.raises(errors.NotFrozenError) as e:
            inspect_model(nf)
        assert e.value.http_code == 400


def test_plain_inspect_table_refuses_too(tmp_path):
    """The table form (no --json) takes the same error path."""
    path = tmp_path / "garbage.pb"
    path.write_bytes(os.urandom(100))
    proc = _cli("inspect", str(path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and str(path) in proc.stderr


def test_finetune_with_missing_or_malformed_data_is_one_sentence(tmp_path):
    """`tb-unfreeze finetune OUT_DIR --data …`: a data file it cannot use names the file, exit 2, no traceback."""
    import numpy as np

    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((2, 3), np.float32))  # no x / y
    for data, words in ((tmp_path / "missing.npz", "cannot read it"), (bad, "has no array 'x'")):
        r = _cli("finetune", str(tmp_path / "model"), "--data", str(data))
        assert r.returncode == 2, r.stderr
        assert words in r.stderr and "Traceback" not in r.stderr and str(data) in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
