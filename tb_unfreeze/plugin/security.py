"""Request checks for the Unfreeze routes: Host (DNS rebinding), write requests (XSRF), model ids (traversal).

TensorBoard's OSS backend checks none of these itself (see docs/TENSORBOARD.md "Security facts"), and the
plugin writes to disk, so every route goes through `HostPolicy.check` and the write route through
`check_write_request`. Failures raise `tensorboard.errors` types: the client gets a 4xx with the message.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import urllib.parse
from collections.abc import Iterable

from tensorboard import errors
from werkzeug import wrappers

from tb_unfreeze.plugin import metadata

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _parse_host(value: str) -> tuple[str, int | None]:
    """('name', port or None) of a Host header value; InvalidArgumentError if malformed."""
    try:
        parts = urllib.parse.urlsplit("//" + value)
        name, port = parts.hostname, parts.port
    except ValueError:
        name = None
    if not name or any(c in value for c in "/?#@\\ \t") or parts.username is not None:
        raise errors.InvalidArgumentError(f"malformed Host header {value!r}.")
    return name.lower().rstrip("."), port


class HostPolicy:
    """Which `Host` header values address this TensorBoard.

    A DNS-rebinding page reaches the server under the attacker's domain name, so the name must be one this
    server is served as: a loopback name, the `--host` given, the machine's names when bound to all interfaces,
    any IP literal when bound to all interfaces (an IP literal cannot be rebound), or an `--unfreeze_allowed_hosts`
    entry. The port must be the one the request arrived on. `allowed=["*"]` turns the check off.
    """

    def __init__(self, host: str | None = None, bind_all: bool = False, allowed: Iterable[str] = ()) -> None:
        given = host is not None  # no --host: TensorBoard serves on localhost only, not on every interface
        host = (host or "").strip("[]").lower()
        self._any = False
        self._any_ip = bind_all or (given and host in _WILDCARD_HOSTS)
        self._names = set(_LOOPBACK_NAMES)
        self._exact: set[str] = set()
        if host and host not in _WILDCARD_HOSTS:
            self._names.add(host)
        if self._any_ip:
            for name in (socket.gethostname(), socket.getfqdn()):
                if name:
                    self._names.add(name.lower())
        for entry in allowed:
            entry = entry.strip().lower()
            if entry == "*":
                self._any = True
            elif entry:
                name, port = _parse_host(entry)
                if port is None:
                    self._names.add(name)
                else:
                    self._exact.add(f"{name}:{port}")

    def check(self, request: wrappers.Request) -> None:
        """Raise PermissionDeniedError unless the request's Host (and Origin, if sent) is this server."""
        if self._any:
            return
        environ = request.environ
        raw = environ.get("HTTP_HOST") or ""
        if not raw:
            raise errors.PermissionDeniedError("the request has no Host header.")
        name, port = _parse_host(raw)
        scheme = environ.get("wsgi.url_scheme", "http")
        if port is None:
            port = 443 if scheme == "https" else 80
        served_port = str(environ.get("SERVER_PORT", ""))
        ok = f"{name}:{port}" in self._exact or (
            (name in self._names or (self._any_ip and _is_ip(name))) and (not served_port or str(port) == served_port)
        )
        if not ok:
            raise errors.PermissionDeniedError(
                f"Host {raw!r} is not the address this TensorBoard serves; open it at its own address, or add "
                "the name to --unfreeze_allowed_hosts."
            )
        origin = request.headers.get("Origin")
        if origin and origin != "null":
            # same host and same effective port (https://localhost is not http://localhost); a malformed Origin
            # (e.g. port 99999, whose .port raises ValueError) is refused too
            try:
                o = urllib.parse.urlsplit(origin)
                o_name = (o.hostname or "").rstrip(".")
                o_port = o.port or {"http": 80, "https": 443}.get(o.scheme)
            except ValueError:
                o_name, o_port = "", None
            if o_name != name or o_port != port:
                raise errors.PermissionDeniedError(f"cross-origin request from {origin[:200]!r} refused.")
        if request.headers.get("Sec-Fetch-Site", "") == "cross-site":
            raise errors.PermissionDeniedError("cross-site request refused.")


class MethodNotAllowedError(errors.PublicError):
    """HTTP 405 with the `Allow` header."""

    http_code = 405

    def __init__(self, allowed: str) -> None:
        super().__init__(f"Method not allowed: use {allowed}.")
        self.headers.append(("Allow", allowed))


def check_read_request(request: wrappers.Request) -> None:
    """Read routes answer GET (and HEAD) only."""
    if request.method not in ("GET", "HEAD"):
        raise MethodNotAllowedError("GET")


def read_body(request: wrappers.Request, mimetype: str, limit: int) -> bytes:
    """The body of a write request, after the XSRF, content-type and size checks.

    A cross-site page can send neither a custom header nor a JSON (or octet-stream) content type without a CORS
    preflight, which TensorBoard never grants; so both are required.
    """
    if request.method != "POST":
        raise MethodNotAllowedError("POST")
    if request.headers.get(metadata.XSRF_HEADER) != "1":
        raise errors.PermissionDeniedError(f"write requests need the header '{metadata.XSRF_HEADER}: 1'.")
    if request.mimetype != mimetype:
        raise UnsupportedMediaTypeError(request.mimetype or "none", mimetype)
    length = request.content_length
    if length is None:
        raise LengthRequiredError()
    if length > limit:
        raise PayloadTooLargeError(length, limit)
    raw = request.stream.read(length + 1)
    if len(raw) > length or len(raw) > limit:
        raise PayloadTooLargeError(len(raw), limit)
    return raw


def read_json_body(request: wrappers.Request) -> dict:
    """The JSON object body of a write request (see `read_body`)."""
    raw = read_body(request, "application/json", metadata.MAX_BODY_BYTES)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise errors.InvalidArgumentError(f"the body is not valid JSON ({e}).") from None
    except RecursionError:  # e.g. 30000 nested '[': json's C scanner recurses per level
        raise errors.InvalidArgumentError("the body is not valid JSON (nested too deeply).") from None
    if not isinstance(body, dict):
        raise errors.InvalidArgumentError("the body must be a JSON object.")
    return body


class UnsupportedMediaTypeError(errors.PublicError):
    http_code = 415

    def __init__(self, mimetype: str, expected: str = "application/json") -> None:
        super().__init__(f"Unsupported media type {mimetype!r}: send the body as {expected}.")


class LengthRequiredError(errors.PublicError):
    http_code = 411

    def __init__(self) -> None:
        super().__init__("Length required: send a Content-Length header with the body.")


class PayloadTooLargeError(errors.PublicError):
    http_code = 413

    def __init__(self, length: int, limit: int = metadata.MAX_BODY_BYTES) -> None:
        super().__init__(f"Payload too large: {length} bytes; the limit is {limit}.")


def check_model_id(model_id: object) -> str:
    """Return a syntactically safe model id or raise InvalidArgumentError.

    Ids are relative paths with '/' separators. Anything that could step out of a root or be decoded into
    something else later is refused outright: absolute paths, '..' or '.' parts, empty parts, backslashes,
    '%' (encoded variants after werkzeug decoded the query once), NUL and other control characters.
    """
    if not isinstance(model_id, str) or not model_id:
        raise errors.InvalidArgumentError("pass the model id (its path relative to the logdir) as 'model'.")
    shown = model_id[:200].encode("unicode_escape").decode("ascii")
    if len(model_id) > metadata.MAX_ID_CHARS:
        raise errors.InvalidArgumentError(f"model id is longer than {metadata.MAX_ID_CHARS} characters.")
    if any(ord(c) < 32 or ord(c) == 127 for c in model_id):
        raise errors.InvalidArgumentError(f"model id {shown!r} contains control characters.")
    if "\\" in model_id or "%" in model_id or ":" in model_id.split("/")[0]:
        raise errors.InvalidArgumentError(f"model id {shown!r} contains '\\', '%' or a drive; use the listed id.")
    if model_id.startswith("/") or os.path.isabs(model_id):
        raise errors.InvalidArgumentError(f"model id {shown!r} is absolute; ids are relative to the logdir.")
    if any(part in ("", ".", "..") for part in model_id.split("/")):
        raise errors.InvalidArgumentError(f"model id {shown!r} has an empty, '.' or '..' part; use the listed id.")
    return model_id


def is_within(path: str, root: str) -> bool:
    """True if the real path of `path` lies inside the real path of `root` (symlinks resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    try:
        return os.path.commonpath([real, base]) == base
    except ValueError:
        return False


def resolve_inside(root: str, model_id: str) -> str:
    """The real path of `root/model_id`, refused (403) if it resolves outside the root (e.g. a symlink)."""
    candidate = os.path.join(root, *check_model_id(model_id).split("/"))
    if not is_within(candidate, root):
        raise errors.PermissionDeniedError(f"model {model_id!r} resolves outside its folder (a symlink?).")
    return os.path.realpath(candidate)
