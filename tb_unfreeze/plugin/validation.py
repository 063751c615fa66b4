"""Parse and validate request arguments and the body of `POST /convert`; errors are 400s with a message."""

from __future__ import annotations

import re

from tensorboard import errors
from werkzeug import wrappers

from tb_unfreeze.plugin.security import check_model_id

_JOB_ID = re.compile(r"^[0-9a-f]{1,64}$")
_MAX_NAMES = 100_000
_MAX_NAME_CHARS = 4096
CONVERT_KEYS = ("model", "only", "exclude", "trainable", "verify", "inputs", "outputs")


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


def _names(body: dict, key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.InvalidArgumentError(f"'{key}' must be a list of node names (strings).")
    if len(value) > _MAX_NAMES or any(len(v) > _MAX_NAME_CHARS or "\x00" in v for v in value):
        raise errors.InvalidArgumentError(f"'{key}' holds too many or too long names.")
    return list(dict.fromkeys(value))


def conversion_params(body: dict) -> dict:
    """The validated conversion request: {model, only, exclude, trainable, verify, inputs, outputs}."""
    unknown = sorted(set(body) - set(CONVERT_KEYS))
    if unknown:
        raise errors.InvalidArgumentError(
            f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; allowed: {', '.join(CONVERT_KEYS)}."
        )
    trainable = body.get("trainable")
    trainable = {} if trainable is None else trainable  # not `or {}`: [] or "" must be refused, not ignored
    if not isinstance(trainable, dict) or not all(
        isinstance(k, str) and isinstance(v, bool) for k, v in trainable.items()
    ):
        raise errors.InvalidArgumentError("'trainable' must map Const node names to true or false.")
    if len(trainable) > _MAX_NAMES:
        raise errors.InvalidArgumentError("'trainable' holds too many names.")
    verify = body.get("verify", True)
    if not isinstance(verify, bool):
        raise errors.InvalidArgumentError("'verify' must be true or false.")
    return {
        "model": check_model_id(body.get("model")),
        "only": _names(body, "only"),
        "exclude": _names(body, "exclude") or [],
        "trainable": dict(trainable),
        "verify": verify,
        "inputs": _names(body, "inputs"),
        "outputs": _names(body, "outputs"),
    }


def check_selection(params: dict, inspection: dict) -> None:
    """Refuse (400) names that are not candidates before queueing, as the library would after."""
    known = set()
    for c in inspection.get("candidates") or []:
        known.update(n for n in (c.get("name"), c.get("variable_name")) if n)
    lists = (("only", params["only"] or []), ("exclude", params["exclude"]), ("trainable", params["trainable"]))
    model = inspection.get("model")
    model = model.get("path") if isinstance(model, dict) else model  # the inspect JSON's model is a dict
    for key, names in lists:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise errors.InvalidArgumentError(
                f"'{key}' names {len(unknown)} node(s) that are not candidates of {model} "
                f"(first: {unknown[0][:200]!r}); GET /candidates lists them."
            )
