"""The forwarding handler: `{base_url}dataaccess/api/v1/<path>` -> `DATAACCESS_URL + "api/v1/<path>"`.

What is forwarded: the method, the path (checked), the query string less `no_track_activity`, and a
JSON body of at most 1 MB. What is added: `Authorization: token <JUPYTERHUB_API_TOKEN>`, the
server's own token. What is never forwarded: the browser's cookies, Authorization or any other
header. The service's status, content type and body come back unchanged; every error made here is
JSON `{"status", "message"}`.
"""

from __future__ import annotations

import json
import re
from http.client import responses
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ..endpoint import Endpoint, NotConfigured, endpoint

API_PREFIX = "dataaccess/api/v1"
MAX_BODY_BYTES = 1024 * 1024
CONNECT_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 120.0

NOT_FORWARDED_QUERY_ARGS = frozenset({"no_track_activity"})

# Percent-encoded ".", "/" and "\" would let a path segment turn into a traversal after decoding.
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)


def checked_api_path(raw_path: str) -> str:
    """Return `raw_path` (still percent-encoded, as received) if it is a plain relative path.

    Raises a 400 for empty, `.` or `..` segments, backslashes and percent-encoded dots or slashes.
    """
    if "\\" in raw_path or _ENCODED_SEPARATOR.search(raw_path):
        raise web.HTTPError(400, "Invalid path: encoded dots, slashes and backslashes are refused")
    if any(segment in ("", ".", "..") for segment in raw_path.split("/")):
        raise web.HTTPError(400, "Invalid path: empty, '.' and '..' segments are refused")
    return raw_path


def forwarded_query(query: str) -> str:
    """The query string to send on: the same arguments, less those meant for this server."""
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(key, value) for key, value in pairs if key not in NOT_FORWARDED_QUERY_ARGS])


def service_endpoint() -> Endpoint:
    """The service and the server's own token, read from the environment now (it may change at
    run time); a 503 naming what is missing when it does not say."""
    try:
        return endpoint()
    except NotConfigured as e:
        raise web.HTTPError(503, f"The data access service is not configured: {e} (to an "
                                 "http(s) URL) in this server's environment") from None


class ForwardingHandler(APIHandler):
    """Authenticated GET/POST/DELETE on `dataaccess/api/v1/(.*)`, forwarded to the service."""

    auth_resource = "dataaccess"

    @web.authenticated
    @authorized
    async def get(self, path: str) -> None:
        await self._forward()

    @web.authenticated
    @authorized
    async def post(self, path: str) -> None:
        await self._forward(body=self._checked_json_body())

    @web.authenticated
    @authorized
    async def delete(self, path: str) -> None:
        await self._forward()

    def _raw_api_path(self) -> str:
        """The part of the request path after `{base_url}dataaccess/api/v1/`, not yet decoded."""
        prefix = self.base_url.rstrip("/") + "/" + API_PREFIX + "/"
        raw = self.request.path
        return raw[len(prefix) :] if raw.startswith(prefix) else ""

    def _checked_json_body(self) -> bytes:
        body = self.request.body or b""
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPError(413, f"The request body is larger than {MAX_BODY_BYTES} bytes")
        if not body.strip():
            return b""
        try:
            json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise web.HTTPError(400, "The request body is not valid JSON") from None
        return body

    async def _forward(self, body: bytes | None = None) -> None:
        api_path = checked_api_path(self._raw_api_path())
        service = service_endpoint()
        url = service.url(api_path)
        query = forwarded_query(self.request.query)
        headers = {**service.headers, "Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
        request = HTTPRequest(
            url + ("?" + query if query else ""),
            method=self.request.method or "GET",
            headers=headers,
            body=body if self.request.method == "POST" else None,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            request_timeout=REQUEST_TIMEOUT_SECONDS,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError) as error:
            # The URL is logged without its query; the token is in a header and never logged.
            self.log.warning(
                "jupyterhub_dataaccess: %s %s failed: %s", request.method, url, type(error).__name__
            )
            raise web.HTTPError(502, "The data access service did not answer") from None

        self.set_status(response.code, responses.get(response.code, "Unknown"))
        self.set_header("Cache-Control", "no-store")
        content_type = response.headers.get("Content-Type", "application/json")
        if response.code in (204, 304) or not response.body:
            self.finish(set_content_type=content_type)
        else:
            self.finish(response.body, set_content_type=content_type)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error made here is `{"status", "message"}`: no traceback, no echoed input."""
        message = responses.get(status_code, "Unknown error")
        exc_info = kwargs.get("exc_info")
        if exc_info and isinstance(exc_info[1], web.HTTPError) and exc_info[1].log_message:
            error = exc_info[1]
            message = error.log_message % error.args if error.args else error.log_message
        self.clear_header("Content-Disposition")
        self.finish(
            json.dumps({"status": status_code, "message": message}),
            set_content_type="application/json",
        )
