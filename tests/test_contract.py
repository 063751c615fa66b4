"""The conversion's contract (tb_unfreeze/contract.py): one request type, one result type, one schema each.

- the request's JSON form round-trips and a malformed one is refused with one sentence naming the field, the same
  sentence over HTTP as in the library;
- the manifest a real conversion writes validates against the committed JSON schema, and `open()` reads it back
  equal (also from a moved copy of the folder);
- the committed schemas in docs/schema/ are the ones the classes generate;
- no writer or reader of a conversion goes around the contract (source scan), and the tab's TypeScript types name
  exactly the fields the Python classes write.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil

import jsonschema
import pytest

from tb_unfreeze import contract as C
from tb_unfreeze.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = "tf2onnx_regression.pb"


# -- the request --------------------------------------------------------------------------------------------------


def test_request_json_round_trips():
    request = C.ConversionRequest(
        only=["b", "a"],
        exclude=["c"],
        trainable={"a": False},
        inputs=["x"],
        outputs=["y:0"],
        verify=False,
        probe="/tmp/p.npz",
        dequantize=True,
    )
    data = request.to_json()
    assert data["schema"] == C.REQUEST_SCHEMA and data["only"] == ["a", "b"]
    assert C.ConversionRequest.from_json(json.loads(json.dumps(data))) == request
    assert request == dataclasses.replace(request, only=("a", "b"))  # a set of names: order does not matter
    jsonschema.validate(data, C.request_schema())
    assert C.ConversionRequest.from_json({}) == C.ConversionRequest()
    assert C.ConversionRequest().to_json()["only"] is None  # None means "the recommended ones", not "none"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"only": "w"}, "only"),
        ({"only": [1]}, "only"),
        ({"exclude": None, "trainable": []}, "trainable"),
        ({"trainable": {"w": "yes"}}, "trainable"),
        ({"verify": "true"}, "verify"),
        ({"dequantize": 1}, "dequantize"),
        ({"probe": ""}, "probe"),
        ({"outputs": [""]}, "outputs"),
        ({"selection": {}}, "unknown field"),
        ({"schema": "tb_unfreeze.request/99"}, "schema"),
    ],
)
def test_a_malformed_request_is_refused_naming_the_field(body, field):
    with pytest.raises(C.ContractError) as caught:
        C.ConversionRequest.from_json(body)
    message = str(caught.value)
    assert field in message and "\n" not in message
    with pytest.raises(jsonschema.ValidationError):  # the schema says the same
        jsonschema.validate(body, C.request_schema())


def test_the_plugin_refuses_a_malformed_request_with_the_contracts_sentence():
    """POST /convert parses its body with ConversionRequest.from_json: the 400 carries the library's own words."""
    from tensorboard import errors as tb_errors

    from tb_unfreeze.plugin import validation

    body = {"model": "m.pb", "trainable": ["w"]}
    with pytest.raises(C.ContractError) as library:
        C.ConversionRequest.from_json(body, "POST /convert", extra=("model",))
    with pytest.raises(tb_errors.InvalidArgumentError) as http:
        validation.conversion_request(body)
    assert str(http.value).endswith(str(library.value))  # TensorBoard prefixes "Invalid argument: "
    model, request = validation.conversion_request({"model": "m.pb", "only": ["w"], "verify": False})
    assert model == "m.pb" and request == C.ConversionRequest(only=("w",), verify=False)


# -- the result ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(real_model, tmp_path_factory):
    from tb_unfreeze import convert

    out = tmp_path_factory.mktemp("contract") / "out"
    result = convert(real_model(SMALL), out, C.ConversionRequest(trainable={}))
    return str(out), result


def test_the_manifest_validates_against_the_committed_schema(converted):
    out, result = converted
    with open(os.path.join(out, C.MANIFEST), encoding="utf-8") as f:
        on_disk = json.load(f)
    with open(os.path.join(ROOT, "docs", "schema", "manifest.schema.json"), encoding="utf-8") as f:
        schema = json.load(f)
    jsonschema.validate(on_disk, schema)
    assert on_disk == json.loads(json.dumps(result.to_json()))
    assert on_disk["schema"] == C.MANIFEST_SCHEMA and on_disk["request"] == C.ConversionRequest().to_json()
    broken = dict(on_disk, verification=dict(on_disk["verification"], status="fine"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_open_reads_back_the_same_result_from_the_folder_its_manifest_or_its_saved_model(converted):
    out, result = converted
    for path in (out, os.path.join(out, C.MANIFEST), os.path.join(out, C.SAVED_MODEL)):
        opened = C.ConversionResult.open(path)
        assert opened.to_json() == json.loads(json.dumps(result.to_json()))
    assert result.verification.status == "verified" and result.verification.passed
    assert result.totals["variables"] == len(result.variables) > 0
    assert {v.dtype for v in result.variables} == {"float32"}  # TensorFlow's names, as `inspect` reports them


def test_a_moved_conversion_describes_its_new_folder(converted, tmp_path):
    out, result = converted
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    opened = C.ConversionResult.open(moved)
    assert opened.out_dir == str(moved) and opened.layout.saved_model == str(moved / C.SAVED_MODEL)
    assert opened.variables == result.variables and opened.verification == result.verification


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not a readable"),
        ('{"schema": "something/1"}', "schema"),
        ('{"schema": "tb_unfreeze.manifest/2", "out_dir": "/x"}', "lacks"),
        ("[]", "not a JSON object"),
    ],
)
def test_open_refuses_what_is_not_a_manifest_in_one_sentence(tmp_path, content, words):
    (tmp_path / C.MANIFEST).write_text(content)
    with pytest.raises(UserError) as caught:
        C.ConversionResult.open(tmp_path)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert C.read_result(tmp_path) is None
    with pytest.raises(UserError, match="holds no unfreeze.json"):
        C.ConversionResult.open(tmp_path / "empty" / "saved_model")


def test_a_verification_record_contradicting_itself_is_refused():
    record = {"status": "verified", "passed": False, "performed": True}
    with pytest.raises(C.ContractError, match="passed"):
        C.Verification.from_json(record)
    with pytest.raises(C.ContractError, match="status"):
        C.Verification.from_json({"status": "ok", "passed": True})


# -- one schema, used by everyone ---------------------------------------------------------------------------------


def test_the_committed_schemas_are_the_generated_ones():
    for name, schema in C.json_schemas().items():
        with open(os.path.join(ROOT, "docs", "schema", name), encoding="utf-8") as f:
            assert json.load(f) == json.loads(json.dumps(schema)), (
                f"docs/schema/{name} is stale: run `python -m tb_unfreeze.contract docs/schema`"
            )
        jsonschema.Draft202012Validator.check_schema(schema)


# Names of a conversion's files and schema ids: written only in contract.py.
_OWNED_STRINGS = (C.MANIFEST, C.UNFROZEN_GRAPH, C.SAVED_MODEL_TF1, "tb_unfreeze.manifest/", "tb_unfreeze.request/")


def _python_sources():
    for top in ("tb_unfreeze", "bench"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            # Not bench/.cache: the benchmark's models and the older checkouts `bench.userpath --baseline` makes.
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def _violations(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip():
            first_line = node.value.strip().splitlines()[0]
            is_text = " " in first_line  # a docstring or a message may name the file; code may not use it
            if not is_text and any(s in node.value for s in _OWNED_STRINGS):
                found.append(f"{path}:{node.lineno}: the literal {node.value!r}")
        # manifest["..."] / manifest.get("...") on a dict: readers go through ConversionResult
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "manifest":
            found.append(f"{path}:{node.lineno}: manifest[...]")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "manifest"
        ):
            found.append(f"{path}:{node.lineno}: manifest.get(...)")
    return found


def test_every_writer_and_reader_goes_through_the_contract():
    found = [
        v
        for path in _python_sources()
        if not path.endswith(os.path.join("tb_unfreeze", "contract.py"))
        for v in _violations(path)
    ]
    assert not found, "\n".join(found)


def test_the_source_scan_catches_a_reader_that_goes_around_the_contract(tmp_path):
    """The scan above must be able to fail: a dict-reading module is flagged."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        'import json\nmanifest = json.load(open("out/unfreeze.json"))\nprint(manifest["variables"])\n'
        'print(manifest.get("totals"))\n'
    )
    assert len(_violations(str(bad))) == 3


def _ts_interface_fields(source: str, name: str) -> set[str]:
    match = re.search(r"export interface " + name + r" \{\n(.*?)\n\}", source, re.S)
    assert match, f"api.ts has no interface {name}"
    fields, depth = set(), 0
    for line in match.group(1).splitlines():
        if depth == 0:
            m = re.match(r"\s*(\w+)\??:", line)
            if m:
                fields.add(m.group(1))
        depth += line.count("{") - line.count("}")
    return fields


def test_the_tabs_types_name_the_contracts_fields(converted):
    with open(os.path.join(ROOT, "frontend", "src", "api.ts"), encoding="utf-8") as f:
        source = f.read()
    _, result = converted
    manifest = C.manifest_schema()
    assert _ts_interface_fields(source, "Manifest") == set(manifest["properties"])
    assert _ts_interface_fields(source, "ConversionRequest") == set(C.request_schema()["properties"])
    assert _ts_interface_fields(source, "ManifestVariable") == {f.name for f in dataclasses.fields(C.Variable)}
    assert _ts_interface_fields(source, "VerificationSummary") == set(result.verification.summary_json())
    assert _ts_interface_fields(source, "JobResult") == set(result.summary_json()) | {"runs", "warnings"}
