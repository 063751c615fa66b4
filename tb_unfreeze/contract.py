"""The conversion's contract: what is asked (`ConversionRequest`) and what was made (`ConversionResult`).

Each has one JSON form. The request travels CLI → `convert`, and HTTP body → plugin job → worker stdin → `convert`,
always as `ConversionRequest.to_json()` / `from_json()`. The result is the manifest `unfreeze.json` of an output
folder, written only by `ConversionResult.write()` and read only through `ConversionResult.open()` (CLI, plugin,
Keras layer, refreeze, fine-tuning, benchmarks). `json_schemas()` derives both JSON schemas from these classes;
`docs/contract.md` and `docs/schema/` hold them, and the tab's types (`frontend/src/api.ts`) follow them.

Pure Python: no TensorFlow, no numpy.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from tb_unfreeze.errors import UserError

REQUEST_SCHEMA = "tb_unfreeze.request/1"
MANIFEST_SCHEMA = "tb_unfreeze.manifest/2"
READABLE_MANIFESTS = ("tb_unfreeze.manifest/1", MANIFEST_SCHEMA)  # /1 lacked `request`; everything else is the same

# The output folder of one conversion.
MANIFEST = "unfreeze.json"
SAVED_MODEL = "saved_model"  # what TF2 loads (and TF1 too, when the graph has no lowered loops)
SAVED_MODEL_TF1 = "saved_model_tf1"  # written only for graphs with lowered loops: the TF1 Session graph
UNFROZEN_GRAPH = "unfrozen_graph.pb"  # the converted graph as the Graphs dashboard and the tab show it

STATUSES = ("verified", "verified_with_warnings", "not_verified", "failed")
MAX_NAMES = 100_000
MAX_NAME_CHARS = 4096


class ContractError(UserError):
    """A request or a manifest that does not have the contract's shape."""


# -- the request --------------------------------------------------------------------------------------------------


def _names(data: Mapping, key: str, where: str, *, nullable: bool) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        return None if nullable else ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ContractError(f"{where}: '{key}' must be a list of node names (strings).")
    if len(value) > MAX_NAMES or any(len(v) > MAX_NAME_CHARS or "\x00" in v or not v for v in value):
        raise ContractError(f"{where}: '{key}' holds too many, empty or too long names.")
    return tuple(dict.fromkeys(value))


def _flag(data: Mapping, key: str, default: bool, where: str) -> bool:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ContractError(f"{where}: '{key}' must be true or false.")
    return value


@dataclasses.dataclass(frozen=True)
class ConversionRequest:
    """What to convert and how. `only` replaces the recommended set (None: the recommended candidates), `exclude`
    removes from it, `trainable` overrides flags; names are Const names as `inspect` reports them (a variable name
    is accepted too). `inputs`/`outputs` override the detected ones (None: detected). `probe` is an .npz of inputs
    for verification (a path; over HTTP, the id `POST /probe` answered with)."""

    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    trainable: Mapping[str, bool] = dataclasses.field(default_factory=dict)
    inputs: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None
    verify: bool = True
    probe: str | None = None
    dequantize: bool = False

    FIELDS = ("only", "exclude", "trainable", "inputs", "outputs", "verify", "probe", "dequantize")

    def __post_init__(self) -> None:
        # The request is a value: sets of names (`only`, `exclude`) sorted, so equal requests compare equal;
        # `inputs`/`outputs` keep their order (it is the signature's).
        if self.only is not None:
            object.__setattr__(self, "only", tuple(sorted(set(self.only))))
        object.__setattr__(self, "exclude", tuple(sorted(set(self.exclude or ()))))
        for key in ("inputs", "outputs"):
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, tuple(dict.fromkeys(value)))
        object.__setattr__(self, "trainable", dict(self.trainable or {}))

    def selection(self):
        from tb_unfreeze.selection import Selection  # noqa: PLC0415

        return Selection(only=self.only, exclude=self.exclude, trainable=self.trainable)

    def to_json(self) -> dict:
        return {
            "schema": REQUEST_SCHEMA,
            "only": list(self.only) if self.only is not None else None,
            "exclude": list(self.exclude),
            "trainable": dict(sorted(self.trainable.items())),
            "inputs": list(self.inputs) if self.inputs is not None else None,
            "outputs": list(self.outputs) if self.outputs is not None else None,
            "verify": self.verify,
            "probe": self.probe,
            "dequantize": self.dequantize,
        }

    @classmethod
    def from_json(
        cls, data: Any, where: str = "the conversion request", extra: tuple[str, ...] = ()
    ) -> ConversionRequest:
        """Validate and build; a field of the wrong type or an unknown field is one clear ContractError.
        `extra`: keys the caller handles itself (the HTTP body's `model`)."""
        if not isinstance(data, Mapping):
            raise ContractError(f"{where} must be a JSON object.")
        unknown = sorted(set(data) - set(cls.FIELDS) - {"schema"} - set(extra))
        if unknown:
            raise ContractError(
                f"{where}: unknown field(s) {', '.join(map(repr, unknown[:5]))}; allowed: "
                f"{', '.join(cls.FIELDS + extra)}."
            )
        if data.get("schema") not in (None, REQUEST_SCHEMA):
            raise ContractError(f"{where}: schema {data.get('schema')!r} is not {REQUEST_SCHEMA!r}.")
        trainable = data.get("trainable")
        trainable = {} if trainable is None else trainable  # not `or {}`: [] or "" are refused, not ignored
        if not isinstance(trainable, Mapping) or not all(
            isinstance(k, str) and isinstance(v, bool) for k, v in trainable.items()
        ):
            raise ContractError(f"{where}: 'trainable' must map Const node names to true or false.")
        if len(trainable) > MAX_NAMES:
            raise ContractError(f"{where}: 'trainable' holds too many names.")
        probe = data.get("probe")
        if probe is not None and (
            not isinstance(probe, str) or not probe or len(probe) > MAX_NAME_CHARS or "\x00" in probe
        ):
            raise ContractError(f"{where}: 'probe' must be the path (or uploaded id) of an .npz of inputs.")
        return cls(
            only=_names(data, "only", where, nullable=True),
            exclude=_names(data, "exclude", where, nullable=False) or (),
            trainable=dict(trainable),
            inputs=_names(data, "inputs", where, nullable=True),
            outputs=_names(data, "outputs", where, nullable=True),
            verify=_flag(data, "verify", True, where),
            probe=probe,
            dequantize=_flag(data, "dequantize", False, where),
        )


# -- the result ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a conversion's files are. `loops`: graphs with lowered loops get a separate TF1 SavedModel."""

    out_dir: str
    loops: bool = False

    @property
    def manifest(self) -> str:
        return os.path.join(self.out_dir, MANIFEST)

    @property
    def saved_model(self) -> str:
        return os.path.join(self.out_dir, SAVED_MODEL)

    @property
    def saved_model_tf1(self) -> str:
        return os.path.join(self.out_dir, SAVED_MODEL_TF1 if self.loops else SAVED_MODEL)

    @property
    def unfrozen_graph(self) -> str:
        return os.path.join(self.out_dir, UNFROZEN_GRAPH)

    def to_json(self) -> dict:
        return {
            "out_dir": self.out_dir,
            "saved_model": self.saved_model,
            "saved_model_tf1": self.saved_model_tf1,
            "unfrozen_graph": self.unfrozen_graph,
        }


@dataclasses.dataclass(frozen=True)
class Variable:
    """One constant that became a variable."""

    variable_name: str
    source: str  # the Const node it replaces
    role: str
    trainable: bool
    dtype: str  # TensorFlow's dtype name: "float32", "int32", …
    shape: tuple[int, ...]
    size: int
    checkpoint_key: str

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping) -> Variable:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)} | {"shape": tuple(data["shape"])})


@dataclasses.dataclass(frozen=True)
class Verification:
    """The typed summary of `verify.verify_conversion`'s record (kept whole in `details`)."""

    status: str  # one of STATUSES
    requested: bool
    performed: bool
    passed: bool  # status is verified or verified_with_warnings
    note: str
    problems: tuple[str, ...]
    max_abs_diff: float | None
    gradients_checked: int
    gradients_missing: tuple[str, ...]
    gradient_errors: tuple[str, ...]
    finite_difference: bool | None  # agrees / disagrees / not comparable or not run
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping) -> Verification:
        status = data.get("status")
        if status not in STATUSES:
            raise ContractError(f"verification status {status!r} is not one of {', '.join(STATUSES)}.")
        gradients = data.get("gradients") or {}
        fd = gradients.get("finite_difference") or {}
        passed = status in ("verified", "verified_with_warnings")
        if bool(data.get("passed")) != passed:
            raise ContractError(f"verification says passed={data.get('passed')!r} with status {status!r}.")
        return cls(
            status=status,
            requested=bool(data.get("requested", True)),
            performed=bool(data.get("performed")),
            passed=passed,
            note=str(data.get("note") or ""),
            problems=tuple(data.get("problems") or ()),
            max_abs_diff=data.get("max_abs_diff"),
            gradients_checked=int(gradients.get("checked") or 0),
            gradients_missing=tuple(gradients.get("missing") or ()),
            gradient_errors=tuple(gradients.get("errors") or ()),
            finite_difference=fd.get("passed") if fd else None,
            details=dict(data),
        )

    def to_json(self) -> dict:
        return dict(self.details)

    def summary_json(self) -> dict:
        """The few facts a model list, a job or a history line shows."""
        return {
            "status": self.status,
            "requested": self.requested,
            "performed": self.performed,
            "passed": self.passed,
            "note": self.note,
            "problems": list(self.problems),
            "max_abs_diff": self.max_abs_diff,
            "gradients_checked": self.gradients_checked,
            "gradients_missing": len(self.gradients_missing),
            "gradient_errors": len(self.gradient_errors),
            "finite_difference": self.finite_difference,
        }

    @property
    def headline(self) -> str:
        return self.status.upper().replace("_", " ")


@dataclasses.dataclass(frozen=True)
class Source:
    path: str
    sha256: str
    size: int
    format: str


@dataclasses.dataclass
class ConversionResult:
    """What one conversion wrote: the manifest of its output folder, typed."""

    source: Source
    layout: Layout
    request: ConversionRequest
    variables: list[Variable]
    verification: Verification
    signature: dict  # {"inputs": {placeholder: key}, "outputs": {tensor: key}, "optional_inputs"?: {name: key}}
    inputs: list[dict]  # the fed placeholders, as `inspect` reports inputs
    input_defaults: dict[str, Any]
    outputs: list[str]  # tensor names
    trainable_outputs: list[str]
    output_notes: dict[str, str] = dataclasses.field(default_factory=dict)
    optional_inputs: list[str] = dataclasses.field(default_factory=list)
    removed_nodes: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    control_flow: str = "none"
    loops: list[dict] = dataclasses.field(default_factory=list)
    training_paths: dict = dataclasses.field(default_factory=dict)
    dequantized: bool = False
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    runs: dict[str, str] | None = None  # TensorBoard runs logged for it (CLI --logdir, the plugin)
    fine_tuned_from: str | None = None  # the conversion a fine-tuned copy was saved from
    archived: dict | None = None  # {"job", "from"}: an earlier conversion kept by the plugin

    # -- facts ----------------------------------------------------------------------------------------------------

    @property
    def out_dir(self) -> str:
        return self.layout.out_dir

    @property
    def totals(self) -> dict[str, int]:
        return {
            "variables": len(self.variables),
            "trainable_variables": sum(v.trainable for v in self.variables),
            "parameters": sum(v.size for v in self.variables),
            "trainable_parameters": sum(v.size for v in self.variables if v.trainable),
        }

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.variable_name == name), None)

    def summary_json(self) -> dict:
        """What a finished job, a history line and the model list show (the tab's `JobResult`)."""
        return {
            **self.totals,
            "verification": self.verification.summary_json(),
            "out_dir": self.out_dir,
            "saved_model": self.layout.saved_model,
        }

    # -- the JSON form --------------------------------------------------------------------------------------------

    def to_json(self) -> dict:
        data = {
            "schema": MANIFEST_SCHEMA,
            "source": dataclasses.asdict(self.source),
            **self.layout.to_json(),
            "request": self.request.to_json(),
            "dequantized": self.dequantized,
            "variables": [v.to_json() for v in self.variables],
            "totals": self.totals,
            "removed_nodes": list(self.removed_nodes),
            "inputs": list(self.inputs),
            "input_defaults": dict(self.input_defaults),
            "outputs": list(self.outputs),
            "trainable_outputs": list(self.trainable_outputs),
            "output_notes": dict(self.output_notes),
            "optional_inputs": list(self.optional_inputs),
            "notes": list(self.notes),
            "signature": self.signature,
            "control_flow": self.control_flow,
            "loops": list(self.loops),
            "training_paths": dict(self.training_paths),
            "verification": self.verification.to_json(),
            "versions": dict(self.versions),
            "timings": dict(self.timings),
        }
        for key in ("runs", "fine_tuned_from", "archived"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "the manifest") -> ConversionResult:
        if not isinstance(data, Mapping):
            raise ContractError(f"{where} is not a JSON object.")
        if data.get("schema") not in READABLE_MANIFESTS:
            raise ContractError(
                f"{where} has schema {data.get('schema')!r}; this tb_unfreeze reads "
                f"{', '.join(READABLE_MANIFESTS)}: convert the model again."
            )
        try:
            out_dir = data["out_dir"]
            request = data.get("request") or {k: v for k, v in (data.get("selection") or {}).items()}
            return cls(
                source=Source(**{f.name: data["source"][f.name] for f in dataclasses.fields(Source)}),
                layout=Layout(out_dir, loops=data["saved_model_tf1"] != os.path.join(out_dir, SAVED_MODEL)),
                request=ConversionRequest.from_json(request, f"{where}: request"),
                variables=[Variable.from_json(v) for v in data["variables"]],
                verification=Verification.from_json(data["verification"]),
                signature=dict(data["signature"]),
                inputs=list(data["inputs"]),
                input_defaults=dict(data.get("input_defaults") or {}),
                outputs=list(data["outputs"]),
                trainable_outputs=list(data.get("trainable_outputs", data["outputs"])),
                output_notes=dict(data.get("output_notes") or {}),
                optional_inputs=list(data.get("optional_inputs") or []),
                removed_nodes=list(data.get("removed_nodes") or []),
                notes=list(data.get("notes") or []),
                control_flow=str(data.get("control_flow") or "none"),
                loops=list(data.get("loops") or []),
                training_paths=dict(data.get("training_paths") or {}),
                dequantized=bool(data.get("dequantized")),
                versions=dict(data.get("versions") or {}),
                timings=dict(data.get("timings") or {}),
                runs=data.get("runs"),
                fine_tuned_from=data.get("fine_tuned_from"),
                archived=data.get("archived"),
            )
        except (KeyError, TypeError) as e:
            raise ContractError(
                f"{where} lacks or mistypes {e} of a tb_unfreeze conversion; convert the model again."
            ) from None

    # -- files ----------------------------------------------------------------------------------------------------

    def write(self, out_dir: str | None = None) -> str:
        """Write `unfreeze.json` into `out_dir` (default: the layout's folder) atomically; returns its path."""
        from tb_unfreeze.output_dir import write_file_atomic  # noqa: PLC0415

        path = os.path.join(out_dir or self.out_dir, MANIFEST)
        write_file_atomic(path, (json.dumps(self.to_json(), indent=1, default=_json_default) + "\n").encode())
        return path

    def relocated(self, out_dir: str, **changes) -> ConversionResult:
        """The same conversion described from another folder (an archived copy, a fine-tuned copy)."""
        return dataclasses.replace(self, layout=Layout(out_dir, self.layout.loops), **changes)

    @classmethod
    def open(cls, path: str | os.PathLike) -> ConversionResult:
        """Read a conversion from its folder, its `unfreeze.json`, or its `saved_model/` folder."""
        path = os.fspath(path)
        candidates = (
            [path]
            if path.endswith(".json")
            else [os.path.join(path, MANIFEST), os.path.join(os.path.dirname(os.path.normpath(path)), MANIFEST)]
        )
        for candidate in candidates:
            if os.path.isfile(candidate):
                try:
                    with open(candidate, encoding="utf-8") as f:
                        data = json.load(f)
                except (OSError, ValueError) as e:
                    raise ContractError(f"{candidate} is not a readable tb_unfreeze manifest ({e}).") from None
                result = cls.from_json(data, where=candidate)
                folder = os.path.dirname(os.path.abspath(candidate))
                if os.path.realpath(folder) != os.path.realpath(result.out_dir):  # moved or copied as a folder
                    result = result.relocated(folder)
                return result
        raise ContractError(f"{path} holds no {MANIFEST}: pass the folder `tb-unfreeze convert` wrote.")


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


def read_result(path: str | os.PathLike) -> ConversionResult | None:
    """`ConversionResult.open`, or None when there is no readable conversion there (a listing's question)."""
    try:
        return ConversionResult.open(path)
    except UserError:
        return None


# -- schemas ------------------------------------------------------------------------------------------------------

_STR_LIST = {"type": "array", "items": {"type": "string"}}
_NAMES = {
    "type": ["array", "null"],
    "items": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
    "maxItems": MAX_NAMES,
}


def request_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": REQUEST_SCHEMA,
        "title": "ConversionRequest",
        "description": ConversionRequest.__doc__.split("\n")[0],
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "schema": {"const": REQUEST_SCHEMA},
            # null: the default (the recommended candidates; none excluded; detected inputs/outputs; verify)
            "only": _NAMES,
            "exclude": _NAMES,
            "trainable": {
                "type": ["object", "null"],
                "additionalProperties": {"type": "boolean"},
                "maxProperties": MAX_NAMES,
            },
            "inputs": _NAMES,
            "outputs": _NAMES,
            "verify": {"type": ["boolean", "null"]},
            "probe": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_NAME_CHARS},
            "dequantize": {"type": ["boolean", "null"]},
        },
    }


def manifest_schema() -> dict:
    variable = {
        "type": "object",
        "required": [f.name for f in dataclasses.fields(Variable)],
        "properties": {
            "variable_name": {"type": "string"},
            "source": {"type": "string"},
            "role": {"type": "string"},
            "trainable": {"type": "boolean"},
            "dtype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "size": {"type": "integer"},
            "checkpoint_key": {"type": "string"},
        },
    }
    verification = {
        "type": "object",
        "required": ["status", "performed", "passed"],
        "properties": {
            "status": {"enum": list(STATUSES)},
            "performed": {"type": "boolean"},
            "passed": {"type": "boolean"},
            "requested": {"type": "boolean"},
            "note": {"type": "string"},
            "problems": _STR_LIST,
            "max_abs_diff": {"type": ["number", "null"]},
            "outputs": {"type": "object"},
            "outputs_finite": {"type": "boolean"},
            "gradients": {
                "type": "object",
                "properties": {
                    "checked": {"type": "integer"},
                    "missing": _STR_LIST,
                    "errors": _STR_LIST,
                    "finite": {"type": "boolean"},
                    "finite_difference": {"type": ["object", "null"]},
                },
            },
        },
    }
    path = {"type": "string"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": MANIFEST_SCHEMA,
        "title": "ConversionResult (unfreeze.json)",
        "type": "object",
        "required": [
            "schema",
            "source",
            "out_dir",
            "saved_model",
            "saved_model_tf1",
            "unfrozen_graph",
            "request",
            "variables",
            "totals",
            "inputs",
            "outputs",
            "signature",
            "verification",
        ],
        "properties": {
            "schema": {"const": MANIFEST_SCHEMA},
            "source": {
                "type": "object",
                "required": [f.name for f in dataclasses.fields(Source)],
                "properties": {
                    "path": path,
                    "sha256": {"type": "string"},
                    "size": {"type": "integer"},
                    "format": {"type": "string"},
                },
            },
            "out_dir": path,
            "saved_model": path,
            "saved_model_tf1": path,
            "unfrozen_graph": path,
            "request": {"$ref": "#/$defs/request"},
            "dequantized": {"type": "boolean"},
            "variables": {"type": "array", "items": variable},
            "totals": {
                "type": "object",
                "properties": {
                    k: {"type": "integer"}
                    for k in ("variables", "trainable_variables", "parameters", "trainable_parameters")
                },
            },
            "removed_nodes": _STR_LIST,
            "inputs": {"type": "array", "items": {"type": "object", "required": ["name", "dtype", "shape", "kind"]}},
            "input_defaults": {"type": "object"},
            "outputs": _STR_LIST,
            "trainable_outputs": _STR_LIST,
            "output_notes": {"type": "object", "additionalProperties": {"type": "string"}},
            "optional_inputs": _STR_LIST,
            "notes": _STR_LIST,
            "signature": {"type": "object", "required": ["inputs", "outputs"]},
            "control_flow": {"type": "string"},
            "loops": {"type": "array", "items": {"type": "object"}},
            "training_paths": {"type": "object"},
            "verification": verification,
            "versions": {"type": "object"},
            "timings": {"type": "object", "additionalProperties": {"type": "number"}},
            "runs": {"type": "object"},
            "fine_tuned_from": path,
            "archived": {"type": "object"},
        },
        "$defs": {"request": request_schema()},
    }


def json_schemas() -> dict[str, dict]:
    """File name in docs/schema/ → schema."""
    return {"request.schema.json": request_schema(), "manifest.schema.json": manifest_schema()}


def write_schemas(folder: str) -> list[str]:
    """Write `json_schemas()` into `folder` (docs/schema); tests/test_contract.py checks the committed copies."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m tb_unfreeze.contract docs/schema
    import sys

    for written_path in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "docs/schema"):
        print(written_path)
