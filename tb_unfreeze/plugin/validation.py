"""Parse and validate request arguments and the body of `POST /convert`; errors are 400s with a message."""

from __future__ import annotations

import re

from tensorboard import errors
from werkzeug import wrappers

from tb_unfreeze.contract import ContractError, ConversionRequest
from tb_unfreeze.plugin.security import check_model_id

_JOB_ID = re.compile(r"^[0-9a-f]{1,64}$")
_PROBE_ID = re.compile(r"[0-9a-f]{16}")


def arg(request: wrappers.Request, name: str, required: bool = True) -> str | None:
    """One query argument (already percent-decoded once by werkzeug)."""
    values = request.args.getlist(name)
    if len(values) > 1:
        raise errors.InvalidArgumentError(f"pass '{name}' once.")
    if not values:
        if required:
            raise errors.InvalidArgumentError(f"pass the query argument '{name}'.")
        return None
    return values[0]


def int_arg(request: wrappers.Request, name: str, default: int, low: int, high: int) -> int:
    raw = arg(request, name, required=False)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidArgumentError(f"'{name}' must be an integer.") from None
    if not low <= value <= high:
        raise errors.InvalidArgumentError(f"'{name}' must be between {low} and {high}.")
    return value


def check_job_id(job_id: str) -> str:
    if not _JOB_ID.fullmatch(job_id):  # not .match: "$" also matches before a trailing newline
        raise errors.InvalidArgumentError("a job id is the hex string POST /convert answered with.")
    return job_id


def conversion_request(body: dict) -> tuple[str, ConversionRequest]:
    """The body of POST /convert: {"model": id, **ConversionRequest JSON} → (model id, request). `probe`, when
    given, is the id POST /probe answered with (the plugin resolves it to the stored file)."""
    try:
        request = ConversionRequest.from_json(body, "POST /convert", extra=("model",))
    except ContractError as e:
        raise errors.InvalidArgumentError(str(e)) from None
    if request.probe is not None and not _PROBE_ID.fullmatch(request.probe):
        raise errors.InvalidArgumentError("'probe' must be the id POST /probe answered with.")
    return check_model_id(body.get("model")), request


def check_selection(request: ConversionRequest, inspection: dict) -> None:
    """Refuse (400) names that are not candidates before queueing, as the library would after."""
    known = set()
    for c in inspection.get("candidates") or []:
        known.update(n for n in (c.get("name"), c.get("variable_name")) if n)
    lists = (("only", request.only or ()), ("exclude", request.exclude), ("trainable", request.trainable))
    model = inspection.get("model")
    model = model.get("path") if isinstance(model, dict) else model  # the inspect JSON's model is a dict
    for key, names in lists:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise errors.InvalidArgumentError(
                f"'{key}' names {len(unknown)} node(s) that are not candidates of {model} "
                f"(first: {unknown[0][:200]!r}); GET /candidates lists them."
            )
