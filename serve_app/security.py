"""HTTP hardening of the ingress, as pure ASGI middleware: the API key and the security headers.

**API key.** The key never lives in ``serve_config.yaml``: it is read from the file named by the
ingress's ``api_key_file`` (``user_config``, applied live: a rotated Kubernetes Secret is picked up
on the next ``reconfigure``), else from the file in ``$ZHSERVE_API_KEY_FILE``, else from
``$ZHSERVE_API_KEY``. With none of them set the API is open (the local default). The check runs
before routing, so an unauthorised request is answered 401 before its body is read, and it
compares in constant time. It covers every ``/v1/*`` route; these stay open, and why:

* ``/healthz`` and ``/readyz`` — Kubernetes and load-balancer probes carry no credentials
  (``/readyz`` answers from a cached probe at most once a second, so it cannot be used to load
  the models);
* ``/``, ``/ui/*`` — the static UI, which must load to ask for the key;
* ``/docs``, ``/openapi.json`` — the API's published contract; they hold no data.

**Headers.** Every response carries ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY`` and a Content-Security-Policy with
``frame-ancestors 'none'`` and no inline script: the UI may load only its own files, the Swagger
page only its CDN bundle plus its one inline bootstrap script by hash, and API responses nothing.
CORS is off unless ``AppArgs.cors_allow_origins`` lists origins (Starlette's ``CORSMiddleware``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.errors import UnauthorizedError, ZhserveError, error_response
from serve_app.metrics import ERROR_CODE_KEY

logger = logging.getLogger("ray.serve")

API_KEY_ENV = "ZHSERVE_API_KEY"
API_KEY_FILE_ENV = "ZHSERVE_API_KEY_FILE"
PROTECTED_PREFIX = "/v1/"

BASE_HEADERS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}
"""On every response; API (JSON) responses keep this CSP, which allows nothing to load."""

UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def route_path(scope: Scope) -> str:
    """The request's path inside the application (without Serve's ``route_prefix``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def load_api_key(key_file: str | Path | None = None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The API key: from ``key_file``, else ``$ZHSERVE_API_KEY_FILE``'s file, else ``$ZHSERVE_API_KEY``.

    ``None`` means no key is configured. A named file that is missing or empty is an error (the
    replica fails to start or to reconfigure, loudly), never an open API.
    """
    path = key_file or environ.get(API_KEY_FILE_ENV)
    if path:
        key = Path(path).read_text(encoding="utf-8").strip()
        if not key:
            raise ValueError(f"the API key file {path} is empty")
        return key
    return environ.get(API_KEY_ENV, "").strip() or None


def is_authorised(headers: Headers, key: str) -> bool:
    """``Authorization: Bearer <key>``, compared in constant time."""
    supplied = headers.get("authorization", "").encode("utf-8", "replace")
    return hmac.compare_digest(supplied, f"Bearer {key}".encode())


def script_hashes(html: str) -> list[str]:
    """CSP ``'sha256-…'`` sources of the inline ``<script>`` blocks of a page."""
    hashes = []
    for body in re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL):
        digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii")
        hashes.append(f"'sha256-{digest}'")
    return hashes


def docs_csp(html: str, cdn: str = "https://cdn.jsdelivr.net") -> str:
    """The Swagger page's CSP: its CDN bundle and its inline bootstrap script by hash only."""
    scripts = " ".join([cdn, *script_hashes(html)])
    return (
        f"default-src 'none'; script-src {scripts}; style-src {cdn}; "
        "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class ApiKeyMiddleware:
    """401 for a ``/v1/*`` request without the key, answered before the body is read.

    ``api_key()`` is the key the ingress holds now (``None``: none configured, no check). The check
    fails closed: if the key cannot be read (the ingress has no such state), every ``/v1/*`` request
    is answered 500 ``internal_error``, never let through. ``request_id(scope)`` names the request
    in the error body.
    """

    def __init__(
        self, app: ASGIApp, api_key: Callable[[], str | None], request_id: Callable[[Scope], str | None]
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope).startswith(PROTECTED_PREFIX):
            error: ZhserveError | None = None
            try:
                key = self.api_key()
            except Exception:
                logger.exception("the API key check has no key state; refusing %s", route_path(scope))
                error = ZhserveError("internal error: the API key check is not configured; it has been logged")
            else:
                if (
                    key is not None
                    and scope.get("method") != "OPTIONS"
                    and not is_authorised(Headers(scope=scope), key)
                ):
                    error = UnauthorizedError("missing or wrong API key; send 'Authorization: Bearer <key>'")
                    error.headers["WWW-Authenticate"] = 'Bearer realm="zhserve"'
            if error is not None:
                scope[ERROR_CODE_KEY] = error.code  # for the request metrics
                await error_response(error, self.request_id(scope))(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Adds :data:`BASE_HEADERS` to every response; the UI and the docs get their own CSP.

    ``csp_for(path)`` returns a page's policy, or ``None`` for the API's default.
    """

    def __init__(self, app: ASGIApp, csp_for: Callable[[str], str | None]) -> None:
        self.app = app
        self.csp_for = csp_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.csp_for(route_path(scope))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASE_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if policy is not None:
                    headers["Content-Security-Policy"] = policy
            await send(message)

        await self.app(scope, receive, send_with_headers)
